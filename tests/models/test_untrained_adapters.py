"""Untrained adapters are random weights: a trainable model built without a checkpoint, even on real frozen
weights, is flagged exactly like random frozen weights (``random_weights: true``, ``random_parts`` naming
``adapters``) in its card and so in every output; training or loading a trained checkpoint clears the part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from medad.models import create_model, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def frozen_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real-format (safetensors) frozen backbone and text files holding the tiny preset's random values."""
    base = tmp_path_factory.mktemp("frozen")
    model = create_model("ad_dinov3_tiny", text_disk_cache=False)
    save_file({k: v.contiguous() for k, v in model.backbone.model.state_dict().items()}, base / "backbone.safetensors")
    save_file({k: v.contiguous() for k, v in model.text_encoder.tower.state_dict().items()}, base / "text.safetensors")
    return {"backbone_weights": str(base / "backbone.safetensors"), "text_weights": str(base / "text.safetensors")}


def _real(files: dict[str, str]):
    return create_model("ad_dinov3_tiny", random_init=False, text_disk_cache=False, **files)


def test_real_frozen_weights_without_checkpoint_are_flagged(frozen_files: dict[str, str]) -> None:
    card = _real(frozen_files).card()
    assert card["backbone"]["source"] == card["text"]["source"] == "file"
    assert card["random_weights"] is True and card["random_parts"] == ["adapters"]
    tiny = create_model("ad_dinov3_tiny", text_disk_cache=False).card()
    assert tiny["random_parts"] == ["backbone", "text", "adapters"]
    assert create_model("winclip_tiny").card()["random_parts"] == ["clip"]  # nothing to train: no adapters part


def test_a_trained_checkpoint_clears_the_adapters_part(tmp_path: Path, frozen_files: dict[str, str]) -> None:
    untrained = save_checkpoint(_real(frozen_files), tmp_path / "untrained")
    assert load_checkpoint(untrained).card()["random_parts"] == ["adapters"]  # saved untrained: stays flagged
    model = _real(frozen_files)
    model.mark_adapters_trained()
    trained = save_checkpoint(model, tmp_path / "trained")
    card = load_checkpoint(trained).card()
    assert card["random_weights"] is False and card["random_parts"] == []


def test_training_clears_the_adapters_part(tmp_path: Path) -> None:
    from medad.data import load_manifest, write_layout
    from medad.engine.train import train

    root = write_layout(tmp_path / "d", "mvtec", n_normal=1, n_abnormal=1, size=32, seed=0, classes=["bottle"])
    model = create_model("ad_dinov3_tiny", text_disk_cache=False)
    result = train(model, load_manifest(root, "mvtec"), tmp_path / "run", epochs=1, batch_size=2, lr=1e-3,
                   progress=False, cache_features=False)  # fmt: skip
    card = json.loads((result.checkpoint / "card.json").read_text())
    assert card["random_parts"] == ["backbone", "text"]  # the frozen weights are random; the adapters trained


def test_score_and_export_flag_untrained_adapters(tmp_path: Path, frozen_files: dict[str, str], capsys) -> None:
    from medad.engine.scorer import score_files
    from medad.export import export_run

    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    score_files([tmp_path / "images"], tmp_path / "out", model_name="ad_dinov3_tiny", device="cpu", heatmaps=False,
                progress=False, **frozen_files)  # fmt: skip
    assert "untrained (randomly initialised) adapters" in capsys.readouterr().err
    folder = export_run(tmp_path / "out" / "predictions", formats="png", out_dir=tmp_path / "export")
    export = json.loads((folder / "export.json").read_text())
    assert export["random_weights"] is True
