"""Broken weights end in one clear error naming the file: a truncated file (the same message as ``medad weights
check``), NaN / infinite values in a backbone, text tower, CLIP or adapter checkpoint, a file of another size
given to a model, and ``weights convert`` to a folder or an unwritable place (no temporary file left)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from medad.errors import DiskError, WeightsError
from medad.models import create_model, load_checkpoint, save_checkpoint
from medad.models.ad_dinov3_config import TINY_DEFAULTS
from medad.models.weights import build_backbone, build_text_tower, text_model_config
from medad.models.weights_files import check_weights_file, convert_weights_file, read_weights
from medad.utils.io import sha256_file

DINO = TINY_DEFAULTS["backbone"]
DINO_OVERRIDES = dict(TINY_DEFAULTS["backbone_overrides"])


def _tiny_vit_state() -> dict[str, torch.Tensor]:
    vit = timm.create_model(DINO, pretrained=False, num_classes=0, img_size=112, **DINO_OVERRIDES)
    return {k: v.contiguous() for k, v in vit.state_dict().items()}


def _text_state() -> dict[str, torch.Tensor]:
    from open_clip.model import _build_text_tower

    cfg = text_model_config("ViT-B-32", TINY_DEFAULTS["text_overrides"])
    return dict(_build_text_tower(cfg["embed_dim"], cfg["text_cfg"]).state_dict())


def test_truncated_backbone_file_gives_the_weights_check_message(tmp_path: Path) -> None:
    save_file(_tiny_vit_state(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as checked:
        check_weights_file(tmp_path / "cut.safetensors")
    with pytest.raises(WeightsError) as built:
        build_backbone(DINO, tmp_path / "cut.safetensors", img_size=112, overrides=DINO_OVERRIDES)
    assert str(built.value) == str(checked.value)
    assert "cut.safetensors" in str(built.value) and "truncated or corrupt" in str(built.value)


def test_truncated_text_file_gives_the_weights_check_message(tmp_path: Path) -> None:
    save_file({k: v.contiguous() for k, v in _text_state().items()}, str(tmp_path / "text.safetensors"))
    data = (tmp_path / "text.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError) as built:
        build_text_tower("ViT-B-32", str(tmp_path / "cut.safetensors"), overrides=TINY_DEFAULTS["text_overrides"])
    with pytest.raises(WeightsError) as read:
        read_weights(tmp_path / "cut.safetensors")
    assert str(built.value) == str(read.value)


def test_other_size_backbone_names_the_model_and_the_size_it_expects(tmp_path: Path) -> None:
    small = timm.create_model(DINO, pretrained=False, num_classes=0, depth=1, embed_dim=64, num_heads=2)
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp_path / "small.safetensors"))
    with pytest.raises(WeightsError) as refused:
        build_backbone(DINO, tmp_path / "small.safetensors", img_size=112, overrides=DINO_OVERRIDES,
                       for_model="ad_dinov3_tiny")  # fmt: skip
    message = str(refused.value)
    assert "model 'ad_dinov3_tiny'" in message and "depth 4, width 64" in message
    assert "medad weights check" in message


def test_nan_backbone_file_is_refused_naming_it(tmp_path: Path) -> None:
    state = _tiny_vit_state()
    state["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match=r"backbone weights file .*nan\.safetensors.*NaN or infinite.*blocks\.1"):
        build_backbone(DINO, tmp_path / "nan.safetensors", img_size=112, overrides=DINO_OVERRIDES)


def test_infinite_text_file_is_refused_naming_it(tmp_path: Path) -> None:
    state = _text_state()
    state["token_embedding.weight"][3, 1] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(WeightsError, match=r"text weights file .*inf\.pth.*NaN or infinite.*token_embedding"):
        build_text_tower("ViT-B-32", str(tmp_path / "inf.pth"), overrides=TINY_DEFAULTS["text_overrides"])


def test_nan_adapter_checkpoint_is_refused_naming_it(tmp_path: Path) -> None:
    from safetensors.torch import save

    model = create_model("ad_dinov3_tiny")
    folder = save_checkpoint(model, tmp_path / "ckpt", {})
    state = model.trainable_state_dict()
    state[next(iter(state))][0, 0] = float("nan")  # a diverged run saves a card that matches its NaN adapters
    (folder / "adapters.safetensors").write_bytes(save(state, metadata={"format": "medad-adapters/1"}))
    card = json.loads((folder / "card.json").read_text())
    card["adapters_sha256"] = sha256_file(folder / "adapters.safetensors")
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match=r"adapter weights file .*adapters\.safetensors.*NaN or infinite"):
        load_checkpoint(folder)


@pytest.fixture
def fitting_file(tmp_path: Path) -> Path:
    """A file ``medad weights check`` recognises (a tiny DINOv3 in timm's layout, checked against its own size)."""
    save_file(_tiny_vit_state(), str(tmp_path / "dino.safetensors"))
    return tmp_path / "dino.safetensors"


def _tiny_arch() -> list:
    from medad.models.weights_files import dinov3_architecture

    return [dinov3_architecture(DINO, DINO_OVERRIDES)]


def test_convert_to_an_existing_folder_is_refused(tmp_path: Path, fitting_file: Path) -> None:
    (tmp_path / "out.safetensors").mkdir()
    with pytest.raises(WeightsError, match=r"out\.safetensors' is an existing folder.*--out"):
        convert_weights_file(fitting_file, tmp_path / "out.safetensors", _tiny_arch())
    assert not list((tmp_path / "out.safetensors").iterdir())


@pytest.mark.parametrize("fails_at", ["open", "write"])
def test_convert_to_an_unwritable_place_leaves_no_temporary_file(
    tmp_path: Path, fitting_file: Path, monkeypatch: pytest.MonkeyPatch, fails_at: str
) -> None:
    import safetensors.torch

    out = tmp_path / "ro" / "w.safetensors"
    out.parent.mkdir()
    if fails_at == "open":  # a read-only file system refuses the first write into the folder
        real_open = Path.open

        def refuse(self: Path, *args: object, **kwargs: object) -> object:
            if self.parent == out.parent:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", refuse)
        match = r"read-only file system"
    else:  # the disk fills half-way through safetensors' own writer

        def half(tensors: dict, filename: str, metadata: dict | None = None) -> None:
            Path(filename).write_bytes(b"x" * 1000)
            raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device)")

        monkeypatch.setattr(safetensors.torch, "save_file", half)
        match = r"cannot write .*w\.safetensors.*No space left"
    with pytest.raises(DiskError, match=match):
        convert_weights_file(fitting_file, out, _tiny_arch())
    assert list(out.parent.iterdir()) == []


def test_cli_truncated_backbone_and_convert_to_a_folder_end_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import numpy as np
    from PIL import Image

    from tests.cli import run_medad

    save_file(_tiny_vit_state(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    save_file({k: v.contiguous() for k, v in _text_state().items()}, str(tmp_path / "text.safetensors"))
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    args = ["score", str(tmp_path / "images"), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out"),
            "--backbone-weights", str(tmp_path / "cut.safetensors"),
            "--text-weights", str(tmp_path / "text.safetensors")]  # fmt: skip
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in text and text.count("\n") == 1, text
    assert text.startswith("error: weights file") and "cut.safetensors" in text and "truncated or corrupt" in text
    code, checked = run_medad(monkeypatch, capsys, "weights", "check", str(tmp_path / "cut.safetensors"))
    assert code == 2 and checked == text  # `weights check` and the loader say the same
    (tmp_path / "folder.safetensors").mkdir()
    code, text = run_medad(monkeypatch, capsys, "weights", "convert", str(tmp_path / "full.safetensors"), "--out",
                           str(tmp_path / "folder.safetensors"))  # fmt: skip
    assert code == 2 and "is an existing folder" in text and "Traceback" not in text, text
