"""Evaluation reports: Markdown and standalone HTML, CSV/JSON tables and deterministic PNG figures.

``build_report(eval_dir)`` turns an evaluation folder (see ``docs/architecture.md``, "Evaluation output") into
a report folder; ``load_evaluation`` reads the folder for other uses (notebooks, protocols).
"""

from medad.reports.loader import EvaluationResults, load_evaluation, resolve_evaluation_dir
from medad.reports.report import build_report
from medad.reports.tables import format_result

__all__ = ["EvaluationResults", "build_report", "format_result", "load_evaluation", "resolve_evaluation_dir"]
