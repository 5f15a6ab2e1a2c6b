"""Statistics over metrics: bootstrap CIs, DeLong's test, paired per-image tests, multiple-comparison correction.

Names are imported on first use (PEP 562), so ``medad.stats.defaults`` - read by the command line to show its
defaults - loads without numpy / scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from medad.stats.defaults import (
        CI_LEVEL,
        CI_METHOD,
        CI_RESAMPLES,
        CI_SEED,
        check_ci_settings,
        resampling_p_value,
    )
    from medad.stats.delong import delong_components, delong_covariance, delong_test
    from medad.stats.multitest import adjust_pvalues
    from medad.stats.paired import rank_biserial, sign_flip_test, wilcoxon_test

_SOURCES = {
    "bootstrap": (
        "BootstrapResult",
        "PixelHistograms",
        "bootstrap_ci",
        "image_statistic",
        "jackknife_weights",
        "mean_statistic",
        "paired_bootstrap_test",
        "resample_weights",
    ),
    "defaults": ("CI_LEVEL", "CI_METHOD", "CI_RESAMPLES", "CI_SEED", "check_ci_settings", "resampling_p_value"),
    "delong": ("delong_components", "delong_covariance", "delong_test"),
    "multitest": ("adjust_pvalues",),
    "paired": ("rank_biserial", "sign_flip_test", "wilcoxon_test"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "CI_LEVEL",
    "CI_METHOD",
    "CI_RESAMPLES",
    "CI_SEED",
    "BootstrapResult",
    "PixelHistograms",
    "adjust_pvalues",
    "bootstrap_ci",
    "check_ci_settings",
    "delong_components",
    "delong_covariance",
    "delong_test",
    "image_statistic",
    "jackknife_weights",
    "mean_statistic",
    "paired_bootstrap_test",
    "rank_biserial",
    "resample_weights",
    "resampling_p_value",
    "sign_flip_test",
    "wilcoxon_test",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule on first access."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'medad.stats' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medad.stats.{module}"), name)
    globals()[name] = value
    return value
