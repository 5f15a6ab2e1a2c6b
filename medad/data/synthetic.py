"""Small synthetic datasets written in each native public layout, with exact masks.

Two content styles: ``industrial`` (faint stripe / grid textures on shaded surfaces of random colours, with
rectangular, scratch or blob defects) and ``medical`` (shaded speckle of random skin tones with round /
elliptical lesions). Both anomalies are the same kind of local darkening, and both backgrounds share their
brightness, shading and colour spread, so that a head trained on industrial images can find the medical lesions
zero-shot (the demo, ``protocols/demo.yaml``). Everything is deterministic by seed and fast (64 px images by
default). Used by the tests, the docs, the demo and ``medad datasets synth``.

This module holds the image content and the writers' building blocks; each dataset module writes its own
layouts with them and registers the writers (``DatasetDescription.layouts``); ``medad.data.write_layout``
dispatches by layout name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from medad.data.description import SyntheticRequest


def _shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth large-scale brightness variation in [-0.12, 0.12] (uneven lighting, skin tone), shared by both styles."""
    smooth = gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size / 8)
    return 0.12 * smooth / (np.abs(smooth).max() + 1e-6)


def _darken(rng: np.random.Generator, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Darken ``base`` inside ``mask`` by 50-75 % with a 1-pixel soft edge: the anomaly of both styles.

    Industrial defects and medical lesions share this contrast (and the backgrounds their brightness, shading
    and colour spread), so that a head trained on the industrial style meets the same local intensity anomaly
    in the medical one: the synthetic stand-in for the zero-shot transfer the method is about.
    """
    soft = gaussian_filter(mask.astype(np.float64), 1.0)
    return base * (1 - soft * rng.uniform(0.5, 0.75))


def industrial_image(rng: np.random.Generator, size: int, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
    """A faint stripe or grid texture on a shaded surface of a random colour, with a dark defect when ``abnormal``.

    The defect is a rectangle, a scratch or an irregular blob (a third each).

    Returns:
        (image (size, size, 3) uint8, mask (size, size) bool).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5, 10)
    angle = rng.uniform(0, np.pi)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    if rng.random() < 0.5:
        wave = wave + np.sin((xx * np.sin(angle) - yy * np.cos(angle)) * 2 * np.pi / period)
    wave = wave / np.abs(wave).max()
    base = 0.6 + rng.uniform(0.0, 0.1) * wave + _shading(rng, size) + rng.normal(0, 0.03, (size, size))
    colour = rng.uniform(0.45, 1.0, 3)
    mask = np.zeros((size, size), dtype=bool)
    if abnormal:
        kind = rng.integers(0, 3)
        if kind == 0:
            h, w = rng.integers(size // 8, size // 3, 2)
            top, left = rng.integers(0, size - h), rng.integers(0, size - w)
            mask[top : top + h, left : left + w] = True
        elif kind == 1:
            x0, y0 = rng.uniform(0.1, 0.9, 2) * size
            theta = rng.uniform(0, np.pi)
            distance = np.abs((xx - x0) * np.sin(theta) - (yy - y0) * np.cos(theta))
            along = np.abs((xx - x0) * np.cos(theta) + (yy - y0) * np.sin(theta))
            mask = (distance < max(1.0, size / 25)) & (along < size / 3)
        else:
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            radius = rng.uniform(0.08, 0.2) * size
            wobble = gaussian_filter(rng.normal(0, 1, (size, size)), size / 20)
            wobble = 2 * wobble / (np.abs(wobble).max() + 1e-6)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2 + wobble <= 1.0
        base = _darken(rng, base, mask)
    image = np.clip(base[..., None] * colour, 0, 1)
    return (image * 255).astype(np.uint8), mask


def medical_image(rng: np.random.Generator, size: int, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
    """A shaded, speckled skin-like background of a random tone, with a dark round / elliptical lesion if ``abnormal``.

    Returns:
        (image (size, size, 3) uint8, mask (size, size) bool).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    speckle = rng.gamma(8.0, 1 / 8.0, (size, size))
    base = (0.6 + _shading(rng, size)) * (0.9 + 0.1 * speckle)
    colour = np.clip(np.array([0.95, 0.75, 0.65]) * rng.uniform(0.7, 1.1, 3), 0, 1)
    mask = np.zeros((size, size), dtype=bool)
    if abnormal:
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.1, 0.25, 2) * size
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        base = _darken(rng, base, mask)
    image = np.clip(base[..., None] * colour, 0, 1)
    return (image * 255).astype(np.uint8), mask


class Sampler:
    """Draws (image, mask) pairs of one content style from one seeded generator, in order."""

    def __init__(self, style: str, size: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.draw: Callable[[np.random.Generator, int, bool], tuple[np.ndarray, np.ndarray]] = (
            industrial_image if style == "industrial" else medical_image
        )

    def sample(self, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
        """The next image and its mask (all False for a normal image)."""
        return self.draw(self.rng, self.size, abnormal)


def sampler(request: SyntheticRequest, style: str) -> Sampler:
    """A :class:`Sampler` of ``style`` (``industrial`` or ``medical``) at the request's size and seed."""
    return Sampler(style, request.size, request.seed)


def save_image(array: np.ndarray, path: Path) -> Path:
    """Write an image (or mask) array in the format its extension names, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    image = Image.fromarray(array)
    if ext in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=90)
    elif ext in (".tif", ".tiff"):
        image.save(path, format="TIFF")
    else:
        image.save(path, format={".png": "PNG", ".bmp": "BMP"}[ext])
    return path


def mask_u8(mask: np.ndarray, value: int = 255) -> np.ndarray:
    """A boolean mask as uint8 with ``value`` inside (VisA stores small label values, the others 255)."""
    return (mask.astype(np.uint8) * value).astype(np.uint8)


def write_mvtec_tree(
    out: Path,
    samples: Sampler,
    classes: Sequence[str],
    n_normal: int,
    n_abnormal: int,
    *,
    normal: str = "good",
    defect: str = "defect",
    image_ext: Callable[[str], str] = lambda _c: ".png",
    mask_ext: Callable[[str], str] = lambda _c: ".png",
    mask_suffix: str = "_mask",
    train: bool = True,
) -> None:
    """Write ``<cls>/{train,test}/<normal>``, ``<cls>/test/<defect>`` and ``<cls>/ground_truth/<defect>``."""
    for cls in classes:
        if train:
            for i in range(n_normal):
                save_image(samples.sample(False)[0], out / cls / "train" / normal / f"{i:03d}{image_ext(cls)}")
        for i in range(n_normal):
            save_image(samples.sample(False)[0], out / cls / "test" / normal / f"{i:03d}{image_ext(cls)}")
        for i in range(n_abnormal):
            image, mask = samples.sample(True)
            save_image(image, out / cls / "test" / defect / f"{i:03d}{image_ext(cls)}")
            save_image(mask_u8(mask), out / cls / "ground_truth" / defect / f"{i:03d}{mask_suffix}{mask_ext(cls)}")


def write_pairs(
    out: Path,
    samples: Sampler,
    n: int,
    image_dir: str,
    mask_dir: str,
    image_name: Callable[[int], str],
    mask_name: Callable[[int], str],
) -> None:
    """Write ``n`` abnormal images into ``image_dir`` and their masks into ``mask_dir`` (names by index)."""
    for i in range(n):
        image, mask = samples.sample(True)
        if mask_name(i).lower().endswith((".tif", ".tiff", ".png", ".bmp", ".jpg")):
            save_image(image, out / image_dir / image_name(i))
            save_image(mask_u8(mask), out / mask_dir / mask_name(i))
