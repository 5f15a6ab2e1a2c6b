"""The dataset catalogue: one registered description per kind, read by detection, loading, layouts and words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import medad
import medad.data
from medad.data import description, list_datasets, list_layouts, load_manifest
from medad.data.description import DatasetDescription, Detector, SyntheticRequest, register_dataset
from medad.data.registry import _detectors, clean_class_word, detect_kind, reference_class_word, write_layout
from medad.data.transforms import ToSampled
from medad.errors import DataError

BMAD = "bmad_brainmri bmad_liverct bmad_resc bmad_oct2017 bmad_chestxray bmad_histopathology"
KINDS = (
    "mvtec mpdd btad visa isic clinicdb colondb tn3k kvasir mvtec_style folder csv jsonl meta_json dicom nifti files "
    f"headct brainmri_kaggle br35h {BMAD}"
)
LAYOUTS = (
    "mvtec mpdd btad visa visa-meta mvtec_style isic2016 isic2017 isic2018 clinicdb-tiff clinicdb-png colondb-pranet "
    f"colondb-bmp tn3k kvasir isic-anomalyclip folder headct brainmri-kaggle br35h {BMAD.replace('_', '-')}"
)
# The kinds `auto` tries, in order (what registry._detectors() held before the descriptions).
DETECTION_ORDER = (
    f"visa isic tn3k clinicdb kvasir headct br35h brainmri_kaggle clinicdb colondb folder {BMAD} btad mpdd mvtec "
    "visa mvtec_style visa meta_json colondb csv jsonl nifti dicom jsonl nifti dicom folder files"
)


@pytest.fixture
def fresh_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register kinds without leaving them behind."""
    monkeypatch.setattr(description, "_CATALOGUE", dict(description.catalogue()))


def test_every_built_in_kind_and_layout_is_registered_once() -> None:
    assert list_datasets() == sorted(KINDS.split())
    assert list_layouts() == sorted(LAYOUTS.split())
    assert [kind for _detector, kind in _detectors()] == DETECTION_ORDER.split()


@pytest.mark.parametrize("layout", sorted(LAYOUTS.split()))
def test_every_synthetic_layout_is_detected_as_its_own_kind(tmp_path: Path, layout: str) -> None:
    """A new kind's detector must not take another layout (each layout's writer is registered by its kind)."""
    kind = next(d.name for d in description.catalogue().values() if layout in d.layouts)
    root = write_layout(tmp_path / layout, layout, n_normal=1, n_abnormal=2, size=16)
    assert detect_kind(root) == kind


def test_class_words_come_from_the_descriptions() -> None:
    assert reference_class_word("visa", "candle") == "Data" and reference_class_word("mvtec", "bottle") == "bottle"
    assert reference_class_word("kvasir", "polyp") is None and reference_class_word("unknown", "x") is None
    assert clean_class_word("btad", "02") == "product" and clean_class_word("mvtec", "bottle") is None


def _make_toy(root: str | Path, split: str = "test", strict: bool = True, word: str = "toy") -> pd.DataFrame:
    return pd.DataFrame({"root": [str(root)], "split": [split], "word": [word]})


def _write_toy(root: Path, request: SyntheticRequest) -> None:
    (root / "TOY").write_text(f"{request.n_abnormal} {request.size}", encoding="utf-8")


def test_a_registered_kind_is_detected_loaded_and_written(tmp_path: Path, fresh_catalogue: None) -> None:
    toy = DatasetDescription(
        name="toy",
        make=_make_toy,
        detectors=(Detector(5, "a TOY marker file", lambda r: (r / "TOY").is_file()),),
        layouts={"toy-layout": _write_toy},
    )
    assert register_dataset(toy) is toy
    assert "toy" in list_datasets() and "toy-layout" in list_layouts()
    root = write_layout(tmp_path / "t", "toy-layout", n_abnormal=4, size=20)
    assert (root / "TOY").read_text(encoding="utf-8") == "4 20"
    assert detect_kind(root) == "toy"
    manifest = load_manifest(root, word="ok")
    assert manifest["word"].tolist() == ["ok"] and manifest["split"].tolist() == ["test"]
    with pytest.raises(DataError, match=r"option\(s\) \['axis'\] do not apply to dataset kind 'toy'"):
        load_manifest(root, "toy", axis=2)


def test_a_second_registration_of_a_kind_layout_or_detector_order_is_refused(fresh_catalogue: None) -> None:
    with pytest.raises(DataError, match="'mvtec' is registered already"):
        register_dataset(DatasetDescription(name="mvtec", make=_make_toy))
    with pytest.raises(DataError, match=r"layout\(s\) \['folder'\] are registered already"):
        register_dataset(DatasetDescription(name="toy", make=_make_toy, layouts={"folder": _write_toy}))
    with pytest.raises(DataError, match=r"detector order\(s\) \[10\] of 'toy' are taken \(by 'visa'\)"):
        register_dataset(DatasetDescription(name="toy", make=_make_toy, detectors=(Detector(10, "x", bool),)))
    assert "toy" not in list_datasets()


def test_unknown_kind_and_layout_name_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset kind 'nope'; use one of bmad_brainmri, .*, visa, auto"):
        load_manifest(tmp_path, "nope")
    with pytest.raises(DataError, match=r"unknown synthetic layout 'nope'; use one of bmad-brainmri, .*visa-meta"):
        write_layout(tmp_path, "nope")


def test_to_sampled_follows_monais_dictionary_contract() -> None:
    item = {"image": np.full((3, 2, 2), 255, np.uint8), "other": np.zeros((3, 2, 2), np.uint8), "label": 1}
    out = ToSampled(("image", "other"), mean=(0.5,) * 3, std=(0.5,) * 3)(item)
    assert out["image"].eq(1.0).all() and out["other"].eq(-1.0).all() and out["label"] == 1
    with pytest.raises(KeyError):
        ToSampled(("image", "absent"), mean=(0.5,) * 3, std=(0.5,) * 3)(item)
    kept = ToSampled(("image", "absent"), mean=(0.5,) * 3, std=(0.5,) * 3, allow_missing_keys=True)(item)
    assert "absent" not in kept and kept["image"].eq(1.0).all()


def test_public_data_api_is_the_user_facing_names() -> None:
    assert not [name for name in medad.data.__all__ if name.startswith("make_") and name != "make_dataset"]
    assert all(hasattr(medad.data, name) for name in medad.data.__all__)
    assert len(medad.data.__all__) < 25


def test_top_level_entry_points_load_on_first_use() -> None:
    code = "import sys, medad; print('torch' in sys.modules, 'medad.data' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    from medad.data import load_manifest as data_load_manifest
    from medad.models import create_model

    assert medad.create_model is create_model and medad.load_manifest is data_load_manifest
    assert set(medad.__all__) <= set(dir(medad))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = medad.nope  # type: ignore[attr-defined]
