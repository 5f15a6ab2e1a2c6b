"""A timm-style model registry: ``register_model``, ``list_models``, ``create_model`` and ``model_kind``.

Each factory is registered with the model class it builds, so what a model is (its :class:`ModelKind`) is read
from the class, never from a side list.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from medad.errors import ConfigError
from medad.models.base import AnomalyModel, ModelKind

F = TypeVar("F", bound=Callable[..., AnomalyModel])


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model: its factory and the class the factory builds."""

    factory: Callable[..., AnomalyModel]
    model_class: type[AnomalyModel]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(model_class: type[AnomalyModel]) -> Callable[[F], F]:
    """Register a model factory under its function name, with the class it builds.

    Args:
        model_class: The :class:`AnomalyModel` subclass ``fn`` returns (gives the model's ``kind``).

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
        _REGISTRY[name] = ModelEntry(fn, model_class)
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
