"""The released code's epoch selection, reproduced and labelled (opt-in: ``training.epoch_sweep: true``).

The released test script scores every saved epoch's adapters on the target test set, and AVA-DINO's fork of it
keeps the best epoch by target pixel AUROC, so the published figures are probably best-epoch-on-test. medad's
headline stays the fixed last epoch (``metrics.json``). With the sweep, every epoch's checkpoint (training keeps
them all) is scored on the targets and evaluated (pixel metrics, no intervals), the best epoch by the mean over
targets of the pixel AUROC class mean is picked, and ``epoch_sweep.json`` records every epoch's figures and the
pick under the label :data:`SELECTION_LABEL`. The report shows it beside the headline; the run's leakage notes
(provenance and report) say that selection on the test data happened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medad.evaluation.paper_view import SELECTION_LABEL, SWEEP_FILE
from medad.utils.io import write_json_atomic

SWEEP_NOTE = (
    "epoch sweep: every epoch's adapters were scored on the target test data and the best epoch by target pixel "
    f"AUROC is reported separately, {SELECTION_LABEL}; the headline metrics use the fixed last epoch"
)
SWEEP_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")


def criterion(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The selection criterion: the mean over datasets of the pixel AUROC class mean (``None`` if undefined)."""
    values = [r["value"] for r in rows if r["metric"] == "pixel_auroc" and r["class_name"] == "__mean__"]
    if not values or any(v is None for v in values):
        return None
    return float(sum(values) / len(values))


def epoch_checkpoints(train_folder: Path) -> list[Path]:
    """A training stage's per-epoch checkpoint folders, in epoch order."""
    found = [p for p in (train_folder / "checkpoints").glob("epoch_*") if p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def select_epoch(per_epoch: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best epoch by :func:`criterion` (the earliest on a tie); ``None`` when no epoch has a value."""
    scored = [e for e in per_epoch if e["criterion"] is not None]
    return max(scored, key=lambda e: (e["criterion"], -e["epoch"]), default=None)


def run_epoch_sweep(
    runs: Sequence[Any],
    train_root: Path,
    out: Path,
    score_epoch: Callable[[Any, Path, Path], None],
    evaluate_epoch: Callable[[str, Path, Path], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Score and evaluate every epoch of every trained model run; write ``out/epoch_sweep.json``.

    Args:
        runs: the protocol's model runs (those with a ``train_key`` are swept).
        train_root: the stage store's ``train`` folder.
        out: the evaluation folder the sweep writes into (predictions under ``out/epoch_sweep/<label>/``).
        score_epoch: ``score_epoch(run, checkpoint, predictions_folder)`` scores the targets with a checkpoint.
        evaluate_epoch: ``evaluate_epoch(label, predictions_folder, evaluation_folder)`` returns metric rows.

    Returns:
        The content of ``epoch_sweep.json``.
    """
    from medad.evaluation.paper_view import paper_view

    result: dict[str, Any] = {
        "label": SELECTION_LABEL,
        "criterion": "mean over the targets of the pixel AUROC class mean (the rule of AVA-DINO's fork of the "
        "released test script)",
        "headline": "the fixed last epoch, in metrics.json; this selection is never the headline",
        "models": {},
    }
    for run in runs:
        if getattr(run, "train_key", None) is None:
            continue
        checkpoints = epoch_checkpoints(train_root / run.train_key)
        per_epoch = []
        for checkpoint in checkpoints:
            folder = out / "epoch_sweep" / run.label / checkpoint.name
            score_epoch(run, checkpoint, folder / "predictions")
            rows = evaluate_epoch(run.label, folder / "predictions", folder / "evaluation")
            per_epoch.append(
                {
                    "epoch": int(checkpoint.name[6:]),
                    "criterion": criterion(rows),
                    "paper_view": paper_view(rows)["measured"],
                }
            )
        best = select_epoch(per_epoch)
        pinned = getattr(run, "score_epoch", None)  # the headline's epoch: the pinned one, else the last
        fixed = next((e for e in per_epoch if e["epoch"] == pinned), per_epoch[-1] if per_epoch else None)
        result["models"][run.label] = {
            "fixed_epoch": None if fixed is None else fixed["epoch"],
            "fixed_criterion": None if fixed is None else fixed["criterion"],
            "best_epoch": None if best is None else best["epoch"],
            "best_criterion": None if best is None else best["criterion"],
            "per_epoch": per_epoch,
        }
    write_json_atomic(out / SWEEP_FILE, result)
    return result
