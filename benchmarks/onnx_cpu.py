"""CPU throughput of an exported scoring model: onnxruntime against PyTorch eager, on the same images.

The model is exported with ``medad.deploy.export_model`` (class word baked in), then both engines score the
same normalised batches on the CPU with the same number of threads: PyTorch eager (``torch.no_grad``, fp32,
the full model including the per-batch text-matrix lookup from its cache) and onnxruntime's CPU provider on
the exported graph. The script prints images/s for each, the ratio onnxruntime / PyTorch, and the largest
output difference between them. Weights are random (nothing is downloaded): throughput does not depend on
weight values, and the scores mean nothing.

Examples:
    python benchmarks/onnx_cpu.py                               # DINOv3 ViT-S/16 at 224 px
    python benchmarks/onnx_cpu.py --backbone base --batch-size 4 --images 32 --threads 8
    python benchmarks/onnx_cpu.py --backbone tiny --images 4    # the tiny test model (seconds)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medad.deploy import export_model
from medad.models import create_model

BACKBONES: dict[str, dict[str, Any]] = {
    "small": {"backbone": "vit_small_patch16_dinov3", "layers": (3, 6, 9, 12)},
    "base": {"backbone": "vit_base_patch16_dinov3", "layers": (3, 6, 9, 12)},
    "large": {"backbone": "vit_large_patch16_dinov3", "layers": (6, 12, 18, 24)},
}
SMALL_TEXT = {"text_model": "ViT-B-32", "text_overrides": {"embed_dim": 64, "text_cfg": {"width": 64, "heads": 2}}}


def build(backbone: str, image_size: int) -> Any:
    """A random-weights model (the text tower is small: it is baked into the export and not timed)."""
    if backbone == "tiny":
        return create_model("ad_dinov3_tiny").eval()
    cfg = {**BACKBONES[backbone], **SMALL_TEXT, "image_size": image_size, "random_init": True}
    return create_model("ad_dinov3", text_disk_cache=False, **cfg).eval()


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` normalised random-texture images (3, size, size), float32: the same arrays for both engines."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((3, size // 8, size // 8)).astype(np.float32)
    return np.stack([np.roll(base, i, axis=2).repeat(8, 1).repeat(8, 2) for i in range(n)])


def time_engines(
    runs: dict[str, Any], batches: list[np.ndarray], repeats: int
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Best-of-``repeats`` wall time of one pass over ``batches`` per engine, and each engine's outputs.

    One warm-up pass each, then the engines take turns pass by pass, so a change in machine load during the
    run affects both alike.
    """
    outputs = {name: [run(b) for b in batches] for name, run in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = [run(b) for b in batches]
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="small", choices=["tiny", *BACKBONES])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--class-word", default="brain")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    model = build(args.backbone, args.image_size)
    size = int(model.image_size)
    data = images(args.images, size)
    batches = [data[i : i + args.batch_size] for i in range(0, len(data), args.batch_size)]
    word = args.class_word
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_model(path, word, fmt="onnx", model=model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_torch(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(batch), [word] * len(batch)).pixel_scores.numpy()

        def run_ort(batch: np.ndarray) -> np.ndarray:
            return session.run(["pixel_scores"], {"images": batch})[0]

        seconds, outputs = time_engines({"torch": run_torch, "ort": run_ort}, batches, args.repeats)
    torch_s, ort_s = seconds["torch"], seconds["ort"]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs["torch"], outputs["ort"], strict=True))
    result = {
        "backbone": args.backbone if args.backbone == "tiny" else BACKBONES[args.backbone]["backbone"],
        "image_size": size,
        "batch_size": args.batch_size,
        "images": args.images,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "pytorch_eager_images_per_s": args.images / torch_s,
        "onnxruntime_images_per_s": args.images / ort_s,
        "ratio_onnxruntime_over_pytorch": torch_s / ort_s,
        "max_abs_diff": diff,
        "random_weights": True,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
