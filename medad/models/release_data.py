"""What a release checkpoint was trained on, read without torch (``medad validate``'s leakage guard reads it): the
dataset kinds a file's recorded metadata or its name say, else its release's default."""

from __future__ import annotations

import os
from pathlib import Path

RELEASE_DATASETS: tuple[str, ...] = ("mvtec", "visa", "btad", "mpdd", "isic", "colondb", "clinicdb", "tn3k", "kvasir")
"""Dataset kinds a release checkpoint's file or folder name can say it was trained on."""

RELEASE_FAMILIES: dict[str, tuple[str, ...] | None] = {
    "clip-prompts": ("mvtec",),
    "adaclip": ("mvtec", "colondb"),
    "aa-clip-text": None,
    "aa-clip-image": None,
}
"""Families of released trained checkpoints, with the data a file that names none was trained on: AnomalyCLIP's
and Crane's prompt learners the MVTec AD test set (their releases' ``9_12_4_multiscale`` / ``trained_on_mvtec_*``),
AdaCLIP's default MVTec AD + ColonDB (its README's correction); AA-CLIP publishes none (unknown)."""

TRAINING_DATA_KEY = "training_data"
"""The safetensors metadata key (and check report key) holding a release checkpoint's training data."""


def release_training_data(path: str | os.PathLike[str], family: str) -> tuple[str, ...] | None:
    """The dataset kinds a release checkpoint of ``family`` was trained on: a converted file's recorded
    ``training_data``, else the kinds its file and folder name say (``pretrained_mvtec_colondb.pth``,
    ``trained_on_visa_cranep/epoch_5.pth``, ``9_12_4_multiscale_visa/epoch_15.pth``), else the release's default
    (:data:`RELEASE_FAMILIES`); ``None`` when unknown. The file need not exist (``medad validate`` reads the name)."""
    import re

    file = Path(path).expanduser()
    if file.suffix.lower() == ".safetensors" and file.is_file():
        from safetensors import safe_open

        with safe_open(str(file), framework="numpy") as handle:  # metadata only: no torch
            recorded = (handle.metadata() or {}).get(TRAINING_DATA_KEY)
        if recorded:
            return None if recorded == "unknown" else tuple(recorded.split(","))
    words = re.split(r"[^a-z0-9]+", f"{file.parent.name} {file.stem}".lower())
    named = tuple(kind for kind in RELEASE_DATASETS if kind in words)
    return named or RELEASE_FAMILIES.get(family)
