"""What a run folder records about where its numbers came from.

``provenance.json`` holds the config hash, package versions, git state, device / dtype / TF32 flags, the data
manifests (with each file's sha256), the weights (ids, sha256, licence), the seeds, the stage keys and the
timestamps. Timestamps live only here and in the run log, never in ``metrics.json``, so equal runs give
byte-identical metrics.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from medad.utils.privacy import placeholder, redact_paths

PACKAGES = (
    "medad",
    "torch",
    "torchvision",
    "timm",
    "open_clip_torch",
    "monai",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "safetensors",
    "nibabel",
    "pydicom",
    "highdicom",
    "pydantic",
    "pyyaml",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change the numbers (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the git checkout medad is imported from (``None`` when not a checkout)."""
    here = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], here)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def device_state(device: torch.device) -> dict[str, Any]:
    """Device, compute dtype and the numeric flags that change results (TF32, determinism, threads)."""
    out: dict[str, Any] = {
        "device": str(device),
        "dtype": "bfloat16-autocast" if device.type == "cuda" else "float32",
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def command_line() -> list[str]:
    """The command that started this process (arguments only; no environment)."""
    return [os.path.basename(sys.argv[0]), *sys.argv[1:]]


def shareable(record: dict[str, Any]) -> dict[str, Any]:
    """``provenance.json`` without source paths: data roots, the protocol's folder, weight files and paths on the
    command line become placeholders (the whole record is kept in ``private/provenance.json``)."""
    out = copy.deepcopy(record)
    protocol = out.get("protocol", {})
    if protocol.get("file"):
        protocol["file"] = Path(protocol["file"]).name
    protocol["overrides"] = redact_paths(protocol.get("overrides", []))
    out["command"] = redact_paths(out.get("command", []))
    for name, data in out.get("data", {}).items():
        data["root"] = placeholder("root", name)
    for label, weights in out.get("weights", {}).items():
        for role, source in (weights.get("protocol") or {}).items():
            if isinstance(source, dict) and source.get("file") is not None:
                source["file"] = placeholder(f"{role} weights file", label)
    out["private"] = "private/provenance.json holds the real paths (never share the private/ folder)"
    return out
