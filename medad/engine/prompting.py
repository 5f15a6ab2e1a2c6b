"""The text class word of every manifest row, and the one class-word rule (``compat``) of a run.

Training and scoring both prompt the text tower with one word per image (``medad.models.prompt_word``); the words
used are recorded per dataset and class in checkpoints and predictions folders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from medad.errors import ConfigError

if TYPE_CHECKING:
    from medad.models import AnomalyModel


def prompt_words(
    manifest: pd.DataFrame,
    compat: str,
    class_words: Mapping[str, str] | None,
    dataset_kinds: Mapping[str, str] | None = None,
    class_word: str | None = None,
) -> list[str]:
    """Return the text class word of every manifest row (``medad.models.prompt_word``).

    ``dataset_kinds`` maps a manifest's ``dataset`` names to their dataset kinds where they differ (protocol
    targets are named by the protocol), so that ``reference`` mode finds the release's word of each dataset;
    ``class_word`` gives every row that one word instead.
    """
    from medad.models import prompt_word

    if class_word is not None:
        if not class_word.strip():
            raise ConfigError("the class word is empty; pass a word such as 'skin lesion' or 'polyp'")
        return [class_word] * len(manifest)
    kinds = dict(dataset_kinds or {})
    rows = manifest.to_dict("records")
    return [
        prompt_word({**row, "dataset": kinds.get(row.get("dataset"), row.get("dataset"))}, compat, class_words)
        for row in rows
    ]


def class_words_used(manifest: pd.DataFrame, words: Sequence[str]) -> dict[str, dict[str, str]]:
    """The words used per dataset and class: ``{dataset: {class_name: word}}`` (for metadata and reports)."""
    used: dict[str, dict[str, str]] = {}
    for dataset, name, word in zip(manifest["dataset"], manifest["class_name"], words, strict=True):
        used.setdefault(str(dataset), {})[str(name)] = word
    return used


def check_model_compat(model: AnomalyModel, compat: str | None) -> str:
    """Return the class-word rule of a run: ``compat`` if it is the model's own mode, else refuse.

    A model built in one mode and prompted with the other mode's words would be a hybrid of both (for
    AD-DINOv3: stacked text columns and QuickGELU with the release's words), so the mode is chosen once, when
    the model is built.

    Raises:
        ConfigError: ``compat`` differs from the mode the model (or checkpoint) was built in.
    """
    own = getattr(model, "compat", None)
    if compat is None:
        return own or "clean"
    if own is not None and compat != own:
        raise ConfigError(
            f"model {getattr(model, 'name', '?')!r} was built in compat {own!r} mode but compat {compat!r} was asked "
            f"for; build the model with compat={compat!r} (medad train/score --compat {compat}) or drop --compat"
        )
    return compat
