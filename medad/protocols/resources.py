"""Resource checks of a protocol: environment variables set, data roots, weight files and checkpoints present,
``output:`` a writable folder; everything missing is listed at once with where the docs say to get it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medad.errors import ConfigError
from medad.protocols import registry
from medad.protocols.loading import LoadedProtocol
from medad.protocols.messages import format_loc
from medad.protocols.paths import DATASETS_DOC, MODELS_DOC, unset_vars_in
from medad.protocols.schema import DatasetSpec, ModelSpec, WeightSource
from medad.protocols.structure import dataset_locs
from medad.protocols.yamlio import Loc
from medad.utils.io import sha256_file
from medad.utils.locking import OutputPathError, check_output_folder

if TYPE_CHECKING:
    from medad.protocols.resolve import ResolvedProtocol


@dataclass
class Missing:
    """One missing resource: where it is referenced, what is missing, and where the docs say to get it."""

    where: str
    key: str
    what: str
    hint: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.what}; {self.hint}"


def check_path(
    lp: LoadedProtocol, loc: Loc, written: str, resolved: str, what: str, hint: str, out: list[Missing]
) -> None:
    """Check one resolved path: its variables are set and it exists (``written``: as in the protocol)."""
    unset = unset_vars_in(resolved)
    if unset:
        out.append(
            Missing(
                lp.where(loc),
                format_loc(loc),
                f"{what} {written!r} uses ${{{unset[0]}}}, which is not set",
                f"export {unset[0]}=/path/to/folder; {hint}",
            )
        )
    elif not Path(resolved).exists():
        out.append(Missing(lp.where(loc), format_loc(loc), f"{what} {resolved} does not exist", hint))


def _dataset_hint(spec: DatasetSpec) -> str:
    return f"get the {spec.kind} dataset as described in {DATASETS_DOC}#{spec.kind}"


def weight_sources(m: ModelSpec) -> list[tuple[str, WeightSource]]:
    """The frozen weight sources a model spec names, by role (every role of ``weights:``, in schema order)."""
    roles = [(role, getattr(m.weights, role)) for role in type(m.weights).model_fields]
    return [(role, source) for role, source in roles if source is not None]


def _model_missing(lp: LoadedProtocol, i: int, m: ModelSpec, r: ModelSpec, out: list[Missing]) -> None:
    """What model ``m`` (resolved: ``r``) needs that is missing: weight files, its checkpoint."""
    hint = f"download the weights as described in {MODELS_DOC}"
    resolved_sources = dict(weight_sources(r))
    for role, source in weight_sources(m):
        resolved = resolved_sources[role]
        loc: Loc = ("models", i, "weights", role)
        if source.file is not None and resolved.file is not None:
            check_path(lp, (*loc, "file"), source.file, resolved.file, f"{role} weights file", hint, out)
        elif source.id is None:
            out.append(Missing(lp.where(loc), format_loc(loc), f"{role} weights name neither `id:` nor `file:`", hint))
    if m.checkpoint is not None and r.checkpoint is not None:
        fix = "train one with a protocol that has a `training:` section, or fix the path"
        check_path(lp, ("models", i, "checkpoint"), m.checkpoint, r.checkpoint, "checkpoint folder", fix, out)
        _check_checkpoint_compat(lp, i, m, r.checkpoint, out)


def _check_checkpoint_compat(lp: LoadedProtocol, i: int, m: ModelSpec, resolved: str, out: list[Missing]) -> None:
    """A checkpoint trained in another compat mode than the model's ``compat:`` (its adapters fit that mode only)."""
    folder = Path(resolved)
    trained = registry.checkpoint_compat(folder) if folder.is_dir() else None
    if trained is not None and trained != m.compat:
        loc: Loc = ("models", i, "compat")
        what = f"checkpoint {folder} was trained in compat {trained!r} mode but model {m.name!r} has {m.compat!r}"
        fix = f"set `compat: {trained}` for model {m.name!r} (its adapters fit that mode only) or give a checkpoint "
        out.append(Missing(lp.where(loc), format_loc(loc), what, fix + f"trained in compat {m.compat!r}"))


def _output_missing(lp: LoadedProtocol, out: list[Missing]) -> None:
    loc: Loc = ("output",)
    value, resolved = lp.protocol.output, lp.resolved.output
    unset = unset_vars_in(resolved)
    if unset:
        fix = f"export {unset[0]}=/path/to/folder, or give `medad run --out DIR`"
        out.append(Missing(lp.where(loc), "output", f"{value!r} uses ${{{unset[0]}}}, which is not set", fix))
        return
    try:
        check_output_folder(resolved, "folder", "")
    except OutputPathError as exc:
        what = str(exc).removeprefix("folder ").rstrip("; ")
        out.append(Missing(lp.where(loc), "output", what, "set `output:` to a folder, or give `medad run --out DIR`"))


def _executor_missing(lp: LoadedProtocol, out: list[Missing]) -> None:
    written, resolved = lp.protocol.executor, lp.resolved.executor
    if written is None or written.folder is None or resolved is None or resolved.folder is None:
        return
    unset = unset_vars_in(resolved.folder)
    if unset:
        loc: Loc = ("executor", "folder")
        what = f"{written.folder!r} uses ${{{unset[0]}}}, which is not set"
        out.append(Missing(lp.where(loc), format_loc(loc), what, f"export {unset[0]}=/path/to/folder"))


def check_resources(lp: LoadedProtocol, *, output: bool = True) -> list[Missing]:
    """Everything the protocol needs from disk that is missing (data roots, weight files, checkpoints), and an
    ``output:`` whose variables are unset or that cannot be a writable folder (unless ``output`` is off: the
    run was given ``--out``), checked on the paths :attr:`LoadedProtocol.resolved` resolved.

    Synthetic datasets are written by the run, so they are never missing.
    """
    out: list[Missing] = []
    if output:
        _output_missing(lp, out)
    resolved = lp.resolved
    for (loc, spec), (_, r) in zip(dataset_locs(lp.protocol), dataset_locs(resolved), strict=True):
        if spec.root is not None and r.root is not None:
            check_path(lp, (*loc, "root"), spec.root, r.root, f"{spec.name} root", _dataset_hint(spec), out)
    for i, (m, r_model) in enumerate(zip(lp.protocol.models, resolved.models, strict=True)):
        _model_missing(lp, i, m, r_model, out)
    _executor_missing(lp, out)
    from medad.protocols.references import references_missing

    out += references_missing(lp)
    return out


def require_resources(lp: LoadedProtocol, *, output: bool = True) -> None:
    """Raise one ConfigError listing every missing resource (nothing when all exist)."""
    missing = check_resources(lp, output=output)
    if len(missing) == 1:
        raise ConfigError(str(missing[0]))
    if missing:
        lines = "\n  ".join(str(m) for m in missing)
        raise ConfigError(f"protocol {lp.path} cannot run; {len(missing)} missing:\n  {lines}")


def check_output(lp: LoadedProtocol, out: str | Path | None, resolved: ResolvedProtocol) -> Path:
    """The run's output folder (``--out`` or ``output:``), refused before any work when it cannot be written.

    Raises:
        OutputPathError: it is a file, lies under one, or cannot be written.
    """
    if out is None:
        return check_output_folder(resolved.output, f"{lp.where(('output',))}: output:", "set another folder")
    return check_output_folder(Path(out).resolve(), "--out", "give a folder path (one that exists or can be made)")


def check_weight_hashes(lp: LoadedProtocol, resolved: ResolvedProtocol) -> None:
    """Refuse, before any work, a weights file whose sha256 is not the one the protocol expects.

    Raises:
        ConfigError: naming the key, both hashes and the fix.
    """
    for i, model in enumerate(resolved.models):
        for role, source in weight_sources(model):
            if source.file is None or source.sha256 is None:
                continue
            actual = sha256_file(source.file)
            if actual != source.sha256:
                raise lp.error(
                    ("models", i, "weights", role, "sha256"),
                    f"{source.file} has sha256 {actual}, not {source.sha256}; download the file again "
                    f"(see docs/models.md) or fix the expected hash",
                )
