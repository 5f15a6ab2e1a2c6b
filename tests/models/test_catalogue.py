"""The model catalogue: every method's config module registers its presets without torch, and each factory builds
the class its catalogue entry describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medad.models import ModelKind, list_models, model_class, model_kind, registry
from medad.models.registry import _FACTORIES, _REGISTRY, register_factory, register_model
from medad.models.winclip import WinCLIP
from medad.models.winclip_config import WinCLIPConfig

MODELS = Path(__file__).resolve().parents[2] / "medad" / "models"


def test_the_catalogue_imports_every_config_module() -> None:
    """A method's ``<method>_config.py`` left out of ``catalogue.py`` would leave its models unlisted."""
    modules = {entry.config_class.__module__ for entry in (_REGISTRY[name] for name in list_models())}
    assert modules == {f"medad.models.{path.stem}" for path in MODELS.glob("*_config.py")}


@pytest.mark.parametrize("name", list_models())
def test_each_factory_builds_its_catalogue_entry(name: str) -> None:
    entry = _REGISTRY[name]
    cls = model_class(name)  # imports the method module, whose factory checks itself against the entry
    assert cls.kind is entry.kind is model_kind(name) and cls.config_class is entry.config_class
    assert cls.__module__ == entry.module == _FACTORIES[name][0].__module__


def test_a_factory_that_does_not_match_its_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(_REGISTRY))
    register_model(
        "winclip_trainable", WinCLIPConfig, kind=ModelKind.TRAINABLE, module=__name__, description="wrong kind"
    )

    def winclip_trainable(**cfg: Any) -> WinCLIP:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="does not match its catalogue entry"):
        register_factory(WinCLIP)(winclip_trainable)
    with pytest.raises(ValueError, match="already registered"):
        register_model("winclip", WinCLIPConfig, kind=ModelKind.TRAINING_FREE, module=__name__, description="x")
