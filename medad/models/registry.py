"""A timm-style model registry: ``register_model``, ``list_models``, ``create_model``, ``model_kind`` and
``describe_models`` (what ``medad models`` prints).

Each factory is registered with the model class it builds and the option defaults it applies, so what a model is
(its :class:`ModelKind`) and which options it takes (its class's ``config_class``) are read from the class, never
from a side list; :func:`check_model_config` checks options without building the model.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from medad.errors import ConfigError
from medad.models.base import AnomalyModel, ModelKind
from medad.models.config import ModelConfig

F = TypeVar("F", bound=Callable[..., AnomalyModel])
C = TypeVar("C", bound=ModelConfig)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model: its factory, the class the factory builds and the option defaults it applies."""

    factory: Callable[..., AnomalyModel]
    model_class: type[AnomalyModel]
    defaults: Mapping[str, Any]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(model_class: type[AnomalyModel], defaults: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Register a model factory under its function name, with the class it builds.

    Args:
        model_class: The :class:`AnomalyModel` subclass ``fn`` returns (gives the model's ``kind`` and
            ``config_class``).
        defaults: Options the factory sets unless given (a preset such as the tiny models'); the factory builds
            its config with :func:`model_config`, which applies them.

    Returns:
        A decorator that registers ``fn(**cfg) -> model`` (its ``__name__`` becomes the model name) and returns
        it unchanged.

    Raises:
        ValueError: If another factory is already registered under that name (a programming error).
    """

    def register(fn: F) -> F:
        name = fn.__name__
        if name in _REGISTRY and _REGISTRY[name].factory is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(fn, model_class, dict(defaults or {}))
        return fn

    return register


def list_models() -> list[str]:
    """Return the sorted names of every registered model."""
    return sorted(_REGISTRY)


def _entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
    if name not in _REGISTRY:
        known = list_models()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}: known models are {', '.join(known)}{hint}")
    return _REGISTRY[name]


def model_class(name: str) -> type[AnomalyModel]:
    """The class the registered model ``name`` is built as (without building it)."""
    return _entry(name).model_class


def model_kind(name: str) -> ModelKind:
    """Whether the registered model ``name`` is trainable, training-free or transductive (without building it)."""
    return model_class(name).kind


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
    config = entry.model_class.config_class.from_kwargs(**{**entry.defaults, **cfg})
    if not isinstance(config, config_class):
        raise TypeError(f"model {name!r} is configured by {type(config).__name__}, not {config_class.__name__}")
    return config


def check_model_config(name: str, **cfg: Any) -> ModelConfig:
    """Check ``create_model(name, **cfg)``'s options without building the model or reading weights.

    The model's config class checks the keys and values, then the model class checks the config against its
    architecture where that needs no weights (DINOv3 models: image size and layers, on the meta device).

    Raises:
        ConfigError: naming the option and the fix.
    """
    model_cls = model_class(name)
    config = model_config(name, model_cls.config_class, **cfg)
    model_cls.check_config(config)
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
    return _entry(name).factory(**cfg)


def describe_models() -> list[dict[str, Any]]:
    """One entry per registered model, read from its class, config and factory (nothing is built or downloaded).

    Returns:
        ``name``, ``kind`` (``trainable`` / ``training-free`` / ``transductive``), ``image_size`` (the default
        input side), ``weights`` (the frozen weights it loads, by card key: ``id``, ``licence``, ``option``; empty
        for a random-weights preset), ``random_weights`` (its frozen weights are random), ``needs_checkpoint``
        (trainable: its adapters come from ``medad train``) and ``description`` (the factory's first line).
    """
    entries = []
    for name in list_models():
        entry = _REGISTRY[name]
        config = model_config(name, entry.model_class.config_class)
        weights = entry.model_class.needed_weights(config)
        entries.append(
            {
                "name": name,
                "kind": entry.model_class.kind.value,
                "image_size": config.image_size,
                "weights": weights,
                "random_weights": not weights,
                "needs_checkpoint": entry.model_class.kind is ModelKind.TRAINABLE,
                "description": (entry.factory.__doc__ or "").strip().splitlines()[0].replace("``", ""),
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
