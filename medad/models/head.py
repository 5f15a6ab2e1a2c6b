"""Pure-torch pieces of the AD-DINOv3 head: token standardisation, adapters, CMCL / AACM maps, global logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01
CMCL_SCALE = 100.0
AACM_SCALE = 10.0
GLOBAL_SCALE = 100.0


def standardise_tokens(tokens: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardise patch tokens per image and channel over the token axis.

    Args:
        tokens: ``(B, N, C)`` patch tokens.
        eps: Added to the (unbiased) standard deviation.

    Returns:
        ``(tokens - mean_N) / (std_N + eps)`` with torch's default unbiased std.
    """
    mean = tokens.mean(dim=1, keepdim=True)
    std = tokens.std(dim=1, keepdim=True)
    return (tokens - mean) / (std + eps)


class Adapter(nn.Module):
    """The release's ``ClipAdapter``: bias-free Linear + LeakyReLU(0.01); only ``fc1`` is ever used.

    Args:
        c_in: Input width.
        dim: Output (bottleneck) width.
        keep_fc2: Register the unused ``fc2`` (``dim -> c_in``) so that the state dict has the release's layout
            and parameter count (``reference`` mode). It never takes part in the forward pass, gets no gradient
            and so keeps its initial values.
    """

    def __init__(self, c_in: int, dim: int, keep_fc2: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c_in, dim, bias=False)
        self.fc2 = nn.Linear(dim, c_in, bias=False) if keep_fc2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``LeakyReLU(fc1(x))``."""
        return F.leaky_relu(self.fc1(x), LEAKY_SLOPE)


def combine_text(u_normal: torch.Tensor, u_abnormal: torch.Tensor, compat: str) -> torch.Tensor:
    """Form the ``(B, D, 2)`` text matrix ``T`` from the adapted normal / abnormal embeddings.

    Args:
        u_normal: ``(B, D)`` adapted normal embedding.
        u_abnormal: ``(B, D)`` adapted abnormal embedding.
        compat: ``clean`` stacks them (column 0 = normal, 1 = abnormal). ``reference`` reproduces the release's
            ``cat([u_n, u_a], 1).view(B, D, 2)``: column 0 holds the even entries of the concatenation and
            column 1 the odd ones.

    Returns:
        ``(B, D, 2)``; not L2-normalised (as released).
    """
    if compat == "reference":
        batch, dim = u_normal.shape
        return torch.cat([u_normal, u_abnormal], dim=1).view(batch, dim, 2)
    return torch.stack([u_normal, u_abnormal], dim=-1)


def _to_grid(scores: torch.Tensor) -> torch.Tensor:
    """``(B, N, K)`` row-major patch scores -> ``(B, K, S, S)``."""
    batch, n_tokens, channels = scores.shape
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} patch tokens do not form a square grid")
    return scores.permute(0, 2, 1).reshape(batch, channels, side, side)


def _upsample(grid: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)


def scaled_product(scale: float, a: torch.Tensor, b: torch.Tensor, scale_first: bool = False) -> torch.Tensor:
    """``scale * (a @ b)`` for batched matrices.

    ``scale_first`` computes ``(scale * a) @ b``, the release's order (its ``100 * p @ T`` is evaluated left to
    right), which equals the release bit for bit; the default scales the smaller product (fewer multiplies, equal
    up to float rounding).
    """
    if scale_first:
        return torch.bmm(scale * a, b)
    return scale * torch.bmm(a, b)


def cmcl_map(patch: torch.Tensor, text: torch.Tensor, size: int, scale_first: bool = False) -> torch.Tensor:
    """CMCL probability map of one layer.

    Args:
        patch: ``(B, N, D)`` L2-normalised adapted patch tokens.
        text: ``(B, D, 2)`` text matrix.
        size: Output side in pixels.
        scale_first: Apply the x100 scale before the product, as released (see :func:`scaled_product`).

    Returns:
        ``(B, 2, size, size)``: softmax over the channels of the bilinearly upsampled (align_corners=True)
        ``100 * patch @ text`` - the softmax comes after the upsampling, as released.
    """
    scores = scaled_product(CMCL_SCALE, patch, text, scale_first)
    return torch.softmax(_upsample(_to_grid(scores), size), dim=1)


def cmcl_anomaly_probability(patch: torch.Tensor, text: torch.Tensor, size: int) -> torch.Tensor:
    """Anomaly channel of the layer-averaged CMCL map, with one single-channel upsampling per layer.

    A softmax over two channels is the sigmoid of their difference, and bilinear upsampling is linear, so
    ``softmax(up(100 p T))[:, 1] == sigmoid(up(100 p (T_a - T_n)))``: the same value as :func:`cmcl_map` (up to
    rounding) at half the upsampling work, all layers in one interpolation. Used at inference, where only
    the pixel map is needed.

    Args:
        patch: ``(B, L, N, D)`` L2-normalised adapted patch tokens of L layers.
        text: ``(B, D, 2)`` text matrix.
        size: Output side in pixels.

    Returns:
        ``(B, size, size)`` = ``mean_l cmcl_map(patch[:, l], text, size)[:, 1]``.
    """
    batch, n_layers, n_tokens, _ = patch.shape
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} patch tokens do not form a square grid")
    delta = (text[..., 1] - text[..., 0]).unsqueeze(1).unsqueeze(-1)
    scores = CMCL_SCALE * torch.matmul(patch, delta).squeeze(-1)
    return torch.sigmoid(_upsample(scores.reshape(batch, n_layers, side, side), size)).mean(dim=1)


def aacm_map(patch: torch.Tensor, cls: torch.Tensor, size: int, scale_first: bool = False) -> torch.Tensor:
    """AACM map of one layer.

    Args:
        patch: ``(B, N, D)`` L2-normalised adapted patch tokens.
        cls: ``(B, D)`` L2-normalised adapted CLS token.
        size: Output side in pixels.
        scale_first: Apply the x10 scale before the product, as released (see :func:`scaled_product`).

    Returns:
        ``(B, 2, size, size)`` = ``[1 - s, s]`` with ``s = sigmoid(upsample(10 * patch @ cls))``.
    """
    scores = scaled_product(AACM_SCALE, patch, cls.unsqueeze(-1), scale_first)
    s = torch.sigmoid(_upsample(_to_grid(scores), size))
    return torch.cat([1.0 - s, s], dim=1)


def global_logits(cls: torch.Tensor, text: torch.Tensor, scale_first: bool = False) -> torch.Tensor:
    """Image-level logits of one layer: ``100 * cls @ text``, ``(B, 2)`` (``scale_first``: as released, see
    :func:`scaled_product`)."""
    return scaled_product(GLOBAL_SCALE, cls.unsqueeze(1), text, scale_first).squeeze(1)


def gaussian_blur(maps: torch.Tensor, sigma: float, edge: str = "replicate") -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, H, W)`` maps.

    Args:
        maps: The maps.
        sigma: Standard deviation in pixels (``<= 0``: no smoothing).
        edge: ``replicate`` (edge-replicate padding, radius ``ceil(4 sigma)``) or ``reflect``:
            ``scipy.ndimage.gaussian_filter``'s default (half-sample symmetric padding ``d c b a | a b c d``,
            radius ``int(4 sigma + 0.5)``), what the releases that smooth with scipy get at the borders.
    """
    if sigma <= 0:
        return maps
    if edge not in ("replicate", "reflect"):
        raise ValueError(f"edge must be 'replicate' or 'reflect', got {edge!r}")
    radius = max(1, math.ceil(4.0 * sigma) if edge == "replicate" else int(4.0 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    for dim, shape in ((-1, (1, 1, 1, -1)), (-2, (1, 1, -1, 1))):
        x = F.conv2d(_pad_axis(x, radius, dim, edge), kernel.view(shape))
    return x.squeeze(1)


def _pad_axis(x: torch.Tensor, radius: int, dim: int, edge: str) -> torch.Tensor:
    """Pad one axis by ``radius`` on both sides: edge-replicate or half-sample symmetric (any map size)."""
    n = x.shape[dim]
    index = torch.arange(-radius, n + radius, device=x.device)
    if edge == "replicate":
        index = index.clamp(0, n - 1)
    else:
        index = index % (2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
    return x.index_select(dim % x.dim(), index)
