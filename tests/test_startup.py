"""A user's first contact is --help or an error message: neither may wait for torch / MONAI to load (issue 23 §4).

Each command runs in a fresh interpreter (the test process has torch loaded already) and reports which heavy
packages it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import HANG_S

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "timm", "open_clip", "torchvision")
PROBE = """
import json, sys
from medad.cli import main
heavy = json.loads(sys.argv[2])
sys.argv = ["medad", *json.loads(sys.argv[1])]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
print("\\nPROBE " + json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def heavy_imports(args: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """Run ``medad ARGS`` in a fresh interpreter; return (exit code, heavy packages it imported, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=HANG_S,
    )  # fmt: skip
    report = json.loads(done.stdout.rsplit("PROBE ", 1)[1])
    return report["code"], report["loaded"], done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["score", "--no-such-option"],
        ["train", "--data", "missing-folder", "--out", "out"],
        ["datasets", "check", "missing-folder"],
        ["datasets", "check", "."],  # no known layout: said before any image is read
        ["validate", "missing.yaml"],
        ["validate", "demo", "--set", "foo.bar.baz=1"],
        ["protocols"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_and_argument_errors_load_no_torch(args: list[str], tmp_path: Path) -> None:
    code, loaded, stderr = heavy_imports(args, tmp_path)
    assert loaded == [], f"medad {' '.join(args)} imported {loaded}"
    assert code in (0, 2), stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # refused before any output folder was made


@pytest.mark.xfail(strict=True, reason="validate checks models with timm (meta-device backbone), which imports torch")
def test_validate_loads_no_torch(tmp_path: Path) -> None:
    code, loaded, stderr = heavy_imports(["validate", "demo", "--structure-only"], tmp_path)
    assert code == 0, stderr
    assert loaded == []


def test_importing_the_models_loads_only_torch() -> None:
    """open_clip and timm (and torchvision through them) load when a model is built or checked, not on import."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = f"import json, sys, medad.models; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=HANG_S)
    assert json.loads(done.stdout.splitlines()[-1]) == ["torch"], done.stderr


def test_datasets_check_of_plain_images_loads_no_torch(tmp_path: Path) -> None:
    """`medad datasets check` decodes every image and mask of a layout with Pillow, not through MONAI (torch)."""
    from medad.data.registry import write_layout

    root = write_layout(tmp_path / "isic", "isic2016", n_abnormal=3, size=32)
    code, loaded, stderr = heavy_imports(["datasets", "check", str(root)], tmp_path)
    assert code == 0, stderr
    assert loaded == []


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16", "I", "F", "CMYK"])
@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_plain_images_decode_as_monai_pil_reader_does(mode: str, suffix: str, tmp_path: Path) -> None:
    """The Pillow reader gives the arrays MONAI's PILReader(reverse_indexing=False) gave, for images and masks."""
    import numpy as np
    from monai.data import PILReader
    from PIL import Image

    from medad.data.readers import _HIGH_BIT_MODES, _read_pil

    pixels = np.random.default_rng(0).integers(0, 255, (12, 9, 3), dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    try:
        Image.fromarray(pixels).convert(mode).save(path)
    except (OSError, KeyError, ValueError):
        pytest.skip(f"Pillow does not write {mode} as {suffix}")
    def rgb_or_wide(im: Image.Image) -> Image.Image:  # the converter medad gave MONAI's PILReader for images
        return im if im.mode in _HIGH_BIT_MODES else im.convert("RGB")

    for image, monai_reader in (
        (True, PILReader(converter=rgb_or_wide, reverse_indexing=False)),
        (False, PILReader(reverse_indexing=False)),
    ):
        expected = np.asarray(monai_reader.get_data(monai_reader.read(str(path)))[0])
        ours = _read_pil(path, "image", image)
        assert ours.dtype == expected.dtype and np.array_equal(ours, expected)
