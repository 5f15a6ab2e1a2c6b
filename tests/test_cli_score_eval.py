"""`medad score` and `medad eval` say what is true: thresholds in the score range, the class word's real default,
one progress-bar style shared with `medad run`."""

from __future__ import annotations

import pytest

from tests.cli import run_medad


@pytest.mark.parametrize("value", ["-1", "2", "0", "nan"])
def test_eval_refuses_a_threshold_outside_the_score_range(value, tmp_path, monkeypatch, capsys) -> None:
    code, text = run_medad(monkeypatch, capsys, "eval", str(tmp_path), "--data", str(tmp_path), "--threshold", value)
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, text
    assert lines[0].startswith("error: --threshold") and "(0, 1]" in lines[0] and "--threshold 0.5" in lines[0]


def test_score_help_names_the_class_word_default_of_the_dataset_kind(monkeypatch, capsys) -> None:
    code, text = run_medad(monkeypatch, capsys, "score", "--help")
    flat = " ".join(text.replace("│", " ").split())
    assert code == 0
    assert "(default: 'object')" not in flat
    assert "'skin lesion' with --kind isic" in flat and "'object' for plain files" in flat
    assert "--seed" in flat


def test_score_refuses_bad_settings_before_making_its_output_folder(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    code, text = run_medad(
        monkeypatch, capsys, "score", str(tmp_path), "--model", "ad_dinov3_tiny", "--out", str(out), "--batch-size", "0"
    )
    assert code == 2 and "batch_size=0 must be >= 1; pass e.g. --batch-size 8" in text and "Traceback" not in text
    assert not out.exists()  # no folder holding only a lock file
