"""Deployable scoring models: ONNX / TorchScript exports of AD-DINOv3 with one class word baked in.

:func:`export_model` is what ``medad export-model`` runs; :func:`run_exported` runs an exported file on the
CPU (onnxruntime or TorchScript) and :func:`read_card` reads its embedded model card.
"""

from medad.deploy.export import FORMATS, ExportResult, ScoringModule, export_model, read_card, run_exported

__all__ = ["FORMATS", "ExportResult", "ScoringModule", "export_model", "read_card", "run_exported"]
