"""A timm-style model registry: ``register_model``, ``list_models`` and ``create_model``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from medad.errors import ConfigError

_REGISTRY: dict[str, Callable[..., Any]] = {}
_TRAINING_FREE: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])


def register_model(fn: F) -> F:
    """Register a model factory under its function name.

    Args:
        fn: A callable ``fn(**cfg) -> model``; its ``__name__`` becomes the model name.

    Returns:
        The same callable, so this works as a decorator.

    Raises:
        ValueError: If another factory is already registered under that name (a programming error).
    """
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def training_free(fn: F) -> F:
    """Mark a registered factory as training-free (no adapters: nothing to train, no checkpoint to load).

    Protocols build such models directly with ``create_model`` and skip the training stage for them.
    """
    _TRAINING_FREE.add(fn.__name__)
    return fn


def is_training_free(name: str) -> bool:
    """Return True when the registered model ``name`` has nothing to train (see :func:`training_free`)."""
    return name in _TRAINING_FREE


def list_models() -> list[str]:
    """Return the sorted names of every registered model."""
    return sorted(_REGISTRY)


def create_model(name: str, **cfg: Any) -> Any:
    """Build a registered model.

    Args:
        name: A name from :func:`list_models`.
        **cfg: Model configuration passed to the factory.

    Returns:
        The model.

    Raises:
        ConfigError: If ``name`` is not registered (the message lists the known names and the closest one).
    """
    if name not in _REGISTRY:
        known = list_models()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}: known models are {', '.join(known)}{hint}")
    return _REGISTRY[name](**cfg)
