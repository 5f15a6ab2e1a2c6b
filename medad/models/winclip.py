"""WinCLIP (Jeong et al., CVPR 2023): training-free zero-shot anomaly classification and segmentation with CLIP.

Re-derived from the paper's description (no code copied). Both open_clip towers are frozen:

* **Compositional prompt ensemble**: every normal state word x every template gives the normal sentences,
  every anomalous state word x every template the anomalous ones; each sentence embedding is L2-normalised,
  averaged per group and normalised again, giving one normal and one anomalous text vector per class word.
* **Image score**: the CLS embedding of the whole image against the two text vectors, softmax of the cosine
  similarities divided by ``temperature``; the anomalous probability is the score.
* **Pixel map**: for every window scale ``k`` in ``scales``, all ``k x k`` windows of the ``g x g`` patch grid
  (stride ``window_stride``) are embedded by running the visual transformer on the window's patch tokens alone
  (with their positional embeddings) plus the class token, and the window's class output is scored like the
  image. A patch's score at scale ``k`` is the HARMONIC mean of the scores of the windows covering it (a patch is
  anomalous only if every window containing it is). The map is the mean of the scale maps, the patch-level map
  (final-layer patch tokens projected into the joint space and scored against the text; ``patch_map``) and the
  image score broadcast over the grid (``image_in_map``, the paper's image scale), bilinearly upsampled to the
  input size.

Resolution: ``image_size`` is free (a multiple of the patch size); the grid is ``g = image_size / patch`` (ViT-B/16+
at 240 px: 15 x 15; at 512 px: 32 x 32) and the positional embedding is resized by open_clip when the weights are
loaded. Windows are counted in PATCHES, so a 2 x 2 window always covers 2 patches per side: at a higher resolution
each window covers fewer pixels and there are ``(g - k + 1)^2`` windows per scale (361/324 at 320 px, 961/900 at
512 px with ViT-B/16+). Scale the windows with the resolution (e.g. ``scales: [3, 5]`` at 480 px) to keep the same
pixel extent as the paper's 240 px setting.

All windows of a batch are gathered with one index tensor and run through the transformer as one batch of short
sequences (chunked by ``window_batch``, and on CPU to cache-sized calls of :data:`CPU_TOKENS_PER_CALL` tokens);
there is no per-window or per-image Python loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medad.errors import ConfigError, WeightsError
from medad.models import head
from medad.models.base import AnomalyModel, Features, InferenceBatch, ModelKind, policy_image_scores, rgb
from medad.models.prompts import NORMAL_STATES, check_class_word  # WinCLIP's normal states: the ensemble's
from medad.models.registry import model_config, register_factory
from medad.models.weights import (
    LICENCES,
    check_finite,
    check_weights_path,
    clip_licence,
    is_local_weights,
    open_clip_hub_file,
    seeded,
    state_dict_sha256,
)
from medad.models.winclip_config import WinCLIPConfig
from medad.utils.io import sha256_file

PROMPT_SET_VERSION = "winclip-cpe-v1"

ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CPU_TOKENS_PER_CALL = 1024
"""On CPU the window sequences of one transformer call hold at most this many tokens (``window_batch`` still caps
the count). A call's activations grow with its tokens (the MLP's hidden layer: tokens x 4 x width floats, 141 MB for
the 1152 3x3 windows of 8 ViT-B images); buffers that large (over the C allocator's mmap threshold, 32 MiB at
most) are mapped fresh from the OS on every allocation and freed back, so each call pays a page fault per 4 KiB
it writes. Measured with ViT-B-16 on a 2-core EPYC (2 threads, 8 images in one batch): 3.0 million page faults and
22.9 s per batch uncapped, none and 19.5 s capped, the same as image by image. A GPU gains from large calls:
there only ``window_batch`` applies."""


def winclip_sentences(word: str) -> tuple[list[str], list[str]]:
    """Return the (normal, anomalous) sentences of the compositional prompt ensemble for one class word."""
    normal = [t.format(s.format(word)) for s in NORMAL_STATES for t in TEMPLATES]
    anomalous = [t.format(s.format(word)) for s in ANOMALOUS_STATES for t in TEMPLATES]
    return normal, anomalous


def window_indices(grid: int, size: int, stride: int = 1) -> torch.Tensor:
    """Patch indices of every ``size x size`` window of a ``grid x grid`` patch grid.

    Args:
        grid: Patches per side.
        size: Window side in patches (``1 <= size <= grid``).
        stride: Step between window origins in patches; the last row/column of windows is always included, so
            every patch is covered.

    Returns:
        ``(n_windows, size * size)`` int64 row-major patch indices (patch ``(r, c)`` has index ``r * grid + c``),
        windows ordered row-major by their top-left patch.
    """
    if not 1 <= size <= grid or stride < 1:
        raise ConfigError(f"window size {size} must be in 1..{grid} (the patch grid) and stride {stride} >= 1")
    starts = list(range(0, grid - size + 1, stride))
    if starts[-1] != grid - size:
        starts.append(grid - size)
    origin = torch.tensor(starts)
    origins = (origin[:, None] * grid + origin[None, :]).reshape(-1, 1)
    offsets = (torch.arange(size)[:, None] * grid + torch.arange(size)[None, :]).reshape(1, -1)
    return origins + offsets


def harmonic_aggregate(window_scores: torch.Tensor, indices: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Per-patch harmonic mean of the scores of the windows covering each patch.

    Args:
        window_scores: ``(B, n_windows)`` scores in (0, 1] (clamped to >= 1e-6).
        indices: ``(n_windows, k)`` patch indices of each window (:func:`window_indices`).
        n_patches: Patches in the grid.

    Returns:
        ``(B, n_patches)``: ``count_p / sum_{w covers p} 1 / s_w``; 0 for a patch no window covers.
    """
    inverse = 1.0 / window_scores.float().clamp_min(1e-6)
    per_slot = inverse[:, :, None].expand(-1, -1, indices.shape[1]).reshape(inverse.shape[0], -1)
    flat = indices.reshape(-1).to(window_scores.device)
    sums = torch.zeros(inverse.shape[0], n_patches, device=inverse.device).index_add_(1, flat, per_slot)
    counts = torch.bincount(flat, minlength=n_patches).to(inverse.dtype)
    return torch.where(counts > 0, counts / sums.clamp_min(1e-12), torch.zeros_like(sums))


def clip_model_config(name: str, overrides: Mapping[str, Any] | None, image_size: int) -> dict[str, Any]:
    """open_clip's config of ``name`` with ``overrides`` merged (``vision_cfg``/``text_cfg`` key-wise) and the
    vision input size set to ``image_size``."""
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model {name!r}; pick one of open_clip.list_models()")
    cfg = copy.deepcopy(cfg)
    for key, value in dict(overrides or {}).items():
        if key in ("vision_cfg", "text_cfg"):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    patch = int(cfg["vision_cfg"].get("patch_size", 16))
    if image_size % patch:
        lower, upper = image_size // patch * patch, (image_size // patch + 1) * patch
        raise ConfigError(
            f"image_size {image_size} is not a multiple of the patch size {patch} of {name!r}; use {lower or upper} "
            f"or {upper}"
        )
    cfg["vision_cfg"]["image_size"] = image_size
    return cfg


def _clip_hint(name: str, tag: str) -> str:
    return (
        f"the CLIP weights {name!r}/{tag!r} could not be loaded from the hub (offline or missing); with network access "
        f"run `python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"` once to fill the "
        "cache, or download the checkpoint yourself and pass it: --text-weights /path/to/file on the command line, "
        "clip_weights='/path/to/file' in Python, `weights: {text: {file: ...}}` in a protocol"
    )


def build_clip(config: WinCLIPConfig) -> tuple[Any, dict[str, Any]]:
    """Build the open_clip model of ``config`` with its weights (hub tag, local file or seeded random).

    Returns:
        ``(clip, info)``: the open_clip model (``Any``: open_clip is untyped) and its info, which holds ``id``,
        ``source`` (``hub``/``file``/``random``), ``file``, ``sha256`` and ``licence``.
    """
    cfg = clip_model_config(config.clip_model, config.clip_overrides, config.image_size)
    kwargs = {k: cfg[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    info: dict[str, Any] = {"id": config.clip_model, "file": None, "sha256": None}

    def create(pretrained: str | None) -> Any:
        import open_clip

        return open_clip.create_model(config.clip_model, pretrained=pretrained, **kwargs)

    if config.random_init:
        model = seeded(lambda: create(None), config.init_seed)
        info.update(source="random", licence=LICENCES["random"], sha256=state_dict_sha256(model))
        return model.eval().requires_grad_(False), info
    spec = str(config.clip_weights)
    if is_local_weights(spec):
        file, source, weights_id = check_weights_path(spec, "CLIP"), "file", config.clip_model
    else:
        file, source, weights_id = (
            open_clip_hub_file(config.clip_model, spec, _clip_hint(config.clip_model, spec)),
            "hub",
            f"{config.clip_model}/{spec}",
        )
    try:
        model = create(str(file))
    except Exception as exc:  # safetensors, pickle, zip and state-dict errors come as many types
        from medad.models.weights_files import read_weights

        read_weights(file)  # an unreadable file raises the error `medad weights check` gives
        raise WeightsError(
            f"CLIP weights file {str(file)!r} does not fit {config.clip_model!r} ({str(exc).splitlines()[0][:300]}); "
            "pass a checkpoint of this open_clip architecture"
        ) from exc
    check_finite(model.state_dict().items(), file, "CLIP")
    licence = clip_licence(spec)
    info.update(id=weights_id, source=source, file=str(file), sha256=sha256_file(file), licence=licence)
    return model.eval().requires_grad_(False), info


class WinCLIPMaps(NamedTuple):
    """Everything one WinCLIP pass computes (:meth:`WinCLIP.explain`).

    Attributes:
        pixel_scores: ``(B, S, S)`` the pixel map in [0, 1].
        image_scores: ``(B,)`` under the ``image_score`` policy.
        global_scores: ``(B,)`` the CLS zero-shot score.
        scale_maps: ``(B, n_terms, g, g)`` the grid maps averaged into the pixel map.
    """

    pixel_scores: torch.Tensor
    image_scores: torch.Tensor
    global_scores: torch.Tensor
    scale_maps: torch.Tensor


class WinCLIP(AnomalyModel):
    """WinCLIP zero-shot model (training-free).

    Args:
        config: The configuration.
        name: Registry name recorded in the card.
    """

    kind: ClassVar[ModelKind] = ModelKind.TRAINING_FREE
    config_class = WinCLIPConfig
    config: WinCLIPConfig
    fewshot_weight: ClassVar[float] = 0.5
    """WinCLIP+ averages its zero-shot and few-shot maps (and its image score with the few-shot map's maximum)."""

    def __init__(self, config: WinCLIPConfig, name: str = "winclip") -> None:
        import open_clip

        super().__init__(config, name)
        clip, self.clip_info = build_clip(config)
        visual = clip.visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ConfigError(f"winclip needs a ViT with a class-token output; {config.clip_model!r} pools otherwise")
        patch = visual.conv1.kernel_size[0]
        self.grid = config.image_size // patch
        too_big = [k for k in config.scales if k > self.grid]
        if too_big:
            raise ConfigError(
                f"window scales {too_big} exceed the {self.grid}x{self.grid} patch grid of {config.clip_model!r} at "
                f"{config.image_size} px; use smaller scales or a larger image_size"
            )
        clip.visual = nn.Identity()  # the text side keeps the rest; the visual tower lives in self.visual
        self.visual = visual
        self.clip_text = clip.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(config.clip_model)
        for k in config.scales:
            self.register_buffer(f"windows_{k}", window_indices(self.grid, k, config.window_stride), persistent=False)
        pre = getattr(visual, "preprocess_cfg", None) or {}
        self.mean = rgb(pre.get("mean", OPENAI_MEAN))
        self.std = rgb(pre.get("std", OPENAI_STD))
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}

    # ----------------------------------------------------------------- text

    @torch.no_grad()
    def _encode(self, sentences: list[str]) -> torch.Tensor:
        device = next(self.clip_text.parameters()).device
        parts = []
        for start in range(0, len(sentences), 64):
            tokens = self.tokenizer(sentences[start : start + 64]).to(device)
            parts.append(F.normalize(self.clip_text.encode_text(tokens).float(), dim=-1))
        return F.normalize(torch.cat(parts).mean(dim=0), dim=-1)

    def text_features(self, class_names: list[str], device: torch.device) -> torch.Tensor:
        """``(B, E, 2)`` [normal, anomalous] ensemble vectors, one per image (cached per class word)."""
        for word in set(class_names):
            if (word, str(device)) not in self._text_cache:
                check_class_word(word, winclip_sentences, self.tokenizer)
                normal, anomalous = winclip_sentences(word)
                vectors = torch.stack([self._encode(normal), self._encode(anomalous)], dim=1)
                self._text_cache[word, str(device)] = vectors.to(device)
        return torch.stack([self._text_cache[w, str(device)] for w in class_names])

    # ----------------------------------------------------------------- vision

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Class + patch tokens with positional embeddings, before ``ln_pre``: ``(B, 1 + g*g, D)``."""
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)

    def _encode_sequences(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``ln_pre`` + transformer on token sequences; return all outputs after ``ln_post`` and ``proj``."""
        visual = self.visual
        x = visual.transformer(visual.ln_pre(x))
        x = visual.ln_post(x)
        return x @ visual.proj if visual.proj is not None else x

    def window_embeddings(self, tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Embed every window of every image in one batched pass.

        Args:
            tokens: Output of :meth:`_tokens`, ``(B, 1 + N, D)``.
            indices: ``(W, k)`` patch indices of the windows.

        Returns:
            ``(B, W, E)`` window (class-token) embeddings.
        """
        batch, width = tokens.shape[0], tokens.shape[-1]
        patches = tokens[:, 1:][:, indices]  # (B, W, k, D): one gather for all windows
        cls = tokens[:, :1, None].expand(-1, indices.shape[0], 1, -1)
        seqs = torch.cat([cls, patches], dim=2).reshape(-1, indices.shape[1] + 1, width)
        out = [self._encode_sequences(chunk)[:, 0] for chunk in seqs.split(self._window_chunk(seqs))]
        return torch.cat(out).reshape(batch, indices.shape[0], -1)

    def _window_chunk(self, seqs: torch.Tensor) -> int:
        """Window sequences per transformer call: ``window_batch``, on CPU also at most
        :data:`CPU_TOKENS_PER_CALL` tokens (cache-sized calls; a GPU prefers large ones)."""
        if seqs.device.type != "cpu":
            return self.config.window_batch
        return max(1, min(self.config.window_batch, CPU_TOKENS_PER_CALL // seqs.shape[1]))

    def _anomaly_probability(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Softmax anomalous probability of ``(B, ..., E)`` embeddings against ``(B, E, 2)`` text."""
        emb = F.normalize(embeddings.float(), dim=-1)
        shape = emb.shape
        logits = torch.bmm(emb.reshape(shape[0], -1, shape[-1]), text.float()) / self.config.temperature
        return torch.softmax(logits, dim=-1)[..., 1].reshape(shape[:-1])

    def reference_features(self, images: torch.Tensor, class_names: list[str]) -> Features:
        """WinCLIP+'s few-shot memory (Jeong et al., CVPR 2023, "reference association"): the frozen visual tower's
        projected output patch tokens (``patches``, ``(B, g, g, E)``) and the class-token embedding of every window
        of each scale (``window<k>``, on the grid of window origins), the features the zero-shot branch scores
        against text. The memory compares each with the references' of the same key (window maps are resized to
        the patch grid instead of WinCLIP+'s harmonic aggregation). ``class_names`` is unused."""
        self.check_images(images)
        with torch.no_grad(), torch.autocast(images.device.type, enabled=images.device.type == "cuda"):
            tokens = self._tokens(images)
            patches = self._encode_sequences(tokens)[:, 1:].float()
            out = {"patches": patches.reshape(images.shape[0], self.grid, self.grid, -1)}
            for k in self.config.scales:
                windows = self.window_embeddings(tokens, getattr(self, f"windows_{k}")).float()
                side = math.isqrt(windows.shape[1])
                out[f"window{k}"] = windows.reshape(images.shape[0], side, side, -1)
        return out

    def forward(self, images: torch.Tensor, class_names: list[str]) -> InferenceBatch:
        """Score images: ``pixel_scores`` (B, S, S) in [0, 1] and ``image_scores`` (B,) of :meth:`explain`."""
        maps = self.explain(images, class_names)
        return InferenceBatch(maps.pixel_scores, maps.image_scores)

    def explain(self, images: torch.Tensor, class_names: list[str]) -> WinCLIPMaps:
        """Score images and keep the CLS zero-shot score and the grid maps (:class:`WinCLIPMaps`)."""
        self.check_images(images)
        if len(class_names) != images.shape[0]:
            raise ConfigError(f"got {len(class_names)} class names for {images.shape[0]} images; one word per image")
        with torch.no_grad(), torch.autocast(images.device.type, enabled=images.device.type == "cuda"):
            text = self.text_features(list(class_names), images.device)
            tokens = self._tokens(images)
            full = self._encode_sequences(tokens)
            global_score = self._anomaly_probability(full[:, 0], text)
            n = self.grid * self.grid
            maps = []
            for k in self.config.scales:
                indices = getattr(self, f"windows_{k}")
                window_scores = self._anomaly_probability(self.window_embeddings(tokens, indices), text)
                maps.append(harmonic_aggregate(window_scores, indices, n))
            if self.config.patch_map:
                maps.append(self._anomaly_probability(full[:, 1:], text))
            if self.config.image_in_map:
                maps.append(global_score[:, None].expand(-1, n))
        grid = torch.stack(maps, dim=1).float().reshape(images.shape[0], len(maps), self.grid, self.grid)
        pixel = F.interpolate(grid.mean(dim=1, keepdim=True), size=self.image_size, mode="bilinear")[:, 0]
        pixel = head.gaussian_blur(pixel, self.config.smoothing_sigma).clamp(0.0, 1.0)
        image = policy_image_scores(self.config.image_score, global_score, pixel)
        return WinCLIPMaps(pixel, image, global_score, grid)

    def frozen_weights(self) -> dict[str, dict[str, Any]]:
        """The frozen open_clip weights (``clip``, both towers)."""
        return {"clip": self.clip_info}

    def compile_targets(self) -> list[tuple[nn.Module, str]]:
        """The visual transformer's ``forward`` (the whole image and every window run through it)."""
        return [(self.visual.transformer, "forward")]

    def card_extras(self) -> dict[str, Any]:
        """``compat``, the patch grid, windows per scale, the prompt set, ``transductive: False``."""
        return {
            "compat": self.compat,
            "patch_grid": self.grid,
            "windows_per_scale": {str(k): int(getattr(self, f"windows_{k}").shape[0]) for k in self.config.scales},
            "prompt_set": PROMPT_SET_VERSION,
            "transductive": False,
        }


@register_factory(WinCLIP)
def winclip(**cfg: Any) -> WinCLIP:
    """Build ``winclip`` (its catalogue entry: :mod:`medad.models.winclip_config`)."""
    return WinCLIP(model_config("winclip", WinCLIPConfig, **cfg), name="winclip")


@register_factory(WinCLIP)
def winclip_tiny(**cfg: Any) -> WinCLIP:
    """Build ``winclip_tiny`` (its catalogue entry: :mod:`medad.models.winclip_config`)."""
    return WinCLIP(model_config("winclip_tiny", WinCLIPConfig, **cfg), name="winclip_tiny")
