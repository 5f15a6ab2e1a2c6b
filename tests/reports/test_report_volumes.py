"""The report shows each NIfTI volume as one case: its volume score and 3-D Dice in a table, the volume rows of the
results, and its slices drawn in slice order; no path reaches the report."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medad.data import read_mask
from medad.data.nifti import make_nifti
from medad.engine.predictions import PredictionWriter
from medad.evaluation import evaluate
from medad.reports import build_report
from medad.reports.volumes import volume_slices

SHAPE = (20, 16, 11)  # 11 slices along axis 2: more than the 8 a strip draws


@pytest.fixture
def volume_study(tmp_path: Path) -> tuple[Path, pd.DataFrame, Path]:
    """Two NIfTI volumes (one with a lesion on slices 4-6) under a patient-named folder, scored and evaluated."""
    images, masks = tmp_path / "DOE^JANE" / "images", tmp_path / "DOE^JANE" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for name, lesion in (("sick", True), ("well", False)):
        mask = np.zeros(SHAPE, np.uint8)
        if lesion:
            mask[3:7, 2:6, 4:7] = 1
        nib.save(nib.Nifti1Image(np.random.default_rng(1).random(SHAPE).astype(np.float32), np.eye(4)),
                 images / f"{name}.nii.gz")  # fmt: skip
        nib.save(nib.Nifti1Image(mask, np.eye(4)), masks / f"{name}_mask.nii.gz")
    manifest = make_nifti(images, masks=masks)
    with PredictionWriter(tmp_path / "pred", chunk_size=8, meta={"model": {"name": "m"}}) as writer:
        for i, row in manifest.iterrows():
            truth = read_mask(row.to_dict())
            sick = "sick" in str(row["image_path"])
            writer.add([int(i)], [0.1 + 0.05 * int(row["frame"]) * sick], [truth.astype(np.float32)])
    evaluate({"m": tmp_path / "pred"}, manifest, tmp_path / "eval", ci={"n_resamples": 0}, volume_score="max")
    return tmp_path / "eval", manifest, tmp_path / "pred"


def test_report_lists_volumes_and_draws_their_slices_in_order(tmp_path: Path, volume_study) -> None:
    eval_dir, manifest, pred = volume_study
    html = build_report(eval_dir, tmp_path / "report", predictions={"m": pred}, manifest=manifest,
                        generated_at="2024-01-01T00:00:00")  # fmt: skip
    md = (html.parent / "report.md").read_text()
    assert "## Volumes" in md and "volumes (each series / file one case; 3-D Dice)" in md
    per_volume = pd.read_csv(eval_dir / "per_volume.csv")
    sick = per_volume.sort_values("volume_score").iloc[-1]
    assert sick["volume_score"] == pytest.approx(0.6) and sick["dice"] == pytest.approx(1.0)
    assert str(sick["volume_id"]) in md and "highest volume score" in md
    figures = sorted(p.name for p in (html.parent / "figures").glob("volume_*.png"))
    assert figures == [f"volume_m_nifti_{sick['volume_id']}.png"]
    tables = pd.read_csv(html.parent / "tables" / "volumes.csv")
    assert len(tables) == 2 and set(tables["volume_id"]) == set(per_volume["volume_id"])
    text = md + html.read_text()
    assert "DOE^JANE" not in text and str(tmp_path) not in text


def test_a_long_volume_is_drawn_as_evenly_spaced_slices_in_slice_order(volume_study) -> None:
    eval_dir, _, _ = volume_study
    per_image = pd.read_csv(eval_dir / "per_image.csv").sample(frac=1.0, random_state=0)  # rows out of order
    volume = str(per_image["volume_id"].iloc[0])
    rows = volume_slices(per_image, "m", volume)
    assert rows["slice_order"].tolist() == [0, 1, 3, 4, 6, 7, 9, 10]  # 8 of 11, first and last kept, in order
