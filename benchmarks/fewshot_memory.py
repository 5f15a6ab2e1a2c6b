"""Memory of the few-shot bank (:class:`medad.models.patch_memory.PatchMemory`) and of its nearest-neighbour search.

Part 1, the bank: the bytes per reference image and tapped layer, and for ``k`` references in all, of the
full-size configurations (features built on the ``meta`` device: shapes only, no weights, no memory), and a check
that ``k = 16`` at 512 px on the ViT-L-sized AD-DINOv3 configuration fits :data:`BANK_BUDGET_MIB`.

Part 2, the search: the peak resident memory a fresh process adds while finding, for ``Q`` target patches, the
nearest of ``M`` bank patches (width ``C``), once with the streaming search (:func:`nearest_cosine_distance`,
``chunk x chunk`` blocks) and once with the full ``Q x M`` distance matrix, and their ratio (Linux: the process's
high-water mark ``VmHWM``, restarted through ``/proc/self/clear_refs`` once the inputs exist and one small search
of each kind has started the thread pool). Resident memory is the machine's real cost but not a deterministic one:
the ratio is this script's result, not a test's; ``tests/models/test_patch_memory.py`` checks, op by op, that the
streaming search never holds more than ``chunk x chunk`` similarities.

Run: ``python benchmarks/fewshot_memory.py [--shots 16] [--queries 8192] [--bank 16384] [--width 1024]
[--chunk 4096] [--out rows.json]``; ``--quick`` uses small sizes (the smoke test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BANK_BUDGET_MIB = 1024
"""k = 16 references at 512 px on ViT-L (AD-DINOv3's 4 layers, radii 1/3/5, float32) must fit in this."""

MIB = 1 << 20


def dino_geometry(backbone: str, image_size: int) -> tuple[int, int]:
    """Patch grid side and token width of a timm DINO at ``image_size`` (built on the meta device)."""
    import timm
    import torch

    with torch.device("meta"):
        vit: Any = timm.create_model(backbone.split(".")[0], pretrained=False, num_classes=0, img_size=image_size)
    return image_size // int(vit.patch_embed.patch_size[0]), int(vit.embed_dim)


def clip_geometry(model_name: str, image_size: int) -> tuple[int, int]:
    """Patch grid side and residual width of an open_clip vision tower at ``image_size`` (from its config)."""
    from medad.models.clip_vision import vision_model_config

    vision = vision_model_config(model_name)["vision_cfg"]
    return image_size // int(vision["patch_size"]), int(vision["width"])


CONFIGURATIONS = {
    "ad_dinov3": ("dino", (1, 3, 5)),
    "anomalyclip_paper": ("clip", (1, 3, 5)),
    "anomalydino": ("dino", (1,)),
    "anomalydino_dinov3": ("dino", (1,)),
}
"""Registered model -> (backbone family, radii): the engine's default radii 1/3/5; anomalydino's own radius 1."""


def configurations(names: list[str]) -> list[dict[str, Any]]:
    """The full-size few-shot banks of ``names``: registered model, grid, width, tapped layers and radii."""
    from medad.models import check_model_config

    rows = []
    for name in names:
        geometry, radii = CONFIGURATIONS[name]
        cfg: Any = check_model_config(name)
        if geometry == "dino":
            grid, width = dino_geometry(cfg.backbone, cfg.image_size)
        else:
            grid, width = clip_geometry(cfg.clip_model, cfg.image_size)
        rows.append({"model": name, "image_size": cfg.image_size, "grid": grid, "width": width,
                     "layers": list(cfg.layers), "radii": list(radii)})  # fmt: skip
    return rows


def bank_row(config: dict[str, Any], shots: int) -> dict[str, Any]:
    """The bank of ``shots`` references of one configuration, filled with meta tensors (float32)."""
    import torch

    from medad.models.patch_memory import PatchMemory

    memory = PatchMemory(config["radii"])
    grid, width = config["grid"], config["width"]
    for _ in range(shots):
        memory.add({f"layer{v}": torch.empty(1, grid, grid, width, device="meta") for v in config["layers"]})
    per_layer = next(iter(memory.describe()["bytes_per_image"].values()))
    return {
        **config,
        "shots": shots,
        "mib_per_image_and_layer": per_layer / MIB,
        "mib_per_image": per_layer * len(config["layers"]) / MIB,
        "mib_total": memory.nbytes / MIB,
    }


_CHILD = """
import ctypes, importlib.util, sys, torch, torch.nn.functional as F
spec = importlib.util.spec_from_file_location("patch_memory", sys.argv[6])  # torch only: no medad imports
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
mode, q, m, c, chunk = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(2)
gen = torch.Generator().manual_seed(0)
queries, bank = torch.randn(q, c, generator=gen), torch.randn(m, c, generator=gen)

def high_water_kib():
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0])

small = torch.randn(64, c, generator=gen)  # warm-up: thread pool and BLAS buffers exist before the measure
(1.0 - F.normalize(small, dim=-1) @ F.normalize(small, dim=-1).T).amin(dim=1)
module.nearest_cosine_distance(small, small, 16)
del small
ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed import-time memory back, then restart the high-water mark
open("/proc/self/clear_refs", "w").write("5")
before = high_water_kib()
if mode == "stream":
    dist = module.nearest_cosine_distance(queries, bank, chunk)
else:
    dist = (1.0 - F.normalize(queries, dim=-1) @ F.normalize(bank, dim=-1).T).amin(dim=1)
print((high_water_kib() - before) / 1024, float(dist.sum()))
"""


def search_peak(mode: str, queries: int, bank: int, width: int, chunk: int) -> tuple[float, float]:
    """Peak resident memory (MiB) a fresh process adds during one search, and its checksum."""
    from medad.models import patch_memory

    sizes = [str(v) for v in (queries, bank, width, chunk)]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, *sizes, str(patch_memory.__file__)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    added, checksum = out.stdout.split()
    return float(added), float(checksum)


def search_row(queries: int, bank: int, width: int, chunk: int) -> dict[str, Any]:
    """Streaming search against the full distance matrix, same inputs, each in its own process."""
    stream, stream_sum = search_peak("stream", queries, bank, width, chunk)
    full, full_sum = search_peak("full", queries, bank, width, chunk)
    return {
        "queries": queries,
        "bank": bank,
        "width": width,
        "chunk": chunk,
        "stream_peak_mib": stream,
        "full_matrix_peak_mib": full,
        "full_matrix_mib": queries * bank * 4 / MIB,
        "full_over_stream": full / max(stream, 1e-9),
        "same_result": abs(stream_sum - full_sum) <= 1e-3 * max(1.0, abs(full_sum)),
    }


def main() -> None:
    """Print (and optionally write) the bank rows and the search row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--bank", type=int, default=16384)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=4096)
    known = ", ".join(CONFIGURATIONS)
    parser.add_argument("--models", default=",".join(CONFIGURATIONS), help=f"comma-separated, of {known}")
    parser.add_argument("--quick", action="store_true", help="small search sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.queries, args.bank, args.width, args.chunk = 2048, 4096, 256, 512
    banks = [bank_row(c, args.shots) for c in configurations(args.models.split(","))]
    for row in banks:
        print(json.dumps(row))
    main_bank = next((r for r in banks if r["model"] == "ad_dinov3"), None)
    fits = main_bank["mib_total"] <= BANK_BUDGET_MIB if main_bank and args.shots == 16 else None
    search = search_row(args.queries, args.bank, args.width, args.chunk)
    print(json.dumps(search))
    result = {"banks": banks, "budget_mib": BANK_BUDGET_MIB, "k16_fits_budget": fits, "search": search}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
