"""The scorer's uint8 samples, normalised later, equal the float samples; masks can be left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image

from medad.data import load_manifest, make_dataset, manifest_from_paths, normalize_images, write_layout

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_uint8_then_normalise_equals_the_float_path(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=50)
    manifest = load_manifest(root, "mvtec")
    floats = make_dataset(manifest, 32, MEAN, STD)
    bytes_ = make_dataset(manifest, 32, MEAN, STD, masks=False, uint8=True)
    for i in range(len(manifest)):
        a, b = floats[i], bytes_[i]
        assert b["image"].dtype == torch.uint8 and "mask" not in b and "mask" in a
        assert torch.equal(normalize_images(b["image"], MEAN, STD), a["image"])
        assert torch.equal(a["orig_size"], b["orig_size"])
    batch = torch.stack([bytes_[i]["image"] for i in range(2)])
    expected = torch.stack([floats[i]["image"] for i in range(2)])
    assert torch.equal(normalize_images(batch, MEAN, STD), expected)


def test_resize_is_pillow_bilinear_of_the_uint8_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (30, 45, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    sample = make_dataset(manifest_from_paths([str(tmp_path)]), 16, MEAN, STD, uint8=True)[0]
    expected = np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(sample["image"].numpy(), expected)
    assert sample["orig_size"].tolist() == [30, 45]


def test_dicom_is_rounded_to_256_levels_in_uint8_mode(tmp_path: Path) -> None:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    manifest = manifest_from_paths([path])
    floats = make_dataset(manifest, 32, MEAN, STD)[0]["image"]
    bytes_ = normalize_images(make_dataset(manifest, 32, MEAN, STD, uint8=True)[0]["image"], MEAN, STD)
    assert (floats - bytes_).abs().max() <= 0.5 / 255 / min(STD) + 1e-6
