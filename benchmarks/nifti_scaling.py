"""NIfTI scoring cost per slice against the number of slices, and scoring memory against the number of images.

Part 1 writes one synthetic ``.nii.gz`` volume per slice count (default 25, 100, 200 and 400 slices of
192x192) and scores it end to end with ``medad.engine.scorer.score_files`` (the tiny random-weight model on the
CPU, so the model's own cost is small and the data path shows). Before the volume cache each slice re-read the
whole volume for its min/max, so the time per slice grew with the slice count (quadratic in total); now a volume
is read once per process and the time per slice should stay flat. It also times the data path alone
(``read_image`` for every slice).

Part 2 (``--memory``) scores folders of N small PNGs, each in a fresh process, and prints the process's peak
resident memory: it should not grow with N (predictions stream to chunk files).

Run: ``python benchmarks/nifti_scaling.py [--slices 25,100,200,400] [--size 192] [--memory --images 100,1000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def write_volume(path: Path, size: int, slices: int) -> Path:
    """A smooth random float32 volume (size x size x slices) with an identity affine."""
    rng = np.random.default_rng(slices)
    data = rng.random((size, size, slices), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def time_volume(folder: Path, size: int, slices: int) -> dict[str, float]:
    """Seconds to read every slice (data path) and to score the volume end to end, cold cache each."""
    from medad.data import manifest_from_paths, read_image
    from medad.data.nifti import _cached_volume
    from medad.engine.scorer import score_files

    path = write_volume(folder / f"vol_{slices}.nii.gz", size, slices)
    manifest = manifest_from_paths([str(path)])
    _cached_volume.cache_clear()
    start = time.perf_counter()
    for row in manifest.to_dict("records"):
        read_image(row)
    read_s = time.perf_counter() - start
    _cached_volume.cache_clear()
    start = time.perf_counter()
    score_files(
        [path], folder / f"out_{slices}", model_name="ad_dinov3_tiny", device="cpu", heatmaps=False, progress=False
    )
    score_s = time.perf_counter() - start
    return {
        "slices": slices,
        "read_s": read_s,
        "read_ms_per_slice": 1000 * read_s / slices,
        "score_s": score_s,
        "score_ms_per_slice": 1000 * score_s / slices,
    }


_CHILD = """
import resource, sys
from medad.engine.scorer import score_files
score_files([sys.argv[1]], sys.argv[2], model_name="ad_dinov3_tiny", device="cpu", heatmaps=False, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(folder: Path, n: int) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process scoring ``n`` 64x64 PNGs."""
    from PIL import Image

    images = folder / f"png_{n}"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{k:05d}.png")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(images), str(folder / f"out_png_{n}")],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"images": n, "peak_rss_mib": int(out.stdout.strip().splitlines()[-1]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", default="25,100,200,400")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory against the image count")
    parser.add_argument("--images", default="100,1000")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"nifti": [], "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        for slices in (int(s) for s in args.slices.split(",")):
            row = time_volume(Path(tmp), args.size, slices)
            results["nifti"].append(row)
            print(
                f"{slices:4d} slices of {args.size}x{args.size}: read {row['read_ms_per_slice']:.2f} ms/slice, "
                f"score {row['score_ms_per_slice']:.1f} ms/slice ({row['score_s']:.1f} s)",
                flush=True,
            )
        if args.memory:
            for n in (int(s) for s in args.images.split(",")):
                row = peak_memory(Path(tmp), n)
                results["memory"].append(row)
                print(f"{n:5d} images: peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
