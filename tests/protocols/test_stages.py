"""The one stage mechanism: stage tasks run once under their lock and are reused after; stage jobs are frozen and
picklable (what the submitit executor sends); production code holds no fault hook."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from medad.engine.request import ScoreSettings
from medad.protocols.cache import StageStore
from medad.protocols.progress import RunDisplay
from medad.protocols.stages.base import RunState, StageTask, run_tasks
from medad.protocols.stages.score import ScoreJob
from medad.protocols.stages.train import TrainJob, TrainSettings


def _state(tmp_path: Path) -> RunState:
    display = RunDisplay(tmp_path / "run.log", enabled=False)
    store = StageStore(tmp_path / "_stages")
    return RunState(None, None, "hash", tmp_path, store, display, torch.device("cpu"))  # type: ignore[arg-type]


def test_a_stage_task_runs_once_then_is_reused(tmp_path: Path) -> None:
    state = _state(tmp_path)
    calls: list[int] = []

    def work(advance: Any) -> dict[str, Any]:
        calls.append(1)
        advance(2)
        return {"answer": 42}

    stage = state.store.stage("stats", {"x": 1})
    task = StageTask(stage, "seeds", 2, {"x": 1}, work)
    assert run_tasks(state, [task]) == [{"stage": "stats", "key": stage.key, "answer": 42}]
    assert run_tasks(state, [task])[0]["answer"] == 42
    assert calls == [1]
    assert state.stage_keys == {"stats/seeds": stage.key}
    log = (tmp_path / "run.log").read_text()
    assert "stats seeds: done" in log and "stats seeds: reused" in log


def test_stage_jobs_are_frozen_and_picklable(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=1, lr=1e-3, weight_decay=0.0, warmup_fraction=0.0, batch_size=2,
                             micro_batch_size=None, cache_features=False)  # fmt: skip
    manifest = pd.DataFrame({"image_path": ["a.png"], "label": [0]})
    train = TrainJob(tmp_path, 0, "ad_dinov3_tiny", {"image_size": 64}, (manifest,), settings, "cpu", "cache",
                     "clean", {})  # fmt: skip
    scoring = ScoreSettings(batch_size=2, device="cpu", compat="clean", class_words={},
                            dataset_kinds={"medical": "mvtec_style"}, chunk_size=2)  # fmt: skip
    score = ScoreJob(tmp_path, None, "winclip_tiny", {}, "max", manifest, scoring)
    for job in (train, score):
        back = pickle.loads(pickle.dumps(job))
        assert type(back) is type(job) and back.folder == job.folder and back.model == job.model
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.model = "other"  # type: ignore[misc]


def test_production_code_reads_no_stall_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, MEDAD_STALL_AT=stage:n made RunDisplay.advance sleep forever inside medad itself.
    monkeypatch.setenv("MEDAD_STALL_AT", "score:1")
    display = RunDisplay(tmp_path / "run.log", enabled=False)
    bar = display.task("score", "model", 3)
    worker = threading.Thread(target=display.advance, args=(bar, "score", 2), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
