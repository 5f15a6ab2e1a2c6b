"""Fixtures for export tests: real pydicom test files, small NIfTI / PNG sources, predictions folders."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medad.engine.predictions import PredictionWriter
from medad.utils.privacy import case_id

CT_NAME, CT_ID = "CompressedSamples^CT1", "1CT1"


def blob(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """A smooth [0, 1] anomaly map with one bright blob."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d2 = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / max(radius, 1.0) ** 2
    return np.exp(-d2).astype(np.float32)


def manifest_row(
    path: Path,
    fmt: str,
    frame: int | None = None,
    axis: int | None = None,
    label: int | None = None,
    class_name: str = "lesion",
    mask_path: str = "",
) -> dict[str, Any]:
    """A manifest row following the contract."""
    return {
        "dataset": "test",
        "class_name": class_name,
        "split": "test",
        "image_path": str(path),
        "mask_path": mask_path,
        "label": label,
        "defect_type": "",
        "group_id": "g",
        "variant": "test",
        "case_id": case_id(f"{path}#{frame}"),
        "source_format": fmt,
        "frame": frame,
        "slice_axis": axis,
        "mask_rule": ">0",
    }


def to_manifest(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the contract's dtypes."""
    frame = pd.DataFrame(list(rows))
    for column in ("label", "frame", "slice_axis"):
        frame[column] = frame[column].astype("Int64")
    return frame


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., tuple[Path, pd.DataFrame]]:
    """Write a predictions folder (+ manifest.csv inside) for given rows, maps and scores."""

    def _make(
        rows: Sequence[dict[str, Any]],
        maps: Sequence[np.ndarray],
        scores: Sequence[float] | None = None,
        name: str = "preds",
        meta: dict[str, Any] | None = None,
    ) -> tuple[Path, pd.DataFrame]:
        folder = tmp_path / name
        manifest = to_manifest(rows)
        scores = list(scores) if scores is not None else [float(m.max()) for m in maps]
        with PredictionWriter(folder, chunk_size=4, meta=meta or {"model": {"name": "AD-DINOv3"}}) as writer:
            writer.add(list(range(len(maps))), scores, list(maps))
        manifest.to_csv(folder / "manifest.csv", index=False)
        return folder, manifest

    return _make


@pytest.fixture
def dicom_sources(tmp_path: Path) -> dict[str, Path]:
    """Copies of pydicom's bundled CT, MR, multi-frame RT dose and a MONOCHROME1 edit of MR."""
    folder = tmp_path / "src"
    folder.mkdir()
    out = {}
    for key, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm"), ("multiframe", "rtdose.dcm")):
        out[key] = Path(shutil.copy(get_testdata_file(name), folder / f"{key}.dcm"))
    ds = pydicom.dcmread(out["mr"])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(folder / "mono1.dcm")
    out["mono1"] = folder / "mono1.dcm"
    return out


@pytest.fixture
def png_source(tmp_path: Path) -> Callable[[str, tuple[int, int]], Path]:
    """Write an RGB PNG of a given (H, W)."""

    def _make(name: str, shape: tuple[int, int]) -> Path:
        rng = np.random.default_rng(len(name))
        path = tmp_path / "imgs" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)
        return path

    return _make


def dciodvfy_errors(path: Path) -> list[str]:
    """Run dciodvfy on a file and return its error lines (warnings are allowed)."""
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
