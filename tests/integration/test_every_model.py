"""Contract test: every registered model, through its tiny preset, runs the whole library pipeline.

Like anomalib's integration test: for each name of ``medad.models.list_models()`` the tiny preset is trained
(trainable models, two steps, then reloaded from the saved checkpoint), scores a small synthetic labelled set
and a DICOM + NIfTI set, is evaluated, reported and exported, all through the public library API (not the
CLI); each stage's output is checked for the properties the next stage and the user rely on. A full-size and a
tiny name share one run of their tiny preset (the module cache), so the whole file stays well under a minute.
A model that cannot score without normal reference images (``needs_references``, e.g. ``anomalydino``) scores
with a few synthetic normals of the targets' kind (colour PNGs; a DICOM for the DICOM rows of the medical set).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from sklearn.metrics import roc_auc_score

from medad.data import load_manifest, read_mask, write_layout
from medad.data.dicom import make_dicom
from medad.data.nifti import make_nifti
from medad.engine import PredictionReader, score, train
from medad.engine.predictions import predictions_random_weights
from medad.engine.references import draw_references
from medad.evaluation import evaluate
from medad.export import export_predictions, fixed_threshold
from medad.models import ModelKind, create_model, list_models, load_checkpoint, model_kind
from medad.reports import build_report

MODEL_SIZE = 64  # model input side: small for CPU
NATIVE = 80  # side of the synthetic images: not the model's, so maps must come back upsampled to native size
METRICS = ("pixel_auroc", "image_auroc", "dice")
TINY_LR = 1e-3


def tiny_preset(name: str) -> str:
    """The tiny preset of a registered model (``<name>_tiny``, or the name itself for a tiny one).

    A model without one fails the contract: it could not be run on CPU in the test suite.
    """
    preset = name if name.endswith("_tiny") else f"{name}_tiny"
    if preset not in list_models():
        pytest.fail(
            f"registered model {name!r} has no tiny preset {preset!r}: register a few-layer random-weights "
            f"factory named {preset!r} next to it (as ad_dinov3_tiny) so that this contract test can run it"
        )
    return preset


@dataclass(frozen=True)
class Data:
    """The inputs every model is run on."""

    labelled: pd.DataFrame  # synthetic mvtec_style skin set: 2 normal + 2 abnormal PNGs with masks
    medical: pd.DataFrame  # two DICOM files (CT 128x128, MR 64x64) and a two-slice NIfTI volume (30x22)
    auxiliary: pd.DataFrame  # synthetic MVTec bottle set to train on (4 images: two steps of 2)
    normals: pd.DataFrame  # 2 other normal skin PNGs: references of a model that needs them
    dicom_normals: pd.DataFrame  # a noisy copy of the CT as another DICOM: its references for the DICOM rows


def _native_shape(row: pd.Series) -> tuple[int, int]:
    """A manifest row's (H, W) read from the source file itself, independently of medad's readers."""
    if row["source_format"] == "dicom":
        ds = pydicom.dcmread(row["image_path"], stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    if row["source_format"] == "nifti":
        shape = list(nib.load(row["image_path"]).shape)
        del shape[int(row["slice_axis"])]
        return int(shape[0]), int(shape[1])
    with Image.open(row["image_path"]) as image:
        return image.height, image.width


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("integration_data")
    write_layout(root / "skin", "mvtec_style", n_normal=2, n_abnormal=2, size=NATIVE, seed=0)
    write_layout(root / "aux", "mvtec", n_normal=1, n_abnormal=3, size=MODEL_SIZE, seed=1, classes=["bottle"])
    sources = root / "sources"
    sources.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), sources / name.lower())
    volume = np.random.default_rng(2).normal(size=(30, 22, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), sources / "volume.nii.gz")
    medical = pd.concat(
        [
            make_dicom(sources / "ct_small.dcm"),
            make_dicom(sources / "mr_small.dcm"),
            make_nifti(sources / "volume.nii.gz"),
        ],
        ignore_index=True,
    )
    write_layout(root / "normals", "mvtec_style", n_normal=2, n_abnormal=0, size=NATIVE, seed=3)
    return Data(
        labelled=load_manifest(root / "skin", "mvtec_style", split="test"),
        medical=medical,
        auxiliary=load_manifest(root / "aux", "mvtec", split="test"),
        normals=load_manifest(root / "normals", "mvtec_style", split="test"),
        dicom_normals=make_dicom(_noisy_dicom_copy(sources / "ct_small.dcm", root / "dicom_normals" / "ct.dcm")),
    )


def _noisy_dicom_copy(source: Path, out: Path) -> Path:
    """Another DICOM instance of the same kind (greyscale, same size) with noise added: a normal reference that is
    not one of the targets (the leakage guard compares content)."""
    ds = pydicom.dcmread(source)
    noise = np.random.default_rng(4).integers(-20, 20, ds.pixel_array.shape)
    ds.PixelData = (ds.pixel_array + noise).astype(ds.pixel_array.dtype).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    out.parent.mkdir(parents=True)
    ds.save_as(out)
    return out


def _adapters(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}


class Run:
    """One tiny preset through the pipeline, each stage run on first use (and once), so that a broken stage
    fails its own test and the stages before it still report."""

    def __init__(self, preset: str, data: Data, out: Path) -> None:
        self.preset, self.data, self.out = preset, data, out

    @cached_property
    def trained(self) -> tuple[Any, dict[str, Any] | None]:
        """The model to score (trainable ones: trained two steps and reloaded from the saved checkpoint) and
        what training did (steps, checkpoint, adapters before / after / reloaded; None if training-free)."""
        torch.manual_seed(0)
        model = create_model(self.preset, image_size=MODEL_SIZE)
        if model_kind(self.preset) is not ModelKind.TRAINABLE:
            return model, None
        before = _adapters(model)
        result = train(
            model, self.data.auxiliary, self.out / "train", epochs=1, lr=TINY_LR, batch_size=2, seed=0,
            device="cpu", cache_features=False, progress=False,
        )  # fmt: skip
        after = _adapters(model)
        model = load_checkpoint(result.checkpoint)  # score what was saved, as a later session would
        record = {"steps": result.steps, "checkpoint": result.checkpoint, "before": before, "after": after}
        return model, {**record, "reloaded": _adapters(model)}

    @property
    def model(self) -> Any:
        return self.trained[0]

    def references(self, pool: pd.DataFrame, source: str) -> dict[str, Any]:
        """``references=`` for :func:`score`: a draw of ``pool`` for a model that needs references, else none."""
        if not self.model.needs_references:
            return {}
        return {"references": draw_references(pool, len(pool), seed=0, source=source)}

    @cached_property
    def medical_targets(self) -> pd.DataFrame:
        """The medical rows scored: all; only the DICOM ones for a model that needs references (references must be
        of the targets' kind, and the synthetic references are DICOM)."""
        if not self.model.needs_references:
            return self.data.medical
        return self.data.medical[self.data.medical["source_format"] == "dicom"].reset_index(drop=True)

    @cached_property
    def labelled(self) -> PredictionReader:
        refs = self.references(self.data.normals, "normals")
        out = self.out / "pred_labelled"
        return score(self.model, self.data.labelled, out, batch_size=4, device="cpu", progress=False, **refs)

    @cached_property
    def medical(self) -> PredictionReader:
        refs = self.references(self.data.dicom_normals, "dicom_normals")
        out = self.out / "pred_medical"
        return score(self.model, self.medical_targets, out, batch_size=4, device="cpu", progress=False, **refs)

    @cached_property
    def evaluation(self) -> dict[str, Any]:
        predictions = {self.preset: self.labelled.folder}
        return evaluate(
            predictions, self.data.labelled, self.out / "evaluation", metrics=METRICS, ci={"n_resamples": 20}
        )

    @cached_property
    def report(self) -> Path:
        self.evaluation  # noqa: B018 - the evaluation folder must exist first
        return build_report(self.out / "evaluation", predictions=[self.labelled.folder], manifest=self.data.labelled)

    @cached_property
    def threshold(self) -> float:
        """The median pixel score of the medical set: masks neither empty nor full whatever the weights give."""
        return float(np.median(np.concatenate([m.ravel() for _, m in self.medical.iter_maps()])))

    @cached_property
    def export_labelled(self) -> Path:
        threshold = fixed_threshold(self.threshold)
        return export_predictions(
            self.labelled.folder,
            self.data.labelled,
            self.out / "export_labelled",
            formats=("png",),
            threshold=threshold,
        )

    @cached_property
    def export_medical(self) -> Path:
        formats = ("png", "nifti", "dicom-seg", "pmap")
        threshold = fixed_threshold(self.threshold)
        return export_predictions(
            self.medical.folder, self.medical_targets, self.out / "export_medical", formats=formats, threshold=threshold
        )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Callable[[str], Run]:
    """``pipeline(name)``: the run of ``name``'s tiny preset, one per preset for the whole module (its stages run
    inside the tests, under conftest's per-test cache isolation)."""
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        preset = tiny_preset(name)
        if preset not in runs:
            runs[preset] = Run(preset, data, tmp_path_factory.mktemp(preset))
        return runs[preset]

    return get


MODELS = list_models()


def test_every_full_size_model_has_a_tiny_preset() -> None:
    assert MODELS, "no model is registered"
    for name in MODELS:
        assert tiny_preset(name) in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_train_stage(name: str, pipeline: Callable[[str], Run]) -> None:
    run = pipeline(name)
    model, trained = run.trained
    card = model.card()
    assert card["name"] == run.preset and card["random_weights"] is True
    if trained is None:
        assert model_kind(run.preset) is not ModelKind.TRAINABLE and card["trainable_parameters"] == 0
        return
    assert trained["steps"] == 2 and trained["checkpoint"].is_dir()
    before, after, reloaded = trained["before"], trained["after"], trained["reloaded"]
    assert before.keys() == after.keys() == reloaded.keys() and before
    assert any(not torch.equal(before[k], after[k]) for k in before), "two optimiser steps left every adapter as it was"
    assert all(torch.equal(after[k], reloaded[k]) for k in after), "the saved checkpoint does not hold the adapters"
    assert card["trainable_parameters"] == sum(v.numel() for v in after.values())


@pytest.mark.parametrize("name", MODELS)
def test_score_stage_gives_maps_in_unit_range_at_native_size(
    name: str, pipeline: Callable[[str], Run], data: Data
) -> None:
    run = pipeline(name)
    for reader, manifest in ((run.labelled, data.labelled), (run.medical, run.medical_targets)):
        assert reader.indices.tolist() == list(range(len(manifest)))
        assert predictions_random_weights(reader.meta) is True
        assert reader.meta["model"]["name"] == run.preset
        scores = np.asarray(reader.image_scores)
        assert scores.shape == (len(manifest),) and np.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()
        for index, pixel_map in reader.iter_maps():
            assert pixel_map.shape == _native_shape(manifest.iloc[index])
            assert np.isfinite(pixel_map).all() and pixel_map.min() >= 0.0 and pixel_map.max() <= 1.0
            assert pixel_map.max() > pixel_map.min(), "a constant map carries no localisation"


@pytest.mark.parametrize("name", MODELS)
def test_eval_stage_gives_every_metric_labelled_random_weights(
    name: str, pipeline: Callable[[str], Run], data: Data
) -> None:
    run = pipeline(name)
    settings, rows = run.evaluation["settings"], run.evaluation["rows"]
    assert settings["random_weights"] == {run.preset: True} and "RANDOM WEIGHTS" in settings["warning"]
    on_disk = json.loads((Path(run.evaluation["out_dir"]) / "metrics.json").read_text())
    assert len(on_disk["rows"]) == len(rows) and on_disk["settings"]["random_weights"] == {run.preset: True}
    by_metric = {r["metric"]: r for r in rows if (r["class_name"], r["aggregate"]) == ("skin", "class")}
    assert set(by_metric) == set(METRICS)
    for row in by_metric.values():
        assert row["model"] == run.preset and row["random_weights"] is True and row["n_images"] == 4
        assert row["status"] == "ok" and 0.0 <= row["value"] <= 1.0
    labels = data.labelled["label"].astype(int).to_numpy()
    expected_image = roc_auc_score(labels, np.asarray(run.labelled.image_scores))
    assert by_metric["image_auroc"]["value"] == pytest.approx(expected_image, abs=1e-9)
    maps = dict(run.labelled.iter_maps())
    truth = np.concatenate([read_mask(data.labelled.iloc[i]).ravel() for i in range(len(data.labelled))])
    pixels = np.concatenate([maps[i].ravel() for i in range(len(data.labelled))])
    assert by_metric["pixel_auroc"]["value"] == pytest.approx(roc_auc_score(truth, pixels), abs=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_report_stage_writes_html_and_markdown_that_say_random_weights(
    name: str, pipeline: Callable[[str], Run]
) -> None:
    run = pipeline(name)
    html, markdown = run.report, run.report.parent / "report.md"
    assert html.name == "report.html" and html.is_file() and markdown.is_file()
    for text in (html.read_text(encoding="utf-8"), markdown.read_text(encoding="utf-8")):
        assert "RANDOM WEIGHTS" in text and run.preset in text
        assert text.index("RANDOM WEIGHTS") < text.index("Settings"), "no random-weights banner above the results"
    assert "<script" not in html.read_text(encoding="utf-8").lower()  # standalone, no scripts
    figures = [line.split("](")[1].split(")")[0] for line in markdown.read_text().splitlines() if "](figures/" in line]
    assert figures and all((run.report.parent / f).is_file() for f in figures)
    results = pd.read_csv(run.report.parent / "tables" / "results.csv")
    assert set(results["model"]) == {run.preset}


@pytest.mark.parametrize("name", MODELS)
def test_export_stage_writes_readable_files_of_the_source_shape(
    name: str, pipeline: Callable[[str], Run], data: Data
) -> None:
    run = pipeline(name)
    labelled = json.loads((run.export_labelled / "export.json").read_text())
    assert labelled["random_weights"] is True and labelled["models"][0]["name"] == run.preset
    assert labelled["summary"]["skipped"] == 0 and (run.export_labelled / "index.html").is_file()
    maps = dict(run.labelled.iter_maps())
    for case in labelled["cases"]:
        pixel_map = maps[case["index"]]
        mask = np.asarray(Image.open(run.export_labelled / case["files"]["mask"]))
        assert mask.shape == (NATIVE, NATIVE)
        np.testing.assert_array_equal(mask, np.where(pixel_map >= run.threshold, 255, 0))
        np.testing.assert_array_equal(np.load(run.export_labelled / case["files"]["heatmap_npy"]), pixel_map)
        with Image.open(run.export_labelled / case["files"]["overlay"]) as overlay:
            assert overlay.size[0] >= NATIVE
    medical = json.loads((run.export_medical / "export.json").read_text())
    sources = run.medical_targets["image_path"].nunique()
    assert medical["random_weights"] is True
    assert medical["summary"] == {"sources": sources, "written": sources, "skipped": 0}
    maps = dict(run.medical.iter_maps())
    for case in medical["cases"]:
        row, files = run.medical_targets.iloc[case["index"]], case["volume_files"]
        pixel_map = maps[case["index"]]
        if case["source_format"] == "dicom":
            seg = hd.seg.segread(run.export_medical / files["seg"])
            source = pydicom.dcmread(row["image_path"])
            stored = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[0, ..., 0]
            assert seg.SegmentationType == "BINARY" and stored.shape == pixel_map.shape
            np.testing.assert_array_equal(stored.astype(bool), pixel_map >= run.threshold)
            pmap = pydicom.dcmread(run.export_medical / files["pmap"])
            assert (int(pmap.Rows), int(pmap.Columns)) == pixel_map.shape
            assert pmap.SeriesDescription.startswith("RESEARCH USE ONLY")
            nifti = nib.load(run.export_medical / files["nifti_mask"])
            assert np.asarray(nifti.dataobj).sum() == (pixel_map >= run.threshold).sum()
        else:
            volume = nib.load(row["image_path"])
            mask = nib.load(run.export_medical / files["nifti_mask"])
            assert mask.shape == volume.shape
            np.testing.assert_allclose(mask.affine, volume.affine)
            frame = np.take(np.asarray(mask.dataobj), int(row["frame"]), axis=int(row["slice_axis"]))
            np.testing.assert_array_equal(frame.astype(bool), pixel_map >= run.threshold)
            assert not any(files.get(k) for k in ("seg", "pmap"))
