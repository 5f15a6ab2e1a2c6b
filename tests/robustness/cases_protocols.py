"""Protocol and command-line misuse cases of the robustness sweep (issue 14 §3 CLI parts, §4, §5 and more).

Each case must end as the project's rule says: exit 2 and one ``error:`` line that names the key or file (and
the fix), before any work is done. Cases run ``medad validate`` / ``run`` / ``score`` / ``export`` on small
protocols over synthetic data (no data roots needed), so they take seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.robustness.harness import Case, Expect, Setup

# Resources all exist (synthetic data, a training-free model): only the edit made by a case is wrong.
BASE = """\
name: misuse
output: runs
synthetic:
  medical: {layout: mvtec_style, classes: [skin], n_normal: 2, n_abnormal: 2, size: 64, seed: 1}
  industrial: {layout: mvtec, classes: [bottle], n_normal: 2, n_abnormal: 2, size: 64, seed: 0}
models:
  - name: clean
    model: ad_dinov3_tiny
    options: {image_size: 64}
training:
  datasets:
    - {name: industrial, kind: mvtec, synthetic: industrial}
  epochs: 1
  lr: 1.0e-3
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 2, chunk_size: 2}
statistics: {resamples: 0}
exports:
  - formats: [png]
    threshold: fixed:0.5
"""
UNSET = "MEDAD_SWEEP_NEVER_SET"


def _protocol(folder: Path, text: str, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def _no_work(folder: Path, what: str = "runs") -> Callable[[str], str | None]:
    """A check that the refusal came before any work: nothing was written under ``folder / what``."""

    def check(stderr: str) -> str | None:
        written = [p for p in (folder / what).rglob("*") if p.is_file()] if (folder / what).exists() else []
        return f"work was done before the refusal: {written[:3]}" if written else None

    return check


def validate(text: str, names: str, *, structure_only: bool = True, env_unset: str | None = None) -> Callable:
    def make(folder: Path) -> Setup:
        if env_unset is not None:
            os.environ.pop(env_unset, None)
        argv = ["validate", str(_protocol(folder, text))]
        return Setup(argv + (["--structure-only"] if structure_only else []), names=names)

    return make


def run(text: str, names: str, *, extra: tuple[str, ...] = ()) -> Callable:
    """``medad run`` refusing at its start: nothing is written under the output folder."""

    def make(folder: Path) -> Setup:
        path = _protocol(folder, text)
        return Setup(
            ["run", str(path), "--out", str(folder / "runs"), "--no-progress", *extra],
            names=names,
            check=_no_work(folder),
        )

    return make


def _images(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    images = folder / "images"
    images.mkdir()
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(images / f"img{k}.png")
    return images


def score(options: list[str], names: str, out: str = "out") -> Callable:
    """``medad score`` refused before scoring: no predictions are written."""

    def make(folder: Path) -> Setup:
        images = _images(folder)
        argv = ["score", str(images), "--out", str(folder / out), "--model", "winclip_tiny", *options]
        return Setup(argv, names=names, check=_no_work(folder, "out/predictions"))

    return make


def _score_out_is_file(folder: Path) -> Setup:
    (folder / "out").write_text("not a folder")
    return Setup(
        ["score", str(_images(folder)), "--out", str(folder / "out"), "--model", "winclip_tiny"],
        names=str(folder / "out"),
    )


def _score_out_under_file(folder: Path) -> Setup:
    (folder / "afile").write_text("not a folder")
    return Setup(
        ["score", str(_images(folder)), "--out", str(folder / "afile" / "out"), "--model", "winclip_tiny"],
        names=str(folder / "afile"),
    )


def _export_fixed_minus_one(folder: Path) -> Setup:
    import numpy as np

    from medad.engine.predictions import PredictionWriter
    from medad.engine.scorer import inputs_manifest

    manifest = inputs_manifest([_images(folder)], None, "test")
    with PredictionWriter(folder / "pred", chunk_size=4) as writer:
        maps = [np.full((32, 32), v, np.float32) for v in (0.2, 0.7)]
        writer.add([0, 1], [0.2, 0.7], maps)
    manifest.to_csv(folder / "manifest.csv", index=False)
    argv = ["export", str(folder / "pred"), "--threshold", "fixed:-1", "--manifest", str(folder / "manifest.csv")]
    return Setup([*argv, "--out", str(folder / "export")], names="fixed threshold -1")


HOLD = textwrap.dedent(
    """
    import sys, time
    from medad.utils.locking import FolderLock
    FolderLock(sys.argv[1], "held").acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def _hold(lock_file: Path) -> Callable[[str], str | None]:
    """Start a process holding ``lock_file``; the returned check ends it (SIGKILL) after the case."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"

    def check(stderr: str) -> str | None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return None if f"pid {proc.pid}" in stderr else f"the message does not name the holder pid {proc.pid}"

    return check


def _run_folder_held(folder: Path) -> Setup:
    from medad.protocols import config_hash, load_protocol, resolve_protocol
    from medad.utils.locking import LOCK_NAME

    path = _protocol(folder, BASE)
    run_dir = folder / "runs" / "misuse" / config_hash(resolve_protocol(load_protocol(path)))
    check = _hold(run_dir / LOCK_NAME)
    return Setup(["run", str(path), "--out", str(folder / "runs"), "--no-progress"], names="--wait", check=check)


def _score_out_held(folder: Path) -> Setup:
    from medad.utils.locking import LOCK_NAME

    images = _images(folder)
    check = _hold(folder / "out" / LOCK_NAME)
    argv = ["score", str(images), "--out", str(folder / "out"), "--model", "winclip_tiny"]
    return Setup(argv, names="--wait", check=check)


def _protocol_is_directory(folder: Path) -> Setup:
    (folder / "study.yaml").mkdir()
    return Setup(["validate", str(folder / "study.yaml")], names=str(folder / "study.yaml"))


def _protocol_missing(folder: Path) -> Setup:
    return Setup(["validate", str(folder / "nothere.yaml")], names=str(folder / "nothere.yaml"))


def _protocol_not_utf8(folder: Path) -> Setup:
    (folder / "study.yaml").write_bytes(b"name: x\nmodels: \xff\xfe\x00\x81\n")
    return Setup(["validate", str(folder / "study.yaml")], names=str(folder / "study.yaml"))


def _output_under_file(folder: Path) -> Setup:
    (folder / "afile").write_text("x")
    path = _protocol(folder, _edit("output: runs", "output: afile/runs"))
    return Setup(["validate", str(path)], names="output")


def _output_is_file(folder: Path) -> Setup:
    (folder / "runs").write_text("x")
    return Setup(["validate", str(_protocol(folder, BASE))], names="output")


def _run_out_is_file(folder: Path) -> Setup:
    (folder / "runs").write_text("x")
    path = _protocol(folder, BASE)
    return Setup(["run", str(path), "--out", str(folder / "runs"), "--no-progress"], names="--out")


def _class_word_unknown_class(folder: Path) -> Setup:
    text = _edit(
        "    options: {image_size: 64}\n", "    options: {image_size: 64}\n    class_words: {medical: {skn: skin}}\n"
    )
    path = _protocol(folder, text)
    check = _no_work(folder, "runs/_stages/train")
    return Setup(["run", str(path), "--out", str(folder / "runs"), "--no-progress"], names="skn", check=check)


T = "exports[0].threshold"
OPT = "models[0].options"
CASES: list[Case] = [
    # §4: refused by `medad validate` and at the start of `medad run`, not after training and scoring
    Case(
        "s4-validate-image-size-not-multiple-of-patch",
        validate(_edit("image_size: 64", "image_size: 70"), f"{OPT}.image_size"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-run-image-size-not-multiple-of-patch",
        run(_edit("image_size: 64", "image_size: 70"), f"{OPT}.image_size"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-output-var-unset",
        validate(_edit("output: runs", f"output: ${{{UNSET}}}/runs"), UNSET, structure_only=False, env_unset=UNSET),
        Expect.ERROR,
        fast=True,
    ),
    Case("s4-validate-threshold-not-a-number", validate(_edit("fixed:0.5", "fixed:abc"), T), Expect.ERROR, fast=True),
    Case("s4-run-threshold-not-a-number", run(_edit("fixed:0.5", "fixed:abc"), T), Expect.ERROR, fast=True),
    Case("s4-validate-threshold-unknown-rule", validate(_edit("fixed:0.5", "otsu"), T), Expect.ERROR, fast=True),
    Case(
        "s4-validate-threshold-percentile-out-of-range",
        validate(_edit("fixed:0.5", "percentile:150:normals"), T),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-threshold-percentile-without-folder",
        validate(_edit("fixed:0.5", "percentile:99"), T),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-unknown-export-format",
        validate(_edit("formats: [png]", "formats: [pngg]"), "exports[0].formats[0]"),
        Expect.ERROR,
        fast=True,
    ),
    Case("s4-score-export-unknown-format", score(["--export", "pngg"], "pngg"), Expect.ERROR, fast=True),
    Case(
        "s4-score-threshold-garbage",
        score(["--export", "png", "--threshold", "garbage"], "garbage"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-score-threshold-fixed-abc",
        score(["--export", "png", "--threshold", "fixed:abc"], "fixed:abc"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-score-threshold-percentile-folder-missing",
        score(["--export", "png", "--threshold", "percentile:99:nowhere"], "nowhere"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-unknown-model-option",
        validate(_edit("image_size: 64", "imagesize: 64"), f"{OPT}.imagesize"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-layers-beyond-depth",
        validate(_edit("image_size: 64", "image_size: 64, layers: [1, 9]"), f"{OPT}.layers"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-unknown-timm-backbone",
        validate(_edit("image_size: 64", "image_size: 64, backbone: vit_nope_dinov3"), "vit_nope_dinov3"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "s4-validate-empty-class-word",
        validate(
            _edit(
                "    options: {image_size: 64}\n",
                '    options: {image_size: 64}\n    class_words: {medical: {skin: " "}}\n',
            ),
            "class_words.medical.skin",
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case("s4-run-class-word-for-unknown-class", _class_word_unknown_class, Expect.ERROR, fast=True),
    # §2 / §3: impossible thresholds, outputs that cannot be folders
    Case("s2-validate-threshold-fixed-minus-1", validate(_edit("fixed:0.5", "fixed:-1"), T), Expect.ERROR, fast=True),
    Case("s2-validate-threshold-fixed-above-1", validate(_edit("fixed:0.5", "fixed:1.5"), T), Expect.ERROR, fast=True),
    Case("s2-export-threshold-fixed-minus-1", _export_fixed_minus_one, Expect.ERROR, fast=True),
    Case(
        "s2-score-threshold-fixed-minus-1",
        score(["--export", "png", "--threshold", "fixed:-1"], "fixed threshold -1"),
        Expect.ERROR,
        fast=True,
    ),
    Case("s3-score-out-is-a-file", _score_out_is_file, Expect.ERROR, fast=True),
    Case("s3-score-out-under-a-file", _score_out_under_file, Expect.ERROR, fast=True),
    Case("s3-validate-output-under-a-file", _output_under_file, Expect.ERROR, fast=True),
    Case("s3-validate-output-is-a-file", _output_is_file, Expect.ERROR, fast=True),
    Case("s3-run-out-is-a-file", _run_out_is_file, Expect.ERROR, fast=True),
    # §5: a folder held by another live process
    Case("s5-run-folder-held-by-another-run", _run_folder_held, Expect.ERROR, fast=True),
    Case("s5-score-out-held-by-another-score", _score_out_held, Expect.ERROR, fast=True),
    # protocol misuse of every other kind
    Case("p-unknown-top-level-key", validate(_edit("models:", "modles:"), "modles"), Expect.ERROR, fast=True),
    Case("p-unknown-nested-key", validate(_edit("  epochs: 1", "  epoch: 1"), "epoch"), Expect.ERROR, fast=True),
    Case(
        "p-duplicate-model-names",
        validate(
            _edit("training:", "  - {name: clean, model: winclip_tiny}\ntraining:"), "model name 'clean' is used twice"
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-empty-target-list", validate(BASE[: BASE.index("targets:")] + "targets: []\n", "targets"), Expect.ERROR, True
    ),
    Case(
        "p-empty-training-datasets",
        validate(
            _edit("  datasets:\n    - {name: industrial, kind: mvtec, synthetic: industrial}\n", "  datasets: []\n"),
            "training.datasets",
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-empty-model-list",
        validate(
            _edit(
                "models:\n  - name: clean\n    model: ad_dinov3_tiny\n    options: {image_size: 64}\n", "models: []\n"
            ),
            "models",
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-yaml-syntax-error",
        validate(_edit("statistics: {resamples: 0}", "statistics: {resamples: 0"), "study.yaml"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-yaml-tab-indentation", validate(_edit("  epochs: 1", "\tepochs: 1"), "study.yaml"), Expect.ERROR, fast=True
    ),
    Case(
        "p-duplicate-key",
        validate(_edit("  epochs: 1", "  epochs: 1\n  epochs: 2"), "'epochs' appears twice"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-python-tag",
        validate(_edit("  lr: 1.0e-3", "  lr: !!python/object/apply:os.system [true]"), "study.yaml"),
        Expect.ERROR,
        fast=True,
    ),
    Case("p-protocol-is-a-directory", _protocol_is_directory, Expect.ERROR, fast=True),
    Case("p-protocol-missing", _protocol_missing, Expect.ERROR, fast=True),
    Case("p-protocol-not-utf8", _protocol_not_utf8, Expect.ERROR, fast=True),
    Case(
        "p-protocol-is-a-list",
        validate("- models\n- targets\n", "a protocol must be a mapping"),
        Expect.ERROR,
        fast=True,
    ),
    Case("p-protocol-empty-file", validate("", "models"), Expect.ERROR, fast=True),
    Case(
        "p-unknown-model-name",
        validate(_edit("model: ad_dinov3_tiny", "model: ad_dinov4_tiny"), "ad_dinov4_tiny"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-unknown-dataset-kind",
        validate(_edit("kind: mvtec_style", "kind: mvtec_styl"), "mvtec_styl"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-unknown-synthetic-source",
        validate(_edit("synthetic: medical}", "synthetic: medicl}"), "medicl"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-unknown-metric",
        validate(_edit("statistics:", "metrics: [pixel_aurok]\nstatistics:"), "pixel_aurok"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-comparison-with-itself",
        validate(
            _edit("statistics: {resamples: 0}", "statistics: {resamples: 0, comparisons: [[clean, clean]]}"),
            "with itself",
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-export-unknown-model",
        validate(_edit("    threshold: fixed:0.5", "    threshold: fixed:0.5\n    models: [cleen]"), "cleen"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-repeated-seed",
        validate(_edit("  lr: 1.0e-3", "  lr: 1.0e-3\n  seeds: [0, 0]"), "training.seeds"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-bad-device", validate(_edit("output: runs", "output: runs\ndevice: gpu"), "device"), Expect.ERROR, fast=True
    ),
    Case(
        "p-bad-image-score",
        validate(
            _edit("    model: ad_dinov3_tiny\n", "    model: ad_dinov3_tiny\n    image_score: maximum\n"), "image_score"
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-tile-overlap-one",
        validate(
            _edit("scoring: {batch_size: 2, chunk_size: 2}", "scoring: {tile: true, tile_overlap: 1.0}"), "tile_overlap"
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case("p-name-with-slash", validate(_edit("name: misuse", "name: a/b"), "name"), Expect.ERROR, fast=True),
    Case(
        "p-training-free-model-with-checkpoint",
        validate(_edit("training:", "  - {name: wc, model: winclip_tiny, checkpoint: ckpt}\ntraining:"), "checkpoint"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-model-without-training-or-checkpoint",
        validate(BASE[: BASE.index("training:")] + BASE[BASE.index("targets:") :], "models[0]"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-class-words-unknown-dataset",
        validate(
            _edit(
                "    options: {image_size: 64}\n",
                "    options: {image_size: 64}\n    class_words: {medicl: {skin: skin}}\n",
            ),
            "medicl",
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-missing-data-root",
        validate(
            _edit(
                "{name: medical, kind: mvtec_style, synthetic: medical}",
                "{name: medical, kind: mvtec_style, root: nowhere}",
            ),
            "targets[0].root",
            structure_only=False,
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-missing-checkpoint-folder",
        validate(
            _edit("    options: {image_size: 64}\n", "    options: {image_size: 64}\n    checkpoint: nowhere\n"),
            "models[0].checkpoint",
            structure_only=False,
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-root-var-unset",
        validate(
            _edit(
                "{name: medical, kind: mvtec_style, synthetic: medical}",
                f"{{name: medical, kind: mvtec_style, root: '${{{UNSET}}}/isic'}}",
            ),
            UNSET,
            structure_only=False,
            env_unset=UNSET,
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-set-without-equals",
        lambda folder: Setup(["validate", str(_protocol(folder, BASE)), "--set", "training.epochs"], names="--set"),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-set-unknown-list-item",
        lambda folder: Setup(
            ["validate", str(_protocol(folder, BASE)), "--set", "models.nomodel.compat=clean"], names="nomodel"
        ),
        Expect.ERROR,
        fast=True,
    ),
    Case(
        "p-set-wrong-type",
        lambda folder: Setup(
            ["validate", str(_protocol(folder, BASE)), "--set", "training.epochs=many"],
            names="--set training.epochs=many",
        ),
        Expect.ERROR,
        fast=True,
    ),
]
