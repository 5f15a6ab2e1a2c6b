"""Resolution: the validated protocol with its name set and every path made absolute, as a typed object whose
dump is what a run records (``protocol.resolved.yaml``) and hashes (the run folder's config hash).

The dump of :class:`ResolvedProtocol` is byte-identical to the plain dict the runner hashed before resolution
was typed (pinned by ``tests/protocols/test_resolved_golden.py``), so existing run folders and stage stores
keep their keys.
"""

from __future__ import annotations

from typing import Any

import yaml

from medad.protocols.loading import LoadedProtocol
from medad.protocols.paths import resolve_path
from medad.protocols.schema import (
    RELEASE_OPTIONS,
    DatasetSpec,
    ExecutorSpec,
    ModelSpec,
    ModelTraining,
    Name,
    Protocol,
    TrainingSpec,
    WeightSource,
)
from medad.protocols.yamlio import shareable_protocol
from medad.utils.io import hash_config

UNHASHED = ("output", "executor")
"""Keys the config hash leaves out: where the outputs go (``--out``) and where the jobs run do not change results."""


class ResolvedProtocol(Protocol):
    """A protocol ready to run: ``name`` set (``name:`` or the file stem), ``output``, data roots, checkpoints,
    weight files and the executor folder absolute, environment variables expanded."""

    name: Name

    def dump(self) -> dict[str, Any]:
        """The plain (JSON) form: what ``protocol.resolved.yaml`` holds and the config hash is computed from
        (``evaluation_volume_score`` only when not ``max``, so protocols without it keep their hash)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        if data.get("evaluation_volume_score") == "max":
            data.pop("evaluation_volume_score")
        return data

    def model_index(self, name: str) -> int:
        """The position of the model named ``name`` in ``models``."""
        return [m.name for m in self.models].index(name)

    def training_for(self, spec: ModelSpec) -> TrainingSpec | None:
        """How the model ``spec`` is trained: its own ``training:`` (already merged with the protocol's; its
        ``datasets: null`` are the protocol's) or the protocol's ``training:``; ``None`` when neither exists."""
        if spec.training is None:
            return self.training
        values = {k: getattr(spec.training, k) for k in TrainingSpec.model_fields}
        if values["datasets"] is None and self.training is not None:
            values["datasets"] = self.training.datasets
        return TrainingSpec.model_validate(values)


def _dataset(spec: DatasetSpec, lp: LoadedProtocol) -> DatasetSpec:
    update: dict[str, Any] = {}
    if spec.root is not None:
        update["root"] = str(resolve_path(spec.root, lp.base_dir))
    refs = spec.references
    if refs is not None and refs.source.folder is not None:  # a reference folder, resolved like a root
        source = refs.source.model_copy(update={"folder": str(resolve_path(refs.source.folder, lp.base_dir))})
        update["references"] = refs.model_copy(update={"source": source})
    return spec.model_copy(update=update) if update else spec


def _source(source: WeightSource | None, lp: LoadedProtocol) -> WeightSource | None:
    if source is None or source.file is None:
        return source
    return source.model_copy(update={"file": str(resolve_path(source.file, lp.base_dir))})


def merged_training(own: ModelTraining, protocol: TrainingSpec | None) -> dict[str, Any]:
    """A model's training keys: the protocol's ``training:`` (its defaults without one), then the keys the model
    sets itself; a required key neither gives is ``None``."""
    fields = TrainingSpec.model_fields
    if protocol is not None:
        merged = {k: getattr(protocol, k) for k in fields}
    else:
        merged = {k: None if f.is_required() else f.get_default(call_default_factory=True) for k, f in fields.items()}
    return merged | {k: getattr(own, k) for k in own.model_fields_set}


def _training(spec: ModelSpec, lp: LoadedProtocol) -> ModelTraining | None:
    """A model's own training section merged with the protocol's, its dataset roots resolved."""
    if spec.training is None:
        return None
    merged = merged_training(spec.training, lp.protocol.training)
    own = spec.training.datasets  # none of its own: ``null``, the protocol's (resolved there)
    merged["datasets"] = None if own is None else [_dataset(d, lp) for d in own]
    return ModelTraining.model_validate(merged)


def _model(spec: ModelSpec, lp: LoadedProtocol) -> ModelSpec:
    update: dict[str, Any] = {"training": _training(spec, lp)}
    releases = {k: str(resolve_path(v, lp.base_dir)) for k, v in spec.options.items()
                if k in RELEASE_OPTIONS and isinstance(v, str)}  # fmt: skip
    if releases:  # only then: other models keep their resolved form
        update["options"] = spec.options | releases
    if spec.checkpoint is not None:
        update["checkpoint"] = str(resolve_path(spec.checkpoint, lp.base_dir))
    roles = type(spec.weights).model_fields
    update["weights"] = spec.weights.model_copy(update={r: _source(getattr(spec.weights, r), lp) for r in roles})
    return spec.model_copy(update=update)


def _executor(spec: ExecutorSpec | None, lp: LoadedProtocol) -> ExecutorSpec | None:
    if spec is None or spec.folder is None:
        return spec
    return spec.model_copy(update={"folder": str(resolve_path(spec.folder, lp.base_dir))})


def resolve_protocol(lp: LoadedProtocol) -> ResolvedProtocol:
    """The protocol with defaults filled in, the name set and every path made absolute (variables expanded).

    This is the only place a protocol's paths are resolved (:attr:`LoadedProtocol.resolved` caches it); the
    structure and resource checks check what it resolved. A variable that is not set stays as written
    (``${MEDAD_DATA}``): :func:`~medad.protocols.resources.require_resources` lists every one before a run.
    """
    p = lp.protocol
    output = str(resolve_path(p.output, lp.base_dir))
    targets = [_dataset(d, lp) for d in p.targets]
    training = None
    if p.training is not None:
        training = p.training.model_copy(update={"datasets": [_dataset(d, lp) for d in p.training.datasets]})
    models = [_model(m, lp) for m in p.models]
    fields = dict(p) | {
        "name": lp.name,
        "output": output,
        "targets": targets,
        "training": training,
        "models": models,
        "executor": _executor(p.executor, lp),
    }
    return ResolvedProtocol.model_validate(fields)


def config_hash(resolved: ResolvedProtocol) -> str:
    """The run's config hash: the resolved protocol's dump without :data:`UNHASHED` keys."""
    return hash_config({k: v for k, v in resolved.dump().items() if k not in UNHASHED})


def resolved_yaml(resolved: ResolvedProtocol, *, shareable: bool) -> str:
    """``protocol.resolved.yaml``: the whole dump (``private/``), or with every path a placeholder (shareable)."""
    data = resolved.dump()
    return yaml.safe_dump(shareable_protocol(data) if shareable else data, sort_keys=False, allow_unicode=True)
