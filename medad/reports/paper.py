"""Report sections for reproducing the paper: the text class words each model was prompted with.

The class word is the key setting of a text-prompted model (``reference`` mode uses the released code's fixed
per-dataset words, ``clean`` mode real words), so the report shows the words that were actually used, read from
each predictions folder's ``meta.json`` (``class_words``: ``{dataset: {class_name: word}}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from medad.reports.cases import PredictionSource
from medad.reports.loader import EvaluationResults


def class_words_table(sources: Sequence[PredictionSource]) -> pd.DataFrame:
    """One row per model, dataset and class: the prompt word and the model's compat mode."""
    rows = []
    for source in sources:
        meta = source.reader.meta
        words = meta.get("class_words")
        if not isinstance(words, dict):
            continue
        for dataset, per_class in sorted(words.items()):
            if source.dataset is not None and dataset != source.dataset:
                continue
            for class_name, word in sorted(dict(per_class).items()):
                rows.append(
                    {
                        "model": source.model,
                        "dataset": dataset,
                        "class": class_name,
                        "word": word,
                        "compat": meta.get("compat", ""),
                    }
                )
    return pd.DataFrame(rows, columns=["model", "dataset", "class", "word", "compat"]).drop_duplicates()


def paper_sections(
    evaluation: EvaluationResults, sources: Sequence[PredictionSource], make_section: Callable[..., Any]
) -> list[Any]:
    """The report's reproduction sections, built with ``make_section(heading, paragraphs=..., tables=...)``."""
    words = class_words_table(sources)
    if words.empty:
        return []
    text = (
        "The word inserted into every prompt of the ensemble, per class. 'reference' mode uses the released "
        "code's fixed words (the class folder for MVTec AD, MPDD and BTAD, 'Data' for VisA, '01' for ISIC and "
        "the CVC sets, 'Medical_Dataset' for TN3K); 'clean' mode real words."
    )
    return [make_section("Text class words", paragraphs=[text], tables=[("Class words used", words)])]
