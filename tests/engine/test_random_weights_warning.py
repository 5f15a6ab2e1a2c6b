"""A study that trains and scores a random-weights model several times says so once, in one wording (issue 23 §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medad import errors


def test_training_then_scoring_twice_prints_one_random_weights_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medad.data import load_manifest, write_layout
    from medad.engine.scorer import score_files
    from medad.engine.train import train
    from medad.models import create_model

    monkeypatch.setattr(errors, "_WARNED", set())  # a fresh process
    root = write_layout(tmp_path / "data", "mvtec", classes=["bottle"], n_normal=1, n_abnormal=1, size=32)
    model = create_model("ad_dinov3_tiny", image_size=32)
    trained = train(model, load_manifest(root, "mvtec"), tmp_path / "run", epochs=1, lr=1e-3, batch_size=2,
                    device="cpu", progress=False)  # fmt: skip
    for target in ("a", "b"):  # as a protocol scores each target
        score_files([root], tmp_path / target, checkpoint=trained.checkpoint, kind="mvtec", heatmaps=False,
                    device="cpu", progress=False)  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if "RANDOM" in line]
    parts = "random frozen backbone / text weights"  # trained adapters are not random
    assert lines == [f"warning: {errors.RANDOM_WEIGHTS_WARNING.format(name='ad_dinov3_tiny', parts=parts)}"]
