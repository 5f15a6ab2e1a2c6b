"""The batched scorer and ``medad score``: every input kind, native-size maps, resume, privacy, user errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.engine.predictions import PredictionReader
from medad.engine.scorer import score, score_files
from medad.errors import MedadError


@pytest.fixture(scope="module")
def tiny_model():
    from medad.models import create_model

    return create_model("ad_dinov3_tiny")


def _png_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (height, width) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return folder


def _count_forward(model) -> tuple[list[int], object]:
    seen: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    return seen, handle


def test_png_folder_maps_at_native_size_tables_and_heatmaps(tmp_path, tiny_model, capsys):
    from medad.data import manifest_from_paths

    sizes = [(40, 56), (71, 33), (64, 64)]
    folder = _png_folder(tmp_path / "imgs", sizes)
    out = tmp_path / "out"
    table = score_files([folder], out, model_name="ad_dinov3_tiny", batch_size=2, device="cpu", progress=False)

    manifest = manifest_from_paths([str(folder)])
    reader = PredictionReader(out / "predictions")
    assert reader.indices.tolist() == list(range(len(sizes)))
    native = {f"img_{k}.png": size for k, size in enumerate(sizes)}
    for index, pixel_map in reader.iter_maps():
        assert pixel_map.shape == native[Path(manifest.loc[index, "image_path"]).name]
        assert pixel_map.dtype == np.float32
        assert 0.0 <= pixel_map.min() <= pixel_map.max() <= 1.0

    csv = pd.read_csv(out / "scores.csv")
    assert list(csv["case_id"]) == list(manifest["case_id"])
    assert {"case_id", "image_score", "max_pixel_score"} <= set(csv.columns)
    for row in csv.itertuples():
        heat = np.asarray(Image.open(out / row.heatmap))
        assert heat.shape == reader.get_map(row.index).shape
        assert np.isclose(row.max_pixel_score, reader.get_map(row.index).max())
        assert Path(row.heatmap).stem == row.case_id
    assert json.loads((out / "scores.json").read_text())["images"][0]["case_id"] == csv["case_id"][0]
    assert len(table) == len(sizes)

    meta = json.loads((out / "meta.json").read_text())
    assert meta["random_weights"] is True
    assert "RANDOM" in capsys.readouterr().err


def test_dicom_input_native_size_and_no_source_path(tmp_path):
    from pydicom.data import get_testdata_file

    dcm = tmp_path / "in" / "Doe^John_12345.dcm"
    dcm.parent.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), dcm)
    out = tmp_path / "out"
    score_files([dcm], out, model_name="ad_dinov3_tiny", batch_size=4, device="cpu", progress=False)

    reader = PredictionReader(out / "predictions")
    assert reader.get_map(0).shape == (128, 128)
    for name in ("scores.csv", "scores.json", "meta.json"):
        text = (out / name).read_text()
        assert "Doe^John" not in text and str(dcm.parent) not in text
    assert not any("Doe" in p.name for p in (out / "heatmaps").iterdir())


def test_nifti_volume_scores_every_slice_at_native_size(tmp_path):
    import nibabel as nib

    from medad.data import manifest_from_paths

    volume = np.random.default_rng(1).normal(size=(30, 22, 3)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    out = tmp_path / "out"
    score_files([path], out, model_name="ad_dinov3_tiny", batch_size=2, device="cpu", progress=False)

    manifest = manifest_from_paths([str(path)])
    reader = PredictionReader(out / "predictions")
    assert len(reader) == len(manifest) >= 3
    for index, pixel_map in reader.iter_maps():
        axis, frame = int(manifest.loc[index, "slice_axis"]), int(manifest.loc[index, "frame"])
        assert pixel_map.shape == np.take(volume, frame, axis=axis).shape
    names = {p.name for p in (out / "heatmaps").iterdir()}
    assert len(names) == len(manifest)
    assert "vol" not in (out / "scores.csv").read_text()


def test_score_resumes_and_skips_done_indices(tmp_path, tiny_model):
    from medad.data import manifest_from_paths

    manifest = manifest_from_paths([str(_png_folder(tmp_path / "imgs", [(32, 32)] * 5))])
    out = tmp_path / "pred"
    seen, handle = _count_forward(tiny_model)
    try:
        first = score(tiny_model, manifest, out, batch_size=2, chunk_size=2, device="cpu", progress=False)
        assert sum(seen) == 5
        maps = {i: m.copy() for i, m in first.iter_maps()}
        chunks = sorted((out / "chunks").iterdir())
        assert len(chunks) == 3
        with np.load(chunks[1]) as data:
            lost = data["indices"].tolist()
        chunks[1].unlink()
        seen.clear()
        again = score(tiny_model, manifest, out, batch_size=2, chunk_size=2, device="cpu", progress=False)
        assert sum(seen) == len(lost) == 2
        assert again.indices.tolist() == list(range(5))
        for i, m in again.iter_maps():
            np.testing.assert_allclose(m, maps[i], atol=1e-6)
        seen.clear()
        score(tiny_model, manifest, out, batch_size=2, chunk_size=2, device="cpu", progress=False)
        assert seen == []
    finally:
        handle.remove()


def test_score_refuses_a_folder_of_other_images(tmp_path, tiny_model):
    from medad.data import manifest_from_paths

    first = manifest_from_paths([str(_png_folder(tmp_path / "a", [(32, 32)] * 2))])
    other = manifest_from_paths([str(_png_folder(tmp_path / "b", [(24, 24)] * 3))])
    score(tiny_model, first, tmp_path / "pred", device="cpu", progress=False)
    with pytest.raises(MedadError, match="other images"):
        score(tiny_model, other, tmp_path / "pred", device="cpu", progress=False)


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from medad.cli import main

    monkeypatch.setattr(sys, "argv", ["medad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_cli_score_writes_outputs(tmp_path, monkeypatch, capsys):
    folder = _png_folder(tmp_path / "imgs", [(30, 40)])
    out = tmp_path / "out"
    code, err = _run_cli(
        monkeypatch,
        capsys,
        "score",
        str(folder),
        "--model",
        "ad_dinov3_tiny",
        "--out",
        str(out),
        "--batch-size",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "RANDOM" in err
    assert (out / "scores.csv").exists() and len(list((out / "heatmaps").iterdir())) == 1


def test_cli_user_errors_exit_2(tmp_path, monkeypatch, capsys):
    folder = _png_folder(tmp_path / "imgs", [(30, 40)])
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run_cli(
        monkeypatch, capsys, "score", str(folder), "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")
    )
    assert code == 2 and "nope" in err and "does not exist" in err
    code, err = _run_cli(
        monkeypatch, capsys, "score", str(empty), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "o2")
    )
    assert code == 2 and "no images" in err.lower() and "Traceback" not in err
    code, err = _run_cli(monkeypatch, capsys, "score", str(folder), "--out", str(tmp_path / "o3"))
    assert code == 2 and "--checkpoint" in err


def test_checkpoint_of_another_backbone_is_refused(tmp_path, monkeypatch, capsys, tiny_model):
    from medad.models import save_checkpoint

    folder = tmp_path / "ckpt"
    save_checkpoint(tiny_model, folder, extra={})
    card = json.loads((folder / "card.json").read_text())
    card["config"]["backbone_overrides"]["embed_dim"] = 128
    (folder / "card.json").write_text(json.dumps(card))
    img = _png_folder(tmp_path / "imgs", [(30, 40)])
    code, err = _run_cli(
        monkeypatch,
        capsys,
        "score",
        str(img),
        "--checkpoint",
        str(folder),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    )
    assert code == 2 and "Traceback" not in err
    assert "backbone" in err and str(folder) in err
    assert not (tmp_path / "o" / "scores.csv").exists()


def test_native_maps_are_the_bilinear_upsampling_of_the_model_map(tmp_path, tiny_model):
    import torch
    import torch.nn.functional as F

    from medad.data import make_dataset, manifest_from_paths, normalize_images

    folder = _png_folder(tmp_path / "imgs", [(40, 56)])
    manifest = manifest_from_paths([str(folder)])
    reader = score(tiny_model, manifest, tmp_path / "pred", device="cpu", progress=False)
    sample = make_dataset(manifest, tiny_model.image_size, tiny_model.mean, tiny_model.std, masks=False, uint8=True)[0]
    with torch.inference_mode():
        images = normalize_images(sample["image"][None], tiny_model.mean, tiny_model.std)
        model_map = tiny_model(images, ["object"]).pixel_scores[0]
    expected = F.interpolate(model_map[None, None], size=(40, 56), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(reader.get_map(0), expected.numpy(), atol=1e-5)
    nearest = F.interpolate(model_map[None, None], size=(40, 56), mode="nearest")[0, 0].numpy()
    assert np.abs(reader.get_map(0) - nearest).max() > 1e-3  # the check can tell the two apart
