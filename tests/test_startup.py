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
from PIL import Image

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


VALIDATE_PROBE = """
import json, sys
from medad.cli import main
heavy, runs = json.loads(sys.argv[1]), []
for args in json.loads(sys.argv[2]):
    sys.argv = ["medad", "validate", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    runs.append(code)
print("\\nPROBE " + json.dumps({"codes": runs, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def every_model_protocol(folder: Path) -> Path:
    """A protocol naming every registered model (the CLIP family included), with a training section, metrics, an
    export, a non-ASCII class word and a checkpoint (its card's compat is read): what ``medad validate`` checks of
    each model without building it."""
    from medad.models import list_models
    from medad.models.checkpoint_card import CARD_FILE, CHECKPOINT_FORMAT

    (folder / "ckpt").mkdir()
    (folder / "ckpt" / CARD_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, "compat": "clean"}))
    (folder / "normals").mkdir()  # references for the models that score only against them (anomalydino)
    for i in range(2):
        Image.new("RGB", (64, 64), (90 + i, 80, 70)).save(folder / "normals" / f"normal_{i}.png")
    models = "".join(f"  - {{name: m_{name}, model: {name}}}\n" for name in list_models())
    models += "  - {name: trained, model: ad_dinov3_tiny, checkpoint: ckpt}\n"
    path = folder / "every-model.yaml"
    path.write_text(
        "name: every-model\noutput: runs\nsynthetic:\n"
        "  industrial: {layout: mvtec, classes: [bottle], n_normal: 2, n_abnormal: 2, size: 64, seed: 0}\n"
        "  lesions: {layout: isic2016, n_abnormal: 2, size: 64, seed: 1}\n"
        f"models:\n{models}"
        "  - {name: worded, model: ad_dinov3_tiny, image_score: max, class_words: {lesions: {skin_lesion: lésion}}}\n"
        "training:\n  datasets: [{name: industrial, kind: mvtec, synthetic: industrial}]\n  epochs: 1\n  lr: 1.0e-3\n"
        "targets: [{name: lesions, kind: isic, synthetic: lesions,\n"
        "           references: {from: {folder: normals}, shots: [1]}}]\n"
        "metrics: [image_auroc, pixel_auroc]\n"
        "exports: [{formats: [png], threshold: 'fixed:0.5', models: [m_ad_dinov3_tiny]}]\n",
        encoding="utf-8",
    )
    return path


def test_validate_loads_no_torch(tmp_path: Path) -> None:
    """``medad validate`` (structure and resources) of every shipped protocol and of one naming every registered
    model reads the model catalogue, geometry tables and class-word lengths without torch, timm, open_clip or
    scikit-learn (a missing data root or weights file still ends in exit 2, said without them)."""
    from medad.protocols.bundled import bundled_protocols_dir

    shipped = sorted(p.stem for p in bundled_protocols_dir().glob("*.yaml"))
    runs = [[name] for name in shipped] + [[str(every_model_protocol(tmp_path))], ["demo", "--structure-only"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("MEDAD_WEIGHTS", None)
    done = subprocess.run(
        [sys.executable, "-c", VALIDATE_PROBE, json.dumps([*HEAVY, "sklearn"]), json.dumps(runs)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_S,
    )  # fmt: skip
    report = json.loads(done.stdout.rsplit("PROBE ", 1)[1])
    assert report["loaded"] == [], done.stderr
    codes = dict(zip([" ".join(r) for r in runs], report["codes"], strict=True))
    assert codes["demo"] == 0 and codes["demo --structure-only"] == 0, done.stderr
    assert codes[runs[-2][0]] == 0, done.stderr  # every registered model: valid
    assert set(codes.values()) <= {0, 2} and "Traceback" not in done.stderr, done.stderr


def test_the_model_catalogue_loads_no_torch_and_a_method_module_only_torch() -> None:
    """The registry, every config and every geometry check need no torch; a method module loads torch only:
    open_clip and timm (and torchvision through them) load when a model is built, not on import."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = (
        "import json, sys\n"
        "from medad.models import check_model_config, list_models, model_kind\n"
        "from medad.models.registry import describe_models\n"
        "for name in list_models(): check_model_config(name); model_kind(name)\n"
        "describe_models()\n"
        f"first = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        "import medad.models.aa_clip, medad.models.ad_dinov3, medad.models.adaclip, medad.models.crane\n"
        "import medad.models.mutual, medad.models.winclip\n"
        f"print(json.dumps([first, [m for m in {list(HEAVY)!r} if m in sys.modules]]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=HANG_S)
    assert json.loads(done.stdout.splitlines()[-1]) == [[], ["torch"]], done.stderr


def test_lazy_packages_import_no_torch_and_give_every_public_name() -> None:
    """``medad.models``, ``medad.export`` and ``medad.evaluation`` import their names on first use: importing the
    packages loads no torch, and every name of their ``__all__`` resolves (and is listed by ``dir``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = (
        "import importlib, json, sys\n"
        "packages = [importlib.import_module(p) for p in ('medad.models', 'medad.export', 'medad.evaluation')]\n"
        f"first = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        "missing = [f'{p.__name__}.{n}' for p in packages for n in p.__all__ if n not in dir(p) or not getattr(p, n)]\n"
        "print(json.dumps([first, missing]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=HANG_S)
    assert json.loads(done.stdout.splitlines()[-1]) == [[], []], done.stderr


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
