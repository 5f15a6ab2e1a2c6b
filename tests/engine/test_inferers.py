"""The scoring strategies behind one interface: which one a model gets, and the progress callback of ``score``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.engine.inferers import PlainInferer, TransductiveInferer
from medad.engine.predictions import PredictionReader
from medad.engine.scorer import score, select_inferer
from medad.engine.tiling import TiledInferer
from medad.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_model():
    from medad.models import create_model

    return create_model("ad_dinov3_tiny")


@pytest.fixture
def manifest(tmp_path):
    from medad.data import manifest_from_paths

    rng = np.random.default_rng(3)
    for k, (height, width) in enumerate([(40, 56), (71, 33), (64, 64), (30, 30), (50, 20)]):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"img_{k}.png")
    return manifest_from_paths([str(tmp_path)])


def test_the_strategy_follows_the_model_kind_and_tile(tiny_model):
    from medad.models import create_model

    assert type(select_inferer(tiny_model, tile=False, tile_overlap=0.25, compile=True)) is PlainInferer
    tiled = select_inferer(tiny_model, tile=True, tile_overlap=0.5, compile=False)
    assert isinstance(tiled, TiledInferer) and tiled.tile_overlap == 0.5
    mutual = create_model("dinov3_mutual_tiny")
    assert type(select_inferer(mutual, tile=False, tile_overlap=0.25, compile=False)) is TransductiveInferer
    with pytest.raises(ConfigError, match="transductive"):
        select_inferer(mutual, tile=True, tile_overlap=0.25, compile=False)


@pytest.mark.parametrize("tile", [False, True])
def test_progress_callback_counts_every_image_once(tmp_path, tiny_model, manifest, tile):
    done: list[int] = []
    score(tiny_model, manifest, tmp_path / "pred", batch_size=2, device="cpu", progress=done.append, tile=tile)
    assert sum(done) == len(manifest) and len(PredictionReader(tmp_path / "pred")) == len(manifest)
    assert done == ([1] * 5 if tile else [2, 2, 1])  # per image when tiled, per batch otherwise
    again: list[int] = []
    score(tiny_model, manifest, tmp_path / "pred", batch_size=2, device="cpu", progress=again.append, tile=tile)
    assert again == []  # a resumed run with nothing left scores (and counts) nothing


def test_progress_callback_for_a_transductive_model(tmp_path, manifest):
    from medad.models import create_model

    done: list[int] = []
    score(create_model("dinov3_mutual_tiny"), manifest, tmp_path / "pred", batch_size=4, device="cpu",
          progress=done.append)  # fmt: skip
    assert done == [4, 1]


def test_a_transductive_model_skips_an_unreadable_image_and_scores_the_rest_of_its_set(tmp_path, manifest):
    import json

    from medad.data import manifest_from_paths
    from medad.models import create_model

    broken = tmp_path / "img_9.png"
    broken.write_bytes(b"not a png")

    with_broken = manifest_from_paths([str(tmp_path)])
    bad = int(with_broken.index[with_broken["image_path"] == str(broken)][0])
    reader = score(create_model("dinov3_mutual_tiny"), with_broken, tmp_path / "pred", batch_size=2, device="cpu")
    assert sorted(reader.indices.tolist()) == [i for i in range(len(with_broken)) if i != bad]
    skipped = json.loads((tmp_path / "pred" / "skipped-p0.json").read_text())["skipped"]
    assert [entry["index"] for entry in skipped] == [bad] and "img_9" not in json.dumps(skipped)
    sizes = {"img_0": (40, 56), "img_1": (71, 33), "img_2": (64, 64), "img_3": (30, 30), "img_4": (50, 20)}
    for i in reader.indices.tolist():  # each readable image's map at its native size
        assert reader.get_map(i).shape == sizes[Path(with_broken.iloc[i]["image_path"]).stem]
