"""The few-shot memory bank: reference patch features per layer and neighbourhood radius, and a streaming
nearest-neighbour cosine search against it.

The form the few-shot literature shares (WinCLIP+, AnomalyDINO, MuSc, AF-CLIP): the patch features of ``k`` normal
reference images form a memory per tapped layer; each target patch is scored by its distance to the nearest
reference patch (``1 - cosine``). As MuSc and AF-CLIP do, features are first averaged over an ``r x r``
neighbourhood (``r`` in {1, 3, 5}; ``r = 1`` is the raw patch), so a patch is compared with its context too; the
target is aggregated with the same ``r`` as the bank it is compared with.

Memory: the bank holds ``k * h * w`` vectors per (layer, radius) in the dtype the features came in (``nbytes``,
``describe``); the search never builds the ``Q x M`` distance matrix: it runs over ``chunk x chunk`` blocks of the
queries and of the bank, keeping only each query's running minimum (``benchmarks/fewshot_memory.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

RADII = (1, 3, 5)


def neighbourhood_aggregate(features: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of each patch's ``radius x radius`` neighbourhood (MuSc / AF-CLIP's aggregation).

    Args:
        features: ``(B, h, w, C)`` patch features.
        radius: Window side, an odd positive integer (1 returns ``features`` unchanged).

    Returns:
        ``(B, h, w, C)`` in the input dtype; a window that crosses the border is the mean of the patches inside it
        (zero padding is not counted).
    """
    if radius < 1 or radius % 2 == 0:
        raise ValueError(f"radius must be an odd positive integer, got {radius}")
    if radius == 1:
        return features
    channels_first = features.permute(0, 3, 1, 2).float()
    pooled = F.avg_pool2d(channels_first, radius, stride=1, padding=radius // 2, count_include_pad=False)
    return pooled.permute(0, 2, 3, 1).to(features.dtype)


def nearest_cosine_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each query vector, ``min`` over the bank of ``1 - cosine`` similarity, streamed in blocks.

    Args:
        queries: ``(Q, C)`` vectors (any float dtype; computed in float32).
        bank: ``(M, C)`` vectors, ``M >= 1``.
        chunk: Rows of queries and of the bank per block: at most ``chunk x chunk`` similarities exist at once.

    Returns:
        ``(Q,)`` float32 distances in [0, 2].
    """
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty: add reference features first")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    out = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    for qs in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[qs : qs + chunk].float(), dim=-1)
        best = torch.full((q.shape[0],), -2.0, device=q.device)
        for bs in range(0, bank.shape[0], chunk):
            b = F.normalize(bank[bs : bs + chunk].to(q.device).float(), dim=-1)
            best = torch.maximum(best, (q @ b.T).amax(dim=1))
        out[qs : qs + chunk] = (1.0 - best).clamp(0.0, 2.0)
    return out


class PatchMemory:
    """A few-shot memory bank: the reference images' (aggregated) patch features per layer and radius.

    Args:
        radii: Neighbourhood sides (odd, e.g. ``(1, 3, 5)``); each gets its own bank per layer.
        chunk: Block size of the nearest-neighbour search (:func:`nearest_cosine_distance`).
    """

    def __init__(self, radii: Sequence[int] = RADII, chunk: int = 4096) -> None:
        if not radii or any(r < 1 or r % 2 == 0 for r in radii):
            raise ValueError(f"radii must be odd positive integers, got {list(radii)}")
        self.radii = tuple(int(r) for r in radii)
        self.chunk = int(chunk)
        self._banks: dict[str, dict[int, list[torch.Tensor]]] = {}
        self._grids: dict[str, tuple[int, int]] = {}
        self.n_images = 0

    def add(self, features: Mapping[str, torch.Tensor]) -> None:
        """Add one batch of reference features: ``{layer: (B, h, w, C)}``, the same layers as earlier batches."""
        batch = self._check(features, adding=True)
        for layer, tensor in features.items():
            self._grids.setdefault(layer, (tensor.shape[1], tensor.shape[2]))
            per_radius = self._banks.setdefault(layer, {r: [] for r in self.radii})
            for r in self.radii:
                aggregated = neighbourhood_aggregate(tensor.detach(), r)
                per_radius[r].append(aggregated.reshape(-1, tensor.shape[-1]))
        self.n_images += batch

    def _check(self, features: Mapping[str, torch.Tensor], adding: bool) -> int:
        """The batch size of ``features``; refuses other layers or grids than the bank's, or a bad shape."""
        if not features:
            raise ValueError("no feature layers given")
        if self._banks and set(features) != set(self._banks):
            raise ValueError(f"feature layers {sorted(features)} differ from the bank's {sorted(self._banks)}")
        sizes = {t.shape[0] for t in features.values()}
        if any(t.dim() != 4 for t in features.values()) or len(sizes) != 1:
            raise ValueError("features must be (B, h, w, C) tensors with one batch size B")
        for layer, tensor in features.items():
            if adding and layer in self._grids and self._grids[layer] != tuple(tensor.shape[1:3]):
                raise ValueError(f"layer {layer!r} has grid {tuple(tensor.shape[1:3])}, the bank {self._grids[layer]}")
        return sizes.pop()

    def bank(self, layer: str, radius: int) -> torch.Tensor:
        """The ``(M, C)`` bank of one layer and radius (concatenated once, then kept)."""
        parts = self._banks[layer][radius]
        if len(parts) > 1:
            parts[:] = [torch.cat(parts)]
        return parts[0]

    def score(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Few-shot patch scores of target features ``{layer: (B, h, w, C)}`` (the bank's layers).

        Returns:
            ``(B, h, w)`` float32 in [0, 1] at the first layer's grid: the mean over layers and radii of the
            nearest-neighbour cosine distance, halved; a layer of another grid is bilinearly resized to it.
        """
        if not self.n_images:
            raise ValueError("the memory bank is empty: add reference features before scoring")
        self._check(features, adding=False)
        first = next(iter(features.values()))
        size = (first.shape[1], first.shape[2])
        maps = []
        for layer, tensor in features.items():
            b, h, w, c = tensor.shape
            for r in self.radii:
                queries = neighbourhood_aggregate(tensor.detach(), r).reshape(-1, c)
                dist = nearest_cosine_distance(queries, self.bank(layer, r), self.chunk).view(b, 1, h, w)
                if (h, w) != size:
                    dist = F.interpolate(dist, size=size, mode="bilinear", align_corners=False)
                maps.append(dist[:, 0])
        return (torch.stack(maps).mean(dim=0) / 2.0).clamp(0.0, 1.0)

    @property
    def nbytes(self) -> int:
        """Bytes the banks hold (every layer and radius)."""
        return sum(t.numel() * t.element_size() for per in self._banks.values() for ts in per.values() for t in ts)

    def describe(self) -> dict[str, Any]:
        """What the bank holds: layers, radii, images, and per image and layer the patches and bytes (all radii)."""
        per_image: dict[str, dict[str, int]] = {}
        for layer, per_radius in self._banks.items():
            h, w = self._grids[layer]
            layer_bytes = sum(t.numel() * t.element_size() for ts in per_radius.values() for t in ts)
            per_image[layer] = {"patches": h * w, "bytes": layer_bytes // max(1, self.n_images)}
        return {
            "layers": list(self._banks),
            "radii": list(self.radii),
            "n_images": self.n_images,
            "patches_per_image": {k: v["patches"] for k, v in per_image.items()},
            "bytes_per_image": {k: v["bytes"] for k, v in per_image.items()},
            "nbytes": self.nbytes,
        }
