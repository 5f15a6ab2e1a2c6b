"""medad.models: the model contract, the model registry, AD-DINOv3, AnomalyCLIP, AdaCLIP, the WinCLIP, dinov3_mutual and
AnomalyDINO baselines, the few-shot memory, prompt words, weights and checkpoints."""

from medad.models.aa_clip import AAClip, AAClipConfig, AAClipDinoConfig
from medad.models.ad_dinov3 import ADDINOv3, ADDINOv3Config
from medad.models.adaclip import AdaCLIP, AdaCLIPConfig
from medad.models.anomalyclip import AnomalyCLIP, AnomalyCLIPConfig
from medad.models.anomalydino import AnomalyDINO, AnomalyDINOConfig
from medad.models.base import (
    AnomalyModel,
    InferenceBatch,
    ModelKind,
    TrainableAnomalyModel,
    TrainingBatch,
    TransductiveAnomalyModel,
)
from medad.models.checkpoint import load_checkpoint, save_checkpoint
from medad.models.crane import Crane, CraneConfig
from medad.models.mutual import MutualConfig, MutualScorer
from medad.models.prompts import prompt_word
from medad.models.registry import (
    check_model_config,
    create_model,
    list_models,
    model_class,
    model_config,
    model_kind,
    register_model,
)
from medad.models.winclip import WinCLIP, WinCLIPConfig

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
    "register_model",
    "save_checkpoint",
]
