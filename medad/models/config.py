"""The shared base of model configs: keyword construction with clear errors, and the checks every model shares."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from medad.errors import ConfigError
from medad.models.prompts import check_compat

IMAGE_SCORE_POLICIES = ("global", "max", "blend")

C = TypeVar("C", bound="ModelConfig")


class ModelConfig:
    """Mixin for a model's config dataclass.

    Subclasses name themselves (``label``), list the fields given as sequences of ints (``tuple_fields``) and
    as paths (``path_fields``), may rewrite the keywords first (:meth:`prepare`) and add their own checks in
    :meth:`validate` after calling :meth:`check_common`.
    """

    compat: str
    image_size: int
    image_score: str

    label: ClassVar[str] = "model"
    tuple_fields: ClassVar[tuple[str, ...]] = ()
    path_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def prepare(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Rewrite or refuse model-specific keywords before the generic checks (default: unchanged)."""
        return cfg

    @classmethod
    def from_kwargs(cls: type[C], **cfg: Any) -> C:
        """Build and validate a config; unknown keys raise a :class:`ConfigError` naming the closest valid one."""
        cfg = cls.prepare(dict(cfg))
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            hints = [
                f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, names, 1)) else key
                for key in unknown
            ]
            raise ConfigError(f"unknown {cls.label} option(s) {', '.join(hints)}; valid options: {', '.join(names)}")
        for key in cls.tuple_fields:
            if key in cfg:
                cfg[key] = tuple(int(v) for v in cfg[key])
        for key in cls.path_fields:
            if cfg.get(key) is not None:
                cfg[key] = str(cfg[key])
        config = cls(**cfg)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``create_model(name, **to_dict())`` rebuilds the model); tuples become lists."""
        out: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key in self.tuple_fields:
            out[key] = list(out[key])
        return out

    def validate(self) -> None:
        """Check the values; raise :class:`ConfigError` naming the key and the fix."""
        self.check_common()

    def check_common(self) -> None:
        """The checks every model shares: ``compat`` and ``image_score``."""
        check_compat(self.compat)
        if self.image_score not in IMAGE_SCORE_POLICIES:
            raise ConfigError(f"image_score must be one of {', '.join(IMAGE_SCORE_POLICIES)}, got {self.image_score!r}")


def check_layers(layers: Sequence[int]) -> None:
    """Tapped layers must be distinct 1-based block numbers."""
    if not layers or any(v < 1 for v in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"layers must be distinct 1-based block numbers, got {list(layers)}")
