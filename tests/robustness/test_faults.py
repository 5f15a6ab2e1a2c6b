"""Scoring past unreadable images, reuse after a fix, eval of skipped images, training pre-check, disk faults."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.engine.predictions import PredictionReader
from medad.engine.scorer import score_files
from medad.errors import DataError, DiskError, MedadError, as_medad_error
from tests.robustness.harness import _run_in_process
from tests.timeouts import HANG_S

TINY = {"model_name": "ad_dinov3_tiny", "device": "cpu", "heatmaps": False, "progress": False, "batch_size": 2}


def _folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return folder


def _break(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


def test_score_skips_an_unreadable_image_records_it_and_scores_the_rest(tmp_path, capsys):
    folder = _folder(tmp_path)
    bad = folder / "img_1.png"
    _break(bad)
    table = score_files([folder], tmp_path / "out", **TINY)
    assert len(table) == 2 and len(table.attrs["skipped"]) == 1
    record = json.loads((tmp_path / "out" / "predictions" / "skipped-p0.json").read_text())["skipped"]
    assert [e["index"] for e in record] == [1]
    assert str(bad) not in json.dumps(record) and "img_1" not in json.dumps(record)  # shareable: no path
    assert record[0]["case_id"] and "cannot be decoded" in record[0]["reason"]
    assert str(bad) in capsys.readouterr().err  # the path is named on stderr only
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [e["index"] for e in scores["skipped"]] == [1]


def test_tiled_scoring_skips_an_unreadable_image_too(tmp_path):
    folder = _folder(tmp_path)
    _break(folder / "img_1.png")
    table = score_files([folder], tmp_path / "out", tile=True, **TINY)
    assert len(table) == 2 and [e["index"] for e in table.attrs["skipped"]] == [1]
    record = json.loads((tmp_path / "out" / "predictions" / "skipped-p0.json").read_text())["skipped"]
    assert [e["index"] for e in record] == [1]


def test_medad_score_exits_2_with_n_of_m_and_a_rerun_after_removal_reuses_the_scores(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    _break(folder / "img_1.png")
    argv = ["score", str(folder), "--out", str(tmp_path / "out"), "--model", "ad_dinov3_tiny", "--device", "cpu"]
    first = _run_in_process([*argv, "--no-heatmaps"])
    assert first.code == 2, first.stderr
    assert "error: 2 of 3 scored; 1 skipped: see " in first.stderr and "skipped-p0.json" in first.stderr
    assert "Traceback" not in first.stderr
    before = pd.read_csv(tmp_path / "out" / "scores.csv").set_index("case_id")["image_score"]

    (folder / "img_1.png").unlink()
    import medad.engine.inferers as inferers

    def no_model_call(*args, **kwargs):  # the two scored images must not be scored again
        raise AssertionError("rescored")

    monkeypatch.setattr(inferers, "upsample_batch", no_model_call)
    second = _run_in_process([*argv, "--no-heatmaps"])
    assert second.code == 0, second.stderr
    after = pd.read_csv(tmp_path / "out" / "scores.csv").set_index("case_id")["image_score"]
    pd.testing.assert_series_equal(before, after)
    reader = PredictionReader(tmp_path / "out" / "predictions")
    assert reader.indices.tolist() == [0, 1] and reader.skipped == []


def test_rerun_after_fixing_the_file_scores_only_it(tmp_path):
    folder = _folder(tmp_path)
    original = (folder / "img_2.png").read_bytes()
    _break(folder / "img_2.png")
    score_files([folder], tmp_path / "out", **TINY)
    (folder / "img_2.png").write_bytes(original)
    table = score_files([folder], tmp_path / "out", **TINY)
    assert len(table) == 3 and table.attrs["skipped"] == []
    assert not list((tmp_path / "out" / "predictions").glob(".carry*"))


def test_interrupted_carry_over_is_completed_on_the_next_run(tmp_path):
    from medad.engine.carry_over import finish_carry_over

    folder = _folder(tmp_path)
    _break(folder / "img_0.png")
    score_files([folder], tmp_path / "out", **TINY)
    (folder / "img_0.png").unlink()
    pred = tmp_path / "out" / "predictions"
    from medad.data import manifest_from_paths
    from medad.engine import carry_over

    real = carry_over.finish_carry_over
    carry_over.finish_carry_over = lambda folder: None  # crash right after staging
    try:
        meta = json.loads((pred / "meta.json").read_text())
        assert carry_over.carry_over(pred, manifest_from_paths([str(folder)]), meta)
    finally:
        carry_over.finish_carry_over = real
    assert (pred / ".carry" / "COMPLETE").exists()
    finish_carry_over(pred)
    assert PredictionReader(pred).indices.tolist() == [0, 1]
    assert not (pred / ".carry").exists()


def test_eval_refuses_skipped_images_naming_them(tmp_path):
    from medad.data import load_manifest, write_layout
    from medad.evaluation import evaluate

    root = Path(write_layout(tmp_path / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0))
    bad = sorted(root.rglob("test/good/*.png"))[0]
    bad.write_bytes(b"not an image")
    score_files([root], tmp_path / "out", kind="mvtec", **TINY)
    manifest = load_manifest(root, "mvtec")
    with pytest.raises(DataError, match=r"skipped 1 unreadable image\(s\), which would be missing from every metric"):
        evaluate({"m": tmp_path / "out" / "predictions"}, manifest, tmp_path / "eval")


def test_train_refuses_an_unreadable_image_before_the_first_step(tmp_path):
    from medad.data import load_manifest, write_layout
    from medad.engine.train import train
    from medad.models import create_model

    root = Path(write_layout(tmp_path / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0))
    bad = sorted(root.rglob("*.png"))[0]
    bad.write_bytes(bad.read_bytes()[:40])
    model = create_model("ad_dinov3_tiny")
    with pytest.raises(DataError, match=rf"training did not start: .*{bad.name}"):
        train(model, load_manifest(root, "mvtec"), tmp_path / "run", epochs=1, batch_size=4, device="cpu")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_monai_wrapped_errors_are_unwrapped():
    inner = DataError("image x.png cannot be decoded")
    try:
        try:
            raise inner
        except DataError as exc:
            raise RuntimeError("applying transform <LoadRowItem>") from exc
    except RuntimeError as wrapped:
        assert as_medad_error(wrapped) is inner
    assert as_medad_error(RuntimeError("a bug")) is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "is full: free space and rerun; finished stages are kept"),
        (errno.EFBIG, "hit the file-size limit"),
        (errno.EROFS, "is on a read-only file system"),
        (errno.EACCES, "cannot be written (permission denied)"),
    ],
)
def test_atomic_writer_turns_disk_errors_into_one_message_naming_the_file(tmp_path, monkeypatch, code, words):
    import medad.utils.io as io

    def fail(*args, **kwargs):
        raise OSError(code, "injected")

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    target = tmp_path / "report" / "report.html"
    with pytest.raises(DiskError) as info:
        io.write_text_atomic(target, "x")
    assert str(target) in str(info.value) and words in str(info.value)
    assert isinstance(info.value, MedadError)


_FSIZE_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
import torch
from medad.errors import MedadError
from medad.utils.io import disk_errors, write_bytes_atomic
for what in ("atomic", "torch"):
    target = sys.argv[1] + "/" + what + ".bin"
    try:
        if what == "atomic":
            write_bytes_atomic(target, bytes(100_000))
        else:
            with disk_errors(target):
                torch.save({"w": torch.zeros(100_000)}, target)
    except MedadError as exc:
        print(what, exc)
"""


def test_file_size_limit_in_a_real_process_names_the_file(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=HANG_S
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("atomic ") and "atomic.bin hit the file-size limit" in lines[0]
    assert lines[1].startswith("torch ") and "torch.bin hit the file-size limit" in lines[1]
    assert not list(tmp_path.glob(".atomic.bin.*"))  # no temporary file left behind


def test_cli_turns_an_unwrapped_disk_error_into_one_line(tmp_path, monkeypatch):
    import medad.engine.predictions as predictions

    folder = _folder(tmp_path, n=2)
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == "chunks":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(predictions.Path, "mkdir", read_only)
    outcome = _run_in_process(["score", str(folder), "--out", str(tmp_path / "out"), "--model", "ad_dinov3_tiny"])
    assert outcome.code == 2
    (line,) = [x for x in outcome.stderr.splitlines() if x.startswith("error:")]
    assert "chunks is on a read-only file system" in line and "Traceback" not in outcome.stderr
