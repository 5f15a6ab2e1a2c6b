"""medad.models: model registry, AD-DINOv3, prompt words, weights and checkpoints."""

from medad.models.ad_dinov3 import ADDINOv3, ADDINOv3Config
from medad.models.checkpoint import load_checkpoint, save_checkpoint
from medad.models.prompts import prompt_word
from medad.models.registry import create_model, list_models, register_model

__all__ = [
    "ADDINOv3",
    "ADDINOv3Config",
    "create_model",
    "list_models",
    "load_checkpoint",
    "prompt_word",
    "register_model",
    "save_checkpoint",
]
