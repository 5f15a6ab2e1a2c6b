"""Small synthetic datasets written in each native public layout, with exact masks.

Two content styles: ``industrial`` (faint stripe / grid textures on shaded surfaces of random colours, with
rectangular, scratch or blob defects) and ``medical`` (shaded speckle of random skin tones with round /
elliptical lesions). Both anomalies are the same kind of local darkening, and both backgrounds share their
brightness, shading and colour spread, so that a head trained on industrial images can find the medical lesions
zero-shot (the demo, ``protocols/demo.yaml``). Everything is deterministic by seed and fast (64 px images by
default). Used by the tests, the docs, the demo and ``medad datasets synth``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from medad.errors import DataError

INDUSTRIAL_LAYOUTS: tuple[str, ...] = ("mvtec", "mpdd", "btad", "visa", "visa-meta", "mvtec_style")
MEDICAL_LAYOUTS: tuple[str, ...] = (
    "isic2016",
    "isic2017",
    "isic2018",
    "clinicdb-tiff",
    "clinicdb-png",
    "colondb-pranet",
    "colondb-bmp",
    "tn3k",
    "kvasir",
    "isic-anomalyclip",
)
LAYOUTS: tuple[str, ...] = (*INDUSTRIAL_LAYOUTS, *MEDICAL_LAYOUTS, "folder")


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


def _save(array: np.ndarray, path: Path) -> Path:
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


def _mask_u8(mask: np.ndarray, value: int = 255) -> np.ndarray:
    return (mask.astype(np.uint8) * value).astype(np.uint8)


class _Writer:
    def __init__(self, style: str, size: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.make: Callable[..., tuple[np.ndarray, np.ndarray]] = (
            industrial_image if style == "industrial" else medical_image
        )

    def sample(self, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
        return self.make(self.rng, self.size, abnormal)


def _mvtec_tree(
    out: Path,
    writer: _Writer,
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
    for cls in classes:
        if train:
            for i in range(n_normal):
                _save(writer.sample(False)[0], out / cls / "train" / normal / f"{i:03d}{image_ext(cls)}")
        for i in range(n_normal):
            _save(writer.sample(False)[0], out / cls / "test" / normal / f"{i:03d}{image_ext(cls)}")
        for i in range(n_abnormal):
            image, mask = writer.sample(True)
            _save(image, out / cls / "test" / defect / f"{i:03d}{image_ext(cls)}")
            _save(_mask_u8(mask), out / cls / "ground_truth" / defect / f"{i:03d}{mask_suffix}{mask_ext(cls)}")


def _visa(out: Path, writer: _Writer, classes: Sequence[str], n_normal: int, n_abnormal: int, meta: bool) -> None:
    rows: list[dict[str, str]] = []
    meta_json: dict[str, dict[str, list[dict[str, object]]]] = {"train": {}, "test": {}}
    for cls in classes:
        for i in range(n_normal + n_abnormal):
            abnormal = i >= n_normal
            image, mask = writer.sample(abnormal)
            folder = "Anomaly" if abnormal else "Normal"
            rel = f"{cls}/Data/Images/{folder}/{i:03d}.JPG"
            _save(image, out / rel)
            mask_rel = ""
            if abnormal:
                mask_rel = f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
                _save(_mask_u8(mask, value=int(writer.rng.integers(1, 9))), out / mask_rel)
            rows.append(
                {
                    "object": cls,
                    "split": "test",
                    "label": "anomaly" if abnormal else "normal",
                    "image": rel,
                    "mask": mask_rel,
                }
            )
            meta_json["test"].setdefault(cls, []).append(
                {
                    "img_path": rel,
                    "mask_path": mask_rel,
                    "cls_name": cls,
                    "specie_name": "bad" if abnormal else "good",
                    "anomaly": int(abnormal),
                }
            )
    if meta:
        (out / "meta.json").write_text(json.dumps(meta_json, indent=2), encoding="utf-8")
        return
    (out / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(out / "split_csv" / "1cls.csv", "w", newline="", encoding="utf-8") as handle:
        table = csv.DictWriter(handle, fieldnames=["object", "split", "label", "image", "mask"])
        table.writeheader()
        table.writerows(rows)


def _pairs(
    out: Path,
    writer: _Writer,
    n: int,
    image_dir: str,
    mask_dir: str,
    image_name: Callable[[int], str],
    mask_name: Callable[[int], str],
) -> None:
    for i in range(n):
        image, mask = writer.sample(True)
        if mask_name(i).lower().endswith((".tif", ".tiff", ".png", ".bmp", ".jpg")):
            _save(image, out / image_dir / image_name(i))
            _save(_mask_u8(mask), out / mask_dir / mask_name(i))


def _kvasir(out: Path, writer: _Writer, n: int) -> None:
    """``Kvasir-SEG/{images,masks}/<id>.jpg`` (JPEG masks) and a ``kavsir_bboxes.json`` of the lesion boxes."""
    base = out / "Kvasir-SEG"
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    boxes: dict[str, object] = {}
    for _ in range(n):
        name = "c" + "".join(writer.rng.choice(alphabet, 24))
        image, mask = writer.sample(True)
        _save(image, base / "images" / f"{name}.jpg")
        _save(_mask_u8(mask), base / "masks" / f"{name}.jpg")
        rows, cols = np.nonzero(mask)
        box = {"label": "polyp", "xmin": int(cols.min()), "ymin": int(rows.min())}
        box |= {"xmax": int(cols.max()), "ymax": int(rows.max())}
        boxes[name] = {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "bbox": [box]}
    (base / "kavsir_bboxes.json").write_text(json.dumps(boxes, indent=2), encoding="utf-8")


def _isic_anomalyclip(out: Path, writer: _Writer, n: int) -> None:
    """AnomalyCLIP's ISIC copy: ``skin/test/anomaly/*.jpg``, the ISBI 2016 ground truth and a ``meta.json``."""
    items = []
    for i in range(n):
        image, mask = writer.sample(True)
        rel = f"skin/test/anomaly/ISIC_{i:07d}.jpg"
        mask_rel = f"skin/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_{i:07d}_Segmentation.png"
        _save(image, out / rel)
        _save(_mask_u8(mask), out / mask_rel)
        item = {"img_path": rel, "mask_path": mask_rel, "cls_name": "skin", "specie_name": "anomaly", "anomaly": 1}
        items.append(item)
    meta = {"train": {}, "test": {"skin": items}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def write_layout(
    out: str | Path,
    layout: str,
    n_normal: int = 2,
    n_abnormal: int = 3,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write a synthetic dataset in a native layout.

    Args:
        out: Output root (created).
        layout: One of :data:`LAYOUTS`.
        n_normal: Normal images per class (industrial layouts and ``folder``; the medical sets have none).
        n_abnormal: Abnormal images per class.
        size: Image side in pixels.
        seed: Random seed (same seed, same bytes).
        classes: Category names for the industrial layouts (defaults per layout).

    Returns:
        The root to pass to :func:`medad.data.load_manifest` (always ``out``; for ``kvasir`` it holds
        ``Kvasir-SEG/``, for ``isic-anomalyclip`` ``skin/`` and ``meta.json``).
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown synthetic layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if size < 16 or n_normal < 0 or n_abnormal < 0:
        raise DataError("synthetic datasets need size >= 16 and non-negative image counts")
    root = Path(out).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    industrial = layout in INDUSTRIAL_LAYOUTS
    writer = _Writer("industrial" if industrial else "medical", size, seed)
    if layout == "mvtec":
        _mvtec_tree(root, writer, classes or ("bottle", "grid"), n_normal, n_abnormal)
    elif layout == "mpdd":
        _mvtec_tree(root, writer, classes or ("tubes", "connector"), n_normal, n_abnormal)
    elif layout == "btad":
        exts = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}
        _mvtec_tree(
            root,
            writer,
            classes or ("01", "02", "03"),
            n_normal,
            n_abnormal,
            normal="ok",
            defect="ko",
            image_ext=lambda c: exts.get(c, (".png", ".png"))[0],
            mask_ext=lambda c: exts.get(c, (".png", ".png"))[1],
            mask_suffix="",
        )
    elif layout in ("visa", "visa-meta"):
        _visa(root, writer, classes or ("candle", "pcb1"), n_normal, n_abnormal, meta=layout == "visa-meta")
    elif layout == "mvtec_style":
        medical = _Writer("medical", size, seed)
        _mvtec_tree(root, medical, classes or ("skin",), n_normal, n_abnormal, train=False, mask_suffix="")
    elif layout in ("isic2016", "isic2017", "isic2018"):
        image_dir, mask_dir, word = {
            "isic2016": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "Segmentation"),
            "isic2017": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "segmentation"),
            "isic2018": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "segmentation"),
        }[layout]
        _pairs(
            root,
            writer,
            n_abnormal,
            image_dir,
            mask_dir,
            lambda i: f"ISIC_{i:07d}.jpg",
            lambda i: f"ISIC_{i:07d}_{word}.png",
        )
        if layout == "isic2017":
            for i in range(n_abnormal):
                _save(np.zeros((size, size, 3), np.uint8), root / image_dir / f"ISIC_{i:07d}_superpixels.png")
    elif layout == "clinicdb-tiff":
        _pairs(root, writer, n_abnormal, "Original", "Ground Truth", lambda i: f"{i + 1}.tif", lambda i: f"{i + 1}.tif")
    elif layout in ("clinicdb-png", "colondb-pranet"):
        _pairs(root, writer, n_abnormal, "images", "masks", lambda i: f"{i + 1}.png", lambda i: f"{i + 1}.png")
    elif layout == "colondb-bmp":
        _pairs(root, writer, n_abnormal, ".", ".", lambda i: f"{i + 1}.bmp", lambda i: f"p{i + 1}.bmp")
    elif layout == "tn3k":
        _pairs(root, writer, n_abnormal, "test-image", "test-mask", lambda i: f"{i:04d}.jpg", lambda i: f"{i:04d}.jpg")
    elif layout == "kvasir":
        _kvasir(root, writer, n_abnormal)
    elif layout == "isic-anomalyclip":
        _isic_anomalyclip(root, writer, n_abnormal)
    else:
        _pairs(root, writer, n_abnormal, "images", "masks", lambda i: f"img{i:03d}.png", lambda i: f"img{i:03d}.png")
        for i in range(n_normal):
            _save(writer.sample(False)[0], root / "normals" / f"normal{i:03d}.png")
    return root
