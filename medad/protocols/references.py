"""Few-shot references of a protocol (``targets[i].references``): their checks, their pools and their draws.

A target with ``references:`` is scored by every model once per (shot count, draw) with references drawn by
:func:`medad.engine.references.draw_references` from its pool: a split of the target's own layout, a folder, or
the target's own normal images (then every image drawn for any shot count or draw is removed from the scored
targets, for every model, the 0-shot run included, so all runs are compared on the same images and a reference
is never scored). The draws are recorded by case id in the run folder's ``private/references/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medad.errors import DataError
from medad.protocols.yamlio import Loc

if TYPE_CHECKING:
    from medad.engine.references import ReferenceSet
    from medad.protocols.loading import LoadedProtocol
    from medad.protocols.resources import Missing
    from medad.protocols.schema import DatasetSpec, ReferencesSpec


def fewshot_label(label: str, shots: int, draw: int) -> str:
    """The label of one few-shot model run (results, predictions folders): ``clean.4-shot.d0``."""
    return f"{label}.{shots}-shot.d{draw}"


def shots_title(label: str, shots: int) -> str:
    """How reports name a model at a shot count: ``clean · 4-shot`` (``clean · 0-shot`` for the plain run)."""
    return f"{label} · {shots}-shot"


def check_references_structure(lp: LoadedProtocol) -> None:
    """``references:`` only on targets, shot counts listed once, and a model that needs references (AnomalyDINO)
    only where every target has them.

    Raises:
        ConfigError: naming the key and the fix.
    """
    from medad.models.registry import model_needs_references

    p = lp.protocol
    if p.training is not None:
        for i, spec in enumerate(p.training.datasets):
            if spec.references is not None:
                raise lp.error(
                    ("training", "datasets", i, "references"),
                    "references are drawn for targets only; move `references:` to the target it serves",
                )
    for i, spec in enumerate(p.targets):
        if spec.references is not None and len(set(spec.references.shots)) != len(spec.references.shots):
            shots = spec.references.shots
            raise lp.error(("targets", i, "references", "shots"), f"shots {shots} repeat a count; list each once")
    bare = [t.name for t in p.targets if t.references is None]
    weighted = [(i, t.name, t.references.weight) for i, t in enumerate(p.targets) if t.references is not None]
    weighted = [w for w in weighted if w[2] is not None and w[2] != 1]
    for i, m in enumerate(p.models):
        needs = model_needs_references(m.model)
        if needs and weighted:
            j, target, weight = weighted[0]
            raise lp.error(
                ("targets", j, "references", "weight"),
                f"model {m.name!r} ({m.model}) has no zero-shot map to fuse with, so its few-shot weight is 1, but "
                f"target {target!r} sets weight {weight}; remove `weight:` (each model then "
                "uses its own) or the model",
            )
        if bare and needs:
            raise lp.error(
                ("models", i, "model"),
                f"model {m.name!r} ({m.model}) scores only with references, but target(s) {', '.join(bare)} have no "
                "`references:`; add them (e.g. `references: {from: {split: train}, shots: [1, 2, 4]}`) or remove "
                "the model",
            )


def references_missing(lp: LoadedProtocol) -> list[Missing]:
    """A ``references.from.folder`` that does not exist (or uses an unset variable), as missing resources."""
    from medad.protocols.messages import format_loc
    from medad.protocols.resources import Missing, check_path

    out: list[Missing] = []
    for i, (spec, resolved) in enumerate(zip(lp.protocol.targets, lp.resolved.targets, strict=True)):
        refs, r_refs = spec.references, resolved.references
        if refs is None or r_refs is None or refs.source.folder is None or r_refs.source.folder is None:
            continue
        loc: Loc = ("targets", i, "references", "from", "folder")
        hint = "give a folder of normal images of this target's kind (docs/fewshot.md)"
        check_path(lp, loc, refs.source.folder, r_refs.source.folder, f"{spec.name} reference folder", hint, out)
    for i, resolved in enumerate(lp.resolved.targets):
        problem = _pool_problem(resolved)
        if problem is not None:
            out.append(Missing(lp.where(("targets", i, "references")), format_loc(("targets", i, "references")),
                               problem, "fix the pool or the shot counts (docs/fewshot.md)"))  # fmt: skip
    return out


def _pool_problem(spec: DatasetSpec) -> str | None:
    """Where a target's data exist: why its reference pool cannot serve its shot counts (``None`` when it can,
    or when the data are not there to read: the root check lists those)."""
    if spec.references is None or spec.root is None or not Path(spec.root).is_dir():
        return None
    source = spec.references.source
    if source.folder is not None and not Path(source.folder).exists():
        return None
    from medad.data import load_manifest

    try:
        options: dict[str, Any] = dict(spec.options)  # load_manifest checks its own keywords
        checked_draws(spec, Path(spec.root), load_manifest(spec.root, spec.kind, **options))
    except DataError as exc:
        return str(exc)
    return None


def checked_draws(spec: DatasetSpec, root: Path, manifest: pd.DataFrame) -> TargetDraws:
    """Load a target's pool, draw every set and check each draw against the scored targets
    (:func:`medad.engine.references.check_references`: no reference among the targets, one image kind).

    Raises:
        DataError: naming the key or the file and the fix.
    """
    from medad.engine.references import check_references

    assert spec.references is not None
    pool, where = load_pool(spec, root, manifest)
    draws = draw_target(spec, pool, where)
    targets = scored_rows(manifest, draws)
    largest = max(spec.references.shots)
    for shots, _, refs in draws.items():
        if shots == largest:  # a draw's smaller sets are inside its largest one
            check_references(refs, targets)
    return draws


def load_pool(spec: DatasetSpec, root: Path, manifest: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """A target's reference pool and how messages name it (never a path: the pool is named by its key).

    Args:
        spec: the resolved target (with ``references``).
        root: the target's data root (a synthetic source's folder for a synthetic target).
        manifest: the target's manifest as loaded.
    """
    from medad.data import load_manifest
    from medad.engine.references import reference_manifest

    assert spec.references is not None
    source = spec.references.source
    where = f"targets.{spec.name}.references.from"
    if source.split is not None:
        options: dict[str, Any] = {**spec.options, "split": source.split}
        return load_manifest(root, spec.kind, **options).reset_index(drop=True), f"{where}.split ({source.split})"
    if source.folder is not None:
        return reference_manifest([source.folder]), f"{where}.folder"
    normal = manifest[manifest["label"].astype("Int64").fillna(-1) == 0]
    return normal.reset_index(drop=True), f"{where}.target_normals (the normal images of target {spec.name})"


@dataclass(frozen=True)
class TargetDraws:
    """The drawn references of one target: per (shots, draw) a :class:`ReferenceSet`, and the rows of the target
    that are removed from scoring (its own normals drawn as references)."""

    target: str
    spec: ReferencesSpec
    sets: Mapping[tuple[int, int], ReferenceSet]
    removed: frozenset[tuple[str, str]]

    def items(self) -> Iterator[tuple[int, int, ReferenceSet]]:
        """(shots, draw, references) in shot, then draw order."""
        for (shots, draw), refs in sorted(self.sets.items()):
            yield shots, draw, refs

    def record(self) -> dict[str, Any]:
        """The shareable record of the draws (case ids, no path), for stage keys and the run folder."""
        return {
            "shots": list(self.spec.shots),
            "draws": self.spec.draws,
            "seed": self.spec.seed,
            "weight": self.spec.weight,
            "from": self.spec.source.describe(),
            "sets": [{"shots": k, "draw": d, "case_ids": refs.record()["case_ids"]} for k, d, refs in self.items()],
            "removed_from_targets": len(self.removed),
        }


def image_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """A manifest row's identity (resolved path and frame), to remove drawn references from the targets."""
    frame = row.get("frame")
    return str(Path(str(row["image_path"])).resolve()), "" if frame is None or pd.isna(frame) else str(int(frame))


def draw_target(spec: DatasetSpec, pool: pd.DataFrame, source: str) -> TargetDraws:
    """Every draw of one target: ``draws`` draws per shot count, seeded (a larger shot count keeps a smaller one's
    images within a draw); with ``target_normals`` the union of the drawn rows is removed from the targets.

    Raises:
        DataError: the pool holds abnormal images or fewer images than the largest shot count (naming the key).
    """
    from medad.engine.references import draw_references

    refs = spec.references
    assert refs is not None
    if len(pool) < max(refs.shots):
        raise DataError(
            f"{source} holds {len(pool)} normal image(s), fewer than the {max(refs.shots)} shots asked for; lower "
            f"targets.{spec.name}.references.shots or give a larger pool"
        )
    sets = {
        (k, d): draw_references(pool, k, seed=refs.seed, draw=d, source=source, weight=refs.weight)
        for k in refs.shots
        for d in range(refs.draws)
    }
    removed: frozenset[tuple[str, str]] = frozenset()
    if refs.source.target_normals:
        removed = frozenset(image_key(r) for s in sets.values() for r in s.manifest.to_dict("records"))
    return TargetDraws(spec.name, refs, sets, removed)


def scored_rows(manifest: pd.DataFrame, draws: TargetDraws | None) -> pd.DataFrame:
    """The target's rows that are scored: all of them, less the drawn references of ``target_normals``."""
    if draws is None or not draws.removed:
        return manifest
    keep = [image_key(r) not in draws.removed for r in manifest.to_dict("records")]
    left = manifest[keep].reset_index(drop=True)
    if left.empty or not (left["label"].astype("Int64").fillna(-1) == 0).any():
        raise DataError(
            f"target {draws.target}: removing its {len(draws.removed)} drawn reference(s) leaves no normal image to "
            f"score; lower targets.{draws.target}.references.shots or draws, or draw from another pool"
        )
    return left
