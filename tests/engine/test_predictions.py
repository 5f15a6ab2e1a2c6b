"""The chunked predictions store: round trip, resume, several writers, duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from medad.engine.predictions import PredictionReader, PredictionWriter
from medad.errors import DataError


def _maps(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.random((4 + i % 3, 5 + i % 2), dtype=np.float32) for i in range(n)]


def test_round_trip_keeps_native_sizes_and_sorts_by_index(tmp_path):
    rng = np.random.default_rng(0)
    maps = _maps(rng, 7)
    order = [5, 2, 6, 0, 1, 4, 3]
    with PredictionWriter(tmp_path, chunk_size=3, meta={"model": "m"}) as writer:
        writer.add(order, [i / 10 for i in order], [maps[i] for i in order])
    reader = PredictionReader(tmp_path)
    assert reader.indices.tolist() == list(range(7))
    np.testing.assert_allclose(reader.image_scores, np.arange(7) / 10, rtol=1e-6)
    assert len(list((tmp_path / "chunks").iterdir())) == 3
    for index, pixel_map in reader.iter_maps():
        np.testing.assert_array_equal(pixel_map, maps[index])
    np.testing.assert_array_equal(reader.get_map(4), maps[4])
    assert reader.meta == {"model": "m"}


def test_iter_subset_and_missing_index(tmp_path):
    rng = np.random.default_rng(1)
    maps = _maps(rng, 5)
    with PredictionWriter(tmp_path, chunk_size=2) as writer:
        writer.add(range(5), np.zeros(5), maps)
    reader = PredictionReader(tmp_path)
    assert [i for i, _ in reader.iter_maps([4, 1])] == [1, 4]
    with pytest.raises(KeyError):
        list(reader.iter_maps([9]))
    with pytest.raises(KeyError):
        reader.get_map(9)


def test_resume_continues_numbering_and_reports_done(tmp_path):
    rng = np.random.default_rng(2)
    maps = _maps(rng, 6)
    writer = PredictionWriter(tmp_path, chunk_size=2)
    writer.add(range(3), np.ones(3), maps[:3])
    del writer  # killed: the unflushed third prediction is lost, the first chunk is safe
    resumed = PredictionWriter(tmp_path, chunk_size=2)
    assert resumed.done_indices() == {0, 1}
    todo = [i for i in range(6) if i not in resumed.done_indices()]
    resumed.add(todo, np.ones(len(todo)), [maps[i] for i in todo])
    resumed.close()
    reader = PredictionReader(tmp_path)
    assert reader.indices.tolist() == list(range(6))
    np.testing.assert_array_equal(reader.get_map(2), maps[2])


def test_two_writer_tags_merge_and_duplicates_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    maps = _maps(rng, 4)
    for rank in range(2):
        with PredictionWriter(tmp_path, chunk_size=8, tag=f"r{rank}") as writer:
            mine = [i for i in range(4) if i % 2 == rank]
            writer.add(mine, np.zeros(len(mine)), [maps[i] for i in mine])
    assert PredictionReader(tmp_path).indices.tolist() == [0, 1, 2, 3]
    with PredictionWriter(tmp_path, tag="r9") as writer:
        writer.add([1], [0.0], [maps[1]])
    with pytest.raises(DataError, match="written twice"):
        PredictionReader(tmp_path)


def test_not_a_predictions_folder(tmp_path):
    with pytest.raises(DataError, match="medad score"):
        PredictionReader(tmp_path)


def test_rejects_bad_maps_and_tags(tmp_path):
    writer = PredictionWriter(tmp_path)
    with pytest.raises(ValueError, match="2-D"):
        writer.add([0], [0.0], [np.zeros((1, 2, 2))])
    with pytest.raises(ValueError, match="same length"):
        writer.add([0, 1], [0.0], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="tag"):
        PredictionWriter(tmp_path, tag="a-b")
