"""The shared base of model configs: pydantic models on medad's strict base, with the checks every model shares.

A model config is a :class:`ModelConfig` (unknown keys refused, strict types, frozen). :meth:`ModelConfig.from_kwargs`
turns pydantic's errors into one :class:`~medad.errors.ConfigError` that names the option and the fix (an unknown
key with its closest valid one); each config adds its value checks in ``check`` (run on every construction).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar, cast

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from medad.errors import ConfigError
from medad.models.backbones import DinoConfig, check_geometry, needed_backbone
from medad.models.prompts import check_compat
from medad.utils.config import StrictModel

IMAGE_SCORE_POLICIES = ("global", "max", "blend")

C = TypeVar("C", bound="ModelConfig")


def _path_text(value: object) -> object:
    """A path given as ``os.PathLike`` is stored as its string (configs and cards are JSON)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _timm_name(value: object) -> object:
    """A backbone given as a timm hub id (``timm/NAME``) is timm's model ``NAME``."""
    from medad.models.weight_ids import timm_name

    return timm_name(value) if isinstance(value, str) else value


IntTuple = Annotated[tuple[int, ...], Field(strict=False)]
"""A sequence of ints (a YAML / JSON list is accepted and stored as a tuple)."""

PathText = Annotated[str | None, BeforeValidator(_path_text)]
"""A weights path or tag: a string, an ``os.PathLike`` (stored as its string) or ``None``."""

BackboneName = Annotated[str, BeforeValidator(_timm_name)]
"""A timm backbone name; a hub id ``timm/NAME`` (``--backbone-weights timm/NAME``) is stored as ``NAME``."""


class ModelConfig(StrictModel):
    """Base of a model's config.

    Subclasses name themselves (``label``, used in messages), declare their fields (with ``compat``,
    ``image_size`` and ``image_score`` among them), may rewrite the keywords first (:meth:`prepare`) and add
    their value checks in :meth:`check` after calling :meth:`check_common`.
    """

    if TYPE_CHECKING:  # fields every model declares (each with its own default)
        compat: str
        image_size: int
        image_score: str

    label: ClassVar[str] = "model"

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Rewrite or refuse model-specific keywords before validation (default: unchanged)."""
        return cfg

    @classmethod
    def from_kwargs(cls: type[C], **cfg: Any) -> C:
        """Build and check a config; a bad key or value raises one :class:`ConfigError` naming it."""
        try:
            return cls.model_validate(cls.prepare(dict(cfg)))
        except ValidationError as exc:
            raise ConfigError(cls.describe_errors(exc.errors())) from None

    @classmethod
    def describe_errors(cls, errors: Sequence[ErrorDetails]) -> str:
        """One message for pydantic's errors: unknown keys with their closest valid key, else the first bad value."""
        names = list(cls.model_fields)
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
        if unknown:
            hints = [
                f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, names, 1)) else key
                for key in unknown
            ]
            return f"unknown {cls.label} option(s) {', '.join(hints)}; valid options: {', '.join(names)}"
        first = errors[0]
        key = ".".join(str(part) for part in first["loc"])
        return f"{cls.label} option {key} (got {first['input']!r}): {first['msg'][0].lower()}{first['msg'][1:]}"

    @model_validator(mode="after")
    def _run_checks(self) -> ModelConfig:
        self.check()
        return self

    def check(self) -> None:
        """Check the values; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()

    def check_common(self) -> None:
        """The checks every model shares: ``compat`` and ``image_score``."""
        check_compat(self.compat)
        if self.image_score not in IMAGE_SCORE_POLICIES:
            raise ConfigError(f"image_score must be one of {', '.join(IMAGE_SCORE_POLICIES)}, got {self.image_score!r}")

    def check_architecture(self) -> None:
        """Check the config against its backbone's architecture (patch size, depth, widths) without building it or
        reading weights (default: nothing to check); :func:`~medad.models.check_model_config` and every model's
        constructor run it. Raise :class:`ConfigError` naming the key and the fix."""

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The frozen weights a model of this config loads, by card key: ``id`` (hub id, tag or file), ``licence``
        and ``option`` (the CLI flag that points to a local file); empty for random frozen weights. Nothing is
        built or downloaded (``medad models`` lists it)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``create_model(name, **to_dict())`` rebuilds the model); tuples become lists."""
        return self.model_dump(mode="json")


class TextFreeDinoConfig(ModelConfig):
    """Base of the configs of DINO models that read no text (``anomalydino``, ``dinov3_mutual``): their subclass
    declares ``backbone``, ``backbone_weights``, ``backbone_overrides``, ``layers``, ``image_size`` and
    ``random_init``; this class refuses text weights and checks and names the backbone."""

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Refuse text weights: the model uses no text."""
        if cfg.get("text_weights") is not None:
            raise ConfigError(f"{cls.label} uses no text: remove `weights: {{text: ...}}` for this model")
        cfg.pop("text_weights", None)
        return cfg

    def check_architecture(self) -> None:
        """Layers and image size against the backbone (:func:`~medad.models.backbones.check_geometry`)."""
        check_geometry(cast(DinoConfig, self))  # the subclass declares the fields

    def needed_weights(self) -> dict[str, dict[str, str]]:
        """The DINO backbone (none with ``random_init``)."""
        return needed_backbone(cast(DinoConfig, self))


def check_layers(layers: Sequence[int]) -> None:
    """Tapped layers must be distinct 1-based block numbers."""
    if not layers or any(v < 1 for v in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"layers must be distinct 1-based block numbers, got {list(layers)}")
