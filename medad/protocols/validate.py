"""Load, validate and resolve a protocol YAML.

Three levels of checking, each raising :class:`~medad.errors.ConfigError` with the file, line, key and fix:

1. structure: the YAML parses safely, every key is known (the closest valid key is suggested), types and
   ranges are right, names are unique, cross-references (synthetic sources, comparisons, exports, class words)
   point at things that exist, dataset kinds / models / metrics / exporters are registered, and training data
   does not overlap a target unless ``intended_overlap`` is set; model options fit the model's config and
   backbone (image size a multiple of the patch size, ...) and export thresholds parse and are possible;
2. resources (:func:`check_resources`): environment variables are set, data roots, weight files and
   checkpoints exist, ``output:`` can be a writable folder; everything missing is listed at once with where
   the docs say to get it;
3. at run time, after the data stage and before any training, class words name classes the data has
   (:func:`check_data_settings`), and the runner compares training and target files by sha256 (the leakage
   guard).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from medad.errors import ConfigError, ExportError
from medad.protocols import registry
from medad.protocols.schema import DatasetSpec, ModelSpec, Protocol
from medad.protocols.yamlio import LoadedYaml, Loc, load_yaml_file, load_yaml_text
from medad.utils.io import hash_config
from medad.utils.locking import OutputPathError, check_output_folder

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATASETS_DOC = "docs/datasets.md"
MODELS_DOC = "docs/models.md"


def format_loc(loc: Loc) -> str:
    """``("targets", 0, "kind")`` -> ``targets[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<protocol>"


@dataclass
class LoadedProtocol:
    """A validated protocol with its source.

    Attributes:
        protocol: the validated schema object.
        yaml: the parsed YAML (after ``--set`` overrides) with key lines.
        path: the protocol file.
        name: the protocol name (``name:`` or the file stem).
        overrides: the ``--set`` strings applied, by location.
    """

    protocol: Protocol
    yaml: LoadedYaml
    path: Path
    name: str
    overrides: dict[Loc, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against (the protocol file's folder)."""
        return self.path.resolve().parent

    def where(self, loc: Loc) -> str:
        """Where a key came from: ``file:line`` or the ``--set`` option that set it."""
        for depth in range(len(loc), 0, -1):
            if loc[:depth] in self.overrides:
                return f"--set {self.overrides[loc[:depth]]}"
        return self.yaml.where(loc)

    def error(self, loc: Loc, message: str) -> ConfigError:
        """A ConfigError naming the location and key."""
        return ConfigError(f"{self.where(loc)}: {format_loc(loc)}: {message}")


# ---------------------------------------------------------------- paths


def env_vars_in(value: str) -> list[str]:
    """Names of the ``${VAR}`` references in ``value``."""
    return _ENV_RE.findall(value)


def resolve_path(value: str, base_dir: Path, *, strict: bool = True) -> Path:
    """Expand ``${VAR}`` and ``~``, and make a relative path absolute against ``base_dir``.

    Args:
        value: the path as written in the protocol.
        base_dir: the protocol file's folder.
        strict: raise when a variable is unset; otherwise leave ``${VAR}`` in place.

    Raises:
        ConfigError: when ``strict`` and a referenced environment variable is not set.
    """

    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        if var in os.environ:
            return os.environ[var]
        if strict:
            raise ConfigError(f"environment variable {var} is not set; export {var}=/path (see {DATASETS_DOC})")
        return match.group(0)

    expanded = os.path.expanduser(_ENV_RE.sub(sub, value))
    path = Path(expanded)
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


# ---------------------------------------------------------------- pydantic error messages


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _fields_at(loc: Loc) -> list[str] | None:
    """The valid keys of the mapping at ``loc`` (None when it is not a schema model)."""
    current: list[Any] = [Protocol]
    for part in loc:
        nxt: list[Any] = []
        for typ in current:
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                if isinstance(part, str) and part in typ.model_fields:
                    nxt += _unwrap(typ.model_fields[part].annotation)
            elif typing.get_origin(typ) is list and isinstance(part, int):
                nxt += _unwrap(typing.get_args(typ)[0])
            elif typing.get_origin(typ) is dict and isinstance(part, str):
                nxt += _unwrap(typing.get_args(typ)[1])
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return list(models[0].model_fields) if models else None


def _data_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """The part of a pydantic error location that exists in the data (drops union member tags)."""
    out: list[str | int] = []
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_dict or in_list:
            data = data[part]
        else:
            if isinstance(part, (str, int)) and isinstance(data, (dict, list)):
                out.append(part)
            break
        out.append(part)
    return tuple(out)


def suggest(word: str, choices: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _message(err: dict[str, Any], lp: LoadedProtocol) -> tuple[int, str]:
    loc = _data_loc(err["loc"], lp.yaml.data)
    kind = err["type"]
    line = lp.yaml.line_of(loc) or 0
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        valid = _fields_at(parent) or []
        text = (
            f"{lp.where(loc)}: unknown key {key!r} in {format_loc(parent)}{suggest(str(key), valid)} "
            f"(valid keys: {', '.join(valid)}; see docs/protocols.md)"
        )
    elif kind == "missing":
        text = (
            f"{lp.where(loc[:-1])}: {format_loc(loc[:-1])} is missing the required key {loc[-1]!r}; "
            f"add it (see docs/protocols.md)"
        )
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        got = err.get("input")
        text = f"{lp.where(loc)}: {format_loc(loc)}: {got!r} is not one of {expected}"
        text += suggest(str(got), re.findall(r"'([^']+)'", expected))
    else:
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        text = f"{lp.where(loc)}: {format_loc(loc)}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}"
    return line, text


def _from_validation_error(exc: ValidationError, lp: LoadedProtocol) -> ConfigError:
    errors = exc.errors(include_url=False)
    misspelt = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = _data_loc(err["loc"], lp.yaml.data)
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]) or [], n=1, cutoff=0.5)
            misspelt |= {(*loc[:-1], c) for c in close}
    errors = [e for e in errors if not (e["type"] == "missing" and _data_loc(e["loc"], lp.yaml.data) in misspelt)]
    order = {"extra_forbidden": 0}
    messages = sorted(((order.get(e["type"], 1), *_message(e, lp)) for e in errors), key=lambda m: (m[0], m[1]))
    text = messages[0][2]
    if len(messages) > 1:
        text += f" (and {len(messages) - 1} more problem{'s' if len(messages) > 2 else ''} after fixing this)"
    return ConfigError(text)


# ---------------------------------------------------------------- --set overrides


def apply_override(data: dict[str, Any], assignment: str) -> Loc:
    """Apply one ``--set key.path=value`` to the parsed YAML (value parsed as a YAML scalar / flow value).

    List items can be addressed by index (``targets.0.root``) or by their ``name`` (``models.clean.compat``).

    Returns:
        The location that was set.

    Raises:
        ConfigError: for a malformed assignment or a path that does not exist.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r} must look like key.path=value (e.g. training.epochs=3)")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r} has an empty key; write e.g. training.epochs=3")
    value = load_yaml_text(raw, f"--set {assignment}").data
    node: Any = data
    loc: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                idx: str | int = int(part)
            else:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                if part not in names:
                    raise ConfigError(
                        f"--set {assignment!r}: {format_loc(tuple(loc))} has no item {part!r} "
                        f"(use an index 0..{len(node) - 1} or one of the names {names})"
                    )
                idx = names.index(part)
            loc.append(idx)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            loc.append(part)
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {assignment!r}: {format_loc(tuple(loc))} is a single value, not a section")
    return tuple(loc)


# ---------------------------------------------------------------- loading


def load_protocol(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedProtocol:
    """Parse and validate a protocol's structure (no file-system checks beyond reading it).

    Args:
        path: the protocol YAML.
        overrides: ``key.path=value`` strings applied before validation.

    Returns:
        The validated protocol.

    Raises:
        ConfigError: naming the file, line, key and fix for the first problem.
    """
    path = Path(path)
    loaded = load_yaml_file(path)
    if not isinstance(loaded.data, dict):
        raise ConfigError(
            f"{path}: a protocol must be a mapping of keys (models:, targets:, ...); see docs/protocols.md"
        )
    origins = {apply_override(loaded.data, item): item for item in overrides}
    lp = LoadedProtocol(Protocol.model_construct(), loaded, path, path.stem, origins)
    try:
        protocol = Protocol.model_validate(loaded.data)
    except ValidationError as exc:
        raise _from_validation_error(exc, lp) from None
    lp.protocol = protocol
    lp.name = protocol.name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    check_structure(lp)
    return lp


def _dataset_locs(p: Protocol) -> list[tuple[Loc, DatasetSpec]]:
    out: list[tuple[Loc, DatasetSpec]] = [(("targets", i), d) for i, d in enumerate(p.targets)]
    if p.training is not None:
        out += [(("training", "datasets", i), d) for i, d in enumerate(p.training.datasets)]
    return out


def _check_unique(lp: LoadedProtocol, items: list[tuple[Loc, str]], what: str) -> None:
    seen: dict[str, Loc] = {}
    for loc, name in items:
        if name in seen:
            raise lp.error(
                (*loc, "name"),
                f"{what} name {name!r} is used twice (also at {lp.where((*seen[name], 'name'))}); "
                f"give each {what} its own name",
            )
        seen[name] = loc


def _check_registered(lp: LoadedProtocol, loc: Loc, value: str, known: list[str], what: str) -> None:
    if value not in known:
        raise lp.error(loc, f"unknown {what} {value!r}{suggest(value, known)} (known: {', '.join(known)})")


def check_structure(lp: LoadedProtocol) -> None:
    """Cross-references, unique names, registries and the static leakage guard.

    Raises:
        ConfigError: for the first problem found.
    """
    from medad.models import ModelKind

    p = lp.protocol
    _check_unique(lp, [(("models", i), m.name) for i, m in enumerate(p.models)], "model")
    _check_unique(lp, [(("targets", i), d.name) for i, d in enumerate(p.targets)], "target")
    if p.training is not None:
        train_items = [(("training", "datasets", i), d.name) for i, d in enumerate(p.training.datasets)]
        _check_unique(lp, train_items, "training dataset")
        if len(set(p.training.seeds)) != len(p.training.seeds):
            raise lp.error(("training", "seeds"), f"seeds {p.training.seeds} repeat a seed; list each seed once")

    kinds = registry.dataset_kinds()
    layouts = registry.synthetic_layouts()
    for name, source in p.synthetic.items():
        _check_registered(lp, ("synthetic", name, "layout"), source.layout, layouts, "synthetic layout")
    for loc, spec in _dataset_locs(p):
        _check_registered(lp, (*loc, "kind"), spec.kind, kinds, "dataset kind")
        if (spec.root is None) == (spec.synthetic is None):
            raise lp.error(loc, f"dataset {spec.name!r} needs exactly one of `root:` (a folder) or `synthetic:`")
        if spec.synthetic is not None and spec.synthetic not in p.synthetic:
            raise lp.error(
                (*loc, "synthetic"),
                f"no synthetic source named {spec.synthetic!r}{suggest(spec.synthetic, list(p.synthetic))}; "
                f"declare it under `synthetic:`",
            )

    names = [m.name for m in p.models]
    model_names = registry.model_names()
    dataset_names = {d.name for _, d in _dataset_locs(p)} | {d.kind for _, d in _dataset_locs(p)}
    for i, m in enumerate(p.models):
        _check_registered(lp, ("models", i, "model"), m.model, model_names, "model")
        if registry.model_kind(m.model) is not ModelKind.TRAINABLE:
            if m.checkpoint is not None:
                raise lp.error(
                    ("models", i, "checkpoint"),
                    f"model {m.name!r} ({m.model}) is training-free and loads no checkpoint; remove `checkpoint:`",
                )
        elif m.checkpoint is None and p.training is None:
            raise lp.error(
                ("models", i),
                f"model {m.name!r} has no `checkpoint:` and the protocol has no `training:` section; add one of them",
            )
        for word_key in m.class_words:
            if word_key not in dataset_names:
                raise lp.error(
                    ("models", i, "class_words", word_key),
                    f"{word_key!r} is not a dataset name or kind of this protocol"
                    f"{suggest(word_key, sorted(dataset_names))}",
                )
    for i, pair in enumerate(p.statistics.comparisons):
        for j, name in enumerate(pair):
            if name not in names:
                raise lp.error(
                    ("statistics", "comparisons", i, j),
                    f"no model named {name!r}{suggest(name, names)} (models: {', '.join(names)})",
                )
        if pair[0] == pair[1]:
            raise lp.error(("statistics", "comparisons", i), f"compares model {pair[0]!r} with itself")
    metric_names = registry.metric_names() if p.metrics else []
    for i, metric in enumerate(p.metrics):
        _check_registered(lp, ("metrics", i), metric, metric_names, "metric")
    for i, model_spec in enumerate(p.models):
        _check_model(lp, i, model_spec)
    formats = registry.export_formats() if p.exports else []
    for i, e in enumerate(p.exports):
        for j, fmt in enumerate(e.formats):
            _check_registered(lp, ("exports", i, "formats", j), fmt, formats, "export format")
        try:
            registry.check_threshold(e.threshold)
        except ExportError as exc:
            raise lp.error(("exports", i, "threshold"), str(exc).replace("--threshold ", "threshold: ")) from None
        for j, m in enumerate(e.models):
            if m not in names:
                raise lp.error(("exports", i, "models", j), f"no model named {m!r}{suggest(m, names)}")
    if p.executor is not None and p.device.startswith("cuda") and p.executor.gpus_per_node == 0:
        raise lp.error(
            ("executor", "gpus_per_node"),
            f"device is {p.device!r} but the executor's jobs get no GPU; set executor.gpus_per_node to 1 or more "
            "(or device: auto / cpu)",
        )
    check_static_overlap(lp)


def _check_model(lp: LoadedProtocol, i: int, m: ModelSpec) -> None:
    """What building the model would refuse only after the data stage: unknown options, an image size that is
    not a multiple of the patch size, layers beyond the backbone's depth, empty class words."""
    for word_key, words in m.class_words.items():
        for class_name, word in words.items():
            if not word.strip():
                raise lp.error(
                    ("models", i, "class_words", word_key, class_name),
                    f"the class word of {class_name!r} is empty; write the words the text prompt should use "
                    f"(e.g. {class_name.replace('_', ' ')!r}) or remove the entry",
                )
    if m.checkpoint is not None:  # a checkpoint's own config builds the model
        return
    kwargs: dict[str, Any] = {**m.options, "compat": m.compat, "image_score": m.image_score}
    backbone, text = m.weights.backbone, m.weights.text
    if backbone is not None and backbone.id is not None:
        kwargs["backbone"] = backbone.id
    if backbone is not None and backbone.file is not None:
        kwargs["backbone_weights"] = backbone.file
    if text is not None and (text.file or text.id):
        kwargs["text_weights"] = text.file or text.id
    try:
        registry.check_model_options(m.model, kwargs)
    except ConfigError as exc:
        key = next((k for k in m.options if f"{k} " in f"{exc} " or f"{k}=" in str(exc)), None)
        loc: Loc = ("models", i, "options", key) if key is not None else ("models", i)
        raise lp.error(loc, f"model {m.name!r} ({m.model}): {exc}") from None


def check_data_settings(lp: LoadedProtocol, datasets: Mapping[str, Any]) -> None:
    """Checks that need the datasets' manifests, run right after the data stage, before any training.

    Every class named under a model's ``class_words`` must be a class of a dataset it is keyed by (a typo
    would silently leave the default word in place).

    Args:
        lp: the protocol.
        datasets: dataset name -> its data (with ``kind`` and ``manifest``).

    Raises:
        ConfigError: naming the key and the classes that exist.
    """
    for i, m in enumerate(lp.protocol.models):
        for word_key, words in m.class_words.items():
            matching = [d for name, d in datasets.items() if word_key in (name, d.kind)]
            if not matching:
                continue
            classes = sorted({str(c) for d in matching for c in d.manifest["class_name"].dropna().unique()})
            for class_name in words:
                if class_name not in classes:
                    raise lp.error(
                        ("models", i, "class_words", word_key, class_name),
                        f"{word_key!r} has no class {class_name!r}{suggest(class_name, classes)} "
                        f"(its classes: {', '.join(classes)}); fix the class name",
                    )


def dataset_identity(lp: LoadedProtocol, spec: DatasetSpec) -> tuple[str, str]:
    """(kind, resolved root or ``synthetic:<name>``); unset variables stay as written."""
    if spec.synthetic is not None:
        return spec.kind, f"synthetic:{spec.synthetic}"
    assert spec.root is not None
    return spec.kind, str(resolve_path(spec.root, lp.base_dir, strict=False))


def check_static_overlap(lp: LoadedProtocol) -> None:
    """Leakage guard, static part: a training dataset with the same kind and root as a target.

    Raises:
        ConfigError: unless the protocol sets ``intended_overlap: true``.
    """
    p = lp.protocol
    if p.training is None or p.intended_overlap:
        return
    targets = {dataset_identity(lp, d): (i, d) for i, d in enumerate(p.targets)}
    for i, d in enumerate(p.training.datasets):
        ident = dataset_identity(lp, d)
        if ident in targets:
            ti, target = targets[ident]
            raise lp.error(
                ("training", "datasets", i),
                f"training dataset {d.name!r} is the same data as target {target.name!r} "
                f"({ident[0]} at {ident[1]}; target at {lp.where(('targets', ti))}): the evaluation would not be "
                f"zero-shot. Use other training data, or set `intended_overlap: true` to allow it (the report "
                f"states it)",
            )


# ---------------------------------------------------------------- resources


@dataclass
class Missing:
    """One missing resource: where it is referenced, what is missing, and where the docs say to get it."""

    where: str
    key: str
    what: str
    hint: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.what}; {self.hint}"


def _check_path(lp: LoadedProtocol, loc: Loc, value: str, what: str, hint: str, out: list[Missing]) -> None:
    unset = [v for v in env_vars_in(value) if v not in os.environ]
    if unset:
        out.append(
            Missing(
                lp.where(loc),
                format_loc(loc),
                f"{what} {value!r} uses ${{{unset[0]}}}, which is not set",
                f"export {unset[0]}=/path/to/folder; {hint}",
            )
        )
        return
    path = resolve_path(value, lp.base_dir)
    if not path.exists():
        out.append(Missing(lp.where(loc), format_loc(loc), f"{what} {path} does not exist", hint))


def _dataset_hint(spec: DatasetSpec) -> str:
    return f"get the {spec.kind} dataset as described in {DATASETS_DOC}#{spec.kind}"


def _model_missing(lp: LoadedProtocol, i: int, m: ModelSpec, out: list[Missing]) -> None:
    hint = f"download the weights as described in {MODELS_DOC}"
    for role in ("backbone", "text"):
        source = getattr(m.weights, role)
        if source is None:
            continue
        loc: Loc = ("models", i, "weights", role)
        if source.file is not None:
            _check_path(lp, (*loc, "file"), source.file, f"{role} weights file", hint, out)
        elif source.id is None:
            out.append(Missing(lp.where(loc), format_loc(loc), f"{role} weights name neither `id:` nor `file:`", hint))
    if m.checkpoint is not None:
        _check_path(
            lp,
            ("models", i, "checkpoint"),
            m.checkpoint,
            "checkpoint folder",
            "train one with a protocol that has a `training:` section, or fix the path",
            out,
        )


def check_resources(lp: LoadedProtocol, *, output: bool = True) -> list[Missing]:
    """Everything the protocol needs from disk that is missing (data roots, weight files, checkpoints), and an
    ``output:`` whose variables are unset or that cannot be a writable folder (unless ``output`` is off: the
    run was given ``--out``).

    Synthetic datasets are written by the run, so they are never missing.
    """
    out: list[Missing] = []
    if output:
        _output_missing(lp, out)
    for loc, spec in _dataset_locs(lp.protocol):
        if spec.root is not None:
            _check_path(lp, (*loc, "root"), spec.root, f"{spec.name} root", _dataset_hint(spec), out)
    for i, m in enumerate(lp.protocol.models):
        _model_missing(lp, i, m, out)
    return out


def _output_missing(lp: LoadedProtocol, out: list[Missing]) -> None:
    loc: Loc = ("output",)
    value = lp.protocol.output
    unset = [v for v in env_vars_in(value) if v not in os.environ]
    if unset:
        fix = f"export {unset[0]}=/path/to/folder, or give `medad run --out DIR`"
        out.append(Missing(lp.where(loc), "output", f"{value!r} uses ${{{unset[0]}}}, which is not set", fix))
        return
    try:
        check_output_folder(resolve_path(value, lp.base_dir), "folder", "")
    except OutputPathError as exc:
        what = str(exc).removeprefix("folder ").rstrip("; ")
        out.append(Missing(lp.where(loc), "output", what, "set `output:` to a folder, or give `medad run --out DIR`"))


def check_output(lp: LoadedProtocol, out: str | Path | None, resolved: Mapping[str, Any]) -> Path:
    """The run's output folder (``--out`` or ``output:``), refused before any work when it cannot be written.

    Raises:
        OutputPathError: it is a file, lies under one, or cannot be written.
    """
    if out is None:
        return check_output_folder(resolved["output"], f"{lp.where(('output',))}: output:", "set another folder")
    return check_output_folder(Path(out).resolve(), "--out", "give a folder path (one that exists or can be made)")


def require_resources(lp: LoadedProtocol, *, output: bool = True) -> None:
    """Raise one ConfigError listing every missing resource (nothing when all exist)."""
    missing = check_resources(lp, output=output)
    if len(missing) == 1:
        raise ConfigError(str(missing[0]))
    if missing:
        lines = "\n  ".join(str(m) for m in missing)
        raise ConfigError(f"protocol {lp.path} cannot run; {len(missing)} missing:\n  {lines}")


# ---------------------------------------------------------------- resolution and hashing


def resolved_dict(lp: LoadedProtocol) -> dict[str, Any]:
    """The protocol with defaults filled in, the name set and every path made absolute (variables expanded).

    Raises:
        ConfigError: when a referenced environment variable is unset.
    """
    data = lp.protocol.model_dump(mode="json")
    data["name"] = lp.name
    data["output"] = str(resolve_path(data["output"], lp.base_dir, strict=False))  # checked by require_resources
    datasets = data["targets"] + (data["training"]["datasets"] if data["training"] else [])
    for d in datasets:
        if d["root"] is not None:
            d["root"] = str(resolve_path(d["root"], lp.base_dir))
    for m in data["models"]:
        if m["checkpoint"] is not None:
            m["checkpoint"] = str(resolve_path(m["checkpoint"], lp.base_dir))
        for source in m["weights"].values():
            if source is not None and source["file"] is not None:
                source["file"] = str(resolve_path(source["file"], lp.base_dir))
    if data["executor"] is not None and data["executor"]["folder"] is not None:
        data["executor"]["folder"] = str(resolve_path(data["executor"]["folder"], lp.base_dir))
    return data


def config_hash(resolved: dict[str, Any]) -> str:
    """The run's config hash: the resolved protocol without its output folder (``--out`` does not change it) and
    without ``executor`` (where the jobs run does not change the results)."""
    return hash_config({k: v for k, v in resolved.items() if k not in ("output", "executor")})


def validate_protocol(
    path: str | Path, *, structure_only: bool = False, overrides: list[str] | tuple[str, ...] = ()
) -> LoadedProtocol:
    """Check a protocol without running it (what ``medad validate`` does).

    Args:
        path: the protocol YAML.
        structure_only: check only the YAML itself (keys, types, names, registries, static leakage guard);
            otherwise also that every data root, weight file and checkpoint exists.
        overrides: ``key.path=value`` settings applied first.

    Returns:
        The validated protocol.

    Raises:
        ConfigError: the first structural problem, or one message listing every missing resource.
    """
    lp = load_protocol(path, overrides)
    if not structure_only:
        require_resources(lp)
    return lp
