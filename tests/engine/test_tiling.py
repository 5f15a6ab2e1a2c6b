"""Tiled (sliding-window) scoring: native-size maps stitched from model-size windows, max image score, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medad.data import manifest_from_paths, normalize_images
from medad.engine.predictions import PredictionReader
from medad.engine.prompting import prompt_words
from medad.engine.scorer import score
from medad.errors import ConfigError, DataError

S = 112  # ad_dinov3_tiny's input side


@pytest.fixture(scope="module")
def model():
    from medad.models import create_model

    torch.manual_seed(0)
    return create_model("ad_dinov3_tiny").eval()


def _write(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)
    return folder


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _direct(model, crops: list[np.ndarray], word: str) -> dict[str, torch.Tensor]:
    """The slow reference: the model run on (H, W, 3) uint8 crops of the window size."""
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return model(normalize_images(images, model.mean, model.std), [word] * len(crops))


def _word(model, manifest) -> str:
    return prompt_words(manifest, model.compat, None)[0]


def _count_forward(model) -> tuple[list[int], object]:
    seen: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    return seen, handle


def test_native_size_dataset_yields_the_unresized_pixels(tmp_path, model):
    from medad.data import make_dataset

    image = _noise(70, 130, seed=9)
    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "n.png", image))])
    sample = make_dataset(manifest, None, model.mean, model.std, masks=False, uint8=True)[0]
    assert sample["image"].dtype == torch.uint8
    assert torch.equal(sample["image"], torch.from_numpy(image).permute(2, 0, 1))
    assert sample["orig_size"].tolist() == [70, 130] and int(sample["index"]) == 0 and "mask" not in sample
    floats = make_dataset(manifest, None, model.mean, model.std, cache_dir=tmp_path / "cache")[0]
    expected = normalize_images(torch.from_numpy(image).permute(2, 0, 1), model.mean, model.std)
    torch.testing.assert_close(floats["image"], expected)
    assert floats["mask"].shape == (1, 70, 130) and not floats["mask"].any()


def test_window_size_image_tiled_equals_untiled(tmp_path, model):
    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "a.png", _noise(S, S)))])
    plain = score(model, manifest, tmp_path / "plain", device="cpu", progress=False)
    tiled = score(model, manifest, tmp_path / "tiled", device="cpu", progress=False, tile=True)
    assert tiled.get_map(0).shape == (S, S)
    np.testing.assert_allclose(tiled.get_map(0), plain.get_map(0), atol=1e-5)
    np.testing.assert_allclose(tiled.image_scores[0], plain.image_scores[0], atol=1e-6)


def test_two_windows_without_overlap_are_the_crops_maps_and_max_score(tmp_path, model):
    image = np.concatenate([_noise(S, S), np.full((S, S, 3), 128, np.uint8)], axis=1)  # noisy left, flat right
    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "wide.png", image))])
    seen, handle = _count_forward(model)
    try:
        reader = score(
            model, manifest, tmp_path / "p", batch_size=2, device="cpu", progress=False, tile=True, tile_overlap=0
        )
    finally:
        handle.remove()
    assert seen == [2]  # both windows in one forward pass
    ref = _direct(model, [image[:, :S], image[:, S:]], _word(model, manifest))
    stitched = reader.get_map(0)
    assert stitched.shape == (S, 2 * S)
    np.testing.assert_allclose(stitched[:, :S], ref.pixel_scores[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(stitched[:, S:], ref.pixel_scores[1].numpy(), atol=1e-5)
    scores = ref.image_scores.numpy()
    assert abs(scores[0] - scores[1]) > 1e-3  # the rule below is visible: max, not mean or last
    np.testing.assert_allclose(reader.image_scores[0], scores.max(), atol=1e-6)


def test_non_multiple_size_native_map_batches_and_blends(tmp_path, model):
    height, width = 150, 260
    image = _noise(height, width, seed=3)
    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "odd.png", image))])
    seen, handle = _count_forward(model)
    try:
        reader = score(
            model, manifest, tmp_path / "p", batch_size=4, num_workers=1, device="cpu", progress=False, tile=True
        )
    finally:
        handle.remove()
    # windows 84 px apart (112 * 0.75): rows start at 0, 38; columns at 0, 84, 148 -> 6 windows, 4 per pass
    assert seen == [4, 2]
    stitched = reader.get_map(0)
    assert stitched.shape == (height, width) and stitched.dtype == np.float32
    assert not np.isnan(stitched).any() and 0.0 <= stitched.min() <= stitched.max() <= 1.0
    starts = [(r, c) for r in (0, 38) for c in (0, 84, 148)]
    ref = _direct(model, [image[r : r + S, c : c + S] for r, c in starts], _word(model, manifest))
    maps = ref.pixel_scores.numpy()
    # pixels one window covers alone carry its map; the others a weighted mean of the covering windows' maps
    np.testing.assert_allclose(stitched[:38, :84], maps[0][:38, :84], atol=1e-5)
    np.testing.assert_allclose(stitched[112:, 196:], maps[5][112 - 38 :, 196 - 148 :], atol=1e-5)
    covering = [maps[0][50, 100], maps[1][50, 100 - 84], maps[3][50 - 38, 100], maps[4][50 - 38, 100 - 84]]
    assert min(covering) - 1e-5 <= stitched[50, 100] <= max(covering) + 1e-5
    # Gaussian blend (sigma = S / 8 = 14 px): pixel (37, 90) lies in windows 0 and 1 only, 34 and 50 px from their
    # centres along the row, so window 0 weighs ~20x more; an equal-weight blend would sit halfway
    near, far = maps[0][37, 90], maps[1][37, 90 - 84]
    assert abs(far - near) > 1e-3
    assert abs(stitched[37, 90] - near) < 0.15 * abs(far - near)
    np.testing.assert_allclose(reader.image_scores[0], ref.image_scores.max().item(), atol=1e-6)


def test_image_smaller_than_a_window_is_padded_and_cropped_back(tmp_path, model):
    image = _noise(60, 80, seed=5)
    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "small.png", image))])
    reader = score(model, manifest, tmp_path / "p", device="cpu", progress=False, tile=True)
    assert reader.get_map(0).shape == (60, 80)
    # reference: the normalised image centred in a window of zeros (the mean colour), its map cropped back
    x = normalize_images(torch.from_numpy(image).permute(2, 0, 1)[None], model.mean, model.std)
    padded = torch.nn.functional.pad(x, (16, 16, 26, 26))
    with torch.inference_mode():
        ref = model(padded, [_word(model, manifest)])
    np.testing.assert_allclose(reader.get_map(0), ref.pixel_scores[0, 26:86, 16:96].numpy(), atol=1e-5)


def test_resume_and_tiled_untiled_refusal(tmp_path, model):
    folder = tmp_path / "imgs"
    for k, (h, w) in enumerate([(130, 120), (112, 140), (90, 200)]):
        _write(folder, f"x{k}.png", _noise(h, w, seed=k))
    manifest = manifest_from_paths([str(folder)])
    out = tmp_path / "p"
    first = score(model, manifest, out, chunk_size=1, device="cpu", progress=False, tile=True)
    assert first.meta["scoring"] == {"tile": True, "tile_overlap": 0.25}
    maps = {i: m.copy() for i, m in first.iter_maps()}
    chunks = sorted((out / "chunks").iterdir())
    with np.load(chunks[1]) as data:
        lost = int(data["indices"][0])
    chunks[1].unlink()
    seen, handle = _count_forward(model)
    try:
        again = score(model, manifest, out, chunk_size=1, device="cpu", progress=False, tile=True)
    finally:
        handle.remove()
    assert seen and again.indices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(again.get_map(lost), maps[lost], atol=1e-6)
    assert again.get_map(lost).shape == np.asarray(Image.open(manifest.loc[lost, "image_path"])).shape[:2]

    with pytest.raises(DataError, match=r"tiled \(--tile --tile-overlap 0.25\).*untiled") as info:
        score(model, manifest, out, device="cpu", progress=False)
    assert str(out) in str(info.value) and "new --out folder" in str(info.value)
    with pytest.raises(DataError, match=r"--tile-overlap 0\.5"):
        score(model, manifest, out, device="cpu", progress=False, tile=True, tile_overlap=0.5)

    plain = tmp_path / "plain"
    assert "scoring" not in score(model, manifest, plain, device="cpu", progress=False).meta
    with pytest.raises(DataError, match=r"untiled.*but this run is tiled"):
        score(model, manifest, plain, device="cpu", progress=False, tile=True)


def test_configuration_errors(tmp_path, model):
    from medad.models import create_model

    manifest = manifest_from_paths([str(_write(tmp_path / "imgs", "a.png", _noise(40, 40)))])
    for overlap in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"tile_overlap.*\[0, 1\)"):
            score(model, manifest, tmp_path / "p", device="cpu", progress=False, tile=True, tile_overlap=overlap)
    with pytest.raises(ConfigError, match="--compile"):
        score(model, manifest, tmp_path / "p", device="cpu", progress=False, tile=True, compile=True)
    mutual = create_model("dinov3_mutual_tiny")
    with pytest.raises(ConfigError, match="transductive"):
        score(mutual, manifest, tmp_path / "p", device="cpu", progress=False, tile=True)
    assert not (tmp_path / "p").exists()


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from medad.cli import main

    monkeypatch.setattr(sys, "argv", ["medad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_cli_tile_flag(tmp_path, monkeypatch, capsys):
    folder = _write(tmp_path / "imgs", "big.png", _noise(130, 250))
    out = tmp_path / "out"
    base = ["score", str(folder), "--model", "ad_dinov3_tiny", "--device", "cpu"]
    code, err = _run_cli(monkeypatch, capsys, *base, "--out", str(out), "--tile", "--tile-overlap", "0.5")
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scoring"] == {"tile": True, "tile_overlap": 0.5}
    assert PredictionReader(out / "predictions").get_map(0).shape == (130, 250)
    assert np.asarray(Image.open(next((out / "heatmaps").iterdir()))).shape == (130, 250)

    code, err = _run_cli(monkeypatch, capsys, *base, "--out", str(tmp_path / "o2"), "--tile", "--tile-overlap", "1")
    assert code == 2 and err.startswith("error: ") and "[0, 1)" in err and "Traceback" not in err
    code, err = _run_cli(monkeypatch, capsys, *base, "--out", str(tmp_path / "o3"), "--tile-overlap", "0.5")
    assert code == 2 and "--tile" in err and err.count("\n") == 1
    code, err = _run_cli(monkeypatch, capsys, *base, "--out", str(out))
    assert code == 2 and "untiled" in err and str(out / "predictions") in err
