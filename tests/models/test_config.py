"""Model configs: pydantic models on medad's strict base, registered with their model, checked by `medad validate`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from medad.cli import main
from medad.errors import ConfigError
from medad.models import (
    ADDINOv3Config,
    MutualConfig,
    WinCLIPConfig,
    check_model_config,
    list_models,
    model_class,
)
from medad.protocols.schema import Protocol
from medad.utils.config import StrictModel

PROTOCOL = """\
name: tiny
models:
  - name: clean
    model: ad_dinov3_tiny
    options: {OPTIONS}
training:
  datasets:
    - name: industrial
      kind: mvtec
      root: data/industrial
  epochs: 2
  lr: 1.0e-3
targets:
  - name: lesions
    kind: isic
    root: data/lesions
"""


def test_configs_share_the_protocol_schemas_strict_base() -> None:
    assert issubclass(Protocol, StrictModel)
    expected = {"ad_dinov3": ADDINOv3Config, "winclip": WinCLIPConfig, "dinov3_mutual": MutualConfig}
    for name in list_models():
        config_class = model_class(name).config_class
        assert issubclass(config_class, StrictModel)
        assert isinstance(check_model_config(name), config_class)  # the registered defaults validate
    for name, config_class in expected.items():
        assert (
            model_class(name).config_class is config_class and model_class(f"{name}_tiny").config_class is config_class
        )
    config = ADDINOv3Config()
    with pytest.raises(ValidationError):
        config.image_size = 64  # type: ignore[misc]  # frozen


def test_values_are_checked_by_type_and_named() -> None:
    with pytest.raises(
        ConfigError, match=r"AD-DINOv3 option image_size \(got 'big'\): input should be a valid integer"
    ):
        ADDINOv3Config.from_kwargs(image_size="big")
    with pytest.raises(ConfigError, match=r"option random_init \(got 1\).*boolean"):
        MutualConfig.from_kwargs(random_init=1)
    with pytest.raises(ConfigError, match=r"option scales\.1 \(got 'x'\)"):
        WinCLIPConfig.from_kwargs(scales=[2, "x"])
    config = ADDINOv3Config.from_kwargs(layers=[1, 2], backbone_weights=Path("/w/dino.safetensors"), smoothing_sigma=2)
    assert config.layers == (1, 2) and config.backbone_weights == "/w/dino.safetensors"
    assert config.smoothing_sigma == 2.0 and isinstance(config.smoothing_sigma, float)
    assert config.to_dict()["layers"] == [1, 2] and ADDINOv3Config.from_kwargs(**config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown dinov3_mutual option\(s\) k_frac \(did you mean k_fraction\?\)"):
        MutualConfig.from_kwargs(k_frac=0.2)


def test_check_model_config_checks_the_architecture_without_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import medad.models.dinov3 as dinov3

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_model_config must not build the backbone")

    monkeypatch.setattr(dinov3, "build_backbone", no_weights)
    assert check_model_config("ad_dinov3", layers=[6, 12]).layers == (6, 12)
    with pytest.raises(ConfigError, match=r"layers \[25\] are beyond the depth 24"):
        check_model_config("ad_dinov3", layers=[6, 12, 18, 25])
    with pytest.raises(ConfigError, match=r"image_size 100 is not a multiple"):
        check_model_config("dinov3_mutual_tiny", image_size=100)
    with pytest.raises(ConfigError, match=r"scales must be distinct"):
        check_model_config("winclip_tiny", scales=[0])


def _validate(tmp_path: Path, options: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "study.yaml"
    path.write_text(PROTOCOL.replace("{OPTIONS}", options), encoding="utf-8")
    old, sys.argv = sys.argv, ["medad", "validate", str(path), "--structure-only"]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ("{layrs: [1, 2]}", ["models[0].options.layrs", "did you mean layers?"]),
        ("{image_size: big}", ["models[0].options.image_size", "(got 'big'): input should be a valid integer"]),
        ("{random_init: 1}", ["models[0].options.random_init", "valid boolean"]),
        ("{layers: [1, 9]}", ["models[0].options.layers", "beyond the depth 4"]),
    ],
)
def test_validate_names_the_bad_model_option(
    options: str, fragments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _validate(tmp_path, options, capsys)
    assert code == 2 and err.startswith(f"error: {tmp_path / 'study.yaml'}:5: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
