"""The stage store: each stage's output lives in a folder named by a content hash of its inputs.

``<root>/<stage>/<key>/`` where ``key = hash(stage, version, config, upstream keys, data manifest hashes)``.
A stage folder is complete only when its ``_done.json`` marker exists; the marker is written atomically and
last, so a run killed at any moment leaves either a complete folder (reused as is) or an incomplete one,
which a resumable stage (training epochs, prediction chunks) continues and any other stage starts afresh.
The store is shared by every protocol under one output folder, so two studies that train the same model on
the same data share that work.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medad.utils.io import hash_config, write_json_atomic
from medad.utils.locking import FolderLock

DONE = "_done.json"
INPUTS = "_inputs.json"
STAGE_VERSION = 1
"""Bumped when what a stage writes changes, so older cached outputs are not reused."""


@dataclass(frozen=True)
class Stage:
    """One stage instance: its name, content key and folder."""

    name: str
    key: str
    folder: Path

    @property
    def done(self) -> bool:
        """Whether the stage finished (its marker exists)."""
        return (self.folder / DONE).is_file()

    def record(self) -> dict[str, Any]:
        """The stage's ``_done.json`` content (empty dict when not done)."""
        if not self.done:
            return {}
        return json.loads((self.folder / DONE).read_text(encoding="utf-8"))

    def lock(self) -> FolderLock:
        """The lock of the stage folder, waited for (the run that holds it is doing the work this one needs).

        Its file is ``<store>/.locks/<stage>-<key>.lock``: outside the stage folder, which a non-resumable stage
        deletes and remakes, and outside ``<store>/<stage>/``, which holds only stage folders.
        """
        lock_file = self.folder.parent.parent / ".locks" / f"{self.name}-{self.key}.lock"
        return FolderLock(lock_file, f"stage folder {self.name}/{self.key}", wait=True)


class StageStore:
    """Content-addressed stage folders under ``root``.

    Args:
        root: the store folder (``<output>/_stages``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def stage(
        self,
        name: str,
        config: Any,
        upstream: list[str] | tuple[str, ...] = (),
        data: list[str] | tuple[str, ...] = (),
    ) -> Stage:
        """The stage for these inputs (not created on disk).

        Args:
            name: stage name (``train``, ``score``, ...).
            config: the JSON-serialisable settings the stage's output depends on.
            upstream: keys of the stages whose outputs it reads.
            data: content hashes of the data manifests it reads.
        """
        inputs = {
            "stage": name,
            "version": STAGE_VERSION,
            "config": config,
            "upstream": list(upstream),
            "data": list(data),
        }
        key = hash_config(inputs)
        return Stage(name, key, self.root / name / key)

    def begin(self, stage: Stage, inputs: Any, *, resumable: bool) -> None:
        """Prepare an unfinished stage's folder.

        A resumable stage keeps what an interrupted attempt left (it continues from it); any other stage's
        leftovers are removed so that it starts clean.
        """
        if stage.done:
            return
        if stage.folder.exists() and not resumable:
            shutil.rmtree(stage.folder)
        stage.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stage.folder / INPUTS, inputs)

    def finish(self, stage: Stage, info: dict[str, Any]) -> None:
        """Mark a stage complete (writes ``_done.json`` atomically, last)."""
        write_json_atomic(stage.folder / DONE, {"stage": stage.name, "key": stage.key, **info})
