"""A timm-style model registry that knows every model without importing torch: ``register_model``,
``list_models``, ``create_model``, ``model_kind``, ``check_model_config`` and ``describe_models`` (what ``medad
models`` prints).

A method is one module and a config module. The config module (torch-free, e.g.
:mod:`medad.models.ad_dinov3_config`) holds the config class and registers each model name with its kind, config
class, option defaults, description and the module of its factory (:func:`register_model`); so what a model is,
which options it takes, which weights it needs and whether its geometry fits are known without torch (``medad
validate``, ``medad models``). The method module (torch) builds it: its factory, a function named as the model,
is decorated with :func:`register_factory` and imported on first :func:`create_model`.
:mod:`medad.models.catalogue` imports every built-in config module.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from medad.errors import ConfigError
from medad.models.config import ModelConfig
from medad.models.kind import ModelKind

if TYPE_CHECKING:
    from medad.models.base import AnomalyModel

F = TypeVar("F", bound=Callable[..., "AnomalyModel"])
C = TypeVar("C", bound=ModelConfig)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model, as its config module declares it (nothing here imports torch).

    Attributes:
        name: The registry name (also the factory's function name).
        kind: Trainable, training-free or transductive.
        config_class: The config class of its options.
        module: The module that defines the factory (imported on :func:`create_model`).
        defaults: Options the factory sets unless given (a preset such as the tiny models').
        description: One line for ``medad models``.
        needs_references: It scores only against normal reference images (few-shot only, e.g. AnomalyDINO).
    """

    name: str
    kind: ModelKind
    config_class: type[ModelConfig]
    module: str
    defaults: Mapping[str, Any]
    description: str
    needs_references: bool = False


_REGISTRY: dict[str, ModelEntry] = {}
_FACTORIES: dict[str, tuple[Callable[..., AnomalyModel], type[AnomalyModel]]] = {}


def register_model(
    name: str,
    config_class: type[ModelConfig],
    *,
    kind: ModelKind,
    module: str,
    description: str,
    defaults: Mapping[str, Any] | None = None,
    needs_references: bool = False,
) -> None:
    """Register model ``name`` in the catalogue (called by a method's config module, without torch).

    Args:
        name: The registry name; ``module`` defines a factory function of that name.
        config_class: The model's config class.
        kind: Its :class:`ModelKind` (the factory's model class must have the same).
        module: The module of the factory, e.g. ``medad.models.ad_dinov3``.
        description: One line for ``medad models``.
        defaults: Options the factory applies unless given (:func:`model_config` applies them).
        needs_references: The model scores only against normal reference images (its class's ``needs_references``).

    Raises:
        ValueError: If another model is already registered under that name (a programming error).
    """
    entry = ModelEntry(name, kind, config_class, module, dict(defaults or {}), description, needs_references)
    if name in _REGISTRY and _REGISTRY[name] != entry:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = entry


def register_factory(model_class: type[AnomalyModel]) -> Callable[[F], F]:
    """Bind a registered model's factory (its ``__name__`` is the model name) to the class it builds.

    Raises:
        ValueError: the name is not in the catalogue, or the factory's module, the class's ``kind`` or its
            ``config_class`` differ from the catalogue entry (a programming error).
    """

    def bind(fn: F) -> F:
        entry = _entry(fn.__name__)
        found = (fn.__module__, model_class.kind, model_class.config_class, model_class.needs_references)
        if found != (entry.module, entry.kind, entry.config_class, entry.needs_references):
            raise ValueError(
                f"factory {fn.__name__!r} ({found}) does not match its catalogue entry "
                f"({(entry.module, entry.kind, entry.config_class, entry.needs_references)})"
            )
        _FACTORIES[fn.__name__] = (fn, model_class)
        return fn

    return bind


@functools.cache
def _load_catalogue() -> None:
    """Import every built-in config module once (each registers its models)."""
    importlib.import_module("medad.models.catalogue")


def list_models() -> list[str]:
    """Return the sorted names of every registered model."""
    _load_catalogue()
    return sorted(_REGISTRY)


def _entry(name: str) -> ModelEntry:
    """The catalogue entry of ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
    _load_catalogue()
    if name not in _REGISTRY:
        known = list_models()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}: known models are {', '.join(known)}{hint}")
    return _REGISTRY[name]


def _factory(name: str) -> tuple[Callable[..., AnomalyModel], type[AnomalyModel]]:
    """The factory of ``name`` and the class it builds (importing the method module: torch)."""
    entry = _entry(name)
    if name not in _FACTORIES:
        importlib.import_module(entry.module)
    if name not in _FACTORIES:
        raise ValueError(f"{entry.module} defines no factory of model {name!r} decorated with register_factory")
    return _FACTORIES[name]


def model_class(name: str) -> type[AnomalyModel]:
    """The class the registered model ``name`` is built as (imports its module, hence torch)."""
    return _factory(name)[1]


def model_kind(name: str) -> ModelKind:
    """Whether the registered model ``name`` is trainable, training-free or transductive (without torch)."""
    return _entry(name).kind


def model_needs_references(name: str) -> bool:
    """Whether the registered model ``name`` scores only against normal reference images (without torch)."""
    return _entry(name).needs_references


def model_config(name: str, config_class: type[C], **cfg: Any) -> C:
    """The validated config of ``create_model(name, **cfg)``: the registered defaults, then ``cfg``.

    Args:
        name: A registered name.
        config_class: The config class the caller expects (the model class's ``config_class``).
        **cfg: Model options.

    Raises:
        ConfigError: an unknown name, an unknown option (with the closest valid one) or a bad value.
    """
    entry = _entry(name)
    config = entry.config_class.from_kwargs(**{**entry.defaults, **cfg})
    if not isinstance(config, config_class):
        raise TypeError(f"model {name!r} is configured by {type(config).__name__}, not {config_class.__name__}")
    return config


def check_model_config(name: str, **cfg: Any) -> ModelConfig:
    """Check ``create_model(name, **cfg)``'s options without building the model, reading weights or importing
    torch (for the backbones of :mod:`medad.models.backbones`' tables).

    The model's config class checks the keys and values, then its
    :meth:`~medad.models.config.ModelConfig.check_architecture` the image size, layers and depths against the
    backbone's geometry.

    Raises:
        ConfigError: naming the option and the fix.
    """
    config = model_config(name, _entry(name).config_class, **cfg)
    config.check_architecture()
    return config


def create_model(name: str, **cfg: Any) -> AnomalyModel:
    """Build a registered model.

    Args:
        name: A name from :func:`list_models`.
        **cfg: Model configuration passed to the factory.

    Returns:
        The model.

    Raises:
        ConfigError: If ``name`` is not registered (the message lists the known names and the closest one).
    """
    return _factory(name)[0](**cfg)


def describe_models() -> list[dict[str, Any]]:
    """One entry per registered model, read from its catalogue entry and config (nothing is built, downloaded or
    imported from torch).

    Returns:
        ``name``, ``kind`` (``trainable`` / ``training-free`` / ``transductive``), ``image_size`` (the default
        input side), ``weights`` (the frozen weights it loads, by card key: ``id``, ``licence``, ``option``; empty
        for a random-weights preset), ``random_weights`` (its frozen weights are random), ``needs_checkpoint``
        (trainable: its adapters come from ``medad train``) and ``description``.
    """
    entries = []
    for name in list_models():
        entry = _REGISTRY[name]
        config = model_config(name, entry.config_class)
        weights = config.needed_weights()
        entries.append(
            {
                "name": name,
                "kind": entry.kind.value,
                "image_size": config.image_size,
                "weights": weights,
                "random_weights": not weights,
                "needs_checkpoint": entry.kind is ModelKind.TRAINABLE,
                "description": entry.description,
            }
        )
    return entries


def format_models(entries: list[dict[str, Any]]) -> str:
    """The text ``medad models`` prints: a head line per model, then what weights it needs and their licences."""
    lines = []
    for entry in entries:
        lines.append(f"{entry['name']} ({entry['kind']}, {entry['image_size']} px): {entry['description']}")
        for part, info in entry["weights"].items():
            lines.append(f"  {part}: {info['id']} - licence: {info['licence']}; a local file: {info['option']} FILE")
        if entry["random_weights"]:
            lines.append("  frozen weights: random (tests and demos; every output is marked RANDOM WEIGHTS)")
        if entry["needs_checkpoint"]:
            lines.append("  adapters: trained by `medad train`; score with --checkpoint (without one they are random)")
    return "\n".join(lines)
