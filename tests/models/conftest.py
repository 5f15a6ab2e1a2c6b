"""Shared fixtures: one tiny random AD-DINOv3 per compat mode (cheap, deterministic)."""

from __future__ import annotations

import pytest
import torch

from medad.models import ADDINOv3, create_model


@pytest.fixture(scope="session")
def _tiny_models() -> dict[str, ADDINOv3]:
    """The tiny preset in both compat modes, built once per session."""
    return {compat: create_model("ad_dinov3_tiny", compat=compat) for compat in ("clean", "reference")}


@pytest.fixture
def tiny_clean(_tiny_models: dict[str, ADDINOv3]) -> ADDINOv3:
    """The tiny preset in clean mode, handed out in training mode whatever an earlier test left it in."""
    return _tiny_models["clean"].train()


@pytest.fixture
def tiny_reference(_tiny_models: dict[str, ADDINOv3]) -> ADDINOv3:
    """The tiny preset in reference mode, handed out in training mode."""
    return _tiny_models["reference"].train()


@pytest.fixture
def images() -> torch.Tensor:
    """Two random normalised 112 px images."""
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
