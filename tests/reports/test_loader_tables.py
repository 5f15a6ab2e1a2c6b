"""Parsing of the evaluation contract files and the display formats of the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medad.errors import ConfigError
from medad.reports import format_result, load_evaluation
from medad.reports.cases import named_predictions, parse_keyed_paths
from medad.reports.tables import confidence_percent, fmt_p, settings_table
from medad.utils.io import write_json_atomic


def _metrics(folder: Path) -> None:
    row = {"model": "m", "dataset": "d", "class_name": "c", "metric": "image_auroc", "value": 0.5,
           "ci_low": 0.4, "ci_high": 0.6, "n_images": 3, "status": "ok", "reason": None}  # fmt: skip
    write_json_atomic(folder / "metrics.json", {"settings": {}, "rows": [row]})


@pytest.mark.parametrize("layout", ["list", "wrapped", "nested", "pairs"])
def test_curve_layouts(tmp_path: Path, layout: str) -> None:
    _metrics(tmp_path)
    roc = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0], "auc": 0.7}
    entry = {"model": "m", "dataset": "d", "class_name": "c", "roc": roc, "pro": {"fpr": [0, 0.3], "pro": [0, 1]}}
    data = {
        "list": [entry],
        "wrapped": {"curves": [entry]},
        "nested": {"m": {"d": {"c": {"roc": roc, "pro": {"fpr": [0, 0.3], "pro": [0, 1]}}}}},
        "pairs": [
            {
                "model": "m",
                "dataset": "d",
                "class_name": "c",
                "roc": [[0, 0], [0.5, 0.8], [1, 1]],
                "pro": [[0, 0], [0.3, 1]],
            }
        ],
    }[layout]
    write_json_atomic(tmp_path / "curves.json", data)
    curves = load_evaluation(tmp_path).curves[("m", "d", "c")]
    assert set(curves) == {"roc", "pro"}
    np.testing.assert_allclose(curves["roc"].y, [0.0, 0.8, 1.0])
    np.testing.assert_allclose(curves["pro"].x, [0.0, 0.3])
    assert curves["roc"].area == (None if layout == "pairs" else 0.7)


def test_optional_files_absent(tmp_path: Path) -> None:
    _metrics(tmp_path)
    evaluation = load_evaluation(tmp_path)
    assert evaluation.per_image.empty and evaluation.comparisons.empty and evaluation.curves == {}


def test_formats() -> None:
    assert format_result({"value": 0.91234, "ci_low": 0.8, "ci_high": 0.95, "status": "ok"}) == "0.912 [0.800, 0.950]"
    assert format_result({"value": 0.5, "ci_low": None, "ci_high": None, "status": "ok"}) == "0.500"
    assert format_result({"value": None, "status": "not_applicable", "reason": "no normal images"}) == (
        "n/a (no normal images)"
    )
    assert fmt_p(0.012345) == "0.0123" and fmt_p(1e-7) == "< 0.0001" and fmt_p(None) == ""
    settings = {"ci": {"method": "bca", "level": 0.9, "seed": 3}, "implementation": "medad.metrics/1",
                "manifest": "/data/DOE/x.csv", "zeta": "runs/DOE/y.csv"}  # fmt: skip
    table = settings_table(settings)
    assert table["setting"].tolist() == ["CI method", "confidence level", "seed", "metric implementation version",
                                         "manifest", "zeta"]  # fmt: skip
    assert table["value"].tolist() == ["bca", "0.9", "3", "medad.metrics/1", "[path omitted]", "[path omitted]"]
    assert confidence_percent(settings) == "90%" and confidence_percent({}) == "95%"


def test_parse_keyed_paths() -> None:
    assert parse_keyed_paths([], "--x") is None
    assert parse_keyed_paths(["a=/p/q", "b=r"], "--x") == {"a": Path("/p/q"), "b": Path("r")}
    assert parse_keyed_paths(["/p/a=b"], "--x") == [Path("/p/a=b")]
    with pytest.raises(ConfigError, match="not a mix"):
        parse_keyed_paths(["a=/p", "/q"], "--x")


def test_named_predictions_take_the_recorded_model_name_and_refuse_a_clash(tmp_path: Path) -> None:
    recorded, bare = tmp_path / "pred_a", tmp_path / "pred_b"
    write_json_atomic(recorded / "meta.json", {"model": {"name": "winclip_tiny"}})
    bare.mkdir()
    assert named_predictions([str(recorded), f"mine={bare}", f"{tmp_path}/pred_b/."]) == {
        "winclip_tiny": recorded,
        "mine": bare,
        "pred_b": bare,  # no meta.json: the folder's own name, resolved
    }
    with pytest.raises(ConfigError, match="same model name; name them MODEL=DIR"):
        named_predictions([str(recorded), f"winclip_tiny={bare}"])
