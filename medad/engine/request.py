"""The typed score request: one object that ``medad score``, the library and the protocol score stage pass.

:class:`ScoreSettings` says HOW to score (batch, device, prompt words, tiling, seed, sharding): it is what
:func:`medad.engine.scorer.score` takes beside a model and a manifest, and what a protocol's score stage
holds. :class:`ScoreRequest` adds WHAT to score and with WHICH model (input paths, a checkpoint or a
registered model name and its weights, the output folder): it is what :func:`medad.engine.scorer.score_files`
(``medad score``) runs. The keyword arguments of both functions still work; they build these objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medad.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from medad.dimse.peer import DimseSettings

DEFAULT_SEED = 0
"""The seed a model is built under when none is given (``medad score --seed``, ``seed=``)."""


@dataclass(frozen=True)
class ScoreSettings:
    """How a model scores a manifest (see :func:`medad.engine.scorer.score` for each field's meaning).

    ``seed`` is the seed the model was (or is to be) built under; it is recorded in the predictions' ``meta.json``
    so that a resumed run can refuse a different model. ``None`` (a model built by the caller) records none.
    """

    batch_size: int = 8
    device: str | torch.device | None = None
    num_workers: int = 0
    compat: str | None = None
    class_word: str | None = None
    class_words: Mapping[str, str] | None = None
    dataset_kinds: Mapping[str, str] | None = None
    chunk_size: int = 64
    compile: bool = False
    tile: bool = False
    tile_overlap: float = 0.25
    seed: int | None = DEFAULT_SEED
    distributed: bool = False
    shard: str = "strided"

    def check(self) -> None:
        """Refuse settings no scoring run can honour, before any model is built.

        Raises:
            ConfigError: ``batch_size`` / ``chunk_size`` below 1, ``num_workers`` below 0, or a ``class_word``
                longer than a text prompt holds (tiling settings are checked against the model,
                :func:`medad.engine.tiling.check_tiling`).
        """
        for key, flag in (("batch_size", "--batch-size "), ("chunk_size", "")):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be >= 1; pass e.g. {flag or key + '='}8")
        if self.num_workers < 0:
            raise ConfigError(
                f"num_workers={self.num_workers} must be >= 0; pass e.g. --workers 0 (reads images in the main process)"
            )
        if self.class_word is not None:
            from medad.models.prompts import class_word_problem

            problem = class_word_problem(self.class_word)
            if problem is not None:
                raise ConfigError(f"--class-word (class_word): {problem}")

    def replace(self, **changes: Any) -> ScoreSettings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(ScoreSettings))


@dataclass(frozen=True)
class ScoreRequest:
    """What ``medad score`` does: score ``paths`` with one model into ``out_dir`` (tables, heatmaps, predictions).

    Attributes:
        paths: image files, folders, DICOM / NIfTI files, DICOMweb study or series URLs and
            ``dicom://AET@HOST:PORT/STUDY_UID`` URLs.
        out_dir: the output folder (a re-run of the same request resumes).
        checkpoint: a checkpoint folder from ``medad train`` (or give ``model_name``).
        model_name: a registered model name (random or pretrained weights per its card).
        backbone_weights: a local backbone weights file or hub id.
        text_weights: a local CLIP weights file, open_clip tag or ``hf-hub:`` id.
        kind: read ``paths[0]`` as a dataset root in this public layout.
        reader_options: options of that kind's reader (e.g. ``images`` / ``masks`` folder names of ``folder``).
        split: the dataset split with ``kind``.
        heatmaps: write one heatmap PNG per image.
        progress: show a progress bar.
        dicomweb_ca_bundle: CA bundle for DICOMweb URLs among ``paths``.
        dimse: AE title, C-MOVE port and timeouts for ``dicom://`` URLs among ``paths`` (None: from the environment).
        settings: how to score (:class:`ScoreSettings`).
    """

    paths: tuple[str | Path, ...]
    out_dir: Path
    checkpoint: Path | None = None
    model_name: str | None = None
    backbone_weights: str | None = None
    text_weights: str | None = None
    kind: str | None = None
    reader_options: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"
    heatmaps: bool = True
    progress: bool = True
    dicomweb_ca_bundle: str | Path | None = None
    dimse: DimseSettings | None = None
    settings: ScoreSettings = field(default_factory=ScoreSettings)

    @classmethod
    def build(cls, paths: Sequence[str | Path], out_dir: str | Path, **options: Any) -> ScoreRequest:
        """A request from keyword arguments (``score_files``' form): settings' keys go to :class:`ScoreSettings`.

        Raises:
            ConfigError: an unknown option.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"paths", "out_dir", "settings"}
        unknown = sorted(set(options) - own - SETTINGS_FIELDS)
        if unknown:
            raise ConfigError(f"score_files got unknown option(s) {', '.join(unknown)}; see medad.engine.ScoreRequest")
        settings = ScoreSettings(**{k: v for k, v in options.items() if k in SETTINGS_FIELDS})
        mine = {k: v for k, v in options.items() if k in own}
        if mine.get("checkpoint") is not None:
            mine["checkpoint"] = Path(mine["checkpoint"])
        return cls(paths=tuple(paths), out_dir=Path(out_dir), settings=settings, **mine)
