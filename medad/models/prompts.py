"""The AD-DINOv3 prompt ensemble and the text class word of a manifest row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medad.errors import ConfigError

PROMPT_SET_VERSION = "ad-dinov3-ensemble-v1"
"""Identifier of the prompt set below; part of every text-embedding cache key."""

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of my {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a photo of one {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "a dark photo of a {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

DEFAULT_CLASS_WORDS: dict[str, str] = {
    "skin_lesion": "skin lesion",
    "polyp": "polyp",
    "thyroid_nodule": "thyroid nodule",
}
"""``clean``-mode words for the medical class names; any other class name has ``_`` replaced by a space."""

COMPAT_MODES = ("clean", "reference")


def prompt_sentences(word: str) -> tuple[list[str], list[str]]:
    """Return the normal and abnormal sentences of the ensemble for one class word.

    Args:
        word: The object word inserted into every state, e.g. ``"skin lesion"``.

    Returns:
        ``(normal, abnormal)``: 7 x 35 = 245 and 5 x 35 = 175 sentences.
    """
    normal = [template.format(state.format(word)) for state in NORMAL_STATES for template in TEMPLATES]
    abnormal = [template.format(state.format(word)) for state in ABNORMAL_STATES for template in TEMPLATES]
    return normal, abnormal


def check_compat(compat: str) -> str:
    """Return ``compat`` if it is a known mode, else raise :class:`ConfigError`."""
    if compat not in COMPAT_MODES:
        raise ConfigError(f"compat must be one of {', '.join(COMPAT_MODES)}, got {compat!r}")
    return compat


def prompt_word(row: Mapping[str, Any], compat: str, class_words: Mapping[str, str] | None = None) -> str:
    """Return the text class word for a manifest row.

    Args:
        row: A manifest row (``dataset`` and ``class_name``; ``image_path`` for data outside the release's sets).
        compat: ``reference`` reproduces the release. Its word is the 4th-last path component of the image in
            the release's own layouts, so for its eight datasets it is a fixed table
            (:func:`medad.data.registry.reference_class_words`: the class folder for MVTec AD, MPDD and BTAD,
            ``"Data"`` for VisA, ``"01"`` for ISIC / CVC-ClinicDB / CVC-ColonDB, ``"Medical_Dataset"`` for TN3K),
            whatever the user's folders are called; other data (which the release never read) gets the path
            rule ``image_path.split('/')[-4]`` itself. ``clean`` uses real words: ``class_words`` first, then the
            per-dataset words (BTAD's numbered products are ``"product"``), the medical defaults
            (``skin_lesion`` -> ``"skin lesion"`` ...), else the class name with ``_`` replaced by a space.
        class_words: Optional overrides, class name -> word (``clean`` mode only).

    Returns:
        The word inserted into the prompt ensemble.

    Raises:
        ConfigError: On an unknown ``compat`` or a path too short for the ``reference`` path rule.
    """
    from medad.data.registry import clean_class_word, reference_class_word

    check_compat(compat)
    dataset = str(row.get("dataset") or "")
    if compat == "reference":
        fixed = reference_class_word(dataset, str(row.get("class_name")))
        if fixed is not None:
            return fixed
        path = str(row["image_path"])
        parts = path.split("/")
        if len(parts) < 4:
            raise ConfigError(
                f"compat 'reference' takes the class word from the 4th-last path component of image_path, but "
                f"{path!r} has fewer than 4 components; use compat 'clean' for this dataset"
            )
        return parts[-4]
    name = str(row["class_name"])
    if class_words and name in class_words:
        return str(class_words[name])
    return clean_class_word(dataset, name) or DEFAULT_CLASS_WORDS.get(name, name.replace("_", " "))
