"""Registry behaviour and config validation errors."""

from __future__ import annotations

import pytest

from medad.errors import ConfigError
from medad.models import create_model, list_models


def test_list_models() -> None:
    assert {"ad_dinov3", "ad_dinov3_tiny"} <= set(list_models())


def test_unknown_model_lists_known_and_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'ad_dinov2'.*ad_dinov3_tiny.*did you mean 'ad_dinov3'"):
        create_model("ad_dinov2")


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown AD-DINOv3 option.*layer_ids.*valid options"):
        create_model("ad_dinov3_tiny", layer_ids=[1])


def test_layer_beyond_depth() -> None:
    with pytest.raises(ConfigError, match=r"layers \[5\] are beyond the depth 4"):
        create_model("ad_dinov3_tiny", layers=[1, 5])
    with pytest.raises(ConfigError, match=r"1-based"):
        create_model("ad_dinov3_tiny", layers=[0, 1])


def test_image_size_not_multiple_of_patch() -> None:
    with pytest.raises(ConfigError, match=r"image_size 100 is not a multiple of the patch size 16.*96 or 112"):
        create_model("ad_dinov3_tiny", image_size=100)


def test_real_model_geometry_checked_before_any_weights() -> None:
    with pytest.raises(ConfigError, match=r"beyond the depth 24"):
        create_model("ad_dinov3", layers=[6, 12, 18, 25])
    with pytest.raises(ConfigError, match=r"image_size 518"):
        create_model("ad_dinov3", image_size=518)


@pytest.mark.parametrize(
    ("key", "value"), [("compat", "faithful"), ("image_score", "mean"), ("text_activation", "relu")]
)
def test_bad_choices(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        create_model("ad_dinov3_tiny", **{key: value})
