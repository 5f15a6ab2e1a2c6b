"""make_dataset yields Samples per the contract; the cache is keyed by config and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader

from medad.data import load_manifest, make_dataset, read_mask, write_layout
from medad.data.transforms import cache_folder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_sample_contract(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "visa", "visa", size=48)
    manifest = load_manifest(root, "visa")
    dataset = make_dataset(manifest, 32, MEAN, STD)
    abnormal = int(np.flatnonzero(manifest["label"].to_numpy() == 1)[0])
    sample = dataset[abnormal]
    assert set(sample) == {"image", "mask", "label", "class_name", "index", "orig_size"}
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, 32, 32) and set(sample["mask"].unique().tolist()) == {0.0, 1.0}
    assert sample["label"].item() == 1 and sample["index"].item() == abnormal
    assert sample["orig_size"].tolist() == [48, 48] and sample["class_name"] == manifest["class_name"][abnormal]
    native = read_mask(manifest.iloc[abnormal])
    assert abs(sample["mask"].mean().item() - native.mean()) < 0.05
    assert abs(sample["image"][0].mean().item() * STD[0] + MEAN[0] - 0.5) < 0.4
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["class_name"]) == 4


def test_unknown_label_is_minus_one(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "f", "folder", n_normal=0, size=32)
    (root / "masks").rename(root / "elsewhere")
    manifest = load_manifest(root, "folder")
    sample = make_dataset(manifest, 16, MEAN, STD)[0]
    assert sample["label"].item() == -1 and sample["mask"].sum() == 0


def test_cache_is_written_reused_and_keyed_by_config(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=48)
    manifest = load_manifest(root, "mvtec")
    cache = tmp_path / "cache"
    first = [make_dataset(manifest, 32, MEAN, STD, cache_dir=cache)[i] for i in range(len(manifest))]
    folder = cache_folder(cache, 32, MEAN, STD)
    assert len(list(folder.glob("*.pt"))) == len(manifest)
    assert cache_folder(cache, 64, MEAN, STD) != folder
    image = Path(manifest["image_path"][0])
    image.rename(image.with_suffix(".bak"))
    image.with_suffix(".bak").rename(image)
    second = make_dataset(manifest, 32, MEAN, STD, cache_dir=cache)[2]
    assert torch.equal(second["image"], first[2]["image"]) and second["class_name"] == first[2]["class_name"]
    uncached = make_dataset(manifest, 32, MEAN, STD)[2]
    assert torch.allclose(uncached["image"], first[2]["image"])


def test_image_is_normalised_with_the_given_mean_and_std(tmp_path: Path) -> None:
    from PIL import Image

    from medad.data import manifest_from_paths

    colour = (200, 100, 50)
    Image.fromarray(np.full((40, 56, 3), colour, np.uint8)).save(tmp_path / "flat.png")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    sample = make_dataset(manifest_from_paths([tmp_path / "flat.png"]), 32, mean, std)[0]
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std, strict=True)])
    assert torch.allclose(sample["image"].mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(sample["image"].std(dim=(1, 2)), torch.zeros(3), atol=1e-5)  # a flat image stays flat
