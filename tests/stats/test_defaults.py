"""One definition of the statistics defaults, resampling p-values that respect 1/(B+1), impossible settings refused."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from medad.errors import ConfigError
from medad.stats import (
    CI_LEVEL,
    CI_METHOD,
    CI_RESAMPLES,
    CI_SEED,
    bootstrap_ci,
    check_ci_settings,
    mean_statistic,
    paired_bootstrap_test,
    sign_flip_test,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_paired_bootstrap_p_value_is_never_below_one_over_b_plus_one() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.05, 40)
    b = rng.normal(0.0, 0.05, 40)
    (res,) = paired_bootstrap_test(mean_statistic(a), mean_statistic(b), 40, n_resamples=200, seed=0)
    assert res["n_valid"] == 200
    assert res["p_value"] == pytest.approx(2 / 201)  # every resampled difference > 0: (0 + 1) / (200 + 1), two-sided
    assert res["settings"]["n_resamples"] == 200


def test_sign_flip_monte_carlo_p_value_floor() -> None:
    d = np.linspace(1.0, 2.0, 30)
    res = sign_flip_test(d, np.zeros(30), n_resamples=99, seed=0)
    assert not res["exact"] and res["p_value"] == pytest.approx(1 / 100)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-5, 0.95, "bca"), r"n_resamples must be a whole number >= 0.*got -5"),
        ((2.5, 0.95, "bca"), r"n_resamples must be a whole number"),
        ((100, 95, "bca"), r"level must be strictly between 0 and 1, got 95.*not a percentage"),
        ((100, 0.0, "bca"), r"level must be strictly between 0 and 1"),
        ((100, float("nan"), "bca"), r"level must be strictly between 0 and 1"),
        ((100, 0.9, "student"), r"method must be one of bca, percentile"),
    ],
)
def test_impossible_settings_are_refused(args, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_ci_settings(*args)
    with pytest.raises(ConfigError):
        bootstrap_ci(mean_statistic(np.ones(4)), 4, n_resamples=args[0], level=args[1], method=args[2])


def test_protocol_schema_and_cli_use_the_same_defaults() -> None:
    import inspect

    from medad.cli import eval_command
    from medad.evaluation.intervals import DEFAULT_CI
    from medad.protocols.schema import StatisticsSpec

    spec = StatisticsSpec()
    assert (spec.ci, spec.resamples, spec.confidence, spec.seed) == (CI_METHOD, CI_RESAMPLES, CI_LEVEL, CI_SEED)
    assert DEFAULT_CI == {"method": CI_METHOD, "n_resamples": CI_RESAMPLES, "level": CI_LEVEL, "seed": CI_SEED}
    params = inspect.signature(eval_command).parameters
    assert params["ci_resamples"].default == CI_RESAMPLES and params["ci_method"].default == CI_METHOD
    assert params["confidence"].default == CI_LEVEL and params["seed"].default == CI_SEED
    assert inspect.signature(bootstrap_ci).parameters["method"].default == CI_METHOD


def test_docs_state_the_code_defaults() -> None:
    protocols = (DOCS / "protocols.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(ci|confidence|resamples|seed)` \| `?([^`|]+?)`? \|", protocols, re.M))
    assert table == {"ci": CI_METHOD, "confidence": f"{CI_LEVEL:g}", "resamples": str(CI_RESAMPLES), "seed": "0"}
    metrics = (DOCS / "metrics.md").read_text(encoding="utf-8")
    stated = re.search(
        r"Defaults \(`medad\.stats\.defaults`\): method `(\w+)`, (\d+) resamples, confidence ([\d.]+), seed (\d+)",
        metrics,
    )
    assert stated is not None, "docs/metrics.md must state the defaults in the tested sentence"
    assert stated.groups() == (CI_METHOD, str(CI_RESAMPLES), f"{CI_LEVEL:g}", str(CI_SEED))
    other = {"bca": "percentile", "percentile": "bca"}[CI_METHOD]
    for text in (protocols, metrics):
        assert not re.search(rf"(\*\*{other}\*\*|`{other}`) \(default", text, re.I)
        assert not re.search(rf"\b(?!{CI_RESAMPLES}\b)\d+ resamples by default", text)


def test_protocol_refuses_impossible_statistics() -> None:
    from medad.protocols import validate_protocol

    protocol = Path(__file__).resolve().parents[2] / "protocols" / "demo.yaml"
    for override, key in (("resamples=-5", "statistics.resamples"), ("confidence=95", "statistics.confidence")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            validate_protocol(protocol, structure_only=True, overrides=[f"statistics.{override}"])


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--ci-resamples", "-5", "--ci-resamples must be a whole number >= 0"),
        ("--confidence", "95", "--confidence must be strictly between 0 and 1"),
        ("--ci-method", "student", "--ci-method must be one of"),
    ],
)
def test_cli_eval_refuses_before_reading_anything(tmp_path, monkeypatch, capsys, option, value, match) -> None:
    from medad.cli import main

    argv = ["medad", "eval", str(tmp_path / "no-predictions"), "--data", str(tmp_path / "no-data"), option, value]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_delong_with_zero_variance_does_not_claim_p_zero() -> None:
    from medad.stats import delong_test

    y = np.array([0, 0, 1, 1])
    res = delong_test(y, np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.9, 0.8, 0.2, 0.1]))  # AUROC 1 vs 0
    assert res["estimate"] == 1.0 and res["se"] == 0.0
    assert np.isnan(res["p_value"])
