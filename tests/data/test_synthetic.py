"""The two synthetic styles share what lets a head trained on one find anomalies in the other (the demo).

Industrial defects and medical lesions are the same kind of local darkening (similar contrast to their
surroundings), and the industrial backgrounds are no more textured than about the medical ones, so that the
demo's zero-shot transfer (tests/protocols/test_demo.py) rests on designed, checked statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import binary_dilation, binary_erosion

from medad.data.synthetic import industrial_image, medical_image

Style = Callable[[np.random.Generator, int, bool], tuple[np.ndarray, np.ndarray]]


def _contrasts(style: Style, n: int = 30, size: int = 64) -> np.ndarray:
    """Mean grey level inside each anomaly (eroded) over that of a ring around it."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(n):
        image, mask = style(rng, size, True)
        grey = image.astype(np.float64).mean(axis=-1)
        inside = binary_erosion(mask, iterations=2)
        ring = binary_dilation(mask, iterations=6) & ~binary_dilation(mask, iterations=2)
        if inside.any() and ring.any():
            ratios.append(grey[inside].mean() / grey[ring].mean())
    return np.asarray(ratios)


def _texture(style: Style, n: int = 20, size: int = 64) -> float:
    """Median standard deviation of the grey level of normal images (0-1 scale)."""
    rng = np.random.default_rng(0)
    return float(np.median([style(rng, size, False)[0].astype(np.float64).mean(axis=-1).std() / 255 for _ in range(n)]))


def test_defects_and_lesions_are_darkenings_of_the_same_contrast() -> None:
    industrial, medical = _contrasts(industrial_image), _contrasts(medical_image)
    assert len(industrial) >= 20 and len(medical) >= 20
    for ratios in (industrial, medical):
        assert ratios.min() >= 0.2 and ratios.max() <= 0.55, ratios
    assert abs(np.median(industrial) - np.median(medical)) <= 0.1


def test_industrial_backgrounds_are_about_as_textured_as_medical_ones() -> None:
    assert _texture(industrial_image) <= 2 * _texture(medical_image)


def test_both_styles_vary_their_colours() -> None:
    for style in (industrial_image, medical_image):
        rng = np.random.default_rng(0)
        hues = np.array([style(rng, 32, False)[0].reshape(-1, 3).mean(axis=0) for _ in range(20)])
        chroma = hues / hues.sum(axis=1, keepdims=True)
        assert chroma.std(axis=0).max() > 0.02, style.__name__
