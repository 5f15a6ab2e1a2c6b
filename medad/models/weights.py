"""Frozen-weight resolution for the backbone (timm) and the CLIP text tower (open_clip).

Weights come from a hub id (timm / open_clip pretrained tag / ``hf-hub:`` repo) or a local file
(``.safetensors``, ``.pth``, ``.pt``, ``.bin``); the sha256 of the file used is always recorded. Random
initialisation happens only when asked for, is seeded (so a rebuild gives the same frozen weights) and is
identified by the sha256 of the initialised state dict.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models.weight_ids import (
    DINOV3_HF_REPO,
    LICENCES,
    WEIGHT_SUFFIXES,
    backbone_licence,
    clip_licence,
    is_local_weights,
)
from medad.utils.io import sha256_file

M = TypeVar("M", bound=nn.Module)


def state_dict_sha256(module: nn.Module) -> str:
    """Return the sha256 of a module's state dict (sorted names, dtypes, shapes and raw bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def seeded(build: Callable[[], M], seed: int) -> M:
    """Run ``build`` under a fixed torch seed without disturbing the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def check_weights_path(path: str | os.PathLike[str], what: str = "") -> Path:
    """The weights file ``path`` (``~`` expanded), refused when it is missing or has no weights suffix.

    Args:
        path: The file.
        what: What the weights are for (``backbone``, ``text``, ``CLIP``), named in the message.

    Raises:
        WeightsError: naming the file and the fix.
    """
    file = Path(path).expanduser()
    named = f"{what} weights file" if what else "weights file"
    if not file.is_file():
        raise WeightsError(f"{named} {str(file)!r} does not exist; pass the path of a downloaded file")
    if not file.name.lower().endswith(WEIGHT_SUFFIXES):
        raise WeightsError(f"{named} {str(file)!r} has an unsupported suffix; use one of {', '.join(WEIGHT_SUFFIXES)}")
    return file


def unreadable_weights(file: str | os.PathLike[str], exc: BaseException) -> WeightsError:
    """The one error for a weights file that cannot be read at all (truncated, not a weights format).

    ``medad weights check`` and every model loader give this same message for the same file.
    """
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return WeightsError(
        f"weights file {str(file)!r} is not a readable safetensors, torch pickle or TorchScript file ({detail}); "
        "it is truncated or corrupt: download it again (`medad weights check FILE` describes a file)"
    )


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], file: str | os.PathLike[str], what: str) -> None:
    """Refuse weights holding NaN or infinite values, which would turn every score into NaN.

    Args:
        tensors: ``(name, tensor)`` pairs (a state dict's ``items()``).
        file: The file they came from, named in the message.
        what: What the weights are for (``backbone``, ``text``, ``CLIP``, ``adapter``).

    Raises:
        WeightsError: naming the file, the first bad tensor and the fix.
    """
    for name, tensor in tensors:
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"{what} weights file {str(file)!r} holds NaN or infinite values (first in {name}); the file is "
                "corrupt or was saved from a diverged run: download it again or use another checkpoint"
            )


HUB_PROBE_TIMEOUT_S = 3.0
"""How long one probe of the Hugging Face hub may take before medad treats it as unreachable."""


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached, from one short request (made once per process); ``None`` when
    it answers or offline mode (``HF_HUB_OFFLINE=1``) is set, where the hub libraries never try the network."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.is_offline_mode():
        return None
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # connection refused, DNS, TLS, timeout: the HTTP client raises its own types
        return f"the Hugging Face hub {constants.ENDPOINT} did not answer within {HUB_PROBE_TIMEOUT_S:g} s ({exc})"
    return None


@contextlib.contextmanager
def hub_access() -> Iterator[str | None]:
    """Around a hub download: when the hub does not answer (:func:`hub_unreachable`), use the local cache only
    (huggingface_hub's offline mode for this call), so a missing file fails at once instead of after minutes of
    retries. Yields the reason the hub is unreachable, or ``None``."""
    from huggingface_hub import constants

    reason = hub_unreachable()
    if reason is None:
        yield None
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = saved


def hub_failure(hint: str, unreachable: str | None) -> str:
    """``hint`` (what failed and the local-file fix), prefixed with why the hub was not tried when it did not
    answer."""
    if unreachable is None:
        return hint
    return f"{unreachable}, so only the local cache was tried and {hint}"


def _gated_hint(name: str) -> str:
    return (
        f"the weights of backbone {name!r} could not be loaded from the hub (offline, missing or gated). DINOv3 "
        f"weights are gated under Meta's DINOv3 License: request access on Hugging Face ({DINOV3_HF_REPO} and "
        f"timm/{name}) or through Meta's form, then run `hf auth login` with network access; or download the file "
        "yourself and pass it: --backbone-weights /path/to/file.safetensors on the command line, "
        "backbone_weights='/path/to/file.safetensors' in Python, `weights: {backbone: {file: ...}}` in a protocol "
        "(.pth and .bin work too)"
    )


def _hub_file_sha256(repo_id: str | None) -> tuple[str | None, str | None]:
    """Locate a timm hub file in the local Hugging Face cache and hash it."""
    if not repo_id:
        return None, None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found, sha256_file(found)
    return None, None


def _backbone_size(arch: str, kwargs: Mapping[str, Any]) -> str:
    """``depth D, width W`` of the timm ViT ``arch`` built with ``kwargs`` (on the meta device: no memory)."""
    import timm

    with torch.device("meta"):
        probe: Any = timm.create_model(arch, pretrained=False, **kwargs)
    return f"depth {len(probe.blocks)}, width {probe.embed_dim}"


def _backbone_from_file(name: str, file: Path, kwargs: Mapping[str, Any], for_model: str) -> Any:
    """The timm ViT ``name`` with the weights of ``file``; a file that cannot be read gets the same message as
    ``medad weights check``, a file of another size names the model and the size it expects."""
    import timm

    try:  # timm's DINOv3 filter prints a line per zero qkv bias it drops from Meta's files: keep stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    except Exception as exc:  # safetensors, pickle, zip and state-dict errors come as many types
        from medad.models.weights_files import read_weights

        read_weights(file)  # an unreadable file raises the error `medad weights check` gives
        model_text = f"model {for_model!r}, whose backbone is " if for_model else "backbone "
        raise WeightsError(
            f"backbone weights file {str(file)!r} does not fit {model_text}{name.split('.')[0]!r} with "
            f"{_backbone_size(name.split('.')[0], kwargs)} ({str(exc).splitlines()[0][:200]}); run `medad weights "
            "check FILE` to see which architecture the file fits, and give it to a model built on that backbone "
            "(or pass the file of this model's size)"
        ) from exc
    check_finite(model.state_dict().items(), file, "backbone")
    return model


def build_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    random_init: bool = False,
    img_size: int = 512,
    overrides: Mapping[str, Any] | None = None,
    init_seed: int = 0,
    for_model: str = "",
) -> tuple[Any, dict[str, Any]]:
    """Build a timm ViT backbone with its weights.

    Args:
        name: timm model name, e.g. ``vit_large_patch16_dinov3.lvd1689m``.
        weights: ``None`` for the hub weights of ``name``, or a local weights file.
        random_init: Build with seeded random weights (only when explicitly asked; ``weights`` must be None).
        img_size: Input side in pixels.
        overrides: Extra timm keyword arguments (e.g. ``depth``, ``embed_dim`` for tiny test models).
        init_seed: Seed of the random initialisation.
        for_model: The registered model the backbone is for (named in a mismatch message).

    Returns:
        ``(model, info)``: the timm model (typed ``Any``: torch types a module's submodules and attributes as
        ``Tensor | Module``, and medad reads timm's own ones, ``patch_embed``, ``blocks``, ``pretrained_cfg``),
        and info with ``id``, ``source`` (``hub``/``file``/``random``), ``file``, ``sha256``, ``licence``.

    Raises:
        ConfigError: Unknown timm name, or both ``weights`` and ``random_init``.
        WeightsError: Missing, gated, offline, unreadable, non-finite or mismatching weights.
    """
    import timm

    arch = name.split(".")[0]
    if arch not in timm.list_models():
        raise ConfigError(f"unknown timm backbone {name!r}; pick one of timm.list_models('*dinov3*')")
    if random_init and weights is not None:
        raise ConfigError("backbone: pass either backbone_weights or random_init=True, not both")
    # A fixed input size lets timm build the RoPE table once, on the model's device; with timm's dynamic size it
    # is rebuilt on the CPU and copied to the GPU every forward, which makes the host wait for the GPU each batch.
    kwargs = {"img_size": img_size, "num_classes": 0, "dynamic_img_size": False, **dict(overrides or {})}
    info: dict[str, Any] = {"id": name, "licence": backbone_licence(name), "file": None, "sha256": None}
    model: Any
    if random_init:
        model = seeded(lambda: timm.create_model(arch, pretrained=False, **kwargs), init_seed)
        info.update(source="random", licence=LICENCES["random"], sha256=state_dict_sha256(model))
    elif weights is not None:
        file = check_weights_path(weights, "backbone")
        model = _backbone_from_file(name, file, kwargs, for_model)
        info.update(source="file", file=str(file), sha256=sha256_file(file))
    else:
        with hub_access() as unreachable:
            try:
                model = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as exc:  # hub failures come as many exception types (offline, gated, 404, HTTP)
                raise WeightsError(hub_failure(_gated_hint(name), unreachable)) from exc
        path, digest = _hub_file_sha256(model.pretrained_cfg.get("hf_hub_id"))
        check_finite(model.state_dict().items(), path or name, "backbone")
        info.update(source="hub", file=path, sha256=digest)
    return model, info


def text_model_config(model_name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return open_clip's config for ``model_name`` with ``overrides`` merged in (``text_cfg`` merged key-wise)."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ConfigError(
            f"unknown open_clip model {model_name!r}; pick one of open_clip.list_models(), e.g. 'ViT-L-14-336'"
        )
    cfg = copy.deepcopy(cfg)
    for key, value in dict(overrides or {}).items():
        if key == "text_cfg":
            cfg["text_cfg"] = {**cfg.get("text_cfg", {}), **value}
        else:
            cfg[key] = value
    return cfg


def _read_state_dict(file: Path, wanted: set[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a CLIP / text-tower checkpoint whose names map onto ``wanted``."""

    def rename(key: str) -> str:
        for prefix in ("module.", "text."):
            if key.startswith(prefix) and key[len(prefix) :] in wanted:
                return key[len(prefix) :]
        return key

    unreadable = WeightsError(
        f"text weights file {str(file)!r} is neither a state dict (torch.save / .safetensors) nor a TorchScript "
        "archive; pass a CLIP checkpoint file (e.g. open_clip's or OpenAI's ViT-B-32 .pt), see docs/models.md"
    )
    if file.name.lower().endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                return {rename(k): handle.get_tensor(k) for k in handle.keys() if rename(k) in wanted}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise unreadable_weights(file, exc) from exc
    try:
        loaded: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # an OpenAI TorchScript archive is not a plain pickle
        try:
            loaded = torch.jit.load(str(file), map_location="cpu").state_dict()
        except (RuntimeError, ValueError, OSError) as exc:
            raise unreadable_weights(file, exc) from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise unreadable
    return {rename(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor) and rename(k) in wanted}


def open_clip_hub_file(model_name: str, tag: str, hint: str) -> Path:
    """The local file of open_clip weights ``model_name``/``tag`` (an open_clip tag or ``hf-hub:<repo>``).

    Raises:
        ConfigError: open_clip knows no such tag for the model.
        WeightsError: the file cannot be fetched (offline, gated, missing); the message is ``hint``.
    """
    import open_clip

    if tag.startswith("hf-hub:") or "/" in tag:  # a Hugging Face repo, e.g. timm/vit_large_patch14_clip_336.openai
        return _hf_repo_file(tag.removeprefix("hf-hub:"), hint)
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ConfigError(
            f"open_clip has no pretrained tag {tag!r} for {model_name!r}; known tags: {', '.join(tags) or 'none'}; "
            "or pass a local weights file"
        )
    with hub_access() as unreachable:
        try:
            return Path(open_clip.download_pretrained(cfg))
        except Exception as exc:  # hub failures come as many exception types
            raise WeightsError(hub_failure(hint, unreachable)) from exc


def _hf_repo_file(repo: str, hint: str) -> Path:
    """open_clip's weights file of a Hugging Face repo (safetensors first); ``hint`` when neither can be had."""
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    with hub_access() as unreachable:
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                return Path(hf_hub_download(repo, filename))
            except Exception as exc:  # hub failures come as many exception types
                last = exc
    raise WeightsError(hub_failure(hint, unreachable)) from last


def _text_hint(model_name: str, tag: str) -> str:
    return (
        f"the CLIP text weights {model_name!r}/{tag!r} could not be downloaded (offline or missing); with network "
        f"access run `python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{tag}')\"` "
        "once to fill the cache, or download OpenAI's ViT-L-14-336px.pt (MIT licence) or the Hugging Face file "
        "timm/vit_large_patch14_clip_336.openai/open_clip_model.safetensors and pass it: --text-weights "
        "/path/to/file on the command line, text_weights='/path/to/file' in Python, `weights: {text: {file: ...}}` "
        "in a protocol"
    )


def build_text_tower(
    model_name: str,
    weights: str | os.PathLike[str] | None = "openai",
    quick_gelu: bool = False,
    random_init: bool = False,
    overrides: Mapping[str, Any] | None = None,
    init_seed: int = 1,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build only the text tower of an open_clip model (the vision tower is never built) and load its weights.

    Args:
        model_name: open_clip config name, e.g. ``ViT-L-14-336``.
        weights: An open_clip pretrained tag (``openai``), ``hf-hub:<repo>``, or a local file holding a full CLIP
            or a text-only state dict (safetensors, torch pickle or OpenAI TorchScript). ``None`` with random_init.
        quick_gelu: Use QuickGELU (what OpenAI trained with) instead of GELU in the MLPs.
        random_init: Seeded random weights; ``weights`` is then ignored and must be None.
        overrides: Merged into open_clip's model config (``embed_dim``, ``text_cfg`` keys).
        init_seed: Seed of the random initialisation.

    Returns:
        ``(tower, info)``; info holds ``id``, ``source``, ``file``, ``sha256``, ``licence``, ``activation``.

    Raises:
        ConfigError: Unknown model or tag, or both ``weights`` and ``random_init``.
        WeightsError: Missing, offline or mismatching weights.
    """
    from open_clip.model import _build_text_tower

    if random_init and weights is not None:
        raise ConfigError("text: pass either text_weights or random_init=True, not both")
    cfg = text_model_config(model_name, overrides)
    activation = "quickgelu" if quick_gelu else "gelu"

    def build() -> nn.Module:
        return _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=quick_gelu)

    info: dict[str, Any] = {"id": model_name, "activation": activation, "file": None, "sha256": None}
    if random_init:
        tower = seeded(build, init_seed)
        info.update(source="random", licence=LICENCES["random"], sha256=state_dict_sha256(tower))
        return tower, info
    if weights is None:
        raise ConfigError(
            "text_weights is None: pass an open_clip tag such as 'openai', a local file, or random_init=True "
            "(on the command line: --text-weights FILE|TAG)"
        )
    spec = str(weights)
    if is_local_weights(spec):
        file, source, weights_id = check_weights_path(spec, "text"), "file", model_name
    else:
        file, source, weights_id = (
            open_clip_hub_file(model_name, spec, _text_hint(model_name, spec)),
            "hub",
            f"{model_name}/{spec}",
        )
    tower = build()
    expected = tower.state_dict()
    state = _read_state_dict(file, set(expected))
    missing = sorted(set(expected) - set(state))
    if missing:
        raise WeightsError(
            f"text weights file {str(file)!r} lacks {len(missing)} tensors of the {model_name!r} text tower "
            f"(e.g. {', '.join(missing[:3])}); pass a CLIP checkpoint of this architecture"
        )
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"text weights file {str(file)!r} does not fit {model_name!r}: {k} is {tuple(state[k].shape)}, "
            f"expected {tuple(expected[k].shape)}; pass a CLIP checkpoint of this architecture"
        )
    check_finite(state.items(), file, "text")
    tower.load_state_dict(state)
    licence = clip_licence(spec)
    info.update(id=weights_id, source=source, file=str(file), sha256=sha256_file(file), licence=licence)
    return tower, info
