"""Weight names and licences without torch: which specs are local files, timm names from hub ids, the licence of
each weights family. The catalogue (``medad models``, ``medad validate``) reads them without building a model;
:mod:`medad.models.weights` loads the weights."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DINOV3_HF_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"
LICENCES = {
    "dinov3": "DINOv3 License (Meta; gated)",
    "dinov2": "Apache-2.0 (Meta DINOv2)",
    "anomalyclip": "MIT (zqhang/AnomalyCLIP release)",
    "crane": "MIT (AlirezaSalehy/Crane release)",
    "openai": "MIT (OpenAI CLIP weights)",
    "random": "none (random initialisation)",
    "unknown": "see the weights' source",
}


def is_local_weights(spec: str | os.PathLike[str] | None) -> bool:
    """Return True when ``spec`` names a local file rather than a hub id.

    A file has a weights suffix, exists, starts with ``/``, ``.`` or ``~`` or has several folders; a hub id is a
    tag or timm name (``openai``, ``vit_large_patch16_dinov3.lvd1689m``), ``hf-hub:ORG/NAME`` or ``ORG/NAME``
    (``timm/vit_large_patch16_dinov3.lvd1689m``).
    """
    if spec is None:
        return False
    text = str(spec)
    if text.startswith("hf-hub:"):
        return False
    if text.lower().endswith(WEIGHT_SUFFIXES) or Path(text).expanduser().exists():
        return True
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text

def timm_name(name: str) -> str:
    """A timm model name from a hub id: ``timm/NAME`` and ``hf-hub:timm/NAME`` are timm's own ``NAME``."""
    for prefix in ("hf-hub:timm/", "timm/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name

def backbone_licence(name: str) -> str:
    """The licence of the released weights of timm backbone ``name`` (DINOv3's, DINOv2's, or a pointer to the
    source)."""
    family = next((key for key in ("dinov3", "dinov2") if key in name), "unknown")
    return LICENCES[family]

def clip_licence(spec: str | None) -> str:
    """The licence of CLIP weights given as an open_clip tag or file (OpenAI's MIT for the ``openai`` tag)."""
    return LICENCES["openai"] if spec == "openai" else LICENCES["unknown"]
