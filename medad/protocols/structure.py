"""Structure checks of a validated protocol: unique names, cross-references, registered names, model options
and the static leakage guard; and, right after the data stage, the checks that need the manifests.

Each raises a :class:`~medad.errors.ConfigError` naming the file, line, key and fix of the first problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medad.errors import ConfigError, ExportError
from medad.protocols import registry
from medad.protocols.messages import suggest
from medad.protocols.schema import RELEASE_OPTIONS, DatasetSpec, ModelSpec, Protocol, TrainingSpec
from medad.protocols.yamlio import Loc

if TYPE_CHECKING:
    from medad.protocols.loading import LoadedProtocol


def dataset_locs(p: Protocol) -> list[tuple[Loc, DatasetSpec]]:
    """Every dataset of the protocol (targets, training datasets, then the models' own training datasets) with
    its location."""
    out: list[tuple[Loc, DatasetSpec]] = [(("targets", i), d) for i, d in enumerate(p.targets)]
    if p.training is not None:
        out += [(("training", "datasets", i), d) for i, d in enumerate(p.training.datasets)]
    for i, m in enumerate(p.models):
        if m.training is not None and m.training.datasets is not None:
            out += [(("models", i, "training", "datasets", j), d) for j, d in enumerate(m.training.datasets)]
    return out


def _check_model_datasets(lp: LoadedProtocol) -> None:
    """A model's own training datasets have unique names; a name also used elsewhere must be the same dataset."""
    p = lp.protocol
    shared = [(loc, d) for loc, d in dataset_locs(p) if loc[0] != "models"]
    for i, m in enumerate(p.models):
        if m.training is None or m.training.datasets is None:
            continue
        own = [(("models", i, "training", "datasets", j), d) for j, d in enumerate(m.training.datasets)]
        _check_unique(lp, [(loc, d.name) for loc, d in own], "training dataset")
        for loc, d in own:
            other = next(((o, x) for o, x in shared if x.name == d.name and x != d), None)
            if other is not None:
                raise lp.error(
                    (*loc, "name"),
                    f"dataset name {d.name!r} is also used at {lp.where(other[0])} for other data; give it its "
                    f"own name, or write the same kind, root and options there",
                )
            shared.append((loc, d))


def _check_unique(lp: LoadedProtocol, items: Sequence[tuple[Loc, str]], what: str) -> None:
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


def _check_names(lp: LoadedProtocol) -> None:
    """Model, target and training dataset names are unique; training seeds do not repeat."""
    p = lp.protocol
    _check_unique(lp, [(("models", i), m.name) for i, m in enumerate(p.models)], "model")
    _check_unique(lp, [(("targets", i), d.name) for i, d in enumerate(p.targets)], "target")
    if p.training is not None:
        train_items = [(("training", "datasets", i), d.name) for i, d in enumerate(p.training.datasets)]
        _check_unique(lp, train_items, "training dataset")
        if len(set(p.training.seeds)) != len(p.training.seeds):
            raise lp.error(("training", "seeds"), f"seeds {p.training.seeds} repeat a seed; list each seed once")


def _check_datasets(lp: LoadedProtocol) -> None:
    """Synthetic layouts and dataset kinds are registered; each dataset names one root or synthetic source."""
    p = lp.protocol
    kinds = registry.dataset_kinds()
    layouts = registry.synthetic_layouts()
    for name, source in p.synthetic.items():
        _check_registered(lp, ("synthetic", name, "layout"), source.layout, layouts, "synthetic layout")
    for loc, spec in dataset_locs(p):
        _check_registered(lp, (*loc, "kind"), spec.kind, kinds, "dataset kind")
        if (spec.root is None) == (spec.synthetic is None):
            raise lp.error(loc, f"dataset {spec.name!r} needs exactly one of `root:` (a folder) or `synthetic:`")
        if spec.synthetic is not None and spec.synthetic not in p.synthetic:
            raise lp.error(
                (*loc, "synthetic"),
                f"no synthetic source named {spec.synthetic!r}{suggest(spec.synthetic, list(p.synthetic))}; "
                f"declare it under `synthetic:`",
            )


def _check_models(lp: LoadedProtocol) -> None:
    """Models are registered, trained or loaded as their kind allows, and key class words by known datasets."""
    from medad.models import ModelKind

    p = lp.protocol
    model_names = registry.model_names()
    dataset_names = {d.name for _, d in dataset_locs(p)} | {d.kind for _, d in dataset_locs(p)}
    for i, m in enumerate(p.models):
        _check_registered(lp, ("models", i, "model"), m.model, model_names, "model")
        if registry.model_kind(m.model) is not ModelKind.TRAINABLE:
            for key in ("checkpoint", "training"):
                if getattr(m, key) is not None:
                    raise lp.error(
                        ("models", i, key),
                        f"model {m.name!r} ({m.model}) is training-free: it loads no checkpoint and is not trained; "
                        f"remove `{key}:`",
                    )
        elif m.checkpoint is None and p.training is None and m.training is None:
            raise lp.error(
                ("models", i),
                f"model {m.name!r} has no `checkpoint:` and the protocol has no `training:` section; add one of them",
            )
        else:
            _check_model_training(lp, i, m)
        for word_key in m.class_words:
            if word_key not in dataset_names:
                raise lp.error(
                    ("models", i, "class_words", word_key),
                    f"{word_key!r} is not a dataset name or kind of this protocol"
                    f"{suggest(word_key, sorted(dataset_names))}",
                )


def _check_model_training(lp: LoadedProtocol, i: int, m: ModelSpec) -> None:
    """A model's own ``training:`` is used (trainable, no checkpoint), complete with the protocol's, and pins no
    score epoch beyond its epochs."""
    from medad.protocols.resolve import merged_training

    if m.training is not None and m.checkpoint is not None:
        raise lp.error(
            ("models", i, "training"),
            f"model {m.name!r} loads its `checkpoint:` and is not trained; remove its `training:` or the checkpoint",
        )
    p = lp.protocol
    merged = merged_training(m.training, p.training) if m.training is not None else None
    if merged is not None:
        missing = [k for k, v in merged.items() if v is None and TrainingSpec.model_fields[k].is_required()]
        if missing:
            raise lp.error(
                ("models", i, "training"),
                f"model {m.name!r}: `training:` lacks {', '.join(missing)} and the protocol has no `training:` "
                "section to take them from; add them here or add a top-level `training:`",
            )
    values = merged
    if values is None and p.training is not None:
        values = {k: getattr(p.training, k) for k in TrainingSpec.model_fields}
    if merged is not None and merged["seeds"] is not None and len(set(merged["seeds"])) != len(merged["seeds"]):
        raise lp.error(("models", i, "training", "seeds"), f"seeds {merged['seeds']} repeat a seed; list each once")
    if values is not None and values["score_epoch"] is not None and values["score_epoch"] > values["epochs"]:
        own = m.training is not None and "score_epoch" in m.training.model_fields_set
        loc: Loc = ("models", i, "training", "score_epoch") if own else ("training", "score_epoch")
        raise lp.error(
            loc,
            f"model {m.name!r} would score with epoch {values['score_epoch']} but trains {values['epochs']} "
            f"epoch(s); pin an epoch from 1 to {values['epochs']} or train longer",
        )


REFERENCE_WORDS = (
    "class_words apply to clean models only: in reference mode the released code's words are used (docs/models.md)"
)


def _effective(lp: LoadedProtocol, i: int, m: ModelSpec) -> dict[str, Any]:
    """What decides a model's results: its spec without the name, with the checkpoint path resolved and without
    the class words a reference model ignores."""
    spec = m.model_dump(mode="json", exclude={"name"})
    spec["checkpoint"] = lp.resolved.models[i].checkpoint
    if m.compat == "reference":
        spec.pop("class_words")
    return spec


def _model_origin(lp: LoadedProtocol, i: int) -> str:
    """Where model ``i`` got its settings: the ``--set`` options that changed it, else its line in the file."""
    changed = [f"--set {text}" for loc, text in lp.overrides.items() if loc[:2] == ("models", i)]
    return ", ".join(changed) or lp.yaml.where(("models", i))


def _check_distinct_models(lp: LoadedProtocol) -> None:
    """Refuse two models that would give identical results (e.g. ``--set models.clean.compat=reference`` in a
    clean-vs-reference study: reference mode ignores the clean model's class words); warn that a reference
    model's class words are not used."""
    from medad.errors import warn_once

    models = lp.protocol.models
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        key = repr(sorted(_effective(lp, i, m).items()))
        if key in seen:
            first = models[seen[key]]
            words = f"; {REFERENCE_WORDS}" if any(x.compat == "reference" and x.class_words for x in (first, m)) else ""
            raise ConfigError(
                f"models {first.name!r} ({_model_origin(lp, seen[key])}) and {m.name!r} ({_model_origin(lp, i)}) are "
                f"the same model ({m.model}, compat {m.compat}) and would give identical results{words}; change one "
                "of them (compat, image_score, options, weights, checkpoint) or drop one"
            )
        seen[key] = i
    for i, m in enumerate(models):
        if m.compat == "reference" and m.class_words:
            warn_once(f"{_model_origin(lp, i)}: model {m.name!r}: {REFERENCE_WORDS}; its class_words are not used")


def _check_comparisons_and_metrics(lp: LoadedProtocol) -> None:
    """Compared models exist and differ; metrics are registered."""
    p = lp.protocol
    names = [m.name for m in p.models]
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


def _check_exports(lp: LoadedProtocol) -> None:
    """Export formats are registered, thresholds parse, exported models exist."""
    p = lp.protocol
    names = [m.name for m in p.models]
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


def _check_executor(lp: LoadedProtocol) -> None:
    """A CUDA device needs executor jobs with a GPU."""
    p = lp.protocol
    if p.executor is not None and p.device.startswith("cuda") and p.executor.gpus_per_node == 0:
        raise lp.error(
            ("executor", "gpus_per_node"),
            f"device is {p.device!r} but the executor's jobs get no GPU; set executor.gpus_per_node to 1 or more "
            "(or device: auto / cpu)",
        )


def check_structure(lp: LoadedProtocol) -> None:
    """Cross-references, unique names, registries and the static leakage guard.

    Raises:
        ConfigError: for the first problem found.
    """
    _check_names(lp)
    _check_model_datasets(lp)
    _check_datasets(lp)
    _check_models(lp)
    _check_distinct_models(lp)
    _check_comparisons_and_metrics(lp)
    for i, model_spec in enumerate(lp.protocol.models):
        _check_model(lp, i, model_spec)
    _check_exports(lp)
    _check_executor(lp)
    check_static_overlap(lp)
    from medad.protocols.references import check_references_structure

    check_references_structure(lp)


def _check_model(lp: LoadedProtocol, i: int, m: ModelSpec) -> None:
    """What building the model would refuse only after the data stage: unknown options, an image size that is
    not a multiple of the patch size, layers beyond the backbone's depth, empty class words or ones longer than the
    text encoder reads."""
    for word_key, words in m.class_words.items():
        for class_name, word in words.items():
            if not word.strip():
                raise lp.error(
                    ("models", i, "class_words", word_key, class_name),
                    f"the class word of {class_name!r} is empty; write the words the text prompt should use "
                    f"(e.g. {class_name.replace('_', ' ')!r}) or remove the entry",
                )
            if (problem := registry.class_word_problem(word)) is not None:
                raise lp.error(("models", i, "class_words", word_key, class_name), problem)
    if m.checkpoint is not None:  # a checkpoint's own config builds the model
        return
    try:
        registry.check_model_options(m.model, m.create_kwargs())
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


def dataset_identity(spec: DatasetSpec, resolved: DatasetSpec) -> tuple[str, str]:
    """(kind, resolved root or ``synthetic:<name>``) of a dataset, given as written and as resolved; unset
    variables stay as written."""
    if spec.synthetic is not None:
        return spec.kind, f"synthetic:{spec.synthetic}"
    assert resolved.root is not None
    return spec.kind, resolved.root


@dataclass(frozen=True)
class Overlap:
    """A target that a model's training data include.

    Attributes:
        target: the target's name.
        trained_on: the dataset as the mark names it (``CVC-ColonDB``).
        source: what holds it (``training dataset 'polyps'``, ``the release checkpoint of release_weights``).
        loc: where the protocol says so.
    """

    target: str
    trained_on: str
    source: str
    loc: Loc


def _same_data(d: DatasetSpec, rd: DatasetSpec, t: DatasetSpec, rt: DatasetSpec) -> bool:
    """Two datasets hold the same data: the same kind and root (or synthetic source), or the same public dataset
    (kind ``colondb``, ...) from two real folders (another split or copy of it)."""
    from medad.models.release_data import RELEASE_DATASETS

    if dataset_identity(d, rd) == dataset_identity(t, rt):
        return True
    return d.kind == t.kind and d.kind in RELEASE_DATASETS and d.synthetic is None and t.synthetic is None


def _trained_datasets(lp: LoadedProtocol, i: int) -> list[tuple[Loc, DatasetSpec, DatasetSpec]]:
    """What model ``i`` trains on in this protocol (as written, as resolved, where): its own ``training.datasets``
    or the protocol's; nothing for a training-free model or one that loads a checkpoint."""
    from medad.models import ModelKind

    p, r, m = lp.protocol, lp.resolved, lp.protocol.models[i]
    if m.checkpoint is not None or registry.model_kind(m.model) is not ModelKind.TRAINABLE:
        return []
    own, resolved_own = m.training.datasets if m.training else None, r.models[i].training
    if own is not None and resolved_own is not None and resolved_own.datasets is not None:
        return [(("models", i, "training", "datasets", j), d, rd) for j, (d, rd) in
                enumerate(zip(own, resolved_own.datasets, strict=True))]  # fmt: skip
    if p.training is None or r.training is None:
        return []
    pairs = zip(p.training.datasets, r.training.datasets, strict=True)
    return [(("training", "datasets", j), d, rd) for j, (d, rd) in enumerate(pairs)]


def model_overlaps(lp: LoadedProtocol, i: int) -> list[Overlap]:
    """Every target that model ``i``'s training data include: a dataset it trains on here (:func:`_same_data`),
    or the data a release checkpoint it loads was trained on (a converted file's record, else its name, else the
    release's default: ``medad.models.weights_files.release_training_data``)."""
    from medad.evaluation.paper_view import DATASET_NAMES
    from medad.models.release_data import release_training_data

    p, r = lp.protocol, lp.resolved
    targets = list(zip(p.targets, r.targets, strict=True))
    out = []
    for loc, d, rd in _trained_datasets(lp, i):
        out += [Overlap(t.name, DATASET_NAMES.get(t.kind, d.name), f"training dataset {d.name!r}", loc)
                for t, rt in targets if _same_data(d, rd, t, rt)]  # fmt: skip
    for option, family in RELEASE_OPTIONS.items():
        value = r.models[i].options.get(option)  # resolved: absolute
        if not isinstance(value, str):
            continue
        data = release_training_data(value, family) or ()
        names = " + ".join(DATASET_NAMES.get(k, k) for k in data)
        out += [Overlap(t.name, DATASET_NAMES.get(t.kind, t.kind), f"the release checkpoint of {option} "
                        f"(trained on {names})", ("models", i, "options", option))
                for t, _ in targets if t.kind in data]  # fmt: skip
    return out


def not_zero_shot_marks(lp: LoadedProtocol, i: int) -> dict[str, str]:
    """Target name -> ``"trained on <dataset>"`` for every target model ``i``'s training data include."""
    marks: dict[str, str] = {}
    for overlap in model_overlaps(lp, i):
        marks.setdefault(overlap.target, f"trained on {overlap.trained_on}")
    return marks


def _check_model_overlap(lp: LoadedProtocol) -> None:
    """Leakage guard per model: refuse a model whose training data (its own, the protocol's or a release's)
    include a target, unless it sets ``allow_not_zero_shot`` (its results are then marked)."""
    for i, m in enumerate(lp.protocol.models):
        found = [] if m.allow_not_zero_shot else model_overlaps(lp, i)
        if found:
            o = found[0]
            raise lp.error(
                o.loc,
                f"model {m.name!r} is trained on {o.source}, which is the data of target {o.target!r} "
                f"({o.trained_on}): its results there would not be zero-shot. Train it without that data (or "
                f"load another checkpoint), or set `models[{i}].allow_not_zero_shot: true` to score it marked "
                f"'not zero-shot (trained on {o.trained_on})'",
            )


def check_static_overlap(lp: LoadedProtocol) -> None:
    """Leakage guard, static part: a training dataset with the same kind and root as a target, then per model
    (:func:`_check_model_overlap`).

    Raises:
        ConfigError: unless the protocol sets ``intended_overlap: true``.
    """
    p = lp.protocol
    if p.intended_overlap:
        return
    _check_shared_overlap(lp)
    _check_model_overlap(lp)


def _check_shared_overlap(lp: LoadedProtocol) -> None:
    """The protocol's ``training.datasets`` against the targets (same kind and root or synthetic source)."""
    p = lp.protocol
    if p.training is None:
        return
    resolved = lp.resolved
    assert resolved.training is not None
    pairs = zip(p.targets, resolved.targets, strict=True)
    targets = {dataset_identity(d, r): (i, d) for i, (d, r) in enumerate(pairs)}
    for i, (d, r) in enumerate(zip(p.training.datasets, resolved.training.datasets, strict=True)):
        ident = dataset_identity(d, r)
        if ident in targets:
            ti, target = targets[ident]
            raise lp.error(
                ("training", "datasets", i),
                f"training dataset {d.name!r} is the same data as target {target.name!r} "
                f"({ident[0]} at {ident[1]}; target at {lp.where(('targets', ti))}): the evaluation would not be "
                f"zero-shot. Use other training data, or set `intended_overlap: true` to allow it (the report "
                f"states it)",
            )
