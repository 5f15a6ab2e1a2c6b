"""The scorer's batch pipeline: grouped upsampling, saved manifest, the model's prompt rule, ``--export``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medad.data import manifest_from_paths
from medad.engine.host_writes import BackgroundWrites, HostBatch
from medad.engine.inferers import upsample_batch, upsample_to
from medad.engine.scorer import score
from medad.export import load_manifest_file


def test_grouped_upsampling_equals_one_image_at_a_time():
    torch.manual_seed(0)
    maps = torch.rand(5, 16, 16)
    sizes = [(30, 40), (17, 9), (30, 40), (16, 16), (17, 9)]
    grouped = upsample_batch(maps, sizes)
    for pixel_map, size, got in zip(maps, sizes, grouped, strict=True):
        assert tuple(got.shape) == size
        reference = torch.nn.functional.interpolate(pixel_map[None, None], size=size, mode="bilinear")[0, 0]
        assert torch.equal(got, reference)
        assert torch.equal(upsample_to(pixel_map, size), reference)


class _SlowWriter:
    def __init__(self, fail_on: int | None = None) -> None:
        self.added: list[int] = []
        self.fail_on = fail_on

    def add(self, indices, scores, maps) -> None:
        import time

        time.sleep(0.05)
        if indices[0] == self.fail_on:
            raise OSError("disk full")
        self.added += indices


def _batch(i: int) -> HostBatch:
    return HostBatch([i], torch.tensor([0.5]), [torch.zeros(2, 2)])


def test_background_writes_finish_on_exit_and_raise_write_errors():
    writer = _SlowWriter()
    with BackgroundWrites(writer, depth=2) as writes:
        for i in range(5):
            writes.submit(_batch(i))
            assert len(writer.added) >= i - 1  # never more than `depth` batches pending
    assert writer.added == [0, 1, 2, 3, 4]

    with pytest.raises(OSError, match="disk full"), BackgroundWrites(_SlowWriter(fail_on=1)) as writes:
        writes.submit(_batch(0))
        writes.submit(_batch(1))

    writer = _SlowWriter()
    with pytest.raises(RuntimeError, match="scoring broke"), BackgroundWrites(writer) as writes:
        writes.submit(_batch(0))
        writes.submit(_batch(1))
        raise RuntimeError("scoring broke")
    assert writer.added == [0, 1]  # what was handed over is still written


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for k, (h, w) in enumerate([(40, 50), (33, 33), (40, 50)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"x{k}.png")
    return images


def test_manifest_saved_and_prompt_rule_follows_the_model(tmp_path, folder, monkeypatch):
    from medad.models import create_model

    torch.manual_seed(0)
    model = create_model("ad_dinov3_tiny", compat="reference")
    manifest = manifest_from_paths([str(folder)]).reset_index(drop=True)
    seen: list[list[str]] = []
    original = model.forward_head
    monkeypatch.setattr(model, "forward_head", lambda f, words: seen.append(list(words)) or original(f, words))
    reader = score(model, manifest, tmp_path / "pred", batch_size=2, progress=False)
    assert reader.meta["compat"] == "reference"
    expected = [row["image_path"].split("/")[-4] for _, row in manifest.iterrows()]
    assert [w for batch in seen for w in batch] == expected
    saved = load_manifest_file(tmp_path / "pred" / "manifest.csv")
    pd.testing.assert_series_equal(saved["case_id"], manifest["case_id"])


def test_compiled_scoring_equals_eager_and_compiles_once(tmp_path, folder):
    """``compile=True``: one static-shape graph (the short last batch is padded) and the eager maps."""
    from medad.models import create_model

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = create_model("ad_dinov3_tiny")
    manifest = manifest_from_paths([str(folder)]).reset_index(drop=True)
    eager = dict(score(model, manifest, tmp_path / "eager", batch_size=2, progress=False).iter_maps())
    compiled = score(model, manifest, tmp_path / "compiled", batch_size=2, progress=False, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert compiled.indices.tolist() == [0, 1, 2]
    for index, pixel_map in compiled.iter_maps():
        assert pixel_map.shape == eager[index].shape
        np.testing.assert_allclose(pixel_map, eager[index], atol=1e-5)


def test_cli_score_with_export_writes_masks_at_native_size(tmp_path, folder, monkeypatch, capsys):
    from medad.cli import main

    out = tmp_path / "out"
    argv = ["medad", "score", str(folder), "--model", "ad_dinov3_tiny", "--out", str(out), "--export", "png"]
    monkeypatch.setattr(sys, "argv", [*argv, "--threshold", "fixed:0.5"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    record = json.loads((out / "export" / "export.json").read_text())
    assert record["threshold"]["rule"] == "fixed" and record["threshold"]["value"] == 0.5
    scores = pd.read_csv(out / "scores.csv")
    sizes = {Image.open(p).size for p in (out / "export").rglob("*mask*.png")}
    assert len(list((out / "export").rglob("*mask*.png"))) == len(scores) == 3
    assert sizes == {(50, 40), (33, 33)}
