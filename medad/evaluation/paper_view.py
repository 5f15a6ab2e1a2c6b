"""The paper's table: per target dataset, the four pixel metrics as the class mean, in the paper's order, with
the published figures of AD-DINOv3 and its peers beside them (quoted, never re-measured).

The measured view is built from an evaluation's rows (the ``__mean__`` class of each model and dataset) and is
written into ``metrics.json`` under ``paper_view``; the report shows it next to :data:`PUBLISHED`. Values are in
percent (x 100), as papers print them. Datasets are matched by their name in the evaluation (``mvtec``,
``visa``, ... as the paper protocols name them); others follow in alphabetical order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medad.metrics.aggregate import MEAN

SELECTION_LABEL = "selected on the test data (optimistic), as the released code does"
"""How a figure picked on the test data (the released code's best epoch) is labelled wherever it is shown."""
SWEEP_FILE = "epoch_sweep.json"
"""The epoch sweep's file in an evaluation folder (written by ``medad.protocols.epoch_sweep``)."""

PAPER_DATASETS: tuple[tuple[str, str, str], ...] = (
    ("mvtec", "MVTec AD", "industrial"),
    ("visa", "VisA", "industrial"),
    ("btad", "BTAD", "industrial"),
    ("mpdd", "MPDD", "industrial"),
    ("isic", "ISIC", "medical"),
    ("colondb", "CVC-ColonDB", "medical"),
    ("clinicdb", "CVC-ClinicDB", "medical"),
    ("tn3k", "TN3K", "medical"),
)
"""(evaluation name, display name, domain) in the order of the release's dataset list (its README)."""

PAPER_METRICS: tuple[tuple[str, str], ...] = (
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_f1_max", "pixel F1-max"),
    ("aupro", "AUPRO"),
    ("pixel_ap", "pixel AP"),
)

PUBLISHED_LABEL = "published, not re-measured"

PUBLIC_TEST_IMAGES: dict[str, int] = {
    "mvtec": 1725,
    "visa": 2162,
    "btad": 741,
    "mpdd": 458,
    "isic": 379,
    "colondb": 380,
    "clinicdb": 612,
    "tn3k": 614,
}
"""Test images of each public dataset as the papers evaluate it (docs/datasets.md): a measured row with another
count is not that dataset (a synthetic copy, a subset or a user's own folder named like it)."""


def comparability(dataset: str, n_images: int | None, random_weights: bool) -> str:
    """Whether a measured row may be read beside the published figures, and if not why, in a few words."""
    reasons = []
    if random_weights:
        reasons.append("random weights")
    expected = PUBLIC_TEST_IMAGES.get(dataset)
    if expected is None:
        reasons.append("not one of the paper's datasets")
    elif n_images is None:
        reasons.append("image count not recorded")
    elif n_images != expected:
        reasons.append(f"{n_images} images, not the public test set ({expected})")
    return _NOT + "; ".join(reasons) if reasons else f"public test set size ({expected} images)"


_NOT = "NOT COMPARABLE: "

PUBLISHED: tuple[dict[str, Any], ...] = (
    {"method": "AD-DINOv3", "source": "paper (secondary source - verify): average over the 4 industrial sets",
     "aux": "industrial", "pair": "AUROC / F1", "values": {"industrial average": "94.2 / 44.6"}},
    {"method": "AD-DINOv3", "source": "paper (secondary source - verify): average over the 4 medical sets",
     "aux": "industrial", "pair": "AUROC / F1", "values": {"medical average": "84.5 / 51.5"}},
    {"method": "WinCLIP", "source": "AnomalyCLIP paper Tab. 1 / Tab. 2", "aux": "none", "pair": "AUROC / PRO",
     "values": {"mvtec": "85.1 / 64.6", "visa": "79.6 / 56.8", "isic": "83.3 / 55.1", "colondb": "70.3 / 32.5",
                "clinicdb": "51.2 / 13.8", "tn3k": "70.7 / 39.8"}},
    {"method": "WinCLIP", "source": "AdaCLIP paper Tab. 2", "aux": "none", "pair": "AUROC / max-F1",
     "values": {"isic": "67.1 / 48.5", "colondb": "61.1 / 19.6", "clinicdb": "67.1 / 24.4", "tn3k": "67.2 / 30.0"}},
    {"method": "VAND / APRIL-GAN", "source": "AnomalyCLIP paper Tab. 1 / Tab. 2", "aux": "MVTec AD",
     "pair": "AUROC / PRO",
     "values": {"mvtec": "87.6 / 44.0", "visa": "94.2 / 86.8", "isic": "89.4 / 77.2", "colondb": "78.4 / 64.6",
                "clinicdb": "80.5 / 60.7", "tn3k": "73.6 / 37.8"}},
    {"method": "APRIL-GAN", "source": "AdaCLIP paper Tab. 2", "aux": "industrial + medical", "pair": "AUROC / max-F1",
     "values": {"isic": "92.1 / 77.4", "colondb": "88.7 / 52.6", "clinicdb": "82.5 / 51.8", "tn3k": "75.9 / 36.4"}},
    {"method": "AnomalyCLIP", "source": "AnomalyCLIP paper Tab. 1 / Tab. 2", "aux": "MVTec AD (VisA for MVTec)",
     "pair": "AUROC / PRO",
     "values": {"mvtec": "91.1 / 81.4", "visa": "95.5 / 87.0", "isic": "89.7 / 78.4", "colondb": "81.9 / 71.3",
                "clinicdb": "82.9 / 67.8", "tn3k": "81.5 / 50.4"}},
    {"method": "AdaCLIP", "source": "AdaCLIP paper Tab. 1 / Tab. 2", "aux": "MVTec AD + polyp set",
     "pair": "AUROC / max-F1",
     "values": {"mvtec": "88.7 / 43.4", "visa": "95.5 / 37.7", "isic": "89.3 / 71.4", "colondb": "90.4 / 58.2",
                "clinicdb": "84.4 / 58.2", "tn3k": "77.2 / 41.9"}},
    {"method": "AdaCLIP", "source": "AdaCLIP paper appendix Tab. 7 (AnomalyCLIP protocol)", "aux": "MVTec AD",
     "pair": "AUROC", "values": {"isic": "88.3", "colondb": "79.1", "clinicdb": "84.4", "tn3k": "77.4"}},
    {"method": "AA-CLIP", "source": "AA-CLIP repo results/test.log (authors' checkpoint)", "aux": "VisA",
     "pair": "AUROC / AP", "values": {"colondb": "83.6 / 33.2", "clinicdb": "89.6 / 52.6"}},
    {"method": "ACD-CLIP (best N)", "source": "cockmake/ACD-CLIP README", "aux": "AA-CLIP protocol",
     "pair": "AUROC / AP", "values": {"colondb": "85.1 / 32.6", "clinicdb": "89.8 / 56.1"}},
    {"method": "AVA-DINO (DINOv3)", "source": "aqeeelmirza/AVA-DINO README", "aux": "VisA",
     "pair": "AUROC / pixel-F1", "values": {"colondb": "82.9 / 42.3", "clinicdb": "90.7 / 57.2"}},
)  # fmt: skip
"""Pixel-level figures quoted in docs/comparison.md, with their sources. The second number of a pair is a
different metric from row to row (PRO, max-F1 or AP), so it is never compared across rows."""


def _average_caveat(members: Sequence[str]) -> str:
    """A domain average is comparable only when every dataset in it is; else the reasons of those that are not."""
    wrong = sorted({c.removeprefix(_NOT) for c in members if c.startswith(_NOT)})
    return _NOT + "; ".join(wrong) if wrong else "every dataset's public test set"


def _order(datasets: Iterable[str]) -> list[str]:
    known = [name for name, _, _ in PAPER_DATASETS]
    present = set(datasets)
    return [d for d in known if d in present] + sorted(present - set(known))


def _percent(value: Any) -> float | None:
    return None if value is None else round(100.0 * float(value), 1)


def paper_view(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The measured paper table of an evaluation plus the published figures (see the module docstring).

    Returns:
        ``{"metrics", "measured": [{"model", "dataset", "domain", <metric>: percent or None, "n_images",
        "random_weights", "comparable"}], "averages": [...],
        "published": {"label", "rows"}}``; ``averages`` holds the mean over each domain's datasets that were
        evaluated (with their count), as the paper's industrial / medical averages. ``comparable`` says whether
        a row may be read beside the published figures (:func:`comparability`: not with random weights, nor on a
        dataset whose image count differs from the public test set's).
    """
    names = {name: (display, domain) for name, display, domain in PAPER_DATASETS}
    wanted = {m for m, _ in PAPER_METRICS}
    cells: dict[tuple[str, str], dict[str, float | None]] = {}
    facts: dict[tuple[str, str], tuple[int | None, bool]] = {}  # images evaluated, random weights
    for row in rows:
        if row.get("class_name") != MEAN or row.get("metric") not in wanted:
            continue
        key = (str(row["model"]), str(row["dataset"]))
        cells.setdefault(key, {})[str(row["metric"])] = _percent(row["value"])
        n = row.get("n_images")
        facts[key] = (None if n is None else int(n), bool(row.get("random_weights")))
    models = list(dict.fromkeys(model for model, _ in cells))
    measured: list[dict[str, Any]] = []
    averages: list[dict[str, Any]] = []
    for model in models:
        datasets = _order(d for m, d in cells if m == model)
        for dataset in datasets:
            display, domain = names.get(dataset, (dataset, ""))
            values = {m: cells[(model, dataset)].get(m) for m, _ in PAPER_METRICS}
            n_images, random = facts[(model, dataset)]
            measured.append(
                {"model": model, "dataset": display, "domain": domain, **values, "n_images": n_images,
                 "random_weights": random, "comparable": comparability(dataset, n_images, random)}
            )  # fmt: skip
        for domain in ("industrial", "medical"):
            members = [d for d in datasets if names.get(d, ("", ""))[1] == domain]
            if not members:
                continue
            average: dict[str, Any] = {"model": model, "dataset": f"{domain} average ({len(members)} of 4)"}
            average["comparable"] = _average_caveat(
                [r["comparable"] for r in measured if r["model"] == model and r["domain"] == domain]
            )
            for metric, _ in PAPER_METRICS:
                found = [cells[(model, d)].get(metric) for d in members]
                present = [v for v in found if v is not None]
                average[metric] = round(sum(present) / len(present), 1) if len(present) == len(found) else None
            averages.append(average)
    return {
        "metrics": [m for m, _ in PAPER_METRICS],
        "unit": "percent; each dataset's value is the unweighted mean over its classes (__mean__)",
        "measured": measured,
        "averages": averages,
        "published": {"label": PUBLISHED_LABEL, "source": "docs/comparison.md", "rows": list(PUBLISHED)},
    }
