"""Slow brute-force re-derivations of the few-shot memory (the full distance matrix, explicit window loops), kept in
the test tree to check medad.models.patch_memory against."""

from __future__ import annotations

import torch


def window_mean(features: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, h, w, C)`` mean over each patch's ``radius x radius`` window, border windows over the pixels inside."""
    b, h, w, c = features.shape
    x = features.double()
    out = torch.empty_like(x)
    half = radius // 2
    for i in range(h):
        for j in range(w):
            win = x[:, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1]
            out[:, i, j] = win.reshape(b, -1, c).mean(dim=1)
    return out


def full_nn_cosine(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``(Q,)`` min over the bank of ``1 - cosine``, from the full ``Q x M`` matrix in float64."""
    q = torch.nn.functional.normalize(queries.double(), dim=-1)
    m = torch.nn.functional.normalize(bank.double(), dim=-1)
    return (1.0 - q @ m.T).amin(dim=1)


def memory_scores(references: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], radii: tuple[int, ...]):
    """``(B, h, w)`` mean over layers and radii of the halved NN cosine distance (all layers on one grid)."""
    maps = []
    for layer, ref in references.items():
        tgt = targets[layer]
        b, h, w, c = tgt.shape
        for r in radii:
            bank = window_mean(ref, r).reshape(-1, c)
            maps.append(full_nn_cosine(window_mean(tgt, r).reshape(-1, c), bank).view(b, h, w))
    return torch.stack(maps).mean(dim=0) / 2.0
