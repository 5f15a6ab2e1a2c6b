"""Evaluation statistics that do not overstate: p-value floor, resamples recorded, the unit actually used, named
aggregates, impossible settings refused before any work."""

from __future__ import annotations

import json

import pytest

from medad.errors import ConfigError
from medad.evaluation import evaluate
from tests.evaluation.test_evaluate import _setup


def _reader(masks):
    return lambda row: masks[int(row["image_path"].split("/")[-1][:-4])]


def test_comparisons_p_value_floor_and_resamples(tmp_path) -> None:
    manifest, masks, _ = _setup(tmp_path)
    preds = {"good": tmp_path / "good", "weak": tmp_path / "weak"}
    out = tmp_path / "eval"
    evaluate(preds, manifest, out, ci={"n_resamples": 200, "seed": 1}, mask_reader=_reader(masks))
    comps = json.loads((out / "comparisons.json").read_text())
    boot = [c for c in comps if c["test"] == "paired_bootstrap"]
    assert boot and all(c["n_resamples"] == 200 for c in boot)
    assert all(c["p_value"] >= 1 / 201 for c in boot)  # never 0.0, whatever the separation
    assert min(c["p_value"] for c in boot) == pytest.approx(2 / 201)  # "good" beats "weak" in every resample
    assert all(c["n_resamples"] is None for c in comps if c["test"] in ("delong", "wilcoxon"))
    assert all(c["ci_n_resamples"] == 200 for c in comps if c["test"] == "wilcoxon")


def test_settings_state_the_unit_actually_used_and_aggregates_are_named(tmp_path) -> None:
    manifest, masks, _ = _setup(tmp_path)
    preds = {"good": tmp_path / "good"}
    evaluate(preds, manifest, tmp_path / "img", ci={"n_resamples": 30}, mask_reader=_reader(masks))
    doc = json.loads((tmp_path / "img" / "metrics.json").read_text())
    ci = doc["settings"]["ci"]
    assert ci["resampling_unit"] == "image"  # every group_id is unique: images were resampled
    assert "group_id" not in json.dumps(ci)
    assert "by label" in ci["stratification"] and ci["method_used"].startswith("bca")
    aggregates = {(r["class_name"], r["aggregate"]) for r in doc["rows"]}
    assert aggregates == {("a", "class"), ("b", "class"), ("__mean__", "class_mean"), ("__pooled__", "pooled")}
    assert set(doc["settings"]["aggregates"]) == {"class", "class_mean", "pooled"}
    assert "macro" in doc["settings"]["aggregates"]["class_mean"] and "micro" in doc["settings"]["aggregates"]["pooled"]

    clustered = manifest.assign(group_id=[f"p{i // 2}" for i in range(len(manifest))])
    evaluate(preds, clustered, tmp_path / "grp", ci={"n_resamples": 30}, mask_reader=_reader(masks))
    ci = json.loads((tmp_path / "grp" / "metrics.json").read_text())["settings"]["ci"]
    assert ci["resampling_unit"] == "group_id clusters" and "label" not in ci["stratification"].split("__mean__")[0]

    evaluate(preds, manifest, tmp_path / "off", ci={"n_resamples": 0}, mask_reader=_reader(masks))
    ci = json.loads((tmp_path / "off" / "metrics.json").read_text())["settings"]["ci"]
    assert ci["resampling_unit"].startswith("none")


@pytest.mark.parametrize(
    ("ci", "match"),
    [({"n_resamples": -5}, r"ci\['n_resamples'\] must be"), ({"level": 1.5}, r"ci\['level'\] must be")],
)
def test_impossible_ci_refused_before_reading_masks(tmp_path, ci, match) -> None:
    manifest, _, _ = _setup(tmp_path)

    def reader(row):
        raise AssertionError("no mask may be read before the settings are checked")

    with pytest.raises(ConfigError, match=match):
        evaluate({"good": tmp_path / "good"}, manifest, tmp_path / "e", ci=ci, mask_reader=reader)
