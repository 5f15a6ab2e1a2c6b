"""Cost of every registered method on this machine: training step time and scoring images/s, batched against
image by image, in one run.

For each method (AD-DINOv3, the CLIP family, WinCLIP, ``dinov3_mutual``) and each size (its ``*_tiny`` preset,
and a random ViT-B-sized configuration at 224 px: CLIP ViT-B-16, DINOv3 ViT-B/16, DINOv2 ViT-B/14-reg for
Crane+'s D-Attn), the script times on the same synthetic images:

- a training step (forward, loss, backward, optimiser step) at batch 8, for the trainable methods;
- scoring with batch 8, the way medad scores;
- scoring image by image (batch 1), the way the releases' test scripts loop over their test sets;

and prints images/s of both and their ratio (batched over image by image). ``dinov3_mutual`` is transductive:
image by image it extracts features one image at a time, then scores the whole set once (as MuSc does).
Weights are random (nothing can be downloaded here): the figures are timings only, they say nothing of accuracy.
``--device cuda`` gives the GPU rows (fp32, the same loops; CUDA is synchronised before each clock reading).

Examples:
    python benchmarks/methods_cost.py --quick --out /tmp/methods_cost.json     # tiny presets, under a minute
    python benchmarks/methods_cost.py --out /tmp/methods_cost.json             # tiny and ViT-B, CPU, minutes
    python benchmarks/methods_cost.py --device cuda --out methods_cost_gpu.json  # the GPU rows
    python benchmarks/methods_cost.py --methods winclip --vit-b-repeats 3       # one method, steadier ViT-B ratio
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medad.models import create_model, model_kind
from medad.models.base import ModelKind

METHODS = (
    "ad_dinov3",
    "anomalyclip",
    "adaclip",
    "aa_clip",
    "aa_clip_dinov3",
    "crane",
    "crane_plus",
    "winclip",
    "dinov3_mutual",
)
CLIP_B = {"clip_model": "ViT-B-16", "image_size": 224, "random_init": True}
DINO_B = {"backbone": "vit_base_patch16_dinov3", "image_size": 224, "random_init": True}
LEVELS_B = (3, 6, 9, 12)
VIT_B: dict[str, dict[str, Any]] = {
    "ad_dinov3": {**DINO_B, "layers": LEVELS_B, "text_model": "ViT-B-16", "text_weights": None},
    "anomalyclip": {**CLIP_B, "layers": (12,), "dpam_layers": 10},
    "adaclip": {**CLIP_B, "layers": LEVELS_B},
    "aa_clip": {**CLIP_B, "levels": LEVELS_B, "surgery_layers": 10},
    "aa_clip_dinov3": {**CLIP_B, **DINO_B, "levels": LEVELS_B, "surgery_layers": 10},
    "crane": {**CLIP_B, "layers": LEVELS_B, "dpam_layers": 10},
    "crane_plus": {**CLIP_B, "layers": (12,), "dpam_layers": 10},
    "winclip": {"clip_model": "ViT-B-16", "clip_weights": None, "image_size": 224, "random_init": True},
    "dinov3_mutual": {**DINO_B, "layers": LEVELS_B},
}
"""Random ViT-B-sized options per method (a method missing here is skipped with a printed reason)."""
CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: list[Callable[[], Any]], repeats: int, device: torch.device = CPU) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``fns`` in seconds, after one untimed warm-up call each.

    The calls alternate between the functions, so a burst of load from other processes hits them alike; the
    fastest call counts, since such load only ever adds time."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def score_fn(model: Any, images: torch.Tensor, batch: int) -> Callable[[], None]:
    """Score ``images`` in chunks of ``batch`` (a transductive model scores the concatenated set once)."""
    chunks = images.split(batch)
    words = ["object"] * batch

    @torch.inference_mode()
    def run() -> None:
        if model.kind is ModelKind.TRANSDUCTIVE:
            parts = [model.forward_features(c) for c in chunks]
            model.score_set({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
            return
        for chunk in chunks:
            model(chunk, words[: len(chunk)])

    return run


def step_fn(model: Any, images: torch.Tensor) -> Callable[[], None]:
    """One training step on ``images`` (forward, loss, backward, AdamW step), as the engine runs it."""
    model.set_epoch(0)
    optimizer = torch.optim.AdamW(model.param_groups(1e-3))
    n, _, h, w = images.shape
    masks = (torch.rand(n, 1, h, w, device=images.device) > 0.9).float()
    labels = (torch.arange(n, device=images.device) % 2).long()
    words = ["object"] * n

    def run() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = model.compute_loss(model.forward_head(model.forward_features(images), words), masks, labels)
        losses["total"].backward()
        optimizer.step()

    return run


def measure(
    method: str, size: str, options: dict[str, Any], n_images: int, repeats: int, device: torch.device = CPU
) -> dict[str, Any]:
    """One row: training step time (trainable methods) and batched / image-by-image scoring rates on ``device``."""
    name = f"{method}_tiny" if size == "tiny" else method
    torch.manual_seed(0)
    model = create_model(name, **options).to(device)
    side = model.config.image_size
    images = torch.rand(n_images, 3, side, side, device=device)
    row: dict[str, Any] = {
        "method": method,
        "size": size,
        "model": name,
        "image_size": side,
        "images": n_images,
        "device": str(device),
        "repeats": repeats,
    }
    if model_kind(name) is ModelKind.TRAINABLE:
        row["train_step_s_batch8"] = round(timed([step_fn(model, images[:8])], repeats, device)[0], 4)
    model.eval()
    batched, single = timed([score_fn(model, images, 8), score_fn(model, images, 1)], repeats, device)
    row.update(
        images_per_s_batch8=round(n_images / batched, 2),
        images_per_s_batch1=round(n_images / single, 2),
        batch8_over_batch1=round(single / batched, 2),
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny presets only (under a minute on 2 cores)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-images", type=int, default=16, help="images scored per pass (tiny; ViT-B: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after a warm-up (tiny rows)")
    parser.add_argument(
        "--vit-b-repeats",
        type=int,
        default=1,
        help="timed passes of each ViT-B row (one pass can land in a burst of load: several give a steadier ratio)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as a JSON list here")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N for the GPU rows")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = ["tiny"] if args.quick else ["tiny", "vit_b"]
    rows = []
    for size in sizes:
        for method in args.methods:
            if size == "vit_b" and method not in VIT_B:
                print(f"skip {method} vit_b: no ViT-B-sized option", flush=True)
                continue
            if size == "tiny":
                row = measure(method, size, {}, args.n_images, args.repeats, device)
            else:
                row = measure(method, size, VIT_B[method], 8, args.vit_b_repeats, device)
            row["threads"] = torch.get_num_threads()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{'method':16} {'size':6} {'px':>4} {'train s/step8':>13} {'img/s b8':>9} {'img/s b1':>9} {'b8/b1':>6}")
    for r in rows:
        step = r.get("train_step_s_batch8", "-")
        print(
            f"{r['method']:16} {r['size']:6} {r['image_size']:>4} {step!s:>13} {r['images_per_s_batch8']:>9} "
            f"{r['images_per_s_batch1']:>9} {r['batch8_over_batch1']:>6}"
        )


if __name__ == "__main__":
    main()
