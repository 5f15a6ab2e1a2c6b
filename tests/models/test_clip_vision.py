"""The CLIP vision tower as a backbone (medad.models.clip_vision): a tiny same-layout CLIP written in each real
format (OpenAI's TorchScript .pt, open_clip's .bin and .safetensors, a vision tower alone) loads to exactly
open_clip's own forward, position embeddings are interpolated like open_clip (bicubic) or the releases
(bilinear), a file of another size ends in one error naming the shapes, and the features cache on disk."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medad.engine.features import FeatureCache
from medad.errors import ConfigError, WeightsError
from medad.models.clip_vision import (
    ClipVisionBackbone,
    build_clip_vision,
    build_frozen_clip_vision,
    clip_licence,
    interpolate_pos_embed,
)
from medad.models.weights import LICENCES
from medad.models.weights_files import check_weights_file, clip_architecture, clip_vision_architecture
from medad.utils.io import sha256_file
from tests.models.faithful_weights import openai_layout_clip, save_openai_torchscript

MODEL = "ViT-B-16"
TINY = {  # ViT-B-16's layout, narrowed: 3 blocks of width 64 (one 64-wide head, as OpenAI's loader infers)
    "embed_dim": 32,
    "vision_cfg": {"layers": 3, "width": 64, "patch_size": 16, "image_size": 64},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 64, "heads": 1, "layers": 1},
}
NATIVE = 64  # 4 x 4 patches
LAYERS = (1, 3)


@dataclasses.dataclass(frozen=True)
class TinyVisionConfig:
    """The fields medad.models.clip_vision.ClipVisionConfig names (what a CLIP-family model config carries)."""

    clip_weights: str | None
    image_size: int = NATIVE
    clip_model: str = MODEL
    clip_overrides: Mapping[str, Any] = dataclasses.field(default_factory=lambda: TINY)
    quick_gelu: bool = True
    pos_interpolation: str = "bicubic"
    layers: tuple[int, ...] = LAYERS
    random_init: bool = False
    init_seed: int = 0


def _images(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CLIP in each format: OpenAI's fp16 TorchScript archive, then open_clip's float32 files of it."""
    folder = tmp_path_factory.mktemp("clipvision")
    torch.manual_seed(7)
    model = openai_layout_clip(TINY["embed_dim"], TINY["vision_cfg"], TINY["text_cfg"])
    pt = save_openai_torchscript(model, folder / "ViT-B-16.pt", torch.randint(0, 100, (2, 8)))
    state = open_clip.load_openai_model(str(pt), device="cpu", precision="fp32").state_dict()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    visual = {k[len("visual.") :]: v.contiguous() for k, v in state.items() if k.startswith("visual.")}
    save_file(visual, str(folder / "vision_only.safetensors"))
    return {
        "pt": pt,
        "bin": folder / "open_clip_pytorch_model.bin",
        "safetensors": folder / "open_clip_model.safetensors",
        "vision": folder / "vision_only.safetensors",
    }


def _open_clip_reference(file: Path, image_size: int) -> Any:
    """open_clip's own CLIP on ``file``: its OpenAI loader for the .pt, ``create_model`` for its own files."""
    if file.suffix == ".pt":
        return open_clip.load_openai_model(str(file), device="cpu", precision="fp32").eval()
    cfg = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "image_size": image_size}}
    return open_clip.create_model(MODEL, pretrained=str(file), force_quick_gelu=True, **cfg).eval()


def _hooked_forward(clip: Any, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The residual stream after every block of open_clip's plain ``encode_image`` (forward hooks), and its output."""
    seen: list[torch.Tensor] = []
    hooks = [
        block.register_forward_hook(lambda _m, _i, out: seen.append(out))
        for block in clip.visual.transformer.resblocks
    ]
    try:
        with torch.no_grad():
            embedding = clip.encode_image(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen, embedding


def _assert_matches_open_clip(features: Mapping[str, torch.Tensor], clip: Any, images: torch.Tensor) -> None:
    blocks, embedding = _hooked_forward(clip, images)
    for slot, layer in enumerate(LAYERS):
        torch.testing.assert_close(features["cls_tokens"][:, slot], blocks[layer - 1][:, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(features["patch_tokens"][:, slot], blocks[layer - 1][:, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(features["embedding"], embedding, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["pt", "bin", "safetensors", "vision"])
def test_each_format_gives_open_clips_tokens_at_the_native_size(files: dict[str, Path], kind: str) -> None:
    tower, info, mean, std = build_frozen_clip_vision(TinyVisionConfig(clip_weights=str(files[kind])))
    backbone = ClipVisionBackbone(tower, LAYERS)
    images = _images(NATIVE)
    features = backbone(images)
    assert features["patch_tokens"].shape == (2, 2, 16, 64) and features["embedding"].shape == (2, 32)
    reference = _open_clip_reference(files["pt" if kind == "pt" else "safetensors"], NATIVE)
    _assert_matches_open_clip(features, reference, images)
    projected = backbone.project(features["cls_tokens"][:, -1])
    torch.testing.assert_close(projected, features["embedding"], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match=r"takes \(B, 3, 64, 64\) images .* got \(2, 3, 80, 80\)"):
        backbone(_images(80))
    assert info["sha256"] == sha256_file(files[kind]) and info["source"] == "file"
    assert info["format"] == ("torchscript" if kind == "pt" else "pickle" if kind == "bin" else "safetensors")
    assert info["native_grid"] == 4 and info["activation"] == "quickgelu"
    assert info["licence"] == LICENCES["unknown"]  # random test weights: not OpenAI's release
    assert mean == pytest.approx((0.48145466, 0.4578275, 0.40821073)) and len(std) == 3


def _slow_resize(pos: torch.Tensor, grid: int, mode: str) -> torch.Tensor:
    """One channel at a time: the patch rows as a (g, g) image, ``F.interpolate`` to (grid, grid)."""
    old = round((pos.shape[0] - 1) ** 0.5)
    channels = []
    for c in range(pos.shape[1]):
        image = pos[1:, c].float().reshape(1, 1, old, old)
        channels.append(
            F.interpolate(image, size=(grid, grid), mode=mode, align_corners=False, antialias=mode == "bicubic")
        )
    return torch.cat([pos[:1].float(), torch.cat(channels, dim=1).reshape(len(channels), -1).T], dim=0)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_position_embeddings_are_interpolated_to_the_new_grid(files: dict[str, Path], mode: str) -> None:
    stored = open_clip.load_openai_model(str(files["pt"]), device="cpu", precision="fp32").visual.positional_embedding
    config = TinyVisionConfig(clip_weights=str(files["pt"]), image_size=112, pos_interpolation=mode)
    tower, info, _, _ = build_frozen_clip_vision(config)
    expected = _slow_resize(stored.detach(), 7, mode)
    assert tower.positional_embedding.shape == (50, 64) and info["pos_interpolation"] == mode
    torch.testing.assert_close(tower.positional_embedding.detach(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(interpolate_pos_embed(stored, 4, mode), stored)  # the native grid is kept as is
    features = ClipVisionBackbone(tower, LAYERS)(_images(112))
    assert features["patch_tokens"].shape == (2, 2, 49, 64)
    if mode == "bicubic":  # what open_clip itself does when a file is loaded at another image size
        _assert_matches_open_clip(features, _open_clip_reference(files["safetensors"], 112), _images(112))


def test_a_file_of_another_size_or_depth_ends_in_one_error(files: dict[str, Path], tmp_path: Path) -> None:
    wider = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 128}}
    with pytest.raises(WeightsError, match=r"ViT-B-16\.pt.*class_embedding is \(64,\), expected \(128,\)"):
        build_clip_vision(MODEL, str(files["pt"]), image_size=NATIVE, overrides=wider)
    other_patch = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "patch_size": 14, "image_size": 56}}
    with pytest.raises(WeightsError, match=r"conv1\.weight is \(64, 3, 16, 16\), expected \(64, 3, 14, 14\)"):
        build_clip_vision(MODEL, str(files["safetensors"]), image_size=56, overrides=other_patch)
    shallower = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "layers": 2}}
    with pytest.raises(WeightsError, match=r"has 12 vision tensors .*transformer\.resblocks\.2\."):
        build_clip_vision(MODEL, str(files["bin"]), image_size=NATIVE, overrides=shallower)
    save_file({"cls_token": torch.zeros(1, 1, 64)}, str(tmp_path / "dino.safetensors"))
    with pytest.raises(WeightsError, match=r"lacks \d+ tensors of the 'ViT-B-16' vision tower"):
        build_clip_vision(MODEL, str(tmp_path / "dino.safetensors"), image_size=NATIVE, overrides=TINY)
    with pytest.raises(WeightsError, match=r"does not exist"):
        build_clip_vision(MODEL, str(tmp_path / "absent.pt"), image_size=NATIVE, overrides=TINY)


def test_config_errors_come_before_any_weights_are_read() -> None:
    with pytest.raises(ConfigError, match=r"image_size 70 is not a multiple of the patch size 16.*64 or 80"):
        build_frozen_clip_vision(TinyVisionConfig(clip_weights="/nowhere.pt", image_size=70))
    with pytest.raises(ConfigError, match=r"layers \[1, 4\] must be 1-based block numbers in 1\.\.3"):
        build_frozen_clip_vision(TinyVisionConfig(clip_weights="/nowhere.pt", layers=(1, 4)))
    with pytest.raises(ConfigError, match=r"pos_interpolation must be one of bicubic, bilinear"):
        build_frozen_clip_vision(TinyVisionConfig(clip_weights="/nowhere.pt", pos_interpolation="nearest"))
    with pytest.raises(ConfigError, match=r"'RN50' is not a class-token CLIP ViT"):
        build_clip_vision("RN50", None, image_size=224, random_init=True)


def test_random_weights_are_seeded_and_labelled() -> None:
    config = TinyVisionConfig(clip_weights=None, random_init=True, init_seed=3)
    first, info, _, _ = build_frozen_clip_vision(config)
    again, _, _, _ = build_frozen_clip_vision(config)
    assert info["source"] == "random" and info["licence"] == LICENCES["random"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in first.parameters())


def test_openai_licence_is_recognised_by_tag_hub_repo_or_released_file_hash() -> None:
    released = open_clip.get_pretrained_cfg("ViT-L-14-336", "openai")["url"].split("/")[-2]
    assert clip_licence("openai", None) == LICENCES["openai"]
    assert clip_licence("hf-hub:timm/vit_large_patch14_clip_336.openai", None) == LICENCES["openai"]
    assert clip_licence("/w/ViT-L-14-336px.pt", released) == LICENCES["openai"]
    assert clip_licence("/w/other.pt", "0" * 64) == LICENCES["unknown"]


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[index],
            "mask": torch.zeros(1, NATIVE, NATIVE),
            "label": torch.tensor(index % 2),
            "index": torch.tensor(index),
        }


def test_features_go_through_the_engines_feature_cache(files: dict[str, Path], tmp_path: Path) -> None:
    tower, _, _, _ = build_frozen_clip_vision(TinyVisionConfig(clip_weights=str(files["safetensors"])))
    backbone = ClipVisionBackbone(tower, LAYERS)
    images = torch.cat([_images(NATIVE), _images(NATIVE).flip(0)])
    cache = FeatureCache(tmp_path / "features", n_items=3, chunk_size=2)
    cache.build(_Images(images[:3]), backbone, batch_size=2, device=torch.device("cpu"))
    assert cache.complete()
    batches = [backbone(images[:2]), backbone(images[2:3])]  # the cache's batches: the same floating-point sums
    direct = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
    for index in range(3):
        cached = cache.load_item(index)["features"]
        for name in ("patch_tokens", "cls_tokens", "embedding"):
            torch.testing.assert_close(cached[name], direct[name][index], rtol=0, atol=0)


def test_weights_check_names_a_clip_vision_file(files: dict[str, Path]) -> None:
    archs = [clip_architecture(MODEL, TINY), clip_vision_architecture(MODEL, TINY)]
    full = check_weights_file(files["safetensors"], archs)["fits"]
    assert full["family"] == "clip" and "vision tower" in full["usage"]
    vision = check_weights_file(files["vision"], archs)
    assert vision["fits"]["architecture"] == "open_clip ViT-B-16 vision tower"
    assert vision["fits"]["family"] == "clip-vision" and "clip_weights" in vision["fits"]["usage"]
    other = check_weights_file(files["vision"], [clip_vision_architecture(MODEL, {**TINY, "embed_dim": 48})])
    assert other["fits"] is None and other["closest"]["wrong_shapes"] == [["proj", [64, 32], [64, 48]]]


def test_offline_hub_weights_end_in_one_error_naming_the_files_to_download() -> None:
    with pytest.raises(WeightsError, match=r"'ViT-B-16'/'openai' could not be downloaded.*ViT-B-16\.pt.*"
                       r"timm/vit_base_patch16_clip_224\.openai.*clip_weights="):  # fmt: skip
        build_clip_vision(MODEL, "openai", image_size=NATIVE, overrides=TINY)
