"""Load + resize throughput for large JPEGs, cold versus with the on-disk preprocessing cache.

Writes N synthetic 4000x3000 JPEG images in the ``folder`` layout into a temporary folder, then iterates
``medad.data.make_dataset`` over them twice with a cache folder (first pass: decode + resize + cache write;
second pass: cache reads) and once without a cache, and prints images/s and the speed-up.

Run: ``python benchmarks/data_loading.py [--n 8] [--size 448] [--width 4000 --height 3000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medad.data import load_manifest, make_dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_images(root: Path, n: int, width: int, height: int) -> None:
    """Write ``n`` smooth random RGB JPEGs (with PNG masks) of the given size into ``root``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        image.save(root / "images" / f"{i:03d}.jpg", quality=90)
        mask = np.zeros((height, width), np.uint8)
        mask[height // 3 : height // 2, width // 3 : width // 2] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")


def timed_pass(dataset: object) -> float:
    """Seconds to fetch every item of ``dataset`` once."""
    start = time.perf_counter()
    for index in range(len(dataset)):  # type: ignore[arg-type]
        dataset[index]  # type: ignore[index]
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_images(root, args.n, args.width, args.height)
        manifest = load_manifest(root, "folder")
        uncached = timed_pass(make_dataset(manifest, args.size, MEAN, STD))
        cold = timed_pass(make_dataset(manifest, args.size, MEAN, STD, cache_dir=Path(tmp) / "cache"))
        warm = timed_pass(make_dataset(manifest, args.size, MEAN, STD, cache_dir=Path(tmp) / "cache"))
    n = args.n
    print(f"{n} JPEGs {args.width}x{args.height} -> {args.size}px")
    print(f"no cache:          {uncached:7.2f} s  ({n / uncached:7.2f} img/s)")
    print(f"cache, first pass: {cold:7.2f} s  ({n / cold:7.2f} img/s)")
    print(f"cache, second:     {warm:7.2f} s  ({n / warm:7.2f} img/s)")
    print(f"speed-up of the cached pass over the cold pass: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
