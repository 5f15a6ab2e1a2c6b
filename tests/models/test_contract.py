"""The model contract (medad.models.base): kinds from the registry, typed outputs, compile(), one image-score policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from medad.errors import ConfigError
from medad.models import (
    AnomalyModel,
    InferenceBatch,
    ModelKind,
    TrainableAnomalyModel,
    TrainingBatch,
    TransductiveAnomalyModel,
    create_model,
    list_models,
    model_class,
    model_kind,
)
from medad.models.base import policy_image_scores

TINY = {
    "ad_dinov3_tiny": 112,
    "adaclip_tiny": 64,
    "anomalyclip_tiny": 64,
    "crane_tiny": 64,
    "crane_plus_tiny": 64,
    "aa_clip_tiny": 64,
    "aa_clip_dinov3_tiny": 112,
    "winclip_tiny": 64,
    "dinov3_mutual_tiny": 64,
}
KINDS = {
    "ad_dinov3": ModelKind.TRAINABLE,
    "ad_dinov3_tiny": ModelKind.TRAINABLE,
    "adaclip": ModelKind.TRAINABLE,
    "adaclip_tiny": ModelKind.TRAINABLE,
    "anomalyclip": ModelKind.TRAINABLE,
    "anomalyclip_tiny": ModelKind.TRAINABLE,
    "crane": ModelKind.TRAINABLE,
    "crane_tiny": ModelKind.TRAINABLE,
    "crane_plus": ModelKind.TRAINABLE,
    "crane_plus_tiny": ModelKind.TRAINABLE,
    "aa_clip": ModelKind.TRAINABLE,
    "aa_clip_tiny": ModelKind.TRAINABLE,
    "aa_clip_dinov3": ModelKind.TRAINABLE,
    "aa_clip_dinov3_tiny": ModelKind.TRAINABLE,
    "winclip": ModelKind.TRAINING_FREE,
    "winclip_tiny": ModelKind.TRAINING_FREE,
    "dinov3_mutual": ModelKind.TRANSDUCTIVE,
    "dinov3_mutual_tiny": ModelKind.TRANSDUCTIVE,
}


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, AnomalyModel]:
    torch.manual_seed(0)
    return {name: create_model(name) for name in TINY}


def test_every_registered_model_has_a_kind_read_from_its_class() -> None:
    assert set(KINDS) <= set(list_models())
    for name in list_models():
        assert issubclass(model_class(name), AnomalyModel)
        assert model_kind(name) is model_class(name).kind
    assert {name: model_kind(name) for name in KINDS} == KINDS
    assert issubclass(model_class("ad_dinov3"), TrainableAnomalyModel)
    assert issubclass(model_class("dinov3_mutual"), TransductiveAnomalyModel)
    assert ModelKind("training-free") is ModelKind.TRAINING_FREE and ModelKind.TRANSDUCTIVE == "transductive"
    with pytest.raises(ConfigError, match=r"unknown model 'winclp'.*did you mean 'winclip'"):
        model_kind("winclp")


@pytest.mark.parametrize("name", sorted(TINY))
def test_eval_outputs_are_an_inference_batch(tiny_models: dict[str, AnomalyModel], name: str) -> None:
    model, size = tiny_models[name].eval(), TINY[name]
    assert model.kind is model_kind(name) and model.image_size == size
    assert len(model.mean) == len(model.std) == 3 and all(isinstance(v, float) for v in (*model.mean, *model.std))
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images, ["x"] * 3)
    assert type(out) is InferenceBatch
    assert out.pixel_scores.shape == (3, size, size) and out.image_scores.shape == (3,)
    pixel, image = out  # a plain tuple to torch.compile, jit.trace and ONNX export
    assert pixel is out.pixel_scores and image is out.image_scores
    card = model.card()
    assert card["name"] == name and card["random_weights"] is True and card["image_size"] == size
    assert card["mean"] == list(model.mean) and card["std"] == list(model.std)


def test_trainable_head_returns_a_training_batch_only_in_training_mode(
    tiny_models: dict[str, AnomalyModel],
) -> None:
    model = tiny_models["ad_dinov3_tiny"]
    assert isinstance(model, TrainableAnomalyModel)
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    features = model.forward_features(images)
    assert set(features) == {"patch_tokens", "cls_tokens"} and not features["patch_tokens"].requires_grad
    model.train()
    trained = model.forward_head(features, ["x", "y"])
    assert type(trained) is TrainingBatch and trained.global_logits.shape == (2, 2)
    model.eval()
    evaluated = model.forward_head(features, ["x", "y"])
    assert type(evaluated) is InferenceBatch
    with torch.no_grad():
        torch.testing.assert_close(model(images, ["x", "y"]).pixel_scores, evaluated.pixel_scores)
    masks, labels = torch.zeros(2, 1, 112, 112), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match=r"training-mode outputs; call model\.train"):
        model.compute_loss(evaluated, masks, labels)
    assert set(model.compute_loss(trained, masks, labels)) >= {"total", "seg", "aacm", "global"}


def test_frozen_models_stay_in_eval_mode(tiny_models: dict[str, AnomalyModel]) -> None:
    for name in ("winclip_tiny", "dinov3_mutual_tiny"):
        model = tiny_models[name].train()
        assert not any(m.training for m in model.modules())
        assert model.card()["trainable_parameters"] == 0


def test_transductive_forward_is_score_set_of_forward_features(tiny_models: dict[str, AnomalyModel]) -> None:
    model = tiny_models["dinov3_mutual_tiny"]
    assert isinstance(model, TransductiveAnomalyModel)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    features = model.forward_features(images)
    whole, part = model(images), model.score_set(features, [1])
    assert type(part) is InferenceBatch
    torch.testing.assert_close(part.pixel_scores[0], whole.pixel_scores[1])


@pytest.mark.parametrize("name", sorted(TINY))
def test_compile_compiles_the_backbone_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model(name).eval()
    size = TINY[name]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        eager = model(images, ["x", "x"])
    calls: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    def fake_compile(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
        calls.append((fn, options))

        def compiled(*args: Any, **kwargs: Any) -> Any:
            compiled.runs += 1  # type: ignore[attr-defined]
            return fn(*args, **kwargs)

        compiled.runs = 0  # type: ignore[attr-defined]
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    targets = model.compile_targets()
    assert targets and all(isinstance(module, torch.nn.Module) for module, _ in targets)
    model.compile()
    model.compile()  # idempotent
    assert len(calls) == len(targets) and all(options == {"dynamic": False} for _, options in calls)
    with torch.no_grad():
        again = model(images, ["x", "x"])
    assert all(getattr(module, method).runs > 0 for module, method in targets)  # the compiled forward runs
    torch.testing.assert_close(again.pixel_scores, eager.pixel_scores)
    torch.testing.assert_close(again.image_scores, eager.image_scores)


def test_one_image_score_policy() -> None:
    global_scores = torch.tensor([0.2, 0.9])
    pixel = torch.zeros(2, 4, 4)
    pixel[0, 1, 2], pixel[1, 0, 0] = 0.6, 0.1
    assert torch.equal(policy_image_scores("global", global_scores, pixel), global_scores)
    assert torch.equal(policy_image_scores("max", global_scores, pixel), torch.tensor([0.6, 0.1]))
    torch.testing.assert_close(policy_image_scores("blend", global_scores, pixel), torch.tensor([0.4, 0.5]))
