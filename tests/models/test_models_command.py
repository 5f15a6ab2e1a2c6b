"""``medad models``: every registered model with its kind, default image size, the weights it needs and their
licences, read from the catalogue and the configs (no table of its own)."""

from __future__ import annotations

import json

import pytest

from medad.models import list_models, model_kind, registry
from medad.models.kind import ModelKind
from medad.models.registry import _REGISTRY, describe_models, register_model
from medad.models.winclip_config import WinCLIPConfig
from tests.cli import run_medad


def test_every_registered_model_is_described_from_its_class_and_config() -> None:
    entries = {e["name"]: e for e in describe_models()}
    assert sorted(entries) == list_models()
    for name, entry in entries.items():
        assert entry["kind"] == model_kind(name).value
    assert entries["ad_dinov3"]["image_size"] == 512 and entries["ad_dinov3_tiny"]["image_size"] == 112
    assert entries["winclip"]["image_size"] == 240 and entries["dinov3_mutual_tiny"]["image_size"] == 64
    backbone = entries["ad_dinov3"]["weights"]["backbone"]
    assert backbone["id"] == "vit_large_patch16_dinov3.lvd1689m" and backbone["licence"].startswith("DINOv3 License")
    assert backbone["option"] == "--backbone-weights"
    assert entries["ad_dinov3"]["weights"]["text"]["licence"].startswith("MIT")
    assert set(entries["dinov3_mutual"]["weights"]) == {"backbone"} and set(entries["winclip"]["weights"]) == {"clip"}
    assert entries["ad_dinov3_tiny"]["weights"] == {} and entries["ad_dinov3_tiny"]["random_weights"] is True
    assert entries["ad_dinov3"]["needs_checkpoint"] and not entries["winclip"]["needs_checkpoint"]
    for clip_family in ("anomalyclip", "adaclip"):  # one CLIP checkpoint for both towers, not "random"
        assert entries[clip_family]["random_weights"] is False, clip_family
        assert entries[clip_family]["weights"]["clip"]["licence"].startswith("MIT"), clip_family
        assert entries[clip_family]["weights"]["clip"]["option"] == "--text-weights"  # maps to clip_weights


def test_a_newly_registered_model_is_listed_with_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(_REGISTRY))  # the registration is undone after the test

    register_model(
        "winclip_big", WinCLIPConfig, kind=ModelKind.TRAINING_FREE, module="no.such.module",
        description="A WinCLIP at 480 px with OpenAI weights.", defaults={"image_size": 480, "clip_weights": "openai"},
    )  # fmt: skip  (medad models never imports the factory's module)
    entry = next(e for e in describe_models() if e["name"] == "winclip_big")
    assert entry["image_size"] == 480 and entry["description"] == "A WinCLIP at 480 px with OpenAI weights."
    assert entry["weights"]["clip"]["id"] == "ViT-B-16-plus-240/openai" and "MIT" in entry["weights"]["clip"]["licence"]


def test_cli_models_text_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_medad(monkeypatch, capsys, "models")
    assert code == 0, text
    for name in list_models():
        assert f"\n{name} (" in f"\n{text}"
    assert "ad_dinov3 (trainable, 512 px)" in text and "DINOv3 License" in text and "--backbone-weights FILE" in text
    assert "winclip_tiny (training-free, 64 px)" in text and "random" in text
    code, text = run_medad(monkeypatch, capsys, "models", "--json")
    assert code == 0 and [e["name"] for e in json.loads(text)] == list_models()
