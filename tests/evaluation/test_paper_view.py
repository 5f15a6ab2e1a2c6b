"""The paper view: per dataset the four pixel metrics as the class mean, in the paper's order, in percent."""

from __future__ import annotations

import json

from medad.evaluation.paper_view import PUBLISHED_LABEL, paper_view


def _rows():
    rows = []
    for dataset, auroc in (("tn3k", 0.7), ("mvtec", 0.9), ("own", 0.5), ("isic", 0.8), ("visa", 0.95)):
        for metric, value in (("pixel_auroc", auroc), ("pixel_f1_max", 0.4), ("aupro", 0.6), ("pixel_ap", None)):
            rows.append({"model": "m", "dataset": dataset, "class_name": "__mean__", "metric": metric, "value": value})
            rows.append({"model": "m", "dataset": dataset, "class_name": "x", "metric": metric, "value": 0.0})
    rows.append({"model": "m", "dataset": "mvtec", "class_name": "__mean__", "metric": "image_auroc", "value": 0.1})
    return rows


def test_rows_in_paper_order_in_percent_with_domain_averages() -> None:
    view = paper_view(_rows())
    assert [r["dataset"] for r in view["measured"]] == ["MVTec AD", "VisA", "ISIC", "TN3K", "own"]
    mvtec = view["measured"][0]
    assert mvtec == {"model": "m", "dataset": "MVTec AD", "domain": "industrial", "pixel_auroc": 90.0,
                     "pixel_f1_max": 40.0, "aupro": 60.0, "pixel_ap": None, "n_images": None,
                     "random_weights": False, "comparable": "NOT COMPARABLE: image count not recorded"}  # fmt: skip
    industrial, medical = view["averages"]
    assert industrial["dataset"] == "industrial average (2 of 4)" and industrial["pixel_auroc"] == 92.5
    assert medical["dataset"] == "medical average (2 of 4)" and medical["pixel_auroc"] == 75.0
    assert medical["pixel_ap"] is None
    assert view["published"]["label"] == PUBLISHED_LABEL == "published, not re-measured"
    assert all(r["source"] and r["values"] for r in view["published"]["rows"])
    assert any(r["method"] == "AD-DINOv3" for r in view["published"]["rows"])


def test_evaluate_writes_the_paper_view_into_metrics_json(tmp_path) -> None:
    from medad.evaluation import evaluate
    from tests.evaluation.test_resolution import _study

    manifest, masks, _ = _study(tmp_path)
    manifest["dataset"] = "isic"

    def reader(row):
        return masks[int(row["image_path"].split("/")[-1][:-4])]

    evaluate({"m": tmp_path / "m"}, manifest, tmp_path / "e", ci={"n_resamples": 0}, mask_reader=reader)
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    mean = next(r for r in doc["rows"] if r["metric"] == "aupro" and r["class_name"] == "__mean__")
    (row,) = doc["paper_view"]["measured"]
    assert row["dataset"] == "ISIC" and row["aupro"] == round(100 * mean["value"], 1)


def test_rows_not_comparable_with_the_published_figures_say_why() -> None:
    """Random weights on six synthetic "ISIC" images sat right above the published table, unmarked."""
    rows = []
    for model, n, random in (("random", 6, True), ("trained", 6, False), ("full", 379, False)):
        for metric in ("pixel_auroc", "pixel_f1_max", "aupro", "pixel_ap"):
            rows.append({"model": model, "dataset": "isic", "class_name": "__mean__", "metric": metric,
                         "value": 0.5, "n_images": n, "random_weights": random})  # fmt: skip
    rows.append({"model": "full", "dataset": "own", "class_name": "__mean__", "metric": "aupro", "value": 0.5,
                 "n_images": 379, "random_weights": False})  # fmt: skip
    view = paper_view(rows)
    said = {(r["model"], r["dataset"]): r["comparable"] for r in view["measured"]}
    assert said[("random", "ISIC")] == "NOT COMPARABLE: random weights; 6 images, not the public test set (379)"
    assert said[("trained", "ISIC")] == "NOT COMPARABLE: 6 images, not the public test set (379)"
    assert said[("full", "ISIC")] == "public test set size (379 images)"
    assert said[("full", "own")] == "NOT COMPARABLE: not one of the paper's datasets"
    averages = {r["model"]: r["comparable"] for r in view["averages"]}
    assert averages["random"] == said[("random", "ISIC")]
    assert averages["full"] == "every dataset's public test set"


def test_each_method_has_its_publications_figures_keyed_by_registry_name() -> None:
    """AnomalyCLIP, AdaCLIP, AA-CLIP, Crane and Crane+ rows carry their figures and the training data used."""
    from medad.evaluation.paper_view import PUBLISHED, not_zero_shot, published_for
    from medad.models import list_models

    registered = set(list_models())
    keyed = {name for row in PUBLISHED for name in row["models"]}
    assert {"anomalyclip", "adaclip", "aa_clip", "crane", "crane_plus", "winclip", "ad_dinov3"} <= keyed <= registered
    colondb = {p["source"]: p for p in published_for("adaclip", "colondb")}
    main = colondb["AdaCLIP paper (Cao et al., ECCV 2024) Tab. 1 / Tab. 2"]
    assert main["figures"] == "90.4 / 58.2" and "as the release's README corrects the paper" in main["training_data"]
    assert main["zero_shot"] == "not industrial-only (auxiliary data include CVC-ClinicDB)"
    assert published_for("adaclip", "clinicdb")[0]["zero_shot"] == (
        "not industrial-only (auxiliary data include CVC-ColonDB)"
    )
    assert not_zero_shot(("mvtec", "colondb"), "colondb") == "not zero-shot (trained on CVC-ColonDB)"
    assert [p["zero_shot"] for p in published_for("anomalyclip", "mvtec")] == ["zero-shot"]  # trained on VisA there
    crane_plus = published_for("crane_plus", "isic")
    assert crane_plus[0]["figures"] == "90.6 / 83.2 / 73.4" and "epoch-1" in crane_plus[0]["source"]
    rows = [{"model": "m", "dataset": "tn3k", "class_name": "__mean__", "metric": "pixel_auroc", "value": 0.5}]
    (row,) = paper_view(rows, {"m": {"model": {"name": "anomalyclip_tiny"}}})["measured"]
    assert row["method"] == "anomalyclip" and row["published"][0]["figures"] == "81.5 / 50.4"
    assert "method" not in paper_view(rows)["measured"][0]  # without the predictions' meta: as before


def test_datasets_outside_the_papers_are_named_by_their_source() -> None:
    """Kaggle's BrainMRI and BMAD's Brain MRI are different datasets: the paper view names each by its title."""
    rows = [
        {"model": "m", "dataset": name, "class_name": "__mean__", "metric": "pixel_auroc", "value": 0.5}
        for name in ("brain_a", "brain_b", "isic")
    ]
    titles = {"brain_a": "BrainMRI (Kaggle)", "brain_b": "Brain MRI (BMAD, BraTS 2021)", "isic": "not used"}
    shown = [r["dataset"] for r in paper_view(rows, None, titles)["measured"]]
    assert shown == ["ISIC", "BrainMRI (Kaggle)", "Brain MRI (BMAD, BraTS 2021)"]
    assert [r["dataset"] for r in paper_view(rows)["measured"]][1:] == ["brain_a", "brain_b"]
