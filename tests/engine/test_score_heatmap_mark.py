"""`medad score`'s heatmap PNGs of a random-weights model say so on the picture and in its text; others don't."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medad.engine.score_tables import heatmap_png
from medad.utils.marks import mark_random_weights


@pytest.mark.parametrize("shape", [(96, 160), (12, 10)])
def test_a_random_weights_heatmap_is_marked_visibly_at_its_native_size(shape: tuple[int, int]) -> None:
    pixel_map = np.full(shape, 0.5, np.float32)
    plain = Image.open(io.BytesIO(heatmap_png(pixel_map)))
    marked = Image.open(io.BytesIO(heatmap_png(pixel_map, random_weights=True)))
    assert plain.size == marked.size == (shape[1], shape[0])
    assert "Warning" not in plain.text and "RANDOM WEIGHTS" in marked.text["Warning"]
    grey = np.asarray(marked)
    assert (np.asarray(plain) == 128).all()
    assert grey[0].max() == 255 and (grey[1:-1, 1:-1] == 0).any()  # the frame and the black band show
    if shape[1] >= 100:  # wide enough for words: white text pixels inside the band
        band = grey[1:10, 1:-1]
        assert (band > 200).sum() > 20


def test_the_mark_keeps_the_picture_below_the_band() -> None:
    grey = np.full((60, 60), 77, np.uint8)
    marked = mark_random_weights(grey)
    assert marked.shape == grey.shape and (marked[30:59, 1:59] == 77).all()
