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

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from medad.engine.host_writes import HostBatch
from medad.engine.inferers import Inferer, ScoringRun, batch_images
from medad.engine.skipped import SkippingSubset, collate_skipping
from medad.errors import ConfigError
from medad.utils.progress import track

if TYPE_CHECKING:
    from medad.models import AnomalyModel


def check_tiling(model: AnomalyModel, tile_overlap: float, compile: bool) -> None:
    """Refuse settings tiled scoring cannot honour.

    Raises:
        ConfigError: ``tile_overlap`` outside [0, 1), a transductive model, or ``compile=True``.
    """
    if not 0.0 <= float(tile_overlap) < 1.0:
        raise ConfigError(
            f"tile_overlap={tile_overlap} must be in [0, 1) (a fraction of the window side); 0.25 is the default"
        )
    from medad.models import ModelKind

    if model.kind is ModelKind.TRANSDUCTIVE:
        raise ConfigError(
            f"model {model.name!r} is transductive (it scores whole images against each other), so "
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


class TiledInferer(Inferer):
    """Score native-size images window by window (``score(..., tile=True)``).

    Windows of ``model.image_size`` squared, ``run.batch_size`` windows per forward pass, ``tile_overlap`` of a
    window apart, Gaussian blending; the image score is the largest window score. The model must not be
    transductive (:func:`check_tiling`).

    Args:
        tile_overlap: overlap of neighbouring windows, a fraction of the window side in [0, 1).
    """

    def __init__(self, tile_overlap: float) -> None:
        self.tile_overlap = tile_overlap

    def __call__(self, model: AnomalyModel, run: ScoringRun) -> Iterator[HostBatch]:
        """Yield one :class:`HostBatch` per image (DataLoader batches of one native image each)."""
        from monai.data.utils import compute_importance_map
        from monai.inferers import sliding_window_inference

        from medad.data import make_dataset, normalize_images

        dev = run.device
        native = make_dataset(run.manifest, None, model.mean, model.std, masks=False, uint8=True)
        loader = DataLoader(
            SkippingSubset(native, list(run.todo), run.manifest),
            batch_size=1,
            shuffle=False,
            num_workers=run.num_workers,
            pin_memory=dev.type == "cuda",
            prefetch_factor=2 if run.num_workers else None,
            collate_fn=collate_skipping,
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
            window_scores.append(outputs.image_scores.float())
            return outputs.pixel_scores[:, None].float()

        for batch in track(loader, "score", "images (tiled)", len(run.todo), enabled=run.bar, units=batch_images):
            if run.skips.record(batch):
                continue
            index = int(batch["index"][0])
            word[0] = run.words[index]
            window_scores.clear()
            image = normalize_images(batch["image"].to(dev, non_blocking=True), mean, std)
            stitched = sliding_window_inference(
                image,
                roi_size=(size, size),
                sw_batch_size=run.batch_size,
                predictor=predict,
                overlap=self.tile_overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=0.0,
                roi_weight_map=weights,
            )
            assert isinstance(stitched, torch.Tensor)  # one output map per window: one stitched tensor
            # The blend is a weighted mean of [0, 1] maps; the clamp only removes float rounding.
            pixel_map = stitched[0, 0].clamp(0.0, 1.0)
            image_score = torch.cat(window_scores).max().reshape(1)
            yield HostBatch([index], image_score, [pixel_map])
