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


def _resave(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Rewrite the adapters and record their sha256 in the card, so only their keys / shapes are wrong."""
    from safetensors.torch import save_file

    from medad.models.checkpoint import CHECKPOINT_FORMAT
    from medad.utils.io import sha256_file

    save_file(state, str(folder / "adapters.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
    card = json.loads((folder / "card.json").read_text())
    card["adapters_sha256"] = sha256_file(folder / "adapters.safetensors")
    (folder / "card.json").write_text(json.dumps(card))


def test_adapters_that_do_not_fit_their_own_card_name_the_checkpoint(tmp_path: Path, tiny_clean: ADDINOv3) -> None:
    """Issue 22 §7: a user with several checkpoints learns which is broken, and gets advice for --checkpoint, not
    "load them into a model built with the checkpoint's card" (which load_checkpoint already did)."""
    state = tiny_clean.trainable_state_dict()
    renamed = save_checkpoint(tiny_clean, tmp_path / "renamed", {})
    _resave(renamed, {f"old.{k}": v for k, v in state.items()})
    halved = save_checkpoint(tiny_clean, tmp_path / "halved", {})
    _resave(halved, {k: torch.zeros(*[max(1, d // 2) for d in v.shape]) for k, v in state.items()})
    wrong = {renamed: r"missing \['cls_adapters.*unexpected \['old\.", halved: r"is \(16, 32\).*\(32, 64\)"}
    for folder, what in wrong.items():
        with pytest.raises(WeightsError, match=rf"checkpoint '.*{folder.name}'.*{what}") as refused:
            load_checkpoint(folder)
        assert "--checkpoint" in str(refused.value) and "checkpoint's card" not in str(refused.value)


@pytest.mark.parametrize(
    "edit", [{"name": "nope_model"}, {"config": {"image_size": "big"}}, {"config": {"compat": "weird"}}]
)
def test_a_card_no_model_can_be_built_from_names_the_checkpoint(tmp_path: Path, tiny_clean: ADDINOv3, edit) -> None:
    folder = save_checkpoint(tiny_clean, tmp_path / "ckpt", {})
    card = json.loads((folder / "card.json").read_text())
    card.update({k: {**card[k], **v} if isinstance(v, dict) else v for k, v in edit.items()})
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match=r"checkpoint '.*ckpt': no model can be built from its card.json") as refused:
        load_checkpoint(folder)
    assert "--checkpoint" in str(refused.value)
