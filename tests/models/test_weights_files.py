"""The weights files users download: Meta's DINOv3 .pth, timm safetensors / .bin, OpenAI's TorchScript CLIP .pt
and open_clip's .bin / safetensors, each built faithfully with random values (see faithful_weights.py); each
loads to the same features as its source, is recognised by ``medad weights check`` and converts bit-identically.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from medad.errors import WeightsError
from medad.models.ad_dinov3_config import TINY_DEFAULTS
from medad.models.weights import build_backbone, build_text_tower
from medad.models.weights_files import (
    OPENAI_METADATA_KEYS,
    check_weights_file,
    clip_architecture,
    clip_text_architecture,
    convert_weights_file,
    dinov3_architecture,
    read_weights,
)
from tests.models.faithful_weights import layout, meta_dinov3_state_dict, openai_layout_clip, save_openai_torchscript

DINO = TINY_DEFAULTS["backbone"]
DINO_OVERRIDES = dict(TINY_DEFAULTS["backbone_overrides"])
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 1, "width": 64, "patch_size": 14, "image_size": 28},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
TEXT_OVERRIDES = {"embed_dim": 32, "text_cfg": {"width": 64, "heads": 1, "layers": 1}}  # ViT-B-32's text, narrowed


def _features(vit: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        outs = vit.eval().forward_intermediates(images, indices=[0, 3], norm=True, intermediates_only=True)
    return list(outs)


@pytest.fixture(scope="module")
def dino_source() -> torch.nn.Module:
    torch.manual_seed(3)
    vit = timm.create_model(
        DINO, pretrained=False, num_classes=0, img_size=112, dynamic_img_size=False, **DINO_OVERRIDES
    )
    with torch.no_grad():  # non-zero layer scales, so every block shows in the features
        for name, param in vit.named_parameters():
            if "gamma" in name:
                param.normal_(0.0, 0.5)
    return vit.eval()


def test_meta_layout_writer_matches_meta_release_at_full_size() -> None:
    with torch.device("meta"):
        vit = timm.create_model("vit_large_patch16_dinov3", pretrained=False, num_classes=0)
    state = meta_dinov3_state_dict(vit)
    assert {k: tuple(v.shape) for k, v in state.items()} == layout("dinov3_vitl16_meta_layout")
    assert list(state)[:6] == list(layout("dinov3_vitl16_meta_layout"))[:6]


def test_meta_pth_loads_through_timm_to_the_same_features(tmp_path: Path, dino_source: torch.nn.Module) -> None:
    pth = tmp_path / "dinov3_vits16_pretrain_lvd1689m-test.pth"
    torch.save(meta_dinov3_state_dict(dino_source), pth)
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    want = _features(dino_source, images)
    vit, info = build_backbone(DINO, weights=pth, img_size=112, overrides=DINO_OVERRIDES)
    assert info["source"] == "file"
    for got, ref in zip(_features(vit, images), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    arch = dinov3_architecture(DINO, DINO_OVERRIDES)
    report = check_weights_file(pth, [arch])
    assert report["format"] == "pickle" and report["fits"]["architecture"] == f"timm {DINO}"
    assert "DINOv3 License" in report["licence"]
    out = convert_weights_file(pth, tmp_path / "converted.safetensors", [arch])
    converted, original = read_weights(out["out"])[1], read_weights(pth)[1]
    assert set(converted) == set(original)
    assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == original[k].dtype for k in original)
    vit2, _ = build_backbone(DINO, weights=out["out"], img_size=112, overrides=DINO_OVERRIDES)
    for got, ref in zip(_features(vit2, images), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_non_zero_meta_qkv_bias_is_not_silently_dropped(tmp_path: Path, dino_source: torch.nn.Module) -> None:
    state = meta_dinov3_state_dict(dino_source)
    state["blocks.0.attn.qkv.bias"] = torch.ones_like(state["blocks.0.attn.qkv.bias"])
    torch.save(state, tmp_path / "biased.pth")
    report = check_weights_file(tmp_path / "biased.pth", [dinov3_architecture(DINO, DINO_OVERRIDES)])
    assert report["fits"] is None
    assert report["closest"]["unexpected"] == ["blocks.0.attn.qkv.bias(non-zero)"]


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_timm_layout_files_load_to_the_same_features(tmp_path: Path, dino_source: torch.nn.Module, suffix: str) -> None:
    file = tmp_path / f"model{suffix}"
    state = {k: v.contiguous() for k, v in dino_source.state_dict().items()}
    save_file(state, str(file)) if suffix == ".safetensors" else torch.save(state, file)
    images = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    vit, _ = build_backbone(DINO, weights=file, img_size=112, overrides=DINO_OVERRIDES)
    for got, ref in zip(_features(vit, images), _features(dino_source, images), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    fits = check_weights_file(file, [dinov3_architecture(DINO, DINO_OVERRIDES)])["fits"]
    assert fits["family"] == "dinov3"


def test_openai_layout_writer_matches_openai_release_at_full_size() -> None:
    cfg = open_clip.get_model_config("ViT-L-14-336")
    with torch.device("meta"):
        model = openai_layout_clip(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(shapes) - set(layout("openai_clip_vitl14_336_layout")) == OPENAI_METADATA_KEYS
    assert {k: shapes[k] for k in layout("openai_clip_vitl14_336_layout")} == layout("openai_clip_vitl14_336_layout")
    assert shapes["visual.positional_embedding"] == (577, 1024)
    assert shapes["transformer.resblocks.11.attn.in_proj_weight"] == (2304, 768)


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    torch.manual_seed(5)
    model = openai_layout_clip(TINY_CLIP["embed_dim"], TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"])
    tokens = open_clip.get_tokenizer("ViT-L-14-336")(["a photo of a flawless polyp.", "a photo of a damaged polyp."])
    path = save_openai_torchscript(model, tmp_path_factory.mktemp("clip") / "ViT-L-14-336px.pt", tokens)
    with torch.no_grad():  # the archive holds fp16 weights, like OpenAI's: the reference is the fp16 values
        reference = model.half().float().encode_text(tokens)
    return {"path": path, "tokens": tokens, "reference": reference}


def test_openai_torchscript_archive_loads_like_openai_in_open_clip_and_medad(openai_archive: dict) -> None:
    path, tokens, reference = openai_archive["path"], openai_archive["tokens"], openai_archive["reference"]
    assert isinstance(torch.jit.load(str(path)), torch.jit.ScriptModule)
    loaded = open_clip.load_openai_model(str(path), device="cpu", precision="fp32")  # open_clip's OpenAI loader
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), reference, rtol=0, atol=0)
        tower, info = build_text_tower("ViT-B-32", str(path), quick_gelu=True, overrides=TEXT_OVERRIDES)
        torch.testing.assert_close(tower(tokens), reference, rtol=0, atol=0)
    assert info["source"] == "file"
    report = check_weights_file(path, [clip_architecture("ViT-B-32", TINY_CLIP)])
    assert report["format"] == "torchscript" and report["fits"]["family"] == "clip"


def test_open_clip_bin_and_converted_safetensors_load_alike(tmp_path: Path, openai_archive: dict) -> None:
    path, tokens, reference = openai_archive["path"], openai_archive["tokens"], openai_archive["reference"]
    archs = [clip_architecture("ViT-B-32", TINY_CLIP), clip_text_architecture("ViT-B-32", TEXT_OVERRIDES)]
    out = convert_weights_file(path, tmp_path / "clip.safetensors", archs)
    converted, original = read_weights(out["out"])[1], read_weights(path)[1]
    assert set(converted) == set(original)
    assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == original[k].dtype for k in original)
    loaded = open_clip.load_openai_model(str(path), device="cpu", precision="fp32")
    bin_file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(loaded.state_dict(), bin_file)  # open_clip's own layout: the same names as OpenAI's
    for file in (out["out"], bin_file):
        tower, _ = build_text_tower("ViT-B-32", str(file), quick_gelu=True, overrides=TEXT_OVERRIDES)
        with torch.no_grad():
            torch.testing.assert_close(tower(tokens), reference, rtol=0, atol=0)
        assert check_weights_file(file, archs)["fits"]["family"] == "clip"


def test_text_only_file_fits_the_text_tower(tmp_path: Path, openai_archive: dict) -> None:
    tower, _ = build_text_tower("ViT-B-32", str(openai_archive["path"]), quick_gelu=True, overrides=TEXT_OVERRIDES)
    save_file({f"text.{k}": v.contiguous() for k, v in tower.state_dict().items()}, str(tmp_path / "text.safetensors"))
    archs = [clip_architecture("ViT-B-32", TINY_CLIP), clip_text_architecture("ViT-B-32", TEXT_OVERRIDES)]
    assert check_weights_file(tmp_path / "text.safetensors", archs)["fits"]["family"] == "clip-text"


def test_unfit_and_unreadable_files(tmp_path: Path, dino_source: torch.nn.Module) -> None:
    state = meta_dinov3_state_dict(dino_source)
    del state["norm.weight"]
    state["blocks.0.ls1.gamma"] = torch.zeros(7)
    torch.save(state, tmp_path / "cut.pth")
    closest = check_weights_file(tmp_path / "cut.pth", [dinov3_architecture(DINO, DINO_OVERRIDES)])["closest"]
    assert closest["missing"] == ["norm.weight"] and closest["wrong_shapes"] == [["blocks.0.gamma_1", [7], [64]]]
    save_file({"foo.weight": torch.zeros(3, 3)}, str(tmp_path / "foo.safetensors"))
    report = check_weights_file(tmp_path / "foo.safetensors", [dinov3_architecture(DINO, DINO_OVERRIDES)])
    assert report["fits"] is None and report["closest"] is None
    with pytest.raises(WeightsError, match=r"fits no architecture.*medad weights check"):
        convert_weights_file(tmp_path / "foo.safetensors", tmp_path / "x.safetensors", [dinov3_architecture(DINO)])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth.*not a readable"):
        read_weights(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match=r"must end in \.safetensors"):
        convert_weights_file(tmp_path / "foo.safetensors", tmp_path / "x.pth")


def test_cli_weights_check_and_convert(tmp_path: Path) -> None:
    """A Meta-format DINOv3 ViT-S/16 file (real architecture, fp16 zeros) fits; a foreign file exits 2."""
    from typer.testing import CliRunner

    from medad.cli import app

    with torch.device("meta"):
        vit = timm.create_model("vit_small_patch16_dinov3", pretrained=False, num_classes=0)
    state = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in meta_dinov3_state_dict(vit).items()}
    torch.save(state, tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth")
    done = CliRunner().invoke(app, ["weights", "check", str(tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth")])
    assert done.exit_code == 0, done.output
    assert "fits: timm vit_small_patch16_dinov3" in done.output and "torch pickle" in done.output
    assert "sha256: " in done.output and "DINOv3 License" in done.output
    save_file({"foo.weight": torch.zeros(3, 3)}, str(tmp_path / "foo.safetensors"))
    bad = CliRunner().invoke(app, ["weights", "check", str(tmp_path / "foo.safetensors")])
    assert bad.exit_code == 2 and "fits: nothing" in bad.output
    args = ["weights", "convert", str(tmp_path / "foo.safetensors"), "--out", str(tmp_path / "x.safetensors")]
    bad = CliRunner().invoke(app, args)  # medad.cli.main prints a WeightsError as "error: ..." and exits 2
    assert isinstance(bad.exception, WeightsError) and "fits no architecture" in str(bad.exception)
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_score_takes_backbone_and_text_weights_files(tmp_path: Path, dino_source: torch.nn.Module) -> None:
    """``medad score --model ad_dinov3_tiny --backbone-weights META.pth --text-weights OPENAI.pt``: the model is
    built from the two files (no random weights), and the card records each file's sha256."""
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from medad.cli import app
    from medad.models.weights import text_model_config
    from medad.utils.io import sha256_file

    torch.save(meta_dinov3_state_dict(dino_source), tmp_path / "dino.pth")
    text = text_model_config("ViT-B-32", TINY_DEFAULTS["text_overrides"])
    clip = openai_layout_clip(text["embed_dim"], TINY_CLIP["vision_cfg"], text["text_cfg"])
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of an object."])
    save_openai_torchscript(clip, tmp_path / "clip.pt", tokens)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    args = ["score", str(tmp_path / "images"), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out"),
            "--backbone-weights", str(tmp_path / "dino.pth"), "--text-weights", str(tmp_path / "clip.pt"),
            "--class-word", "skin lesion", "--device", "cpu", "--no-heatmaps"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["random_weights"] is True and meta["model"]["random_parts"] == ["adapters"]  # no checkpoint given
    assert "untrained (randomly initialised) adapters" in done.output
    assert meta["model"]["backbone"]["sha256"] == sha256_file(tmp_path / "dino.pth")
    assert meta["model"]["text"]["sha256"] == sha256_file(tmp_path / "clip.pt")
    assert meta["class_words"] == {"files": {"object": "skin lesion"}}
