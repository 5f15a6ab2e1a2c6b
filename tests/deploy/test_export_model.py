"""`medad export-model`: ONNX / TorchScript files whose outputs equal PyTorch's, with the model card embedded."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import medad
from medad.deploy import export_model, read_card, run_exported
from medad.errors import ConfigError
from medad.models import create_model, save_checkpoint
from tests.cli import run_medad


def _batch(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _expected(model, images: torch.Tensor, word: str) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model.eval()(images, [word] * images.shape[0])
    return out.pixel_scores.numpy(), out.image_scores.numpy()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A tiny model whose adapters moved away from their initialisation, saved as a checkpoint."""
    model = create_model("ad_dinov3_tiny")
    with torch.no_grad():
        for p in model.trainable_modules().parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    folder = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "epoch_001", {"seed": 0})
    return model, folder


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_checkpoint_equals_pytorch_at_other_batch_sizes(fmt, trained_checkpoint, tmp_path) -> None:
    model, folder = trained_checkpoint
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    result = export_model(out, "brain", fmt=fmt, checkpoint=folder)
    assert result.max_abs_diff <= 1e-4
    for n in (1, 3):  # the export traced batch 1: the batch axis is dynamic
        images = _batch(n, model.image_size)
        pixel, score = run_exported(out, fmt, images.numpy())
        want_pixel, want_score = _expected(model, images, "brain")
        assert pixel.shape == (n, model.image_size, model.image_size) and score.shape == (n,)
        np.testing.assert_allclose(pixel, want_pixel, atol=1e-4, rtol=0)
        np.testing.assert_allclose(score, want_score, atol=1e-4, rtol=0)
    other_word = _expected(model, _batch(3, model.image_size), "skin")[0]
    assert np.abs(other_word - pixel).max() > 1e-4  # the class word's text matrix really is baked in

    card = read_card(out)
    assert card == json.loads(out.with_name(out.name + ".card.json").read_text())
    assert card["class_word"] == "brain" and card["medad_version"] == medad.__version__
    assert card["compat"] == model.compat and card["format"] == fmt and card["random_weights"] is True
    assert card["weights"]["adapters"]["sha256"] == json.loads((folder / "card.json").read_text())["adapters_sha256"]
    assert card["weights"]["backbone"]["id"] == model.card()["backbone"]["id"]
    assert "sha256" in card["weights"]["backbone"] and "sha256" in card["weights"]["text"]
    assert card["input"]["shape"] == ["batch", 3, model.image_size, model.image_size]


def test_onnx_metadata_props_and_no_text_tower(tmp_path) -> None:
    import onnx

    out = tmp_path / "tiny.onnx"
    export_model(out, "polyp", fmt="onnx", model_name="ad_dinov3_tiny")
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["class_word"] == "polyp" and props["medad_version"] == medad.__version__
    assert json.loads(props["medad_card"])["name"] == "ad_dinov3_tiny"
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["pixel_scores", "image_scores"]
    assert not any("text_encoder" in init.name for init in proto.graph.initializer)


def test_cli_export_model_and_bad_input(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "deploy" / "tiny.onnx"
    code, text = run_medad(
        monkeypatch, capsys, "export-model", "--model", "ad_dinov3_tiny", "--class-word", "skin", "--out", str(out)
    )
    assert code == 0, text
    assert "exported onnx model for class word 'skin'" in text and "RANDOM WEIGHTS" in text
    assert out.is_file()
    for args, message in (
        (["--format", "tflite"], "is not an export format"),
        (["--class-word", " "], "--class-word is empty"),
        (["--checkpoint", str(tmp_path)], "give exactly one of --checkpoint"),
        (["--out", str(tmp_path / "x.pt")], "'x.pt' does not end in .onnx, the suffix of --format onnx; use --out "
         "'x.onnx' (or --format torchscript for a .pt file)"),
        (["--format", "torchscript"], "'x.onnx' does not end in .pt / .pth / .ts"),
    ):
        base = {"--model": "ad_dinov3_tiny", "--class-word": "skin", "--out": str(tmp_path / "x.onnx")}
        extra = dict(zip(args[::2], args[1::2], strict=True))
        flat = [item for pair in {**base, **extra}.items() for item in pair]
        code, text = run_medad(monkeypatch, capsys, "export-model", *flat)
        assert code == 2 and message in text and "Traceback" not in text, text
        assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ConfigError, match="exports AD-DINOv3 models"):
        export_model(tmp_path / "w.onnx", "skin", model=create_model("winclip_tiny"))


@pytest.mark.slow
def test_real_sized_vit_b_onnx_equals_pytorch(tmp_path) -> None:
    """A DINOv3 ViT-B/16 at 224 px (random weights, 4 tapped layers, 768-d adapters) through onnxruntime."""
    start = time.monotonic()
    model = create_model(
        "ad_dinov3",
        backbone="vit_base_patch16_dinov3",
        layers=(3, 6, 9, 12),
        image_size=224,
        random_init=True,
        text_model="ViT-B-32",
        text_overrides={"embed_dim": 64, "text_cfg": {"width": 64, "heads": 2, "layers": 1}},
        text_disk_cache=False,
    )
    assert model.backbone.model.embed_dim == 768 and len(model.backbone.model.blocks) == 12
    out = tmp_path / "vit_b.onnx"
    # export_model runs the file in onnxruntime on a random batch of 2 (traced at 1) and compares with PyTorch
    result = export_model(out, "brain", fmt="onnx", model=model)
    assert 0 < result.max_abs_diff <= 1e-4
    assert read_card(out)["weights"]["backbone"]["id"].startswith("vit_base_patch16_dinov3")
    print(f"ViT-B export + check: {time.monotonic() - start:.1f} s")
