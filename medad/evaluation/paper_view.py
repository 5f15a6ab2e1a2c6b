"""The paper's table: per target dataset, the four pixel metrics as the class mean, in the paper's order, with
the published figures of AD-DINOv3 and its peers beside them (quoted, never re-measured).

The measured view is built from an evaluation's rows (the ``__mean__`` class of each model and dataset) and is
written into ``metrics.json`` under ``paper_view``; the report shows it next to :data:`PUBLISHED`. A measured row
of a method medad re-derives (AnomalyCLIP, AdaCLIP, AA-CLIP, Crane, Crane+, WinCLIP, AD-DINOv3, keyed by registry
name) carries that method's published figures on its dataset, with the training data of the publication and a
mark where those include the target. Values are in percent (x 100), as papers print them. Datasets are matched
by their name in the evaluation (``mvtec``, ``visa``, ... as the paper protocols name them); others follow in
alphabetical order.
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

MVTEC_TRAINED: dict[str, tuple[str, ...]] = {"default": ("mvtec",), "mvtec": ("visa",)}
"""The AnomalyCLIP protocol's auxiliary data: MVTec AD for every target, VisA for MVTec AD itself."""

PUBLISHED: tuple[dict[str, Any], ...] = (
    {"method": "AD-DINOv3", "source": "paper (secondary source - verify): average over the 4 industrial sets",
     "aux": "industrial", "pair": "AUROC / F1", "values": {"industrial average": "94.2 / 44.6"},
     "models": ("ad_dinov3",), "trained_on": None},
    {"method": "AD-DINOv3", "source": "paper (secondary source - verify): average over the 4 medical sets",
     "aux": "industrial", "pair": "AUROC / F1", "values": {"medical average": "84.5 / 51.5"},
     "models": ("ad_dinov3",), "trained_on": None},
    {"method": "WinCLIP", "source": "AnomalyCLIP paper Tab. 1 / Tab. 2", "aux": "none", "pair": "AUROC / PRO",
     "values": {"mvtec": "85.1 / 64.6", "visa": "79.6 / 56.8", "btad": "72.7 / 27.3", "mpdd": "76.4 / 48.9",
                "isic": "83.3 / 55.1", "colondb": "70.3 / 32.5", "clinicdb": "51.2 / 13.8", "tn3k": "70.7 / 39.8",
                "kvasir": "69.7 / 24.5"},
     "models": ("winclip",), "trained_on": {"default": ()}},
    {"method": "WinCLIP", "source": "AdaCLIP paper Tab. 2", "aux": "none", "pair": "AUROC / max-F1",
     "values": {"isic": "67.1 / 48.5", "colondb": "61.1 / 19.6", "clinicdb": "67.1 / 24.4", "tn3k": "67.2 / 30.0"},
     "models": ("winclip",), "trained_on": {"default": ()}},
    {"method": "VAND / APRIL-GAN", "source": "AnomalyCLIP paper Tab. 1 / Tab. 2", "aux": "MVTec AD",
     "pair": "AUROC / PRO",
     "values": {"mvtec": "87.6 / 44.0", "visa": "94.2 / 86.8", "isic": "89.4 / 77.2", "colondb": "78.4 / 64.6",
                "clinicdb": "80.5 / 60.7", "tn3k": "73.6 / 37.8"},
     "models": (), "trained_on": MVTEC_TRAINED},
    {"method": "APRIL-GAN", "source": "AdaCLIP paper Tab. 2", "aux": "industrial + medical", "pair": "AUROC / max-F1",
     "values": {"isic": "92.1 / 77.4", "colondb": "88.7 / 52.6", "clinicdb": "82.5 / 51.8", "tn3k": "75.9 / 36.4"},
     "models": (), "trained_on": None},
    {"method": "AnomalyCLIP", "source": "AnomalyCLIP paper (Zhou et al., ICLR 2024) Tab. 1 / Tab. 2",
     "aux": "MVTec AD test set (VisA for MVTec AD)", "pair": "AUROC / PRO",
     "values": {"mvtec": "91.1 / 81.4", "visa": "95.5 / 87.0", "btad": "94.2 / 74.8", "mpdd": "96.5 / 88.7",
                "isic": "89.7 / 78.4", "colondb": "81.9 / 71.3", "clinicdb": "82.9 / 67.8", "tn3k": "81.5 / 50.4",
                "kvasir": "78.9 / 45.6"},
     "models": ("anomalyclip", "anomalyclip_paper"), "trained_on": MVTEC_TRAINED},
    {"method": "AdaCLIP", "source": "AdaCLIP paper (Cao et al., ECCV 2024) Tab. 1 / Tab. 2",
     "aux": "MVTec AD + ColonDB (VisA + ClinicDB for MVTec AD and ColonDB), as the release's README corrects the "
            "paper",
     "pair": "AUROC / max-F1",
     "values": {"mvtec": "88.7 / 43.4", "visa": "95.5 / 37.7", "btad": "92.1 / 51.7", "mpdd": "96.1 / 34.9",
                "isic": "89.3 / 71.4", "colondb": "90.4 / 58.2", "clinicdb": "84.4 / 58.2", "tn3k": "77.2 / 41.9"},
     "models": ("adaclip",),
     "trained_on": {"default": ("mvtec", "colondb"), "mvtec": ("visa", "clinicdb"), "colondb": ("visa", "clinicdb")}},
    {"method": "AdaCLIP", "source": "AdaCLIP paper appendix Tab. 6 / Tab. 7 (AnomalyCLIP protocol)",
     "aux": "MVTec AD only (VisA for MVTec AD)", "pair": "AUROC",
     "values": {"mvtec": "90.3", "visa": "95.6", "btad": "92.1", "mpdd": "96.4", "isic": "88.3", "colondb": "79.1",
                "clinicdb": "84.4", "tn3k": "77.4"},
     "models": ("adaclip",), "trained_on": MVTEC_TRAINED},
    {"method": "AA-CLIP", "source": "AA-CLIP release (Ma et al., CVPR 2025) results/test.log, authors' checkpoint",
     "aux": "VisA", "pair": "AUROC / AP",
     "values": {"mvtec": "91.9 / 45.3", "btad": "97.0 / 52.8", "mpdd": "96.6 / 26.8", "colondb": "83.6 / 33.2",
                "clinicdb": "89.6 / 52.6", "kvasir": "87.1 / 55.8"},
     "models": ("aa_clip",), "trained_on": {"default": ("visa",)}},
    {"method": "Crane", "source": "Crane paper (Salehi et al., arXiv 2504.11055) Tab. 1 (release assets/table1.png)",
     "aux": "MVTec AD test set", "pair": "AUROC / AUPRO / F1-max",
     "values": {"isic": "88.1 / 75.3 / 69.8", "colondb": "82.5 / 73.0 / 36.0", "clinicdb": "84.0 / 69.3 / 42.5",
                "tn3k": "79.4 / 48.8 / 44.7"},
     "models": ("crane",), "trained_on": {"default": ("mvtec",)}},
    {"method": "Crane+", "source": "Crane paper (Salehi et al., arXiv 2504.11055) Tab. 1 (release assets/table1.png); "
                                   "epoch-1 checkpoint for medical sets (reproduce.sh)",
     "aux": "MVTec AD test set", "pair": "AUROC / AUPRO / F1-max",
     "values": {"isic": "90.6 / 83.2 / 73.4", "colondb": "86.0 / 78.6 / 40.2", "clinicdb": "88.3 / 74.5 / 47.9",
                "tn3k": "80.4 / 51.7 / 45.5"},
     "models": ("crane_plus",), "trained_on": {"default": ("mvtec",)}},
    {"method": "ACD-CLIP (best N)", "source": "cockmake/ACD-CLIP README", "aux": "AA-CLIP protocol",
     "pair": "AUROC / AP", "values": {"colondb": "85.1 / 32.6", "clinicdb": "89.8 / 56.1"},
     "models": (), "trained_on": {"default": ("visa",)}},
    {"method": "AVA-DINO (DINOv3)", "source": "aqeeelmirza/AVA-DINO README", "aux": "VisA",
     "pair": "AUROC / pixel-F1", "values": {"colondb": "82.9 / 42.3", "clinicdb": "90.7 / 57.2"},
     "models": (), "trained_on": {"default": ("visa",)}},
)  # fmt: skip
"""Pixel-level figures quoted in docs/comparison.md, with their sources: ``models`` the registry names of medad's
re-derivation of the method (their measured rows show these figures beside them), ``trained_on`` the dataset
kinds each publication trained on (per target, ``default`` for the rest; ``None`` unknown). The second number of a
pair is a different metric from row to row (PRO, max-F1, AP, AUPRO), so it is never compared across rows."""

DATASET_NAMES: dict[str, str] = {name: display for name, display, _ in PAPER_DATASETS} | {"kvasir": "Kvasir-SEG"}
"""Display names of the public datasets the published figures cover."""


def method_of(card: Mapping[str, Any] | None) -> str | None:
    """The registry name of the method behind a model card (``adaclip`` for ``adaclip`` and ``adaclip_tiny``)."""
    name = card.get("name") if isinstance(card, Mapping) else None
    return name.removesuffix("_tiny") if isinstance(name, str) else None


def not_zero_shot(trained_on: Sequence[str], dataset: str) -> str | None:
    """The mark of a figure whose training data include its target (``"not zero-shot (trained on CVC-ColonDB)"``),
    or whose auxiliary data include another medical set (``"not industrial-only (...)"``); ``None`` otherwise."""
    medical = {name for name, _, domain in PAPER_DATASETS if domain == "medical"} | {"kvasir"}
    if dataset in trained_on:
        return f"not zero-shot (trained on {DATASET_NAMES.get(dataset, dataset)})"
    others = [DATASET_NAMES.get(d, d) for d in trained_on if d in medical]
    if others and dataset in medical:
        return f"not industrial-only (auxiliary data include {', '.join(others)})"
    return None


def published_for(method: str, dataset: str) -> list[dict[str, Any]]:
    """Every published figure of ``method`` (a registry name) on ``dataset``, with its source, the training data
    of that publication and, where those include the target, the not-zero-shot mark."""
    out = []
    for row in PUBLISHED:
        if method not in row["models"] or dataset not in row["values"]:
            continue
        trained = row["trained_on"]
        used = None if trained is None else tuple(trained.get(dataset, trained["default"]))
        out.append(
            {"figures": row["values"][dataset], "metrics": row["pair"], "source": row["source"],
             "training_data": row["aux"], "label": PUBLISHED_LABEL,
             "zero_shot": "unknown" if used is None else (not_zero_shot(used, dataset) or "zero-shot")}
        )  # fmt: skip
    return out


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


def _method_facts(meta: Mapping[str, Any] | None, dataset: str) -> dict[str, Any]:
    """What a measured row adds from its predictions' ``meta.json``: the method (registry name), its published
    figures on the dataset, and the study's not-zero-shot mark and pinned score epoch (from the card's ``study``)."""
    card = meta.get("model") if isinstance(meta, Mapping) else None
    method = method_of(card)
    if method is None:
        return {}
    facts: dict[str, Any] = {"method": method, "published": published_for(method, dataset)}
    mark = study_marks(meta).get(dataset)
    if mark:
        facts["zero_shot"] = mark
    study = card.get("study") if isinstance(card, Mapping) else None
    if isinstance(study, Mapping) and study.get("score_epoch") is not None:
        facts["score_epoch"] = study["score_epoch"]
    return facts


def study_marks(meta: Mapping[str, Any] | None) -> dict[str, str]:
    """Dataset -> ``"not zero-shot (trained on ...)"`` for each target the protocol scored although the model's
    training data include it (``allow_not_zero_shot``), from the card's ``study`` in a predictions ``meta.json``."""
    card = meta.get("model") if isinstance(meta, Mapping) else None
    study = card.get("study") if isinstance(card, Mapping) else None
    marks = study.get("not_zero_shot") if isinstance(study, Mapping) else None
    if not isinstance(marks, Mapping):
        return {}
    return {str(dataset): f"not zero-shot ({why})" for dataset, why in marks.items() if why}


def paper_view(
    rows: Sequence[Mapping[str, Any]],
    metas: Mapping[str, Mapping[str, Any]] | None = None,
    titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The measured paper table of an evaluation plus the published figures (see the module docstring).

    A dataset outside the paper's (e.g. HeadCT, BMAD) is named by ``titles`` (``metrics.json``'s
    ``settings.dataset_titles``, which say the source: "BrainMRI (Kaggle)" vs "Brain MRI (BMAD, BraTS 2021)").

    ``metas`` (model -> its predictions' ``meta.json``) adds to each measured row its ``method`` (registry name),
    that method's ``published`` figures on the dataset (:func:`published_for`: labelled "published, not
    re-measured", with their source, the training data of that publication and whether those include the target)
    and, where the protocol marked the model, ``zero_shot`` ("not zero-shot (trained on ...)") and ``score_epoch``.

    Returns:
        ``{"metrics", "measured": [{"model", "dataset", "domain", <metric>: percent or None, "n_images",
        "random_weights", "comparable"[, "method", "published", "zero_shot", "score_epoch"]}], "averages": [...],
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
            display, domain = names.get(dataset, ((titles or {}).get(dataset, dataset), ""))
            values = {m: cells[(model, dataset)].get(m) for m, _ in PAPER_METRICS}
            n_images, random = facts[(model, dataset)]
            extra = _method_facts(metas.get(model), dataset) if metas is not None else {}
            measured.append(
                {"model": model, "dataset": display, "domain": domain, **values, "n_images": n_images,
                 "random_weights": random, "comparable": comparability(dataset, n_images, random), **extra}
            )  # fmt: skip
        for domain in ("industrial", "medical"):
            members = [d for d in datasets if names.get(d, ("", ""))[1] == domain]
            if not members:
                continue
            average: dict[str, Any] = {"model": model, "dataset": f"{domain} average ({len(members)} of 4)"}
            in_domain = [r for r in measured if r["model"] == model and r["domain"] == domain]
            average["comparable"] = _average_caveat([r["comparable"] for r in in_domain])
            for metric, _ in PAPER_METRICS:
                found = [cells[(model, d)].get(metric) for d in members]
                present = [v for v in found if v is not None]
                average[metric] = round(sum(present) / len(present), 1) if len(present) == len(found) else None
            marked = [r["dataset"] for r in in_domain if "zero_shot" in r]
            if marked:  # an average over a not-zero-shot dataset is not zero-shot either
                average["zero_shot"] = f"not zero-shot (includes {', '.join(marked)}, which it was trained on)"
            averages.append(average)
    return {
        "metrics": [m for m, _ in PAPER_METRICS],
        "unit": "percent; each dataset's value is the unweighted mean over its classes (__mean__)",
        "measured": measured,
        "averages": averages,
        "published": {"label": PUBLISHED_LABEL, "source": "docs/comparison.md", "rows": list(PUBLISHED)},
    }
