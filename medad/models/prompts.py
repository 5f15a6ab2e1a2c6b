"""The AD-DINOv3 prompt ensemble and the text class word of a manifest row."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Mapping
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

CONTEXT_LENGTH = 77
"""Tokens a CLIP text tower reads per sentence (start and end tokens included); open_clip cuts the rest."""

Sentences = Callable[[str], tuple[list[str], list[str]]]


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


@functools.lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    """open_clip's CLIP BPE tokenizer (the one every CLIP text tower medad builds uses), loaded once."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _template_bytes(sentences: Sentences) -> int:
    return max(len(s.encode("utf-8")) for group in sentences("") for s in group)


def _word_bytes(word: str) -> int | None:
    """UTF-8 bytes of ``word`` as written and as the CLIP tokenizer reads it after its clean-up (NFC, lower case),
    the larger; ``None`` for a word with ``&`` (an HTML entity the clean-up expands may grow it)."""
    if "&" in word:
        return None
    read = unicodedata.normalize("NFC", word).lower()
    return max(len(word.encode("utf-8")), len(read.encode("utf-8")))


def class_word_problem(
    word: str, sentences: Sentences = prompt_sentences, tokenizer: Any = None, context_length: int = CONTEXT_LENGTH
) -> str | None:
    """Why ``word`` cannot be a class word of a text prompt, or ``None`` when it fits.

    A CLIP text tower reads ``context_length`` tokens per sentence and open_clip silently cuts the rest, so a long
    class word would give the same features as its first few words. The longest sentence of the prompt set (the
    word plus the longest template, start and end tokens) must fit. A CLIP BPE token holds at least one UTF-8
    byte, so a word whose bytes cannot exceed the limit is accepted without any tokenizer (no open_clip, no torch:
    ``medad validate``); only a word that could exceed it loads open_clip's tokenizer, which imports torch.

    Args:
        word: The class word.
        sentences: The prompt set (``prompt_sentences``; WinCLIP passes its own).
        tokenizer: A CLIP tokenizer with ``encode`` (default: open_clip's ``SimpleTokenizer``).
        context_length: Tokens per sentence.
    """
    size = _word_bytes(word)
    if size is not None and size + _template_bytes(sentences) + 2 <= context_length:
        return None
    encode = (tokenizer or _clip_tokenizer()).encode
    overhead = max(len(encode(s)) for group in sentences("x") for s in group) - len(encode("x")) + 2
    n_tokens = len(encode(word))
    if n_tokens + overhead <= context_length:
        return None
    shown = word if len(word) <= 40 else f"{word[:40]}... ({len(word)} characters)"
    return (
        f"class word {shown!r} is {n_tokens} tokens long, but the text encoder reads {context_length} tokens per "
        f"sentence and the longest prompt template takes {overhead} of them (start and end included), so the word "
        f"would be cut silently; use a class word of at most {context_length - overhead} tokens (a few words)"
    )


def check_class_word(word: str, sentences: Sentences = prompt_sentences, tokenizer: Any = None) -> None:
    """Refuse a class word whose prompt sentences do not fit the text encoder (:func:`class_word_problem`).

    Raises:
        ConfigError: naming the word, its length in tokens, the limit and the fix.
    """
    problem = class_word_problem(word, sentences, tokenizer)
    if problem is not None:
        raise ConfigError(problem)
