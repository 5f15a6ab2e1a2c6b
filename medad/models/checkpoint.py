"""Adapter-only checkpoints: ``adapters.safetensors`` + ``card.json`` (no pickle)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from medad.errors import ConfigError, WeightsError
from medad.models.base import ModelKind, TrainableAnomalyModel
from medad.models.checkpoint_card import CARD_FILE, CHECKPOINT_FORMAT, read_card
from medad.models.registry import create_model, model_kind
from medad.models.weights import check_finite
from medad.utils.io import sha256_file, write_bytes_atomic, write_json_atomic

ADAPTERS_FILE = "adapters.safetensors"
_IDENTITY_KEYS = ("compat", "layers", "image_size", "adapter_dim")


def save_checkpoint(
    model: TrainableAnomalyModel, folder: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the adapters and the model card.

    Args:
        model: A trainable medad model (``trainable_state_dict`` and ``card``).
        folder: Output folder (created).
        extra: JSON-serialisable run facts stored under ``card["extra"]`` (manifest hash, seed, epochs, ...).

    Returns:
        The folder.
    """
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    write_bytes_atomic(folder / ADAPTERS_FILE, save(state, metadata={"format": CHECKPOINT_FORMAT}))
    card = {
        **model.card(),
        "format": CHECKPOINT_FORMAT,
        "adapters_sha256": sha256_file(folder / ADAPTERS_FILE),
        "extra": dict(extra or {}),
    }
    write_json_atomic(folder / CARD_FILE, card)
    return folder


def _describe(part: Mapping[str, Any]) -> str:
    return f"{part.get('id')} (sha256 {str(part.get('sha256'))[:12]})"


def _check_compatible(card: Mapping[str, Any], model_card: Mapping[str, Any], folder: Path) -> None:
    for part in ("backbone", "text"):
        want, have = card[part], model_card[part]
        same_id = want.get("id") == have.get("id") or want.get("source") != have.get("source")
        same_sha = not (want.get("sha256") and have.get("sha256")) or want["sha256"] == have["sha256"]
        if not (same_id and same_sha):
            raise WeightsError(
                f"checkpoint {str(folder)!r} was trained with {part} {_describe(want)} but the model has "
                f"{_describe(have)}; load it with the same {part} weights"
            )
    if card["config"].get("backbone") != model_card["config"].get("backbone"):
        raise WeightsError(
            f"checkpoint {str(folder)!r} was trained on backbone {card['config'].get('backbone')!r} but the model "
            f"uses {model_card['config'].get('backbone')!r}; build the model with the checkpoint's backbone"
        )
    for key in _IDENTITY_KEYS:
        if card.get(key) != model_card.get(key):
            raise WeightsError(
                f"checkpoint {str(folder)!r} has {key}={card.get(key)!r} but the model has {model_card.get(key)!r}; "
                "build the model from the checkpoint's card (load_checkpoint(folder))"
            )


def _build_from_card(card: Mapping[str, Any], folder: Path, overrides: Mapping[str, Any]) -> TrainableAnomalyModel:
    """The model a checkpoint's card describes; a card no model can be built from is refused naming the checkpoint
    (a user with several checkpoints must know which one is broken)."""
    try:
        kind = model_kind(str(card.get("name")))
        if kind is not ModelKind.TRAINABLE:  # before its config is read as that model's
            raise WeightsError(
                f"checkpoint {str(folder)!r} names model {card['name']!r}, which is {kind.value} and has nothing to "
                f"train, so it has no checkpoint; score it with --model {card['name']} (a checkpoint holds the "
                "trained adapters of a trainable model such as ad_dinov3)"
            )
        built = create_model(str(card["name"]), **{**card.get("config", {}), **overrides})
    except ConfigError as exc:
        raise WeightsError(
            f"checkpoint {str(folder)!r}: no model can be built from its {CARD_FILE} ({exc}); the card was edited or "
            "written by another medad version: re-save the checkpoint with `medad train`, or pass another "
            "--checkpoint folder"
        ) from exc
    assert isinstance(built, TrainableAnomalyModel)
    return built


def _check_fits(
    state: Mapping[str, torch.Tensor], model: TrainableAnomalyModel, folder: Path, from_card: bool
) -> None:
    """Refuse adapters whose keys or shapes differ from the model's, naming the checkpoint and what differs."""
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    problems = [f"missing {missing[:3]}"] if missing else []
    problems += [f"unexpected {extra[:3]}"] if extra else []
    wrong = [k for k in sorted(expected) if k in state and tuple(state[k].shape) != expected[k]]
    problems += [f"{k} is {tuple(state[k].shape)}, the model's is {expected[k]}" for k in wrong[:3]]
    if not problems:
        return
    if from_card:
        fix = (
            f"{ADAPTERS_FILE} and {CARD_FILE} do not belong together (edited, or from different runs): re-save the "
            "checkpoint with `medad train`, or pass another --checkpoint folder"
        )
    else:
        fix = "load it without model= so that the model is built from its card"
    whose = "the model its card describes" if from_card else "the model it was given"
    raise WeightsError(
        f"checkpoint {str(folder)!r}: its adapters do not fit {whose} ({model.name}): {'; '.join(problems)}; {fix}"
    )


def load_checkpoint(
    folder: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    model: TrainableAnomalyModel | None = None,
    **overrides: Any,
) -> TrainableAnomalyModel:
    """Rebuild a model from a checkpoint's card, verify its frozen weights and load the adapters.

    Args:
        folder: A folder written by :func:`save_checkpoint`.
        device: Where to put the model.
        model: Load into this already built model instead (its frozen weights, backbone and dims must match).
        **overrides: Config values replacing the card's, e.g. ``backbone_weights='/local/file.safetensors'``
            when the weights live elsewhere on this machine; the sha256 must still match the card.

    Returns:
        The model in eval mode.

    Raises:
        WeightsError: Missing/broken files, adapters that fail their sha256, or frozen weights, backbone or
            dimensions that differ from the card's (the message names both).
    """
    folder = Path(folder)
    card = read_card(folder)
    adapters = folder / ADAPTERS_FILE
    if not adapters.is_file():
        raise WeightsError(f"{str(adapters)!r} does not exist; the checkpoint is incomplete, re-save it")
    if sha256_file(adapters) != card.get("adapters_sha256"):
        raise WeightsError(f"{str(adapters)!r} does not match the sha256 in its card; the file is corrupt, re-save it")
    from_card = model is None
    if model is None:
        model = _build_from_card(card, folder, overrides)
    _check_compatible(card, model.card(), folder)
    try:
        state = load_file(str(adapters))
    except SafetensorError as exc:
        raise WeightsError(f"{str(adapters)!r} is not a readable safetensors file ({exc}); re-save it") from exc
    check_finite(state.items(), adapters, "adapter")
    _check_fits(state, model, folder, from_card)
    model.load_trainable_state_dict(state)
    if "adapters" not in card.get("random_parts", []):  # a checkpoint of untrained adapters stays flagged
        model.mark_adapters_trained()
    return model.to(device).eval()
