"""Few-shot evaluation: predictions given per dataset, and the two-level bootstrap that covers the draw of the
references as well as the sampling of the images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medad.evaluation.fewshot import FewShotRun, two_level_bootstrap


def _constant(value: float):
    """A statistic that ignores the image weights: one draw's metric without image-sampling noise."""
    return lambda w: np.full((w.shape[0], 1), value)


def test_two_level_interval_covers_the_draws_spread():
    values = [0.6, 0.7, 0.9]
    reps = two_level_bootstrap(
        [_constant(v) for v in values], [np.zeros(1)] * 3, 20, n_resamples=400, seed=0, groups=None, strata=None
    )
    low, high = np.quantile(reps[:, 0], [0.025, 0.975])
    # an image-only bootstrap of the mean over draws would give a zero-width interval here
    assert high - low > 0.1
    assert values[0] <= low <= np.mean(values) <= high <= values[-1]


def test_two_level_interval_covers_the_images():
    rng = np.random.default_rng(0)
    x = rng.random(50)

    def mean(w):
        return ((w * x).sum(axis=1) / w.sum(axis=1))[:, None]

    reps = two_level_bootstrap([mean], [np.zeros(1)], 50, n_resamples=400, seed=1, groups=None, strata=None)
    assert reps.std() == pytest.approx(x.std() / np.sqrt(50), rel=0.3)


def test_predictions_per_dataset_and_fewshot_rows(tmp_path):
    """A model with one folder per dataset is evaluated on those datasets only, and its draws are averaged."""
    from medad.data import load_manifest, write_layout
    from medad.engine.scorer import score
    from medad.evaluation import evaluate
    from medad.models import create_model

    parts = []
    for name, seed in (("a", 0), ("b", 1)):
        root = write_layout(tmp_path / name, "mvtec", n_normal=3, n_abnormal=3, size=32, seed=seed, classes=["bottle"])
        parts.append(load_manifest(root, "mvtec").assign(dataset=name))
    manifest = pd.concat(parts, ignore_index=True)
    torch.manual_seed(0)
    model = create_model("ad_dinov3_tiny", image_size=32)
    score(model, manifest, tmp_path / "all", batch_size=8, progress=False)
    draws = {}
    for draw in (0, 1):
        rows = manifest[manifest["dataset"] == "b"].reset_index(drop=True)
        torch.manual_seed(draw + 1)
        other = create_model("ad_dinov3_tiny", image_size=32)
        score(other, rows, tmp_path / f"b{draw}", batch_size=8, progress=False)
        draws[f"m.1-shot.d{draw}"] = {"b": tmp_path / f"b{draw}"}
    runs = {label: FewShotRun("m", 1, d) for d, label in enumerate(draws)}
    result = evaluate(
        {"m": tmp_path / "all", **draws},
        manifest,
        tmp_path / "eval",
        metrics=["image_auroc"],
        ci={"n_resamples": 50},
        comparisons=[(label, "m") for label in draws],
        fewshot=runs,
    )
    covered = {(r["model"], r["dataset"]) for r in result["rows"]}
    assert ("m", "a") in covered and ("m.1-shot.d0", "b") in covered and ("m.1-shot.d0", "a") not in covered
    assert {c["dataset"] for c in result["comparisons"]} == {"b"}
    import json

    fewshot = json.loads((tmp_path / "eval" / "metrics.json").read_text())["fewshot"]
    one = next(r for r in fewshot if (r["shots"], r["dataset"], r["class_name"]) == (1, "b", "__pooled__"))
    per_draw = [
        r["value"] for r in result["rows"] if r["model"] in draws and r["class_name"] == "__pooled__"
    ]
    assert one["value"] == pytest.approx(np.mean(per_draw))
    assert one["ci_low"] <= one["value"] <= one["ci_high"]
    assert not any(r["dataset"] == "a" and r["shots"] == 1 for r in fewshot)
