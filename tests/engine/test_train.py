"""The training loop: resume gives identical adapters, cached == uncached features, checkpoints, learning."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medad.engine.train import train
from medad.errors import ConfigError

TINY_LR = 1e-3


def _industrial(root: Path, n_images: int, seed: int) -> pd.DataFrame:
    """Synthetic MVTec-layout test split: two classes, about 70% anomalous images with exact masks."""
    from medad.data import load_manifest, write_layout

    per_class = n_images // 2
    n_normal = round(0.3 * per_class)
    write_layout(root, "mvtec", n_normal=n_normal, n_abnormal=per_class - n_normal, size=64, seed=seed)
    return load_manifest(root, "mvtec", split="test")


def _model():
    """A tiny model (64 px input, to keep CPU tests fast) whose adapters start from the same seeded init."""
    from medad.models import create_model

    torch.manual_seed(0)
    return create_model("ad_dinov3_tiny", image_size=64)


def _adapters(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> pd.DataFrame:
    return _industrial(tmp_path_factory.mktemp("industrial_small"), 12, seed=3)


class _InterruptError(Exception):
    pass


def test_resume_after_interruption_gives_identical_adapters(tmp_path, small_set):
    settings = dict(epochs=3, lr=TINY_LR, batch_size=8, micro_batch_size=4, seed=11, device="cpu", progress=False)
    full = _model()
    whole = train(full, small_set, tmp_path / "whole", cache_dir=tmp_path / "cache", **settings)
    assert whole.steps == 3 * 2 and whole.checkpoint.name == "epoch_003"

    def stop_after_first(epoch: int, _stats: dict) -> None:
        if epoch == 1:
            raise _InterruptError

    with pytest.raises(_InterruptError):
        train(
            _model(),
            small_set,
            tmp_path / "cut",
            cache_dir=tmp_path / "cache",
            on_epoch_end=stop_after_first,
            **settings,
        )
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["epoch_001"]
    fresh = _model()
    resumed = train(fresh, small_set, tmp_path / "cut", cache_dir=tmp_path / "cache", **settings)
    assert resumed.resumed_from == 1 and resumed.steps == whole.steps
    expected, got = _adapters(full), _adapters(fresh)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert any(not torch.equal(_adapters(_model())[k], expected[k]) for k in expected)


def test_resume_refuses_other_settings(tmp_path, small_set):
    settings = dict(epochs=1, batch_size=8, device="cpu", progress=False, cache_features=False)
    train(_model(), small_set, tmp_path / "run", lr=TINY_LR, **settings)
    with pytest.raises(ConfigError, match="other settings"):
        train(_model(), small_set, tmp_path / "run", lr=TINY_LR * 2, **settings)


def test_cached_and_uncached_training_agree(tmp_path, small_set):
    settings = dict(epochs=2, lr=TINY_LR, batch_size=6, seed=5, device="cpu", progress=False)
    cached, plain = _model(), _model()
    train(cached, small_set, tmp_path / "a", cache_features=True, cache_dir=tmp_path / "cache", **settings)
    chunks = list((tmp_path / "cache" / "features").glob("*/chunk-*.safetensors"))
    assert chunks, "the feature cache was not written"
    train(plain, small_set, tmp_path / "b", cache_features=False, **settings)
    a, b = _adapters(cached), _adapters(plain)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_gradient_accumulation_matches_the_full_batch(tmp_path, small_set):
    settings = dict(epochs=1, lr=TINY_LR, batch_size=8, seed=4, device="cpu", progress=False)
    full, accumulated = _model(), _model()
    one = train(full, small_set, tmp_path / "a", cache_dir=tmp_path / "cache", **settings)
    two = train(accumulated, small_set, tmp_path / "b", micro_batch_size=2, cache_dir=tmp_path / "cache", **settings)
    assert one.steps == two.steps == 2
    a, b = _adapters(full), _adapters(accumulated)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    warmup = json.loads((tmp_path / "a" / "train_settings.json").read_text())["warmup_steps"]
    assert warmup == 1 and one.history[-1]["lr"] == pytest.approx(TINY_LR)


def test_cli_train_then_score_from_the_checkpoint(tmp_path, monkeypatch, capsys):
    import sys

    from medad.cli import main
    from medad.data import write_layout

    root = write_layout(tmp_path / "aux", "mvtec", n_normal=1, n_abnormal=2, size=32, seed=0)
    out = tmp_path / "run"
    monkeypatch.setattr(
        sys,
        "argv",
        ["medad", "train", "--data", str(root), "--model", "ad_dinov3_tiny", "--epochs", "1", "--lr", "1e-3",
         "--batch-size", "4", "--micro-batch-size", "2", "--device", "cpu", "--out", str(out)],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    checkpoint = out / "checkpoints" / "epoch_001"
    assert (checkpoint / "adapters.safetensors").exists()
    monkeypatch.setattr(
        sys, "argv", ["medad", "score", str(root), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s")]
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "s" / "scores.csv")) == 12


def test_checkpoint_round_trip_then_score(tmp_path, small_set):
    from medad.engine.predictions import PredictionReader
    from medad.engine.scorer import score
    from medad.models import load_checkpoint

    model = _model()
    result = train(
        model,
        small_set,
        tmp_path / "run",
        epochs=1,
        lr=TINY_LR,
        batch_size=4,
        seed=2,
        device="cpu",
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    card = json.loads((result.checkpoint / "card.json").read_text())
    text = json.dumps(card)
    for key in ("manifest_hash", "seed", "epoch", "lr", "steps"):
        assert key in text, key
    assert (result.checkpoint / "adapters.safetensors").exists()
    loaded = load_checkpoint(result.checkpoint, device="cpu")
    for name, value in _adapters(model).items():
        assert torch.equal(_adapters(loaded)[name], value), name

    from_model = score(model, small_set.head(3), tmp_path / "p1", device="cpu", progress=False)
    from_ckpt = score(loaded, small_set.head(3), tmp_path / "p2", device="cpu", progress=False)
    for (i, a), (_, b) in zip(from_model.iter_maps(), from_ckpt.iter_maps(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=str(i))
    assert PredictionReader(tmp_path / "p2").meta["random_weights"] == loaded.card()["random_weights"]


def test_bad_micro_batch_is_a_config_error(tmp_path, small_set):
    with pytest.raises(ConfigError, match="micro_batch_size"):
        train(_model(), small_set, tmp_path / "run", epochs=1, batch_size=8, micro_batch_size=3, device="cpu")


def _pixel_auroc(model, manifest: pd.DataFrame, out: Path) -> float:
    from sklearn.metrics import roc_auc_score

    from medad.data import read_mask
    from medad.engine.scorer import score

    reader = score(model, manifest, out, batch_size=16, device="cpu", progress=False)
    scores, truth = [], []
    for index, pixel_map in reader.iter_maps():
        scores.append(pixel_map.ravel())
        truth.append(read_mask(manifest.iloc[index]).ravel())
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def test_training_learns_on_synthetic_industrial_data(tmp_path):
    """48 steps (64 images, batch 16, 12 epochs, lr 3e-3) lift held-out pixel AUROC from ~0.47 to ~0.86."""
    start = time.perf_counter()
    train_set = _industrial(tmp_path / "train", 64, seed=0)
    held_out = _industrial(tmp_path / "held_out", 24, seed=1)
    model = _model()
    before = _pixel_auroc(model, held_out, tmp_path / "before")
    result = train(
        model,
        train_set,
        tmp_path / "run",
        epochs=12,
        lr=3 * TINY_LR,
        batch_size=16,
        seed=0,
        device="cpu",
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    after = _pixel_auroc(model, held_out, tmp_path / "after")
    losses = [h["total"] for h in result.history]
    print(
        f"pixel AUROC {before:.3f} -> {after:.3f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    assert losses[-1] < 0.7 * losses[0]
    assert after > before + 0.2
    assert after > 0.75


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    import sys

    from medad.cli import main

    monkeypatch.setattr(sys, "argv", ["medad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code or 0, capsys.readouterr().err


def test_cli_compat_builds_the_model_and_is_refused_on_the_other_mode(tmp_path, monkeypatch, capsys):
    """``train --compat reference`` trains a reference-mode model (not only its words); scoring its checkpoint in
    clean mode is refused; ``--class-word`` sets every image's word and is recorded per class."""
    from medad.data import write_layout
    from medad.models.checkpoint import read_card

    root = write_layout(tmp_path / "aux", "mvtec", n_normal=1, n_abnormal=1, size=32, seed=0)
    out = tmp_path / "run"
    code, err = _cli(
        monkeypatch, capsys, "train", "--data", str(root), "--model", "ad_dinov3_tiny", "--epochs", "1", "--lr",
        "1e-3", "--batch-size", "4", "--device", "cpu", "--compat", "reference", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    checkpoint = out / "checkpoints" / "epoch_001"
    card = read_card(checkpoint)
    assert card["compat"] == card["config"]["compat"] == "reference"
    assert any(k.endswith("fc2.weight") for k in _adapter_keys(checkpoint))  # reference mode keeps fc2
    assert card["extra"]["training"]["class_words"] == {"mvtec": {"bottle": "bottle", "grid": "grid"}}
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["config"]["compat"] == "reference" and settings["compat"] == "reference"
    code, err = _cli(
        monkeypatch, capsys, "score", str(root), "--checkpoint", str(checkpoint), "--compat", "clean",
        "--out", str(tmp_path / "s1"),
    )  # fmt: skip
    assert code == 2 and "compat 'reference'" in err and "--compat" in err, err
    code, err = _cli(
        monkeypatch, capsys, "score", str(root), "--checkpoint", str(checkpoint), "--class-word", "polyp",
        "--out", str(tmp_path / "s2"),
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((tmp_path / "s2" / "meta.json").read_text())
    assert meta["compat"] == "reference" and meta["class_words"] == {"files": {"object": "polyp"}}


def _adapter_keys(checkpoint: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(checkpoint / "adapters.safetensors"), framework="pt") as handle:
        return list(handle.keys())


def test_train_refuses_a_compat_other_than_the_models(tmp_path, small_set):
    with pytest.raises(ConfigError, match=r"built in compat 'clean' mode but compat 'reference'"):
        train(_model(), small_set, tmp_path / "run", epochs=1, compat="reference", device="cpu", progress=False)


def test_reference_training_uses_the_release_words_not_the_users_folders(tmp_path):
    """A dataset root under a folder named MEDAD_DATA: the released words, never the user's path components."""
    from medad.data import load_manifest, write_layout
    from medad.engine.prompting import class_words_used, prompt_words

    seen = {}
    for layout, kind, word in [("isic2016", "isic", "01"), ("tn3k", "tn3k", "Medical_Dataset"), ("btad", "btad", None)]:
        root = write_layout(tmp_path / "MEDAD_DATA" / layout, layout, n_normal=1, n_abnormal=1, size=32, seed=0)
        manifest = load_manifest(root, kind, split="test")
        words = prompt_words(manifest, "reference", None)
        seen[kind] = class_words_used(manifest, words)[kind]
        if word is not None:
            assert set(words) == {word}
    assert set(seen["btad"].values()) <= {"01", "02", "03"} and all(k == v for k, v in seen["btad"].items())
    assert "MEDAD_DATA" not in {w for words in seen.values() for w in words.values()}


def test_pinned_optimiser_schedule_and_epoch_defaults():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    assert defaults["lr"] == 1e-5 and defaults["betas"] == (0.9, 0.999) and defaults["weight_decay"] == 1e-2
    assert defaults["warmup_fraction"] == 0.03 and defaults["batch_size"] == 64 and defaults["epochs"] == 100
    from medad.engine.train import warmup_constant, warmup_length

    factor = warmup_constant(10)  # clean: linear warm-up over 10 steps, every step learns, then constant
    assert [factor(s) for s in (0, 4, 9, 10, 500)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    release = warmup_constant(10, "reference")  # the release's lr_lambda: step / warmup_steps, first step lr 0
    assert [release(s) for s in (0, 4, 9, 10, 500)] == [0.0, 0.4, 0.9, 1.0, 1.0]
    assert warmup_constant(0, "reference")(0) == 1.0  # int(0.03 * 20) == 0: the release has no warm-up
    assert (warmup_length(0.03, 50, "reference"), warmup_length(0.03, 50, "clean")) == (1, 2)  # int vs round
    assert (warmup_length(0.03, 20, "reference"), warmup_length(0.03, 20, "clean")) == (0, 1)


def test_reference_first_warm_up_step_leaves_the_adapters_unchanged(tmp_path, small_set):
    """In reference mode the release's first optimiser step runs at lr 0; clean mode's first step learns."""
    from medad.models import create_model

    moved = {}
    for compat in ("reference", "clean"):
        model = create_model("ad_dinov3_tiny", compat=compat, text_disk_cache=False)
        before = _adapters(model)
        train(model, small_set, tmp_path / compat, epochs=1, lr=TINY_LR, batch_size=len(small_set), seed=0,
              warmup_fraction=1.0, device="cpu", progress=False, cache_features=False)  # fmt: skip
        moved[compat] = any(not torch.equal(before[k], v) for k, v in _adapters(model).items())
    assert moved == {"reference": False, "clean": True}
