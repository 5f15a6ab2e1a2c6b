"""Scoring throughput: medad's batched scorer against a reference-style loop, in the same run.

For each backbone and batch size, medad's scorer (``medad.engine.score``: batched DataLoader with workers and
pinned memory, bf16 autocast on CUDA, text encoded once per class word, maps upsampled on the device, results
streamed to the chunked predictions store) scores a folder of synthetic JPEGs end to end, from files on disk
to predictions on disk. The reference-style loop does what the research code does: one image at a time, fp32,
the 420-sentence prompt ensemble re-encoded for every image, maps moved to the CPU one by one. The script
prints images/s, peak GPU memory, an analytic estimate of achieved backbone FLOP/s, and the speed-up ratio.

Weights are random (nothing can be downloaded here): throughput does not depend on weight values.

Examples:
    python benchmarks/scoring_throughput.py --device cuda --backbones small,base,large --batch-sizes 16,64,128
    python benchmarks/scoring_throughput.py --device cpu   # small backbone at 224 px, runs anywhere
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
from PIL import Image

from medad.data import manifest_from_paths, read_image
from medad.engine.inferers import upsample_to
from medad.engine.scorer import score
from medad.models import create_model

BACKBONES: dict[str, tuple[str, tuple[int, ...]]] = {
    "small": ("vit_small_patch16_dinov3", (3, 6, 9, 12)),
    "base": ("vit_base_patch16_dinov3", (3, 6, 9, 12)),
    "large": ("vit_large_patch16_dinov3", (6, 12, 18, 24)),
}


def write_images(folder: Path, n: int, height: int, width: int, seed: int = 0) -> None:
    """Write ``n`` random-texture JPEGs of ``height`` x ``width``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
    for i in range(n):
        tile = np.roll(base, i, axis=1).repeat(8, 0).repeat(8, 1)
        Image.fromarray(tile).save(folder / f"img_{i:05d}.jpg", quality=90)


def backbone_flops(model: Any) -> float:
    """Analytic multiply-add FLOPs (x2) of one backbone forward up to the deepest tapped block."""
    vit = model.backbone.model
    dim = vit.embed_dim
    depth = max(model.config.layers)
    tokens = (model.image_size // 16) ** 2 + vit.num_prefix_tokens
    mlp_ratio = vit.blocks[0].mlp.fc1.out_features / dim
    per_block = 2 * tokens * (4 * dim * dim + 2 * mlp_ratio * dim * dim) + 4 * tokens * tokens * dim
    return float(depth * per_block)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_medad(
    model: Any,
    manifest: Any,
    device: torch.device,
    batch_size: int,
    workers: int,
    out: Path,
    compile: bool,
    tile: bool = False,
) -> float:
    """Images/s of ``medad.engine.score`` from files to the predictions store (after a warm-up pass)."""
    options = {
        "batch_size": batch_size,
        "device": device,
        "num_workers": workers,
        "progress": False,
        "compile": compile,
        "tile": tile,
    }
    score(model, manifest.iloc[: batch_size * 2].reset_index(drop=True), out / f"warm_{batch_size}", **options)
    sync(device)
    start = time.perf_counter()
    score(model, manifest, out / f"run_{batch_size}", **options)
    sync(device)
    return len(manifest) / (time.perf_counter() - start)


def host_waits(model: Any, manifest: Any, device: torch.device, batch_size: int, out: Path) -> list[str]:
    """Where the scoring loop makes the host wait for the GPU: CUDA's sync debug warnings of one scored pass.

    A wait inside the loop stops the host from queueing the next batch while the GPU runs the current one.
    """
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score(model, manifest, out, batch_size=batch_size, device=device, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    waits = [w for w in caught if "synchroniz" in str(w.message)]
    return sorted({f"{w.filename}:{w.lineno}: {str(w.message)[:100]}" for w in waits})


def time_model_only(model: Any, device: torch.device, batch_size: int, repeats: int = 5) -> float:
    """Images/s of the model alone on a device-resident batch (bf16 autocast on CUDA): the compute ceiling."""
    from medad.engine.runtime import autocast

    x = torch.randn(batch_size, 3, model.image_size, model.image_size, device=device)
    words = ["object"] * batch_size
    with torch.inference_mode(), autocast(device):
        model(x, words)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, words)
        sync(device)
    return repeats * batch_size / (time.perf_counter() - start)


def time_loader(model: Any, manifest: Any, batch_size: int, workers: int) -> float:
    """Images/s of the data path alone: read, resize and normalise through the scorer's DataLoader settings."""
    from torch.utils.data import DataLoader

    from medad.data import make_dataset

    dataset = make_dataset(manifest, model.image_size, model.mean, model.std, masks=False, uint8=True)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(manifest) / (time.perf_counter() - start)


def time_writer(n_maps: int, height: int, width: int, out: Path) -> float:
    """Maps/s the predictions store writes (float32 maps at native size, 64 per chunk)."""
    from medad.engine.predictions import PredictionWriter

    maps = [np.random.default_rng(i).random((height, width), dtype=np.float32) for i in range(8)]
    start = time.perf_counter()
    with PredictionWriter(out, chunk_size=64) as writer:
        for i in range(n_maps):
            writer.add([i], [0.0], [maps[i % 8]])
    return n_maps / (time.perf_counter() - start)


def bf16_agreement(model: Any, device: torch.device, n_images: int = 8) -> dict[str, float]:
    """How far bf16 autocast moves the outputs from fp32 (TF32 off) on the same random images."""
    from medad.engine.runtime import autocast

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, model.image_size, model.image_size, generator=generator).to(device)
    words = ["object"] * n_images
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.inference_mode():
        full = model(x, words)
        with autocast(device):
            half = model(x, words)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    pixel = (full.pixel_scores - half.pixel_scores).abs()
    return {
        "bf16_max_abs_pixel_diff": round(float(pixel.max()), 5),
        "bf16_mean_abs_pixel_diff": round(float(pixel.mean()), 6),
        "bf16_max_abs_image_score_diff": round(float((full.image_scores - half.image_scores).abs().max()), 5),
    }


def time_reference(model: Any, manifest: Any, device: torch.device, n_images: int) -> float:
    """Images/s of a research-code-style loop: one image at a time, fp32, text re-encoded per image."""
    mean = torch.tensor(model.mean, device=device).view(3, 1, 1)
    std = torch.tensor(model.std, device=device).view(3, 1, 1)
    words = ["object"]
    rows = [manifest.iloc[i] for i in range(n_images)]

    def one(row: Any) -> None:
        image = torch.from_numpy(read_image(row)).permute(2, 0, 1).to(device)
        height, width = image.shape[1:]
        x = torch.nn.functional.interpolate(image[None], size=(model.image_size,) * 2, mode="bilinear")
        x = (x - mean) / std
        model.text_encoder.clear_cache()
        outputs = model(x, words)
        upsample_to(outputs.pixel_scores[0], (height, width)).cpu().numpy()

    with torch.inference_mode():
        one(rows[0])
        sync(device)
        start = time.perf_counter()
        for row in rows:
            one(row)
        sync(device)
    return n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", default=None, help="comma list of small,base,large")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-sizes", default=None)
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--reference-images", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone's forward")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--native-size", default="480x640", help="HxW of the synthetic JPEGs")
    parser.add_argument("--tile", action="store_true", help="score window by window at the native size")
    parser.add_argument(
        "--host-waits", action="store_true", help="CUDA: list where one scored pass makes the host wait for the GPU"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    backbones = (args.backbones or ("small,base,large" if cuda else "small")).split(",")
    image_size = args.image_size or (512 if cuda else 224)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("16,64,128" if cuda else "8")).split(",")]
    n_images = args.n_images or (1024 if cuda else 32)
    n_reference = args.reference_images or (32 if cuda else 4)
    workers = args.workers if args.workers is not None else (12 if cuda else 0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        height, width = (int(v) for v in args.native_size.lower().split("x"))
        write_images(tmp_path / "images", n_images, height, width)
        manifest = manifest_from_paths([str(tmp_path / "images")]).reset_index(drop=True)
        for key in backbones:
            name, layers = BACKBONES[key]
            torch.manual_seed(0)
            model = (
                create_model(
                    "ad_dinov3",
                    backbone=name,
                    layers=layers,
                    image_size=image_size,
                    random_init=True,
                    text_weights=None,
                    text_disk_cache=False,
                )
                .to(device)
                .eval()
            )
            flops = backbone_flops(model)
            if cuda and args.host_waits:
                waits = host_waits(model, manifest.iloc[: 4 * batch_sizes[0]], device, batch_sizes[0], tmp_path / "w")
                print(json.dumps({"backbone": name, "host_waits": waits}), flush=True)
            agreement = bf16_agreement(model, device) if cuda else {}
            loader_rate = time_loader(model, manifest, max(batch_sizes), workers)
            writer_rate = time_writer(len(manifest), 480, 640, tmp_path / f"writer_{key}")
            reference = time_reference(model, manifest, device, n_reference)
            for batch_size in batch_sizes:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                rate = time_medad(model, manifest, device, batch_size, workers, tmp_path / key, args.compile, args.tile)
                ceiling = time_model_only(model, device, batch_size)
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
                row = {
                    "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                    "backbone": name,
                    "image_size": image_size,
                    "batch_size": batch_size,
                    "n_images": n_images,
                    "medad_images_per_s": round(rate, 2),
                    "reference_images_per_s": round(reference, 2),
                    "model_only_images_per_s": round(ceiling, 2),
                    "ratio": round(rate / reference, 2),
                    "peak_gpu_gib": round(peak, 2),
                    "backbone_tflops_achieved": round(rate * flops / 1e12, 1),
                    "compiled": args.compile,
                    "tiled": args.tile,
                    "native_size": args.native_size,
                    "loader_only_images_per_s": round(loader_rate, 1),
                    "writer_only_maps_per_s": round(writer_rate, 1),
                    **agreement,
                }
                results.append(row)
                print(json.dumps(row), flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()
    columns = [
        ("backbone", "backbone", 28),
        ("px", "image_size", 4),
        ("bs", "batch_size", 4),
        ("medad img/s", "medad_images_per_s", 11),
        ("ref img/s", "reference_images_per_s", 9),
        ("model-only", "model_only_images_per_s", 10),
        ("loader", "loader_only_images_per_s", 7),
        ("writer", "writer_only_maps_per_s", 7),
        ("ratio", "ratio", 6),
        ("GiB", "peak_gpu_gib", 5),
        ("TFLOP/s", "backbone_tflops_achieved", 7),
    ]
    print(" ".join(f"{title:>{width}}" for title, _, width in columns))
    for r in results:
        print(" ".join(f"{r[key]!s:>{width}}" for _, key, width in columns))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
