"""Bootstrap coverage and resampling, DeLong on hand-derived and brute-force values, paired tests, corrections."""

from __future__ import annotations

import numpy as np
import pytest

from medad.errors import ConfigError, DataError
from medad.metrics import component_sizes, image_auroc, pixel_metrics
from medad.stats import (
    PixelHistograms,
    adjust_pvalues,
    bootstrap_ci,
    delong_components,
    delong_covariance,
    delong_test,
    image_statistic,
    mean_statistic,
    rank_biserial,
    resample_weights,
    sign_flip_test,
    wilcoxon_test,
)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_mean_ci_covers_true_mean(method: str) -> None:
    # 200 independent normal samples (n=40, true mean 0); a 95% interval should cover 0 about 95% of the time.
    # With 200 trials the binomial sd of the coverage is ~1.5%, so [0.88, 0.99] is a >4-sd band.
    hits = 0
    for trial in range(200):
        x = np.random.default_rng(1000 + trial).normal(0.0, 1.0, 40)
        (res,) = bootstrap_ci(mean_statistic(x), x.size, n_resamples=1000, seed=trial, method=method)
        hits += res.ci_low <= 0.0 <= res.ci_high
        assert res.estimate == pytest.approx(x.mean())
    assert 0.88 <= hits / 200 <= 0.99


def test_resample_weights_respect_strata_and_clusters() -> None:
    rng = np.random.default_rng(0)
    strata = np.array([0] * 5 + [1] * 3)
    w = resample_weights(8, 50, rng, strata=strata)
    assert np.all(w[:, :5].sum(axis=1) == 5) and np.all(w[:, 5:].sum(axis=1) == 3)
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    w = resample_weights(6, 50, rng, groups=groups)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    assert set(np.unique(w[:, 0] + w[:, 2] + w[:, 3])) == {3.0}


def test_bootstrap_is_seeded_and_records_settings() -> None:
    x = np.random.default_rng(0).normal(size=30)
    a = bootstrap_ci(mean_statistic(x), 30, n_resamples=300, seed=5)[0]
    b = bootstrap_ci(mean_statistic(x), 30, n_resamples=300, seed=5)[0]
    assert a == b
    assert a.to_dict()["n_resamples"] == 300 and a.seed == 5 and a.unit == "image"
    with pytest.raises(ConfigError):
        bootstrap_ci(mean_statistic(x), 30, method="basic")


def test_image_and_pixel_statistics() -> None:
    rng = np.random.default_rng(3)
    scores, labels = np.round(rng.random(50), 2), rng.integers(0, 2, 50)
    assert image_statistic(scores, labels)(np.ones((1, 50)))[0, 0] == pytest.approx(image_auroc(scores, labels))
    res = bootstrap_ci(image_statistic(scores, labels), 50, n_resamples=400, strata=labels, stratified_by="label")
    assert res[0].ci_low <= res[0].estimate <= res[0].ci_high and res[0].stratified_by == "label"
    maps = rng.random((6, 16, 16)).astype(np.float32)
    masks = np.zeros((6, 16, 16), bool)
    masks[:3, 4:9, 4:9] = True
    maps[masks] += 0.4
    hist = PixelHistograms()
    sizes, n_comp = component_sizes(masks)
    hist.update(maps, sizes, n_comp)
    exact = pixel_metrics(maps, masks)
    binned = hist.statistic(np.arange(6))(np.ones((1, 6)))[0]
    for value, key in zip(binned, ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"), strict=True):
        assert value == pytest.approx(exact[key], abs=0.02)
    coarse = hist.statistic(np.arange(6), max_bins=16)(np.ones((1, 6)))[0]
    assert coarse[0] == pytest.approx(exact["pixel_auroc"], abs=0.05)
    est = np.array([exact[k] for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")])
    out = bootstrap_ci(hist.statistic(np.arange(6)), 6, n_resamples=300, estimate=est, method="percentile")
    assert [r.estimate for r in out] == pytest.approx(est.tolist())


def test_delong_hand_derived_example() -> None:
    # Positives X = (0.9, 0.6), negatives Y = (0.7, 0.2). Placement values by hand: V10 = (1, 0.5),
    # V01 = (0.5, 1); AUC = 3/4; var = s2(V10)/2 + s2(V01)/2 = 0.125/2 + 0.125/2 = 0.125 (DeLong 1988, eq. 4-5).
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.6, 0.7, 0.2])
    auc, v10, v01 = delong_components(labels, scores[None])
    assert auc[0] == pytest.approx(0.75)
    assert v10[0].tolist() == [1.0, 0.5] and v01[0].tolist() == [0.5, 1.0]
    assert delong_covariance(labels, scores[None])[1][0, 0] == pytest.approx(0.125)


def test_delong_equals_brute_force_placement_values() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 60).astype(bool)
    a = np.round(rng.normal(y * 1.0, 1.0), 1)
    b = np.round(rng.normal(y * 0.5, 1.0), 1)

    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    brute = []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        v10 = np.array([psi(x, neg).mean() for x in pos])
        v01 = np.array([psi(pos, z).mean() for z in neg])
        brute.append((v10, v01))
    s10 = np.cov(np.stack([brute[0][0], brute[1][0]]))
    s01 = np.cov(np.stack([brute[0][1], brute[1][1]]))
    cov = s10 / y.sum() + s01 / (~y).sum()
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    res = delong_test(y, a, b)
    assert res["auc_a"] == pytest.approx(brute[0][0].mean()) and res["auc_a"] == pytest.approx(image_auroc(a, y))
    assert res["se"] == pytest.approx(np.sqrt(var))
    assert res["ci_low"] < res["estimate"] < res["ci_high"]
    same = delong_test(y, a, a)
    assert same["p_value"] == 1.0 and same["estimate"] == 0.0
    with pytest.raises(DataError):
        delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])


def test_paired_tests() -> None:
    assert rank_biserial(np.array([1.0, 2.0, -3.0])) == pytest.approx(0.0)
    assert wilcoxon_test([1, 2, 3], [1, 2, 3])["p_value"] == 1.0
    res = sign_flip_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert res["exact"] and res["p_value"] == pytest.approx(2 / 8)
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    w = wilcoxon_test(a + 1.0, a)
    assert w["p_value"] < 1e-6 and w["effect_size"] == pytest.approx(1.0)
    mc = sign_flip_test(a + 0.01 * rng.normal(size=40), a, n_resamples=2000, seed=1)
    assert not mc["exact"] and 0.0 < mc["p_value"] <= 1.0


def test_multiple_comparison_corrections() -> None:
    # Hand-derived: Holm sorted (.01,.03,.04) -> (.03,.06,.04) -> running max (.03,.06,.06);
    # BH (.01*3/1, .03*3/2, .04*3/3) = (.03,.045,.04) -> running min from the top (.03,.04,.04).
    p = [0.01, 0.04, 0.03, float("nan")]
    holm = adjust_pvalues(p, "holm")
    bh = adjust_pvalues(p, "bh")
    assert holm[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(holm[3])
    assert bh[:3] == pytest.approx([0.03, 0.04, 0.04])
    with pytest.raises(ConfigError):
        adjust_pvalues(p, "hs")
