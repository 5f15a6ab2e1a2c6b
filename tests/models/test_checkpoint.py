"""Adapter checkpoints: round trip, card content, no pickle, mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medad.errors import WeightsError
from medad.models import ADDINOv3, create_model, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path: Path, tiny_reference: ADDINOv3, images: torch.Tensor) -> None:
    folder = save_checkpoint(tiny_reference, tmp_path / "ckpt", {"seed": 7, "epochs": 3, "manifest_sha256": "ab"})
    assert sorted(p.name for p in folder.iterdir()) == ["adapters.safetensors", "card.json"]
    card = json.loads((folder / "card.json").read_text())
    assert card["extra"] == {"seed": 7, "epochs": 3, "manifest_sha256": "ab"}
    assert card["compat"] == "reference" and card["layers"] == [1, 2, 3, 4] and card["adapter_dim"] == 32
    assert len(card["backbone"]["sha256"]) == 64 and len(card["text"]["sha256"]) == 64
    assert card["random_weights"] is True
    torch.manual_seed(123)  # a different adapter initialisation: only the loaded weights can make outputs equal
    loaded = load_checkpoint(folder)
    for key, value in tiny_reference.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value)
    expected = tiny_reference(images, ["x", "y"]).pixel_scores
    assert torch.allclose(loaded(images, ["x", "y"]).pixel_scores, expected, atol=1e-6)


def test_checkpoint_from_another_backbone(tmp_path: Path, tiny_clean: ADDINOv3) -> None:
    folder = save_checkpoint(tiny_clean, tmp_path / "ckpt", {})
    wider = create_model("ad_dinov3_tiny", backbone_overrides={"depth": 4, "embed_dim": 32, "num_heads": 2})
    with pytest.raises(WeightsError, match=r"trained with backbone vit_small_patch16_dinov3 \(sha256 \w+\).*model has"):
        load_checkpoint(folder, model=wider)
    with pytest.raises(WeightsError, match=r"is 32 in the checkpoint but 16 in the model|adapter_dim=32"):
        load_checkpoint(folder, model=create_model("ad_dinov3_tiny", adapter_dim=16))


def test_adapter_shape_mismatch_names_both(tiny_clean: ADDINOv3) -> None:
    other = create_model("ad_dinov3_tiny", adapter_dim=16)
    with pytest.raises(WeightsError, match=r"\(32, 64\) in the checkpoint but \(16, 64\) in this model"):
        other.load_trainable_state_dict(tiny_clean.trainable_state_dict())


def test_missing_or_corrupt_checkpoint(tmp_path: Path, tiny_clean: ADDINOv3) -> None:
    with pytest.raises(WeightsError, match=r"card.json' does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    folder = save_checkpoint(tiny_clean, tmp_path / "ckpt", {})
    (folder / "adapters.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"does not match the sha256"):
        load_checkpoint(folder)
