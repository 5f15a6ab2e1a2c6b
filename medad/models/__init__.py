"""medad.models: the model contract, the model registry, AD-DINOv3, AnomalyCLIP, AdaCLIP, the WinCLIP, dinov3_mutual and
AnomalyDINO baselines, the few-shot memory, prompt words, weights and checkpoints.

Names are imported on first use (PEP 562): the registry, the configs and :class:`ModelKind` need no torch, so
``medad validate`` and ``medad models`` do not load it; a model class (or ``create_model``) imports its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES: dict[str, str] = {
    "AAClip": "aa_clip",
    "AAClipConfig": "aa_clip_config",
    "AAClipDinoConfig": "aa_clip_config",
    "ADDINOv3": "ad_dinov3",
    "ADDINOv3Config": "ad_dinov3_config",
    "AdaCLIP": "adaclip",
    "AdaCLIPConfig": "adaclip_config",
    "AnomalyCLIP": "anomalyclip",
    "AnomalyCLIPConfig": "anomalyclip_config",
    "AnomalyDINO": "anomalydino",
    "AnomalyDINOConfig": "anomalydino_config",
    "AnomalyModel": "base",
    "Crane": "crane",
    "CraneConfig": "crane_config",
    "InferenceBatch": "base",
    "ModelKind": "kind",
    "MutualConfig": "mutual_config",
    "MutualScorer": "mutual",
    "TrainableAnomalyModel": "base",
    "TrainingBatch": "base",
    "TransductiveAnomalyModel": "base",
    "WinCLIP": "winclip",
    "WinCLIPConfig": "winclip_config",
    "check_model_config": "registry",
    "create_model": "registry",
    "list_models": "registry",
    "load_checkpoint": "checkpoint",
    "model_class": "registry",
    "model_config": "registry",
    "model_kind": "registry",
    "prompt_word": "prompts",
    "register_factory": "registry",
    "register_model": "registry",
    "save_checkpoint": "checkpoint",
}
"""Public name -> the module of ``medad.models`` that defines it."""

__all__ = [
    "AAClip",
    "AAClipConfig",
    "AAClipDinoConfig",
    "ADDINOv3",
    "ADDINOv3Config",
    "AdaCLIP",
    "AdaCLIPConfig",
    "AnomalyCLIP",
    "AnomalyCLIPConfig",
    "AnomalyDINO",
    "AnomalyDINOConfig",
    "AnomalyModel",
    "Crane",
    "CraneConfig",
    "InferenceBatch",
    "ModelKind",
    "MutualConfig",
    "MutualScorer",
    "TrainableAnomalyModel",
    "TrainingBatch",
    "TransductiveAnomalyModel",
    "WinCLIP",
    "WinCLIPConfig",
    "check_model_config",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_class",
    "model_config",
    "model_kind",
    "prompt_word",
    "register_factory",
    "register_model",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from medad.models.aa_clip import AAClip
    from medad.models.aa_clip_config import AAClipConfig, AAClipDinoConfig
    from medad.models.ad_dinov3 import ADDINOv3
    from medad.models.ad_dinov3_config import ADDINOv3Config
    from medad.models.adaclip import AdaCLIP
    from medad.models.adaclip_config import AdaCLIPConfig
    from medad.models.anomalyclip import AnomalyCLIP
    from medad.models.anomalyclip_config import AnomalyCLIPConfig
    from medad.models.anomalydino import AnomalyDINO
    from medad.models.anomalydino_config import AnomalyDINOConfig
    from medad.models.base import (
        AnomalyModel,
        InferenceBatch,
        TrainableAnomalyModel,
        TrainingBatch,
        TransductiveAnomalyModel,
    )
    from medad.models.checkpoint import load_checkpoint, save_checkpoint
    from medad.models.crane import Crane
    from medad.models.crane_config import CraneConfig
    from medad.models.kind import ModelKind
    from medad.models.mutual import MutualScorer
    from medad.models.mutual_config import MutualConfig
    from medad.models.prompts import prompt_word
    from medad.models.registry import (
        check_model_config,
        create_model,
        list_models,
        model_class,
        model_config,
        model_kind,
        register_factory,
        register_model,
    )
    from medad.models.winclip import WinCLIP
    from medad.models.winclip_config import WinCLIPConfig


def __getattr__(name: str) -> Any:
    """Import a public name on first access (``medad.models.ADDINOv3`` -> ``medad.models.ad_dinov3``)."""
    if name not in _NAMES:
        raise AttributeError(f"module 'medad.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.models.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_NAMES})
