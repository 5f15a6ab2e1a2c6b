"""``scores.csv`` / ``scores.json`` / heatmap PNGs of ``medad score`` come from one writer, and ``distributed=``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medad
from medad.engine.score_tables import SCORE_COLUMNS, read_score_table
from medad.engine.scorer import score, score_files
from medad.errors import ConfigError


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for k, (height, width) in enumerate([(40, 30), (25, 50), (33, 33)]):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return folder


def test_only_score_tables_names_the_score_table_files() -> None:
    root = Path(medad.__file__).parent
    writers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ("scores.csv", "scores.json", "heatmaps"):
                writers.append(str(path.relative_to(root)))
    assert sorted(set(writers)) == ["engine/score_tables.py"]


def test_distributed_without_torchrun_is_one_process_and_refuses_a_tag(tmp_path, monkeypatch) -> None:
    from medad.data import manifest_from_paths
    from medad.models import create_model

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    folder = _folder(tmp_path)
    table = score_files([folder], tmp_path / "out", model_name="ad_dinov3_tiny", device="cpu", progress=False,
                        distributed=True)  # fmt: skip
    assert list(table.columns) == list(SCORE_COLUMNS) and len(table) == 3
    back = read_score_table(tmp_path / "out")
    pd.testing.assert_series_equal(back["case_id"], table["case_id"].astype(str))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "predictions" / "chunks").iterdir()) == ["p0"]
    model = create_model("ad_dinov3_tiny")
    manifest = manifest_from_paths([str(folder)])
    for bad in ({"tag": "r9"}, {"indices": [0]}):
        with pytest.raises(ConfigError, match="per rank"):
            score(model, manifest, tmp_path / "p2", device="cpu", progress=False, distributed=True, **bad)
