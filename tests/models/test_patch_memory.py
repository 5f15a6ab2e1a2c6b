"""medad.models.patch_memory against the brute-force re-derivation in tests/models/fewshot_reference.py."""

from __future__ import annotations

import pytest
import torch

from medad.models.patch_memory import PatchMemory, nearest_cosine_distance, neighbourhood_aggregate
from tests.models.fewshot_reference import full_nn_cosine, memory_scores, window_mean


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("radius", [1, 3, 5])
def test_aggregate_is_the_window_mean_with_border_windows_over_inside_pixels(radius: int) -> None:
    x = _randn(2, 6, 7, 5)
    torch.testing.assert_close(neighbourhood_aggregate(x, radius).double(), window_mean(x, radius))
    if radius == 1:
        assert neighbourhood_aggregate(x, 1) is x
    with pytest.raises(ValueError, match="odd positive"):
        neighbourhood_aggregate(x, 2)


@pytest.mark.parametrize(("q", "m", "chunk"), [(37, 53, 7), (10, 10, 4096), (64, 5, 16), (1, 9, 1)])
def test_streamed_nn_distance_equals_the_full_matrix(q: int, m: int, chunk: int) -> None:
    queries, bank = _randn(q, 12, seed=1), _randn(m, 12, seed=2)
    got = nearest_cosine_distance(queries, bank, chunk=chunk)
    assert got.shape == (q,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), full_nn_cosine(queries, bank), atol=1e-5, rtol=0)


def test_streamed_search_never_builds_more_than_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []
    real = torch.Tensor.__matmul__

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = real(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    nearest_cosine_distance(_randn(50, 4), _randn(70, 4), chunk=8)
    assert shapes and max(s[0] for s in shapes) <= 8 and max(s[1] for s in shapes) <= 8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_upcast(dtype: torch.dtype) -> None:
    queries, bank = _randn(20, 16, seed=3), _randn(30, 16, seed=4)
    got = nearest_cosine_distance(queries.to(dtype), bank.to(dtype), chunk=7)
    assert got.dtype == torch.float32
    ref = full_nn_cosine(queries.to(dtype).float(), bank.to(dtype).float())
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_memory_scores_equal_the_brute_force_over_layers_radii_and_batches() -> None:
    refs = [{"a": _randn(2, 5, 5, 8, seed=s), "b": _randn(2, 5, 5, 8, seed=s + 10)} for s in (5, 6)]
    memory = PatchMemory(radii=(1, 3, 5), chunk=11)
    for batch in refs:
        memory.add(batch)
    targets = {"a": _randn(3, 5, 5, 8, seed=7), "b": _randn(3, 5, 5, 8, seed=8)}
    got = memory.score(targets)
    joined = {k: torch.cat([r[k] for r in refs]) for k in ("a", "b")}
    assert got.shape == (3, 5, 5) and got.dtype == torch.float32 and got.min() >= 0 and got.max() <= 1
    torch.testing.assert_close(got.double(), memory_scores(joined, targets, (1, 3, 5)), atol=1e-5, rtol=0)
    assert memory.n_images == 4


def test_half_precision_features_score_like_their_float32_copy() -> None:
    refs, targets = {"a": _randn(2, 4, 4, 8, seed=9)}, {"a": _randn(1, 4, 4, 8, seed=10)}
    full, half = PatchMemory(), PatchMemory()
    full.add(refs)
    half.add({"a": refs["a"].half()})
    assert half.nbytes * 2 == full.nbytes
    torch.testing.assert_close(half.score({"a": targets["a"].half()}), full.score(targets), atol=2e-3, rtol=0)


def test_an_image_in_the_bank_scores_zero_and_another_grid_is_resized() -> None:
    ref = {"a": _randn(1, 4, 4, 8, seed=11), "b": _randn(1, 2, 2, 8, seed=12)}
    memory = PatchMemory(radii=(1, 3))
    memory.add(ref)
    got = memory.score(ref)
    assert got.shape == (1, 4, 4)
    torch.testing.assert_close(got, torch.zeros(1, 4, 4), atol=1e-6, rtol=0)


def test_describe_and_nbytes_give_the_bank_size_per_image_and_layer() -> None:
    memory = PatchMemory(radii=(1, 3, 5))
    memory.add({"a": _randn(2, 4, 6, 8), "b": _randn(2, 2, 3, 8)})
    info = memory.describe()
    assert info["layers"] == ["a", "b"] and info["radii"] == [1, 3, 5] and info["n_images"] == 2
    assert info["patches_per_image"] == {"a": 24, "b": 6}
    assert info["bytes_per_image"] == {"a": 24 * 8 * 4 * 3, "b": 6 * 8 * 4 * 3}
    assert memory.nbytes == 2 * (24 + 6) * 8 * 4 * 3


def test_empty_memory_and_mismatched_features_are_refused() -> None:
    memory = PatchMemory()
    with pytest.raises(ValueError, match="empty"):
        memory.score({"a": _randn(1, 2, 2, 4)})
    memory.add({"a": _randn(1, 2, 2, 4)})
    with pytest.raises(ValueError, match="differ from the bank"):
        memory.score({"b": _randn(1, 2, 2, 4)})
    with pytest.raises(ValueError, match="grid"):
        memory.add({"a": _randn(1, 3, 3, 4)})
    with pytest.raises(ValueError, match="odd positive"):
        PatchMemory(radii=(2,))
