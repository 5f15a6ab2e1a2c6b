"""Statistics over metrics: bootstrap CIs, DeLong's test, paired per-image tests, multiple-comparison correction."""

from medad.stats.bootstrap import (
    BootstrapResult,
    PixelHistograms,
    bootstrap_ci,
    image_statistic,
    jackknife_weights,
    mean_statistic,
    paired_bootstrap_test,
    resample_weights,
)
from medad.stats.delong import delong_components, delong_covariance, delong_test
from medad.stats.multitest import adjust_pvalues
from medad.stats.paired import rank_biserial, sign_flip_test, wilcoxon_test

__all__ = [
    "BootstrapResult",
    "PixelHistograms",
    "adjust_pvalues",
    "bootstrap_ci",
    "delong_components",
    "delong_covariance",
    "delong_test",
    "image_statistic",
    "jackknife_weights",
    "mean_statistic",
    "paired_bootstrap_test",
    "rank_biserial",
    "resample_weights",
    "sign_flip_test",
    "wilcoxon_test",
]
