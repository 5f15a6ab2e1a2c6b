"""Cost of AD-DINOv3 and the baselines through the same scorer, on the same images, in one run.

Each model scores one synthetic set of 640x480 JPEGs with ``medad.engine.score`` (files on disk to
predictions on disk) after a warm-up; the script prints seconds per image, images/s and peak GPU memory.
``dinov3_mutual`` is transductive: its cost grows with the size of the scoring set, so it is timed at two set
sizes. Weights are random (nothing can be downloaded here); cost does not depend on weight values.

Examples:
    python benchmarks/baselines_cost.py --device cuda
    python benchmarks/baselines_cost.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medad.data import manifest_from_paths
from medad.engine import score
from medad.models import create_model


def configurations(tiny: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, options) of the models to time."""
    if tiny:
        return [
            ("ad_dinov3_tiny", "ad_dinov3_tiny", {}),
            ("winclip_tiny", "winclip_tiny", {}),
            ("dinov3_mutual_tiny", "dinov3_mutual_tiny", {}),
        ]
    return [
        ("ad_dinov3 ViT-L/16 512px", "ad_dinov3", {"random_init": True, "text_weights": None}),
        ("winclip ViT-B-16-plus-240 240px", "winclip", {"random_init": True}),
        ("dinov3_mutual ViT-L/16 512px", "dinov3_mutual", {"random_init": True}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny presets (CPU smoke run)")
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = [args.n_images] if args.n_images else ([128, 512] if cuda else [8])
    workers = args.workers if args.workers is not None else (12 if cuda else 0)

    import importlib.util

    spec = importlib.util.spec_from_file_location("tput", Path(__file__).with_name("scoring_throughput.py"))
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)  # type: ignore[union-attr]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        throughput.write_images(tmp_path / "images", max(sizes), 480, 640)
        full = manifest_from_paths([str(tmp_path / "images")]).reset_index(drop=True)
        for label, name, options in configurations(args.tiny):
            torch.manual_seed(0)
            model = create_model(name, **options).to(device).eval()
            warm = full.iloc[: args.batch_size].reset_index(drop=True)
            score(
                model,
                warm,
                tmp_path / f"warm_{name}",
                batch_size=args.batch_size,
                device=device,
                num_workers=workers,
                progress=False,
            )
            for n in sizes if name.startswith("dinov3_mutual") else sizes[-1:]:
                manifest = full.iloc[:n].reset_index(drop=True)
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                score(
                    model,
                    manifest,
                    tmp_path / f"{name}_{n}",
                    batch_size=args.batch_size,
                    device=device,
                    num_workers=workers,
                    progress=False,
                )
                if cuda:
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
                row = {
                    "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                    "model": label,
                    "images": n,
                    "s_per_image": round(seconds / n, 5),
                    "images_per_s": round(n / seconds, 1),
                    "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()
    print(f"{'model':36} {'images':>6} {'s/image':>9} {'img/s':>8} {'GiB':>6}")
    for r in rows:
        print(f"{r['model']:36} {r['images']:>6} {r['s_per_image']:>9} {r['images_per_s']:>8} {r['peak_gpu_gib']!s:>6}")


if __name__ == "__main__":
    main()
