"""A visible mark for pictures made by a model with random weights, for writers that have no caption of their own
(``medad score``'s heatmap PNGs): the words stay on the picture wherever it is copied, not only in metadata."""

from __future__ import annotations

from typing import Any

import numpy as np

RANDOM_WEIGHTS_MARK = "RANDOM WEIGHTS - NOT A RESULT"
"""What every output of a random-weights model says (pictures, DICOM descriptions)."""


def _fitting_text(width: int, largest: int) -> tuple[str, Any] | None:
    """The longest wording of the mark and the largest font (<= ``largest`` px, >= 6 px) that fit ``width``."""
    from PIL import ImageFont

    for text in (RANDOM_WEIGHTS_MARK, "RANDOM WEIGHTS", "RANDOM"):
        for size in range(largest, 5, -1):
            font = ImageFont.load_default(size=size)
            if font.getlength(text) <= width - 4:
                return text, font
    return None


def mark_random_weights(grey: np.ndarray) -> np.ndarray:
    """Return a copy of an 8-bit (H, W) picture with :data:`RANDOM_WEIGHTS_MARK` burnt in: a black band across the
    top with the words in white (the longest wording that fits) and a white one-pixel frame, at the same size."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L")
    width, height = img.size
    found = _fitting_text(width, min(16, height // 3 - 3))
    band = found[1].size + 4 if found else min(6, max(1, height // 3))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width - 1, band - 1), fill=0)
    if found:
        draw.text((2, 1), found[0], fill=255, font=found[1])
    draw.rectangle((0, 0, width - 1, height - 1), outline=255)
    return np.asarray(img)
