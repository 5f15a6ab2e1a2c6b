"""Shared fixtures: one tiny random AD-DINOv3 per compat mode (cheap, deterministic)."""

from __future__ import annotations

import pytest
import torch

from medad.models import ADDINOv3, create_model


@pytest.fixture(scope="session")
def tiny_clean() -> ADDINOv3:
    """The tiny preset in clean mode."""
    return create_model("ad_dinov3_tiny", compat="clean")


@pytest.fixture(scope="session")
def tiny_reference() -> ADDINOv3:
    """The tiny preset in reference mode."""
    return create_model("ad_dinov3_tiny", compat="reference")


@pytest.fixture
def images() -> torch.Tensor:
    """Two random normalised 112 px images."""
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
