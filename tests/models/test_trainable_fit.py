"""Every trainable model refuses trained weights that do not fit it, naming the key and the card options to match."""

from __future__ import annotations

import re

import pytest
import torch

from medad.errors import WeightsError
from medad.models import create_model, list_models, model_kind
from medad.models.base import ModelKind, TrainableAnomalyModel

TRAINABLE_TINY = [n for n in list_models() if n.endswith("_tiny") and model_kind(n) is ModelKind.TRAINABLE]


@pytest.mark.parametrize("name", TRAINABLE_TINY)
def test_weights_of_another_shape_or_key_are_refused_naming_them(name: str) -> None:
    model = create_model(name)
    state = model.trainable_state_dict()
    key = next(iter(state))
    wrong = {**state, key: torch.zeros(1)}
    with pytest.raises(WeightsError, match=rf"{re.escape(key)} is \(1,\).*checkpoint") as said:
        model.load_trainable_state_dict(wrong)
    if type(model).load_trainable_state_dict is TrainableAnomalyModel.load_trainable_state_dict:  # the shared form
        assert f"do not fit this {name} model" in str(said.value) and f"({type(model).card_shape})" in str(said.value)
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(WeightsError, match=rf"{name} model.*missing .*{re.escape(key)}"):
        model.load_trainable_state_dict(missing)
    model.load_trainable_state_dict(state)  # its own weights fit
