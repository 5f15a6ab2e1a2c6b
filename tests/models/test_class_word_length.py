"""A class word longer than the CLIP text context is refused, naming the limit in tokens, instead of being cut
silently (a 20,400- and a 21,000-character word used to give identical features): by the text encoders, by
``medad score --class-word`` and by ``medad validate`` for a protocol's class words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.errors import ConfigError
from medad.models import create_model
from medad.models.prompts import CONTEXT_LENGTH, _clip_tokenizer, class_word_problem, prompt_sentences
from medad.models.winclip import winclip_sentences
from tests.cli import run_medad


def test_the_longest_word_that_fits_is_never_cut_and_one_more_token_is_refused() -> None:
    tokenizer = _clip_tokenizer()
    fits = " ".join(["skin"] * 62)  # "skin" is one CLIP token
    assert class_word_problem(fits) is None
    for group in prompt_sentences(fits):
        for sentence in group:  # the tokenizer's own output still ends with the end token: nothing was cut
            assert int(tokenizer([sentence])[0].count_nonzero()) <= CONTEXT_LENGTH
            assert int(tokenizer([sentence])[0][-1]) in (0, tokenizer.eot_token_id)
    problem = class_word_problem(fits + " skin")
    assert problem is not None and "63 tokens long" in problem and "reads 77 tokens" in problem
    assert "at most 62 tokens" in problem
    assert class_word_problem("skin lesion") is None and class_word_problem("lésion cutanée") is None
    assert class_word_problem(fits + " skin", winclip_sentences) is not None  # WinCLIP's own templates


def test_text_encoders_refuse_a_word_longer_than_their_context() -> None:
    word = "x" * 20_400
    model = create_model("ad_dinov3_tiny", text_disk_cache=False)
    with pytest.raises(ConfigError, match=r"class word 'x{40}\.\.\. \(20400 characters\)' is \d+ tokens long.*77"):
        model.text_encoder.encode_word(word)
    import torch

    with pytest.raises(ConfigError, match=r"reads 77 tokens per sentence"):
        create_model("winclip_tiny").text_features([word], torch.device("cpu"))


def test_score_refuses_a_long_class_word(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    args = ["score", str(tmp_path / "images"), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out"),
            "--class-word", "lesion " * 100, "--no-heatmaps"]  # fmt: skip
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "error: --class-word (class_word): class word 'lesion lesion" in text, text
    assert "77 tokens" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()  # refused with the other settings, before OUT (and its lock) is made


def test_validate_refuses_a_long_protocol_class_word(tmp_path: Path, monkeypatch, capsys) -> None:
    protocol = tmp_path / "study.yaml"
    words = " ".join(["word"] * 5000)
    protocol.write_text(
        "name: tiny\nmodels:\n  - name: clean\n    model: ad_dinov3_tiny\n    class_words:\n      lesions:\n"
        f"        skin_lesion: {words}\ntraining:\n  datasets:\n    - name: industrial\n      kind: mvtec\n"
        "      root: data/industrial\n  epochs: 2\n  lr: 1.0e-3\ntargets:\n  - name: lesions\n    kind: isic\n"
        "    root: data/lesions\n",
        encoding="utf-8",
    )
    code, text = run_medad(monkeypatch, capsys, "validate", str(protocol), "--structure-only")
    assert code == 2 and "models[0].class_words.lesions.skin_lesion" in text, text
    assert "5000 tokens long" in text and "77 tokens" in text and "Traceback" not in text


LONG_WORD_MESSAGE = (  # what the refusal said before the tokenizer-free path existed: it must not change
    "class word 'skin skin skin skin skin skin skin skin ... (314 characters)' is 63 tokens long, but the text "
    "encoder reads 77 tokens per sentence and the longest prompt template takes 15 of them (start and end "
    "included), so the word would be cut silently; use a class word of at most 62 tokens (a few words)"
)


class CountingTokenizer:
    """open_clip's tokenizer, counting the words it encodes."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return list(_clip_tokenizer().encode(text))


@pytest.mark.parametrize("word", ["skin lesion", "lésion cutanée", "Hautläsion", "皮膚病変", "polyp"])
def test_a_word_whose_bytes_fit_is_accepted_without_a_tokenizer(word: str, monkeypatch) -> None:
    """A CLIP BPE token holds at least one UTF-8 byte: a word short in bytes (any script) needs no tokenizer, so
    ``medad validate`` loads neither open_clip nor torch for it."""
    import medad.models.prompts as prompts

    def no_tokenizer() -> None:
        raise AssertionError("the tokenizer was loaded")

    monkeypatch.setattr(prompts, "_clip_tokenizer", no_tokenizer)
    assert class_word_problem(word) is None
    assert class_word_problem(word, winclip_sentences) is None


@pytest.mark.parametrize("word", [" ".join(["skin"] * 8), "é" * 20, "&nGt;"])
def test_a_word_that_could_exceed_the_limit_is_tokenized(word: str) -> None:
    """A word whose bytes could exceed the limit (or holding ``&``, an HTML entity the tokenizer's clean-up may
    lengthen) is measured by the real tokenizer, which accepts these."""
    tokenizer = CountingTokenizer()
    assert class_word_problem(word, tokenizer=tokenizer) is None
    assert tokenizer.calls > 0


def test_the_long_word_refusal_is_unchanged() -> None:
    tokenizer = CountingTokenizer()
    assert class_word_problem(" ".join(["skin"] * 63), tokenizer=tokenizer) == LONG_WORD_MESSAGE
    assert tokenizer.calls > 0
