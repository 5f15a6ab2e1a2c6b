"""medad.models: model registry, AD-DINOv3, the WinCLIP and dinov3_mutual baselines, prompt words, weights and
checkpoints."""

from medad.models.ad_dinov3 import ADDINOv3, ADDINOv3Config
from medad.models.checkpoint import load_checkpoint, save_checkpoint
from medad.models.mutual import MutualConfig, MutualScorer
from medad.models.prompts import prompt_word
from medad.models.registry import create_model, is_training_free, list_models, register_model, training_free
from medad.models.winclip import WinCLIP, WinCLIPConfig

__all__ = [
    "ADDINOv3",
    "ADDINOv3Config",
    "MutualConfig",
    "MutualScorer",
    "WinCLIP",
    "WinCLIPConfig",
    "create_model",
    "is_training_free",
    "list_models",
    "load_checkpoint",
    "prompt_word",
    "register_model",
    "save_checkpoint",
    "training_free",
]
