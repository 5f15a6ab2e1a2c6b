"""Two runs into one output folder: folder locks between real processes, SIGKILL of the holder, waiting, and a
stage folder left unusable by an interrupted run (an index written twice) detected and redone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medad.utils.locking import LOCK_NAME, FolderBusyError, FolderLock
from tests.protocols.stall_run import command
from tests.timeouts import HANG_S

# A training-free model on a small synthetic target: no training stage, so a run takes seconds. Chunks of 2 make
# the scoring stage resumable part-way.
PROTOCOL = """\
name: lock-test
output: runs
synthetic:
  medical: {layout: mvtec_style, classes: [skin], n_normal: 2, n_abnormal: 4, size: 64, seed: 1}
models:
  - {name: winclip, model: winclip_tiny, image_score: global}
targets:
  - {name: medical, kind: mvtec_style, synthetic: medical}
scoring: {batch_size: 2, chunk_size: 2}
metrics: [pixel_auroc, image_auroc]
statistics: {resamples: 0}
"""

HOLD = textwrap.dedent(
    """
    import sys, time
    from medad.utils.locking import FolderLock
    lock = FolderLock(sys.argv[1], "test folder").acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def holder(lock_file: Path, seconds: float) -> subprocess.Popen[str]:
    """A separate process that takes the lock, says so, and holds it for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_file), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def medad(args: list[str], cwd: Path, stall: str | None = None) -> subprocess.Popen[str]:
    """A ``medad`` subprocess; ``stall`` (``STAGE:N``): it stops responding there (tests/protocols/stall_run.py)."""
    argv = (
        [sys.executable, "-c", "from medad.cli import main; main()", *args] if stall is None else command(stall, args)
    )
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_stalled(protocol: Path, out: Path) -> subprocess.Popen[str]:
    """A ``medad run`` that stops responding part-way through scoring (holding its locks)."""
    proc = medad(["run", str(protocol), "--out", str(out), "--no-progress"], protocol.parent, "score:2")
    assert proc.stderr is not None
    deadline = time.monotonic() + HANG_S
    for line in proc.stderr:
        if "medad: stalled" in line:
            return proc
        assert time.monotonic() < deadline, "the run never reached its stall point"
    pytest.fail(f"run ended before stalling: exit {proc.wait()}")


def test_second_process_is_refused_with_the_holder_then_gets_the_lock_after_sigkill(tmp_path: Path) -> None:
    lock_file = tmp_path / "folder" / LOCK_NAME
    proc = holder(lock_file, 60)
    try:
        with pytest.raises(FolderBusyError) as info:
            FolderLock(lock_file, "test folder").acquire()
        message = str(info.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and "started 20" in message
        assert "--wait" in message  # the fix
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with FolderLock(lock_file, "test folder", wait=False) as lock:  # the kernel released the dead holder's lock
        assert lock.held
        assert lock.holder()["pid"] == os.getpid()
    assert not lock.held


def test_waiting_process_gets_the_lock_when_the_holder_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock_file = tmp_path / LOCK_NAME
    proc = holder(lock_file, 1.0)
    started = time.monotonic()
    with FolderLock(lock_file, "test folder", wait=60):
        waited = time.monotonic() - started
    proc.wait(timeout=30)
    assert waited > 0.3
    err = capsys.readouterr().err
    assert f"test folder is in use by pid {proc.pid}" in err and "waiting for it to finish" in err


def test_timed_wait_gives_up_with_the_holder_named(tmp_path: Path) -> None:
    lock_file = tmp_path / LOCK_NAME
    proc = holder(lock_file, 30)
    try:
        with pytest.raises(FolderBusyError, match=rf"still in use by pid {proc.pid} .* after waiting 0.5 s"):
            FolderLock(lock_file, "test folder", wait=0.5, poll_s=0.05).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "lock-test.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return path


def test_two_runs_into_one_folder_refuse_then_wait_and_survive_sigkill_of_the_holder(protocol: Path) -> None:
    out = protocol.parent / "out-two"
    first = start_stalled(protocol, out)
    try:
        second = medad(["run", str(protocol), "--out", str(out), "--no-progress"], protocol.parent)
        stdout, stderr = second.communicate(timeout=HANG_S)
        assert second.returncode == 2, stderr
        assert stderr.startswith("error: run folder ") and stderr.count("\n") == 1 and "Traceback" not in stderr
        assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in stderr and "--wait" in stderr

        waiting = medad(["run", str(protocol), "--out", str(out), "--no-progress", "--wait"], protocol.parent)
        assert waiting.stderr is not None
        said = ""
        while "waiting for it to finish" not in said:  # it reached the lock and waits for the stalled holder
            line = waiting.stderr.readline()
            assert line, f"the waiting run ended instead: {said}"
            said += line
        assert f"is in use by pid {first.pid}" in said
        time.sleep(1)
        assert waiting.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    stdout, stderr = waiting.communicate(timeout=HANG_S)
    assert waiting.returncode == 0, stderr
    run_dir = Path(stdout.strip().splitlines()[-1])
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    assert any(r["metric"] == "pixel_auroc" and r["status"] == "ok" for r in rows)


def test_score_stage_with_an_index_written_twice_is_detected_and_redone(protocol: Path) -> None:
    from medad.protocols.runner import run_protocol

    out = protocol.parent / "out-dup"
    run_dir = run_protocol(protocol, out=out, progress=False)
    metrics = (run_dir / "metrics.json").read_bytes()
    (stage,) = (out / "_stages" / "score").iterdir()  # the stage folders only (locks live in _stages/.locks)
    chunks = sorted((stage / "predictions" / "chunks").glob("*.npz"))
    # What two unlocked runs writing one folder left behind: the same images in chunks of two writers, and the
    # stage unfinished. Before: "index 0 was written twice" on every rerun until the folder was deleted by hand.
    tag = chunks[0].name.split("-")[0]
    shutil.copyfile(chunks[0], chunks[0].with_name(f"{tag}-000999.npz"))
    (stage / "_done.json").unlink()
    for later in ("evaluate", "stats", "report"):
        shutil.rmtree(out / "_stages" / later)

    again = run_protocol(protocol, out=out, progress=False)
    assert (again / "metrics.json").read_bytes() == metrics
    log = (again / "run.log").read_text()
    assert "an interrupted attempt left predictions that cannot be read back" in log and "redoing the stage" in log
    assert not (stage / "predictions" / "chunks" / f"{tag}-000999.npz").exists()


def test_train_stage_killed_while_writing_its_first_checkpoint_is_redone(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from medad.data import load_manifest, write_layout
    from medad.engine.train import train
    from medad.errors import ConfigError
    from medad.models import create_model
    from medad.protocols.cache import StageStore
    from medad.protocols.stages.base import StageTask, begin_task
    from medad.protocols.stages.train import unusable_training

    manifest = load_manifest(
        write_layout(tmp_path / "data", "mvtec", classes=["bottle"], n_normal=2, n_abnormal=2), "mvtec"
    )
    store = StageStore(tmp_path / "_stages")
    stage = store.stage("train", {"case": "killed"})
    half = stage.folder / "checkpoints" / ".epoch_001.tmp"  # what a kill -9 during the first checkpoint leaves
    half.mkdir(parents=True)
    (half / "adapters.safetensors").write_bytes(b"half-written")

    def run_training() -> object:
        model = create_model("ad_dinov3_tiny", image_size=64)
        return train(model, manifest, stage.folder, epochs=1, lr=1e-3, batch_size=4, device="cpu", progress=False)

    with pytest.raises(ConfigError, match="holds no complete checkpoint to resume"):
        run_training()  # resuming it as it is: refused on every rerun (the state the runner must not leave)
    logged: list[str] = []
    task = StageTask(
        stage, "clean", 1, {"case": "killed"}, lambda advance: {}, resumable=True, unusable=unusable_training
    )
    begin_task(task, store, SimpleNamespace(log=logged.append))
    assert logged == [
        "train clean: an interrupted attempt left checkpoint folders none of which is complete; redoing the stage"
    ]
    assert not half.exists()
    assert run_training().epochs == 1  # type: ignore[attr-defined]


def test_lock_file_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    from medad.utils.locking import OutputPathError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        OutputPathError, match=r"cannot create the lock file of test folder \(.*\); make the folder writable"
    ):
        FolderLock(tmp_path / "afile" / LOCK_NAME, "test folder").acquire()


def test_score_holds_its_out_folder_only_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    from medad.cli import main

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    out = tmp_path / "out"
    seen: list[str] = []

    def spy(*args: object, **kwargs: object) -> object:
        with pytest.raises(FolderBusyError):  # another process / open of the lock is refused while scoring
            FolderLock(out / LOCK_NAME, "out").acquire()
        seen.append("busy while scoring")
        return real(*args, **kwargs)

    import medad.engine.scorer as scorer

    real = scorer.score_files
    monkeypatch.setattr(scorer, "score_files", spy)
    monkeypatch.setattr(sys, "argv", ["medad", "score", str(images), "--out", str(out), "--model", "winclip_tiny"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None) and seen == ["busy while scoring"]
    with FolderLock(out / LOCK_NAME, "out") as lock:  # released when the command ended
        assert lock.held


def test_a_lock_released_unused_removes_only_what_it_made(tmp_path: Path) -> None:
    made = tmp_path / "new" / "run"
    with FolderLock(made / LOCK_NAME, "run folder"):
        assert (made / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()  # refused before any work: no folder holding only a lock file
    existing = tmp_path / "existing"
    existing.mkdir()
    with FolderLock(existing / LOCK_NAME, "out"):
        pass
    assert existing.is_dir() and not any(existing.iterdir())
    with FolderLock(made / LOCK_NAME, "run folder"):
        (made / "metrics.json").write_text("{}")
    assert sorted(p.name for p in made.iterdir()) == [LOCK_NAME, "metrics.json"]  # work is never removed


def test_a_waiting_process_locks_the_new_file_when_the_holder_removes_its_own(tmp_path: Path) -> None:
    lock_file = tmp_path / "out" / LOCK_NAME
    first = FolderLock(lock_file, "out").acquire()
    waiter = subprocess.Popen(
        [sys.executable, "-c", HOLD.replace('"test folder")', '"test folder", wait=True)'), str(lock_file), "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert waiter.stderr is not None and "waiting for it to finish" in waiter.stderr.readline()
        first.release()  # the folder held only the lock file this process made: both are removed
        assert waiter.stdout is not None and waiter.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"pid {waiter.pid}"):  # one holder at a time, on the new file
            FolderLock(lock_file, "out").acquire()
    finally:
        waiter.kill()
        waiter.wait(timeout=30)


def test_score_refused_before_any_work_leaves_no_out_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    from medad.cli import main

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["medad", "score", str(tmp_path / "a.png"), "--out", str(out), "--model", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert not out.exists()
