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


def test_reference_words_are_the_release_table() -> None:
    from medad.data.registry import reference_class_words

    assert reference_class_words() == {
        "mvtec": None,
        "mpdd": None,
        "btad": None,
        "visa": "Data",
        "isic": "01",
        "clinicdb": "01",
        "colondb": "01",
        "tn3k": "Medical_Dataset",
    }


@pytest.mark.parametrize(
    ("dataset", "class_name", "path", "word"),
    [
        ("mvtec", "metal_nut", "/u/MEDAD_DATA/mvtec/metal_nut/test/scratch/000.png", "metal_nut"),
        ("mpdd", "bracket_black", "/u/x/bracket_black/test/hole/000.png", "bracket_black"),
        ("btad", "02", "/u/MEDAD_DATA/btad/02/test/ko/0001.png", "02"),
        ("visa", "candle", "/u/visa-pytorch/candle/test/bad/000.JPG", "Data"),
        ("isic", "skin_lesion", "/u/MEDAD_DATA/isic/ISIC2016_Test/ISIC_0000003.jpg", "01"),
        ("clinicdb", "polyp", "/u/MEDAD_DATA/CVC-ClinicDB/Original/1.tif", "01"),
        ("colondb", "polyp", "/u/MEDAD_DATA/CVC-ColonDB/images/1.png", "01"),
        ("tn3k", "thyroid_nodule", "/u/MEDAD_DATA/tn3k/test-image/0001.jpg", "Medical_Dataset"),
    ],
)
def test_reference_words_do_not_depend_on_the_users_folders(
    dataset: str, class_name: str, path: str, word: str
) -> None:
    row = {"dataset": dataset, "class_name": class_name, "image_path": path}
    assert prompt_word(row, "reference") == word
    assert prompt_word(row, "reference", {class_name: "ignored in reference mode"}) == word


def test_clean_btad_words_are_words() -> None:
    for product in ("01", "02", "03"):
        assert prompt_word({"dataset": "btad", "class_name": product}, "clean") == "product"
    assert prompt_word({"dataset": "btad", "class_name": "01"}, "clean", {"01": "metal body"}) == "metal body"


def test_prompt_lists_identity() -> None:
    """The exact states and templates of the released ensemble (not only their counts)."""
    import hashlib

    from medad.models.prompts import ABNORMAL_STATES, NORMAL_STATES, PROMPT_SET_VERSION

    assert NORMAL_STATES == (
        "{}",
        "flawless {}",
        "perfect {}",
        "unblemished {}",
        "{} without flaw",
        "{} without defect",
        "{} without damage",
    )
    assert ABNORMAL_STATES == ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
    assert TEMPLATES[0] == "a bad photo of a {}." and TEMPLATES[-1] == "this is one {} in the scene."
    digest = hashlib.sha256("\n".join(TEMPLATES).encode()).hexdigest()
    assert digest == TEMPLATES_SHA256, "the template list changed: bump PROMPT_SET_VERSION and this digest"
    assert PROMPT_SET_VERSION == "ad-dinov3-ensemble-v1"


TEMPLATES_SHA256 = "b976c262921bee3ef6023d1fddd4bed3f34887e0612790be043f325f34baa3ee"
