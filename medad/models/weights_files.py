"""The frozen-weights files users download: read any of their formats, say what they fit, convert to safetensors.

Formats: safetensors (timm / Hugging Face / open_clip ``open_clip_model.safetensors``), torch pickles (Meta's
DINOv3 ``dinov3_vitl16_pretrain_lvd1689m-*.pth``, open_clip ``open_clip_pytorch_model.bin``) and TorchScript
archives (OpenAI's CLIP ``ViT-L-14-336px.pt``, whose state dict is read, as open_clip's OpenAI loader does).
Architectures are matched by key names and shapes against the models built on the meta device (no weights are
allocated): timm's DINOv3 ViTs (Meta's key names go through timm's own DINOv3 checkpoint filter, exactly as when
the file is loaded), open_clip's CLIP ViTs in OpenAI's layout, their text or vision towers alone, and the
AnomalyCLIP release's prompt learner (``epoch_N.pth``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medad.errors import DiskError, WeightsError
from medad.models.release_data import RELEASE_DATASETS, RELEASE_FAMILIES, TRAINING_DATA_KEY, release_training_data
from medad.models.weights import LICENCES, check_weights_path, unreadable_weights
from medad.utils.io import disk_errors, sha256_file

DINOV3_ARCHITECTURES: tuple[str, ...] = (
    "vit_small_patch16_dinov3",
    "vit_small_plus_patch16_dinov3",
    "vit_base_patch16_dinov3",
    "vit_large_patch16_dinov3",
    "vit_huge_plus_patch16_dinov3",
    "vit_small_patch16_dinov3_qkvb",
    "vit_small_plus_patch16_dinov3_qkvb",
    "vit_base_patch16_dinov3_qkvb",
    "vit_large_patch16_dinov3_qkvb",
    "vit_huge_plus_patch16_dinov3_qkvb",
)
"""timm's DINOv3 ViTs that a released file can fit (the 7B model is left out: nobody runs it here)."""

CLIP_ARCHITECTURES: tuple[str, ...] = ("ViT-L-14-336", "ViT-L-14", "ViT-B-16", "ViT-B-32")
"""open_clip configs in OpenAI's layout (``visual.conv1``, ``transformer.resblocks.N``, ...)."""

OPENAI_METADATA_KEYS: frozenset[str] = frozenset({"input_resolution", "context_length", "vocab_size"})
"""Integers OpenAI's TorchScript archives carry beside the weights (OpenAI's and open_clip's loaders drop them)."""

FORMATS = {
    "safetensors": "safetensors",
    "torchscript": "TorchScript archive (OpenAI CLIP layout)",
    "pickle": "torch pickle (.pth / .bin state dict)",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture a weights file can fit.

    Attributes:
        name: What the report calls it, e.g. ``timm vit_large_patch16_dinov3``.
        family: ``dinov3``, ``clip``, ``clip-text``, ``clip-vision``, ``adaclip``, ``aa-clip-text``,
            ``aa-clip-image`` or ``clip-prompts`` (a release prompt learner).
        expected: Builds the key -> shape table of the architecture (on the meta device).
        adapt: Maps a file's tensors to the architecture's key names (e.g. timm's DINOv3 filter); may drop keys.
        usage: How to use a file that fits (the CLI flag and model option).
        licence: Licence hint for released weights of this architecture.
    """

    name: str
    family: str
    expected: Callable[[], dict[str, tuple[int, ...]]]
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    usage: str
    licence: str


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def dinov3_architecture(name: str, overrides: Mapping[str, Any] | None = None) -> Architecture:
    """A timm DINOv3 ViT (``overrides``: extra timm keywords, e.g. a tiny same-layout test model)."""
    import timm

    kwargs = {"pretrained": False, "num_classes": 0, **dict(overrides or {})}
    cache: dict[str, torch.nn.Module] = {}

    def model() -> torch.nn.Module:
        if "m" not in cache:
            with torch.device("meta"):
                cache["m"] = timm.create_model(name, **kwargs)
        return cache["m"]

    def adapt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from timm.models.eva import checkpoint_filter_fn

        target = model()
        has_q_bias = any(k.endswith("attn.q_bias") for k in target.state_dict())
        kept = {}
        for key, value in state.items():  # timm's filter drops Meta's qkv biases for models without them
            if key.endswith("attn.qkv.bias") and not has_q_bias and value.device.type != "meta" and value.any():
                kept[key.replace("qkv.bias", "qkv.bias(non-zero)")] = value
        with contextlib.redirect_stdout(io.StringIO()):  # timm prints a line per bias it skips
            out = dict(checkpoint_filter_fn(dict(state), target))
        return {**out, **kept}

    return Architecture(
        name=f"timm {name}",
        family="dinov3",
        expected=lambda: _shapes(model()),
        adapt=adapt,
        usage=f"--backbone-weights FILE (model option backbone_weights; backbone {name})",
        licence=LICENCES["dinov3"],
    )


def _strip(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def clip_architecture(model_name: str, overrides: Mapping[str, Any] | None = None) -> Architecture:
    """A full open_clip CLIP in OpenAI's layout (``overrides`` merged into open_clip's config)."""
    from medad.models.weights import text_model_config

    def expected() -> dict[str, tuple[int, ...]]:
        from open_clip.model import CLIP

        cfg = text_model_config(model_name, overrides)
        with torch.device("meta"):
            return _shapes(CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]))

    def adapt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in _strip(state, ("module.",)).items() if k not in OPENAI_METADATA_KEYS}

    return Architecture(
        name=f"open_clip {model_name} (OpenAI layout)",
        family="clip",
        expected=expected,
        adapt=adapt,
        usage=f"--text-weights FILE (model option text_weights; text_model {model_name}); the text tower is used "
        "(its vision tower: clip_weights of a CLIP-family model)",
        licence="MIT if these are OpenAI's CLIP weights; otherwise see the weights' model card",
    )


def clip_text_architecture(model_name: str, overrides: Mapping[str, Any] | None = None) -> Architecture:
    """The text tower of an open_clip CLIP alone (keys with or without a ``text.`` prefix)."""
    from medad.models.weights import text_model_config

    def expected() -> dict[str, tuple[int, ...]]:
        from open_clip.model import _build_text_tower

        cfg = text_model_config(model_name, overrides)
        with torch.device("meta"):
            return _shapes(_build_text_tower(cfg["embed_dim"], cfg["text_cfg"]))

    return Architecture(
        name=f"open_clip {model_name} text tower",
        family="clip-text",
        expected=expected,
        adapt=lambda state: _strip(state, ("module.", "text.")),
        usage=f"--text-weights FILE (model option text_weights; text_model {model_name})",
        licence=LICENCES["unknown"],
    )


def clip_vision_architecture(model_name: str, overrides: Mapping[str, Any] | None = None) -> Architecture:
    """The vision tower of an open_clip CLIP alone (keys with or without a ``visual.`` prefix; a full CLIP's
    ``visual.`` tensors fit it too, but the full CLIP is tried first), as :mod:`medad.models.clip_vision` loads it."""
    from medad.models.clip_vision import vision_model_config, vision_state

    def expected() -> dict[str, tuple[int, ...]]:
        from open_clip.model import _build_vision_tower

        cfg = vision_model_config(model_name, overrides)
        with torch.device("meta"):
            return _shapes(_build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"]))

    return Architecture(
        name=f"open_clip {model_name} vision tower",
        family="clip-vision",
        expected=expected,
        adapt=vision_state,
        usage=f"clip_weights FILE of a CLIP-family model (medad.models.clip_vision; clip_model {model_name})",
        licence="MIT if these are OpenAI's CLIP weights; otherwise see the weights' model card",
    )


def adaclip_architecture(
    model_name: str = "ViT-L-14-336",
    overrides: Mapping[str, Any] | None = None,
    n_layers: int = 4,
    length: int = 5,
    depth: int = 4,
) -> Architecture:
    """A checkpoint of the AdaCLIP release (``clip_model.<part>...``, :mod:`medad.models.adaclip`) for one CLIP
    size, tapped-layer count and prompt shape (the release's: ViT-L-14-336, 4 layers, 5 tokens x 4 blocks)."""
    from medad.models.clip_vision import vision_model_config

    def expected() -> dict[str, tuple[int, ...]]:
        from medad.models.adaclip import RELEASE_PREFIX, trainable_parts

        cfg = vision_model_config(model_name, overrides)
        widths = (int(cfg["vision_cfg"]["width"]), int(cfg["text_cfg"]["width"]), int(cfg["embed_dim"]))
        with torch.device("meta"):
            parts = torch.nn.ModuleDict(trainable_parts(widths, n_layers, length, depth))
        return {f"{RELEASE_PREFIX}{k}": v for k, v in _shapes(parts).items()}

    return Architecture(
        name=f"AdaCLIP release checkpoint ({model_name}, {n_layers} layers, {length} prompt tokens x {depth} blocks)",
        family="adaclip",
        expected=expected,
        adapt=dict,
        usage=f"release_weights FILE of model adaclip (clip_model {model_name}, prompt_length {length}, "
        f"prompt_depth {depth}, {n_layers} layers)",
        licence="MIT (the AdaCLIP release); trained on the data its file name says (e.g. MVTec AD + ColonDB)",
    )


PROMPT_LEARNER_MODELS: tuple[str, ...] = ("ViT-L-14-336", "ViT-B-16")
"""The CLIP sizes whose AnomalyCLIP / Crane prompt-learner files ``medad weights check`` names."""


def prompt_learner_architecture(
    method: str,
    model_name: str,
    overrides: Mapping[str, Any] | None = None,
    sizes: tuple[int, int, int] = (12, 4, 9),
) -> Architecture:
    """The prompt-learner file of the AnomalyCLIP or Crane release (``{"prompt_learner": ...}``) for the text tower
    of CLIP ``model_name``; ``sizes``: context tokens, deep tokens per block, deep-token depth (the releases' 12,
    4, 9). AnomalyCLIP's files also hold its unused ``compound_prompt_projections`` (width -> 896); Crane's not."""
    from medad.models.weights import text_model_config

    n_ctx, text_ctx, depth = sizes

    def expected() -> dict[str, tuple[int, ...]]:
        text = text_model_config(model_name, overrides)["text_cfg"]
        width, length = int(text["width"]), int(text.get("context_length", 77))
        shapes: dict[str, tuple[int, ...]] = {}
        for side in ("pos", "neg"):
            shapes.update({f"ctx_{side}": (1, 1, n_ctx, width), f"token_prefix_{side}": (1, 1, 1, width)})
            shapes[f"token_suffix_{side}"] = (1, 1, length - 1 - n_ctx, width)
            shapes[f"tokenized_prompts_{side}"] = (1, 1, length)
        for i in range(depth - 1):
            shapes[f"compound_prompts_text.{i}"] = (text_ctx, width)
            if method == "anomalyclip":
                shapes[f"compound_prompt_projections.{i}.weight"] = (896, width)
                shapes[f"compound_prompt_projections.{i}.bias"] = (896,)
        return shapes

    label, models = {
        "anomalyclip": ("AnomalyCLIP", "anomalyclip / anomalyclip_paper"),
        "crane": ("Crane", "crane, crane_plus"),
    }[method]
    return Architecture(
        name=f"{label} prompt learner ({model_name} text tower: {n_ctx} context tokens, {depth - 1} x {text_ctx} "
        "deep tokens)",
        family="clip-prompts",
        expected=expected,
        adapt=lambda state: _strip(state, ("module.",)),
        usage=f"release_prompts=FILE of {models} (clip_model {model_name}, n_ctx {n_ctx}, text_ctx {text_ctx}, "
        f"text_depth {depth}), with the CLIP the prompts were trained on",
        licence=LICENCES[method],
    )


AA_CLIP_LICENCE = "Apache-2.0 release code (Mwxinnn/AA-CLIP; it publishes no weights): see the file's source"


def aa_clip_text_architecture(
    model_name: str = "ViT-L-14-336", overrides: Mapping[str, Any] | None = None, until: int = 3
) -> Architecture:
    """The AA-CLIP release's ``text_adapter.pth`` (``text_adapter``: ``N.fc.0.weight``, the last the EOT projection)."""
    from medad.models.weights import text_model_config

    def expected() -> dict[str, tuple[int, ...]]:
        cfg = text_model_config(model_name, overrides)
        width, embed = int(cfg["text_cfg"]["width"]), int(cfg["embed_dim"])
        return {**{f"{i}.fc.0.weight": (width, width) for i in range(until)}, f"{until}.fc.0.weight": (embed, width)}

    return Architecture(
        name=f"AA-CLIP text adapter ({model_name}, {until} blocks)",
        family="aa-clip-text",
        expected=expected,
        adapt=lambda state: _strip(state, ("module.",)),
        usage="model option release_text_adapter of aa_clip (with release_image_adapter)",
        licence=AA_CLIP_LICENCE,
    )


def aa_clip_image_architecture(
    model_name: str = "ViT-L-14-336",
    overrides: Mapping[str, Any] | None = None,
    relu: bool = False,
    until: int = 6,
    levels: int = 4,
) -> Architecture:
    """The AA-CLIP release's ``image_adapter[_N].pth`` (``image_adapter``: block adapters, per-level and detection
    projections; their ``fc.0`` with the release's ``--relu``)."""
    from medad.models.clip_vision import vision_model_config

    def expected() -> dict[str, tuple[int, ...]]:
        cfg = vision_model_config(model_name, overrides)
        width, embed, proj = int(cfg["vision_cfg"]["width"]), int(cfg["embed_dim"]), ".fc.0" if relu else ".fc"
        shapes = {f"layer_adapters.{i}.fc.0.weight": (width, width) for i in range(until)}
        shapes.update({f"seg_proj.{i}{proj}.weight": (embed, width) for i in range(levels)})
        return {**shapes, f"det_proj{proj}.weight": (embed, width)}

    return Architecture(
        name=f"AA-CLIP image adapter ({model_name}, {until} blocks, {levels} levels, relu={relu})",
        family="aa-clip-image",
        expected=expected,
        adapt=lambda state: _strip(state, ("module.",)),
        usage=f"model option release_image_adapter of aa_clip (with release_text_adapter; relu={relu})",
        licence=AA_CLIP_LICENCE,
    )


def default_architectures() -> list[Architecture]:
    """Every architecture ``medad weights check`` tries, DINOv3 first."""
    return [
        *(dinov3_architecture(name) for name in DINOV3_ARCHITECTURES),
        *(clip_architecture(name) for name in CLIP_ARCHITECTURES),
        *(clip_text_architecture(name) for name in CLIP_ARCHITECTURES),
        *(clip_vision_architecture(name) for name in CLIP_ARCHITECTURES),
        *(adaclip_architecture(name) for name in CLIP_ARCHITECTURES),
        *(prompt_learner_architecture(m, name) for m in ("crane", "anomalyclip") for name in PROMPT_LEARNER_MODELS),
        aa_clip_text_architecture(),
        *(aa_clip_image_architecture(relu=relu) for relu in (False, True)),
    ]


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _unwrap(loaded: Any) -> Mapping[str, Any]:
    """The state dict inside a checkpoint (``state_dict`` / ``model`` / ``module`` / ``prompt_learner`` wrappers)."""
    while isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        wrappers = ("state_dict", "model", "module", "model_ema", "prompt_learner", "text_adapter", "image_adapter")
        inner = next((loaded[k] for k in wrappers if k in loaded), None)
        if not isinstance(inner, Mapping):
            break
        loaded = inner
    if not isinstance(loaded, Mapping):
        raise TypeError(f"holds a {type(loaded).__name__}, not a state dict")
    return loaded


def read_weights(path: str | os.PathLike[str]) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a weights file's tensors as they are stored (names, dtypes, values).

    Returns:
        ``(format, state)``: the format key of :data:`FORMATS` and the name -> tensor dict (non-tensor entries of
        a pickle are left out).

    Raises:
        WeightsError: the file is missing, has another suffix, or cannot be read as any of the formats.
    """
    file = check_weights_path(path)
    try:
        if file.name.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            return "safetensors", load_file(str(file))
        if _is_torchscript(file):
            return "torchscript", dict(torch.jit.load(str(file), map_location="cpu").state_dict())
        loaded = _unwrap(torch.load(file, map_location="cpu", weights_only=True))
        return "pickle", {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    except Exception as exc:  # safetensors, zip, pickle and TorchScript errors come as many types
        raise unreadable_weights(file, exc) from exc


def match(state: dict[str, torch.Tensor], arch: Architecture) -> dict[str, Any]:
    """Compare a file's tensors with one architecture: missing and unexpected keys, wrong shapes."""
    try:
        adapted = arch.adapt(dict(state))
    except Exception as exc:  # a foreign layout can trip a converter in many ways
        return {"architecture": arch.name, "error": str(exc).splitlines()[0][:200] if str(exc) else repr(exc)}
    expected = arch.expected()
    missing = sorted(set(expected) - set(adapted))
    unexpected = sorted(set(adapted) - set(expected))
    wrong = [
        [k, list(adapted[k].shape), list(expected[k])]
        for k in sorted(set(adapted) & set(expected))
        if tuple(adapted[k].shape) != expected[k]
    ]
    return {
        "architecture": arch.name,
        "n_missing": len(missing),
        "missing": missing[:5],
        "n_unexpected": len(unexpected),
        "unexpected": unexpected[:5],
        "n_wrong_shapes": len(wrong),
        "wrong_shapes": wrong[:5],
    }


def _distance(result: Mapping[str, Any]) -> int:
    if "error" in result:
        return 1 << 30
    return int(result["n_missing"] + result["n_unexpected"] + result["n_wrong_shapes"])


def _families(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The architecture families a file's key names point to (the others are not tried)."""
    keys = set(_strip(state, ("module.", "text.")))
    families = set()
    if keys & {"cls_token", "storage_tokens", "reg_token"}:
        families.add("dinov3")
    if "visual.conv1.weight" in keys:
        families.add("clip")
    if "token_embedding.weight" in keys:
        families.add("clip-text")
    if "visual.conv1.weight" in keys or {"conv1.weight", "class_embedding"} <= keys:
        families.add("clip-vision")
    if any(k.startswith("clip_model.visual_prompter.") for k in keys):
        families.add("adaclip")
    if "ctx_pos" in keys or any(k.startswith("compound_prompts_text.") for k in keys):
        families.add("clip-prompts")
    if keys and all(k.split(".", 1)[0].isdigit() and k.endswith(".fc.0.weight") for k in keys):
        families.add("aa-clip-text")
    if "layer_adapters.0.fc.0.weight" in keys:
        families.add("aa-clip-image")
    return families


def check_weights_file(
    path: str | os.PathLike[str], architectures: Iterable[Architecture] | None = None
) -> dict[str, Any]:
    """Describe a weights file: format, the architecture it fits (or the closest and why not), size, sha256.

    Args:
        path: The file.
        architectures: Candidates (default :func:`default_architectures`); tests add tiny same-layout ones.

    Returns:
        ``file``, ``format``, ``format_name``, ``tensors``, ``parameters`` (floating-point values), ``dtypes``,
        ``sha256``, ``fits`` (``architecture``, ``family``, ``usage``, ``licence``; ``None`` when nothing fits),
        ``closest`` (the nearest candidate's missing / unexpected keys and wrong shapes, when nothing fits) and
        ``licence``.

    Raises:
        WeightsError: the file cannot be read at all.
    """
    fmt, state = read_weights(path)
    candidates = list(architectures) if architectures is not None else default_architectures()
    dtypes: dict[str, int] = {}
    for tensor in state.values():
        dtypes[str(tensor.dtype).removeprefix("torch.")] = dtypes.get(str(tensor.dtype).removeprefix("torch."), 0) + 1
    report: dict[str, Any] = {
        "file": str(Path(path).expanduser()),
        "format": fmt,
        "format_name": FORMATS[fmt],
        "tensors": len(state),
        "parameters": int(sum(t.numel() for t in state.values() if t.is_floating_point())),
        "dtypes": dict(sorted(dtypes.items())),
        "sha256": sha256_file(Path(path).expanduser()),
        "fits": None,
        "closest": None,
        "licence": LICENCES["unknown"],
    }
    results = []
    families = _families(state)
    for arch in (a for a in candidates if a.family in families):
        result = match(state, arch)
        if _distance(result) == 0:
            report["fits"] = {"architecture": arch.name, "family": arch.family, "usage": arch.usage}
            report["licence"] = arch.licence
            return report
        results.append(result)
    if results:
        report["closest"] = min(results, key=_distance)
    return report


def format_check(report: Mapping[str, Any]) -> str:
    """The text ``medad weights check`` prints."""
    lines = [
        f"file: {report['file']}",
        f"format: {report['format_name']}",
        f"tensors: {report['tensors']} ({', '.join(f'{n} {d}' for d, n in report['dtypes'].items())}); "
        f"parameters: {report['parameters']:,}",
        f"sha256: {report['sha256']}",
    ]
    fits = report["fits"]
    if fits is not None:
        lines += [f"fits: {fits['architecture']}", f"use: {fits['usage']}", f"licence: {report['licence']}"]
        return "\n".join(lines)
    closest = report.get("closest") or {}
    lines.append("fits: nothing medad knows")
    if closest:
        lines.append(f"closest: {closest['architecture']}")
        if "error" in closest:
            lines.append(f"  could not be converted: {closest['error']}")
        else:
            for what in ("missing", "unexpected"):
                if closest[f"n_{what}"]:
                    lines.append(f"  {closest[f'n_{what}']} {what} keys, e.g. {', '.join(closest[what])}")
            for key, have, want in closest["wrong_shapes"]:
                lines.append(f"  {key}: shape {have} in the file, {want} expected")
    lines.append(
        "pass a DINOv3 backbone file (Meta .pth or timm safetensors), a CLIP file (OpenAI .pt, open_clip "
        "safetensors / .bin) or an AnomalyCLIP / Crane prompt-learner epoch_N.pth"
    )
    return "\n".join(lines)


def convert_weights_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    architectures: Iterable[Architecture] | None = None,
    trained_on: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the tensors of a weights file that fits a known architecture as one safetensors file.

    Names, dtypes and values are kept as stored (Meta's DINOv3 names stay Meta's: timm converts them on load,
    as it does for the ``.pth``), so the copy loads bit-identically to the source; tensors sharing memory are
    copied apart, as safetensors requires. A release's trained checkpoint (AnomalyCLIP / Crane prompts, AdaCLIP,
    AA-CLIP adapters) records the data it was trained on (``trained_on``, else :func:`release_training_data`) in
    the metadata's ``training_data``, which the protocols' leakage guard reads.

    Returns:
        The check report of the source plus ``out``, ``out_sha256`` and, for a release checkpoint,
        ``training_data`` (dataset kinds, or ``None`` when unknown).

    Raises:
        WeightsError: ``out`` is no ``.safetensors`` path or is a folder, or the source fits no known architecture.
        DiskError: ``out`` cannot be written (read-only or full disk); no temporary file is left behind.
    """
    target = Path(out).expanduser()
    _check_out(target)
    report = check_weights_file(path, architectures)
    if report["fits"] is None:
        closest = (report.get("closest") or {}).get("architecture", "none")
        raise WeightsError(
            f"weights file {report['file']!r} fits no architecture medad knows (closest: {closest}); run "
            "`medad weights check FILE` for the missing and unexpected keys"
        )
    _, state = read_weights(path)
    seen: set[int] = set()
    tensors = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        shared = pointer in seen
        seen.add(pointer)
        tensors[key] = tensor.detach().clone().contiguous() if shared or not tensor.is_contiguous() else tensor
    metadata = {
        "format": "pt",
        "source_format": report["format"],
        "source_sha256": report["sha256"],
        "architecture": report["fits"]["architecture"],
    }
    extra: dict[str, Any] = {}
    if report["fits"]["family"] in RELEASE_FAMILIES:
        data = tuple(trained_on) if trained_on else release_training_data(path, report["fits"]["family"])
        unknown = [kind for kind in data or () if kind not in RELEASE_DATASETS]
        if unknown:
            raise WeightsError(
                f"--trained-on {','.join(unknown)}: not a dataset kind; use any of {', '.join(RELEASE_DATASETS)}"
            )
        metadata[TRAINING_DATA_KEY] = ",".join(data) if data else "unknown"
        extra[TRAINING_DATA_KEY] = list(data) if data else None
    _save_atomic(tensors, metadata, target)
    return {**report, "out": str(target), "out_sha256": sha256_file(target), **extra}


def _check_out(target: Path) -> None:
    """Refuse an ``--out`` that is no ``.safetensors`` file path (wrong suffix, an existing folder)."""
    if target.suffix.lower() != ".safetensors":
        raise WeightsError(f"--out {str(target)!r} must end in .safetensors; e.g. --out weights.safetensors")
    if target.is_dir():
        raise WeightsError(
            f"--out {str(target)!r} is an existing folder; give the file to write inside it, e.g. --out "
            f"{str(target / 'weights.safetensors')!r}"
        )


def _save_atomic(tensors: dict[str, torch.Tensor], metadata: dict[str, str], target: Path) -> None:
    """Write a safetensors file through a temporary sibling, removed on every failure (a full or read-only disk
    raises :class:`~medad.errors.DiskError` naming ``target``)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with disk_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.open("wb").close()  # an unwritable folder fails here, as an OSError with its errno
            save_file(tensors, str(tmp), metadata=metadata)
            os.replace(tmp, target)
    except SafetensorError as exc:  # a write that fails half-way (full disk) comes as safetensors' own error
        raise DiskError(
            f"cannot write {str(target)!r} ({str(exc).splitlines()[0][:200]}); free space or choose another --out"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
