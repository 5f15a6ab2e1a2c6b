"""A protocol with ``scoring: {tile: true}``: the score stage tiles, records it, and gets its own stage key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medad.errors import ConfigError

PROTOCOL = """\
name: tiled-test
output: runs
synthetic:
  medical: {{layout: mvtec_style, classes: [skin], n_normal: 2, n_abnormal: 3, size: 96, seed: 1}}
models:
  - {{name: winclip, model: winclip_tiny, image_score: max}}
targets:
  - {{name: medical, kind: mvtec_style, synthetic: medical}}
scoring: {{batch_size: 4, chunk_size: 4{tiling}}}
metrics: [pixel_auroc]
statistics: {{resamples: 0, seed: 0}}
"""


def _run(folder: Path, tiling: str) -> Path:
    from medad.protocols.runner import run_protocol

    path = folder / "tiled-test.yaml"
    path.write_text(PROTOCOL.format(tiling=tiling), encoding="utf-8")
    return run_protocol(path, progress=False)


def test_tiled_scoring_stage(tmp_path: Path) -> None:
    tiled = _run(tmp_path, ", tile: true, tile_overlap: 0.5")
    rows = json.loads((tiled / "metrics.json").read_text())["rows"]
    assert next(r for r in rows if r["metric"] == "pixel_auroc")["status"] == "ok"
    score_stages = sorted((tmp_path / "runs" / "_stages" / "score").iterdir())
    assert len(score_stages) == 1
    meta = json.loads((score_stages[0] / "predictions" / "meta.json").read_text())
    assert meta["scoring"] == {"tile": True, "tile_overlap": 0.5}
    assert meta["seed"] == 0 and len(meta["weights_sha256"]) == 64  # built under the recorded (default) seed

    untiled = _run(tmp_path, "")  # same folder: the untiled score stage must not reuse the tiled one
    assert untiled != tiled
    score_stages = sorted((tmp_path / "runs" / "_stages" / "score").iterdir())
    assert len(score_stages) == 2
    metas = [json.loads((s / "predictions" / "meta.json").read_text()) for s in score_stages]
    assert sorted("scoring" in m for m in metas) == [False, True]


def test_tile_overlap_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tile_overlap"):
        _run(tmp_path, ", tile: true, tile_overlap: 1.0")
