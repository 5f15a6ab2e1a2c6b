"""Training speed with cached frozen features: later epochs against the first, in the same run.

The backbone is frozen and there is no augmentation, so ``medad.engine.train(cache_features=True)`` runs the
backbone only in the first epoch and stores its features; later epochs train the adapters on the cache. The
prompt-ensemble text is encoded once before timing (it is cached separately). The script times every epoch of
one cached run and one uncached run on the same synthetic industrial data and prints the ratio of a later epoch
to the first (target: a small fraction) and of cached to uncached.

Weights are random (nothing can be downloaded here); speed does not depend on weight values.

Examples:
    python benchmarks/training_speed.py                      # tiny model, CPU, a minute or two
    python benchmarks/training_speed.py --device cuda --model ad_dinov3 --backbone vit_large_patch16_dinov3
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medad.data import load_manifest, write_layout
from medad.engine import train
from medad.engine.prompting import prompt_words
from medad.models import create_model


def timed_run(args: argparse.Namespace, manifest: Any, out: Path, cache: bool) -> list[float]:
    """Train for ``args.epochs`` epochs and return each epoch's wall time in seconds."""
    torch.manual_seed(0)
    options: dict[str, Any] = {"image_size": args.image_size}
    if args.backbone:
        options.update(backbone=args.backbone, random_init=True, text_weights=None, layers=args.layers)
    model = create_model(args.model, **options)
    model.text_encoder(sorted(set(prompt_words(manifest, model.compat, None))))  # text is cached, not timed
    stamps = [time.perf_counter()]

    def mark(_epoch: int, _stats: dict[str, float]) -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    train(
        model,
        manifest,
        out,
        epochs=args.epochs,
        lr=1e-3,
        batch_size=args.batch_size,
        seed=0,
        device=args.device,
        cache_features=cache,
        cache_dir=out / "features",
        progress=False,
        on_epoch_end=mark,
    )
    return [b - a for a, b in itertools.pairwise(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ad_dinov3_tiny")
    parser.add_argument("--backbone", default=None, help="timm DINOv3 name (random weights) for ad_dinov3")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12], help="with --backbone")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_layout(
            Path(tmp) / "industrial",
            "mvtec",
            n_normal=args.n_images // 4,
            n_abnormal=args.n_images - args.n_images // 4,
            size=args.image_size,
            seed=0,
        )
        manifest = load_manifest(root, "mvtec")
        cached = timed_run(args, manifest, Path(tmp) / "cached", cache=True)
        uncached = timed_run(args, manifest, Path(tmp) / "uncached", cache=False)
    later = sum(cached[1:]) / max(len(cached) - 1, 1)
    result = {
        "model": args.model,
        "backbone": args.backbone,
        "device": args.device,
        "images": len(manifest),
        "epochs": args.epochs,
        "cached_epoch_s": [round(t, 3) for t in cached],
        "uncached_epoch_s": [round(t, 3) for t in uncached],
        "later_over_first_cached": round(later / cached[0], 3),
        "cached_later_over_uncached_mean": round(later / (sum(uncached) / len(uncached)), 3),
    }
    print(json.dumps(result))
    print(f"cached: first epoch {cached[0]:.2f} s, later epochs {later:.2f} s -> ratio {later / cached[0]:.3f}")


if __name__ == "__main__":
    main()
