"""A small but complete study on disk: images with a planted patient name in their path, a manifest,
predictions written with PredictionWriter, and an evaluation folder written by hand to the contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.engine.predictions import PredictionWriter
from medad.utils.io import write_json_atomic
from medad.utils.privacy import case_id

PATIENT = "DOE^JOHN_4711"
MODELS = ("ad_dinov3", "baseline")
SIZE = 24


@dataclass
class Study:
    """Paths and tables of the synthetic study."""

    root: Path
    eval_dir: Path
    manifest: pd.DataFrame
    predictions: dict[str, Path]
    per_image: pd.DataFrame
    rows: list[dict]


def _write_images(folder: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        image = (rng.random((SIZE, SIZE + 8, 3)) * 120).astype(np.uint8)
        abnormal = i >= n // 2
        mask = np.zeros((SIZE, SIZE + 8), dtype=np.uint8)
        if abnormal:
            mask[6:14, 8 + i % 4 : 18 + i % 4] = 255
            image[mask > 0] = 230
        image_path = folder / f"{PATIENT}_img{i:02d}.png"
        Image.fromarray(image).save(image_path)
        mask_path = ""
        if abnormal:
            mask_path = str(folder / f"{PATIENT}_img{i:02d}_mask.png")
            Image.fromarray(mask).save(mask_path)
        records.append(
            {
                "dataset": "isic",
                "class_name": "skin_lesion" if i % 2 == 0 else "nevus",
                "split": "test",
                "image_path": str(image_path),
                "mask_path": mask_path,
                "label": int(abnormal),
                "defect_type": "lesion" if abnormal else "good",
                "group_id": f"g{i}",
                "variant": "native-csv",
                "case_id": case_id(str(image_path)),
                "source_format": "image",
                "frame": pd.NA,
                "slice_axis": pd.NA,
                "mask_rule": ">0",
            }
        )
    manifest = pd.DataFrame.from_records(records)
    for column in ("label", "frame", "slice_axis"):
        manifest[column] = manifest[column].astype("Int64")
    return manifest


def _write_predictions(folder: Path, manifest: pd.DataFrame, model: str, scores: np.ndarray, random: bool) -> None:
    meta = {"model": {"name": model, "random_weights": random}, "dataset": "isic"}
    with PredictionWriter(folder, chunk_size=3, tag="p0", meta=meta) as writer:
        for index, score in enumerate(scores):
            pixel_map = np.full((SIZE, SIZE + 8), 0.1, dtype=np.float32)
            if manifest.loc[index, "label"] == 1:
                pixel_map[6:14, 8:18] = float(score)
            writer.add([index], [float(score)], [pixel_map])


def make_rows() -> list[dict]:
    """Metric rows: two models, two classes + mean + pooled, one not-applicable row."""
    rows = []
    for m, model in enumerate(MODELS):
        for c, class_name in enumerate(["nevus", "skin_lesion", "__mean__", "__pooled__"]):
            for metric, base in (("image_auroc", 0.8), ("pixel_aupro", 0.6)):
                value = round(base - 0.1 * m + 0.01 * c, 4)
                rows.append(
                    {
                        "model": model,
                        "dataset": "isic",
                        "class_name": class_name,
                        "metric": metric,
                        "value": value,
                        "ci_low": round(value - 0.05, 4),
                        "ci_high": round(value + 0.04, 4),
                        "n_images": 4 if c < 2 else 8,
                        "status": "ok",
                        "reason": None,
                    }
                )
        rows.append(
            {
                "model": model,
                "dataset": "isic",
                "class_name": "nevus",
                "metric": "dice",
                "value": None,
                "ci_low": None,
                "ci_high": None,
                "n_images": 4,
                "status": "not_applicable",
                "reason": "no abnormal images with masks",
            }
        )
    return rows


def write_evaluation(eval_dir: Path, per_image: pd.DataFrame, rows: list[dict], settings: dict | None = None) -> None:
    """Write the four contract files of an evaluation folder."""
    settings = settings or {
        "ci_method": "percentile",
        "confidence_level": 0.95,
        "n_resamples": 2000,
        "unit": "group_id",
        "seed": 1234,
        "fpr_limit": 0.3,
        "metrics_version": "medad-metrics 1",
    }
    write_json_atomic(eval_dir / "metrics.json", {"settings": settings, "rows": rows})
    per_image.to_csv(eval_dir / "per_image.csv", index=False)
    grid = np.linspace(0, 1, 11)
    curves = [
        {
            "model": model,
            "dataset": "isic",
            "class_name": class_name,
            "roc": {"fpr": grid.tolist(), "tpr": np.sqrt(grid).tolist(), "auc": 0.66},
            "pr": {"recall": grid.tolist(), "precision": (1 - 0.5 * grid).tolist()},
            "pro": {"fpr": (grid * 0.3).tolist(), "pro": grid.tolist()},
        }
        for model in MODELS
        for class_name in ("nevus", "__pooled__")
    ]
    write_json_atomic(eval_dir / "curves.json", curves)
    comparisons = [
        {
            "dataset": "isic",
            "class_name": "__pooled__",
            "metric": "image_auroc",
            "model_a": MODELS[0],
            "model_b": MODELS[1],
            "test": "delong",
            "estimate": 0.1,
            "ci_low": 0.02,
            "ci_high": 0.18,
            "p_value": 0.0123,
            "p_adjusted": 0.0246,
            "correction": "holm",
            "effect_size": 0.1,
            "n": 8,
        }
    ]
    write_json_atomic(eval_dir / "comparisons.json", comparisons)


def build_study(root: Path, random_weights: bool = False) -> Study:
    """Build the study under ``root``; with ``random_weights`` the second model is flagged in its meta.json."""
    images = root / "data" / PATIENT
    images.mkdir(parents=True)
    manifest = _write_images(images, 8)
    scores = {
        MODELS[0]: np.array([0.10, 0.35, 0.20, 0.55, 0.90, 0.40, 0.80, 0.70]),
        MODELS[1]: np.array([0.30, 0.20, 0.60, 0.10, 0.50, 0.45, 0.65, 0.25]),
    }
    predictions = {}
    per_image = []
    for model in MODELS:
        predictions[model] = root / "run" / "predictions" / model
        flagged = random_weights and model == MODELS[1]
        _write_predictions(predictions[model], manifest, model, scores[model], flagged)
        for index, row in manifest.iterrows():
            per_image.append(
                {
                    "model": model,
                    "dataset": "isic",
                    "index": index,
                    "case_id": row["case_id"],
                    "class_name": row["class_name"],
                    "label": int(row["label"]),
                    "image_score": scores[model][index],
                    "max_pixel_score": scores[model][index],
                    "dice": 0.5 + 0.05 * index if row["label"] == 1 else np.nan,
                    "iou": 0.4 if row["label"] == 1 else np.nan,
                }
            )
    per_image_frame = pd.DataFrame(per_image)
    eval_dir = root / "run" / "evaluation"
    eval_dir.mkdir(parents=True)
    rows = make_rows()
    write_evaluation(eval_dir, per_image_frame, rows)
    return Study(root, eval_dir, manifest, predictions, per_image_frame, rows)


@pytest.fixture
def make_study(tmp_path: Path):
    """Factory: ``make_study(random_weights=False)`` builds the study under ``tmp_path/study``."""
    return lambda random_weights=False: build_study(tmp_path / "study", random_weights)
