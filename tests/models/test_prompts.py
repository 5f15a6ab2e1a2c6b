"""Prompt ensemble and class-word rules."""

from __future__ import annotations

import pytest

from medad.errors import ConfigError
from medad.models import prompt_word
from medad.models.prompts import TEMPLATES, prompt_sentences


def test_ensemble_counts_and_content() -> None:
    normal, abnormal = prompt_sentences("skin lesion")
    assert len(TEMPLATES) == 35
    assert (len(normal), len(abnormal)) == (245, 175)
    assert normal[0] == "a bad photo of a skin lesion."
    assert "this is one skin lesion without damage in the scene." in normal
    assert "a photo of the small damaged skin lesion." in abnormal
    assert len(set(normal)) == 245 and len(set(abnormal)) == 175


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("/d/mvtec/metal_nut/test/scratch/000.png", "metal_nut"),
        ("/d/visa/candle/Data/Images/Anomaly/000.JPG", "Data"),
        ("/d/ISIC/01/test/lesion/x.png", "01"),
    ],
)
def test_reference_word_is_fourth_last_path_component(path: str, word: str) -> None:
    assert prompt_word({"image_path": path, "class_name": "whatever"}, "reference") == word


def test_clean_words() -> None:
    assert prompt_word({"class_name": "skin_lesion"}, "clean") == "skin lesion"
    assert prompt_word({"class_name": "thyroid_nodule"}, "clean") == "thyroid nodule"
    assert prompt_word({"class_name": "polyp"}, "clean") == "polyp"
    assert prompt_word({"class_name": "metal_nut"}, "clean") == "metal nut"
    assert prompt_word({"class_name": "polyp"}, "clean", {"polyp": "colon polyp"}) == "colon polyp"


def test_bad_compat_and_short_path() -> None:
    with pytest.raises(ConfigError, match=r"compat"):
        prompt_word({"class_name": "x"}, "faithful")
    with pytest.raises(ConfigError, match=r"fewer than 4"):
        prompt_word({"image_path": "a/b.png"}, "reference")
