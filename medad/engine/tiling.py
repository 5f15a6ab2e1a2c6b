"""Tiled (sliding-window) scoring of high-resolution images at their native detail.

A 1920x1072 colonoscopy frame or a 4000x3000 dermoscopy image squeezed into a 512x512 model input loses most of
its detail; a small lesion may shrink to a few pixels. With ``score(..., tile=True)`` every image is read at its
native size and the model runs on windows of ``model.image_size`` squared that cover it, ``tile_overlap`` of a
window apart (MONAI's :func:`~monai.inferers.sliding_window_inference`). The window maps are blended with a
Gaussian weight (a pixel near a window's centre counts more than one at its edge), which gives the map at the
native size directly: nothing is upsampled. Images smaller than a window are padded with the mean colour (zero
after normalisation) and the map is cropped back.

The image score of a tiled image is the **largest** image score of its windows: a lesion that fills one window
of twenty must not be averaged away by nineteen normal ones, just as one abnormal region makes the whole image
abnormal. (Scores of tiled and untiled runs are therefore not on the same scale; pick thresholds within one
mode.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from medad.engine.predictions import PredictionWriter
from medad.engine.runtime import autocast
from medad.engine.skipped import SkipLog, SkippingSubset, collate_skipping
from medad.errors import ConfigError


def check_tiling(model: Any, tile_overlap: float, compile: bool) -> None:
    """Refuse settings tiled scoring cannot honour.

    Raises:
        ConfigError: ``tile_overlap`` outside [0, 1), a transductive model, or ``compile=True``.
    """
    if not 0.0 <= float(tile_overlap) < 1.0:
        raise ConfigError(
            f"tile_overlap={tile_overlap} must be in [0, 1) (a fraction of the window side); 0.25 is the default"
        )
    if getattr(model, "transductive", False):
        raise ConfigError(
            f"model {model.card().get('name')!r} is transductive (it scores whole images against each other), so "
            "it cannot score tiles; score it without --tile"
        )
    if compile:
        raise ConfigError(
            "--tile and --compile cannot be combined (the number of windows per image varies, a static-shape "
            "compiled backbone would recompile); drop one of them"
        )


def tiling_meta(tile: bool, tile_overlap: float) -> dict[str, Any] | None:
    """The ``scoring`` entry of a predictions ``meta.json``: ``None`` (no entry) for untiled runs."""
    if not tile:
        return None
    return {"tile": True, "tile_overlap": float(tile_overlap)}


def score_tiled(
    model: Any,
    dataset: Any,
    todo: Sequence[int],
    words: Sequence[str],
    writer: PredictionWriter,
    *,
    batch_size: int,
    num_workers: int,
    dev: torch.device,
    tile_overlap: float,
    progress: bool,
    skips: SkipLog | None = None,
) -> None:
    """Score the ``todo`` rows of a native-size dataset window by window into ``writer``.

    Args:
        model: a non-transductive medad model (already on ``dev``, in eval mode).
        dataset: yields native-size samples (``medad.data.make_dataset(..., image_size=None, uint8=True)``).
        todo: manifest indices to score.
        words: the text class word of every manifest row.
        writer: the predictions store.
        batch_size: windows per forward pass.
        num_workers: DataLoader workers (each reads one native image at a time).
        dev: the device.
        tile_overlap: overlap of neighbouring windows, a fraction of the window side in [0, 1).
        progress: show a tqdm bar.
        skips: where an unreadable image is recorded and skipped (``None``: it ends the run).
    """
    from monai.data.utils import compute_importance_map
    from monai.inferers import sliding_window_inference
    from tqdm.auto import tqdm

    from medad.data import normalize_images
    from medad.engine.scorer import BackgroundWrites, _HostBatch

    loader = DataLoader(
        Subset(dataset, list(todo)) if skips is None else SkippingSubset(dataset, list(todo)),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=2 if num_workers else None,
        collate_fn=None if skips is None else collate_skipping,
    )
    mean = torch.tensor(model.mean, dtype=torch.float32).to(dev)
    std = torch.tensor(model.std, dtype=torch.float32).to(dev)
    size = int(model.image_size)
    # the Gaussian window weight (sigma = size / 8), made once in fp32 rather than per image under autocast
    weights = compute_importance_map((size, size), mode="gaussian", sigma_scale=0.125, device=dev)
    window_scores: list[torch.Tensor] = []
    word: list[str] = [""]

    def predict(windows: torch.Tensor) -> torch.Tensor:
        outputs = model(windows, word * windows.shape[0])
        window_scores.append(outputs["image_scores"].float())
        return outputs["pixel_scores"][:, None].float()

    with writer, BackgroundWrites(writer) as writes, torch.inference_mode(), autocast(dev):
        for batch in tqdm(loader, desc="scoring tiles", unit="image", disable=not progress):
            if skips is not None and skips.record(batch):
                continue
            index = int(batch["index"][0])
            word[0] = words[index]
            window_scores.clear()
            image = normalize_images(batch["image"].to(dev, non_blocking=True), mean, std)
            stitched = sliding_window_inference(
                image,
                roi_size=(size, size),
                sw_batch_size=batch_size,
                predictor=predict,
                overlap=tile_overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=0.0,
                roi_weight_map=weights,
            )
            # The blend is a weighted mean of [0, 1] maps; the clamp only removes float rounding.
            pixel_map = stitched[0, 0].clamp(0.0, 1.0)
            image_score = torch.cat(window_scores).max().reshape(1)
            writes.submit(_HostBatch([index], image_score, [pixel_map]))
