"""The protocol / command-line misuse cases of the robustness sweep (tests/robustness/cases_protocols.py): each
ends with exit 2 and one ``error:`` line naming the key or file, before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

harness = pytest.importorskip("tests.robustness.harness")
from tests.robustness.cases_protocols import CASES  # noqa: E402

FAST = [c for c in CASES if c.fast]


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_protocol_misuse_ends_in_one_clear_error(case: object, tmp_path: Path) -> None:
    setup, outcome = harness.run_case(case, tmp_path)
    verdict = harness.judge(case, setup, outcome)
    assert verdict.clean, f"{verdict.why}\nstderr: {outcome.stderr}"


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 broken zip"], ids=["text", "zip"])
def test_text_weights_file_that_is_neither_state_dict_nor_torchscript(content: bytes, tmp_path: Path) -> None:
    from medad.errors import WeightsError
    from medad.models.weights import build_text_tower

    junk = tmp_path / "text.pt"
    junk.write_bytes(content)
    overrides = {"embed_dim": 32, "text_cfg": {"width": 32, "heads": 2, "layers": 1}}
    unreadable = r"text\.pt' is not a readable safetensors, torch pickle or TorchScript file .* download it again"
    with pytest.raises(WeightsError, match=unreadable):
        build_text_tower("ViT-B-32", weights=junk, overrides=overrides)


def test_threshold_specs_are_checked_without_reading_folders() -> None:
    from medad.errors import ExportError
    from medad.export.thresholds import check_threshold_spec, fixed_threshold

    assert check_threshold_spec("fixed:0.5") == ("fixed", "0.5")
    assert check_threshold_spec("percentile:99:some/dir") == ("percentile", "99:some/dir")
    assert check_threshold_spec("F1") == ("f1", "")
    for bad, said in [
        ("fixed:abc", "'abc' is not a number"),
        ("fixed:-1", "would mark every pixel"),
        ("fixed:0", "would mark every pixel"),
        ("fixed:1.5", "would mark no pixel"),
        ("fixed:nan", "not a finite number"),
        ("percentile:150:dir", "must be in (0, 100]"),
        ("percentile:x:dir", "'x' is not a percentile"),
        ("percentile:99", "names no normals folder"),
        ("otsu", "unknown threshold 'otsu'"),
    ]:
        with pytest.raises(ExportError, match=None) as info:
            check_threshold_spec(bad)
        assert said in str(info.value), (bad, str(info.value))
    assert fixed_threshold(1.0).value == 1.0
