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
    from medad.engine.references import ReferenceSet

DEFAULT_SEED = 0
"""The seed a model is built under when none is given (``medad score --seed``, ``seed=``)."""

TILE_WITH_REFERENCES = (
    "--tile with --reference is not supported (a window's patches would be compared with patches of whole resized "
    "references, at another scale); drop --tile to score few-shot"
)


@dataclass(frozen=True)
class ScoreSettings:
    """How a model scores a manifest (see :func:`medad.engine.scorer.score` for each field's meaning).

    ``seed`` is the seed the model was (or is to be) built under; it is recorded in the predictions' ``meta.json``
    so that a resumed run can refuse a different model. ``None`` (a model built by the caller) records none.
    ``references`` (a :class:`~medad.engine.references.ReferenceSet`) scores few-shot (:mod:`medad.engine.fewshot`).
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
    references: ReferenceSet | None = None

    def check(self) -> None:
        """Refuse settings no scoring run can honour, before any model is built.

        Raises:
            ConfigError: ``batch_size`` / ``chunk_size`` below 1, ``num_workers`` below 0, a ``class_word``
                longer than a text prompt holds, or ``tile`` with ``references`` (tiling settings are checked
                against the model, :func:`medad.engine.tiling.check_tiling`).
        """
        if self.tile and self.references is not None:
            raise ConfigError(TILE_WITH_REFERENCES)
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
        reference_paths: normal reference images (files or one folder) to score few-shot
            (``medad score --reference``); ``shots`` of them are drawn.
        shots: how many references to draw (``--shots``; needed with ``reference_paths``).
        reference_seed: the draw's seed (``--reference-seed``).
        reference_draw: which draw of that seed (``--reference-draw``).
        fewshot_weight: the few-shot map's weight in the fused map (``--fewshot-weight``; ``None``: the model's).
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
    reference_paths: tuple[str | Path, ...] = ()
    shots: int | None = None
    reference_seed: int = 0
    reference_draw: int = 0
    fewshot_weight: float | None = None
    dimse: DimseSettings | None = None
    settings: ScoreSettings = field(default_factory=ScoreSettings)

    def check_references(self) -> None:
        """Refuse reference options that do not go together, before anything is read or built.

        Raises:
            ConfigError: ``shots`` or a reference option without ``reference_paths``, reference paths without
                ``shots``, both paths and a drawn ``settings.references``, references with ``tile``, or a model
                that scores only against references (``needs_references``) without them.
        """
        if not self.reference_paths and self.settings.references is None:
            self._check_needs_no_references()
        if self.reference_paths and self.settings.tile:
            raise ConfigError(TILE_WITH_REFERENCES)
        if self.reference_paths and self.settings.references is not None:
            raise ConfigError("give reference paths (--reference) or a drawn ReferenceSet (references=), not both")
        if self.reference_paths and self.shots is None:
            raise ConfigError("--reference needs --shots K, the number of normal reference images to draw")
        given = [flag for flag, value in self._reference_options() if value]
        if given and not self.reference_paths:
            raise ConfigError(f"{', '.join(given)} only apply with --reference NORMALS; add it or drop them")

    def _check_needs_no_references(self) -> None:
        from medad.models.registry import model_needs_references

        if self.model_name is not None and model_needs_references(self.model_name):
            raise ConfigError(
                f"model {self.model_name!r} scores only against normal reference images; add --reference NORMALS "
                "--shots K (references= in the library)"
            )

    def _reference_options(self) -> list[tuple[str, bool]]:
        return [
            ("--shots", self.shots is not None),
            ("--reference-seed", self.reference_seed != 0),
            ("--reference-draw", self.reference_draw != 0),
            ("--fewshot-weight", self.fewshot_weight is not None),
        ]

    @classmethod
    def build(cls, paths: Sequence[str | Path], out_dir: str | Path, **options: Any) -> ScoreRequest:
        """A request from keyword arguments (``score_files``' form): settings' keys go to :class:`ScoreSettings`.

        ``references`` may be a drawn :class:`~medad.engine.references.ReferenceSet` (a setting) or reference paths
        (``reference_paths``, drawn with ``shots``, ``reference_seed``, ``reference_draw``).

        Raises:
            ConfigError: an unknown option.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"paths", "out_dir", "settings"}
        if "references" in options and not _is_reference_set(options["references"]):  # paths, not a drawn set
            options = dict(options)
            given = options.pop("references")
            options["reference_paths"] = (given,) if isinstance(given, str | Path) else tuple(given)
        unknown = sorted(set(options) - own - SETTINGS_FIELDS)
        if unknown:
            raise ConfigError(f"score_files got unknown option(s) {', '.join(unknown)}; see medad.engine.ScoreRequest")
        settings = ScoreSettings(**{k: v for k, v in options.items() if k in SETTINGS_FIELDS})
        mine = {k: v for k, v in options.items() if k in own}
        if mine.get("checkpoint") is not None:
            mine["checkpoint"] = Path(mine["checkpoint"])
        return cls(paths=tuple(paths), out_dir=Path(out_dir), settings=settings, **mine)


def _is_reference_set(value: Any) -> bool:
    from medad.engine.references import ReferenceSet

    return value is None or isinstance(value, ReferenceSet)
