"""Frozen CLIP text tower + the prompt ensemble, with an in-memory and on-disk embedding cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save

from medad.models.prompts import PROMPT_SET_VERSION, check_class_word, prompt_sentences
from medad.utils.io import hash_config, write_bytes_atomic

ENCODE_CHUNK = 64


def cache_root() -> Path:
    """Root of medad's on-disk caches: ``$MEDAD_CACHE`` or ``~/.cache/medad``."""
    return Path(os.environ.get("MEDAD_CACHE") or Path.home() / ".cache" / "medad")


class TextEncoder(torch.nn.Module):
    """Encodes class words into the ``(D, 2)`` [normal, abnormal] prompt-ensemble matrix.

    Each sentence embedding is L2-normalised, the sentences of a state group are averaged and the mean is
    L2-normalised again. Results are cached per (class word, text weights id + sha256, prompt set, activation,
    config) in memory and as safetensors under ``$MEDAD_CACHE/text_embeddings``.

    Args:
        tower: A frozen open_clip text tower (``forward(tokens) -> (N, D)``).
        model_name: open_clip config name (selects the tokenizer).
        info: The weights info from :func:`medad.models.weights.build_text_tower`.
        config: The text config (part of the cache key).
        disk_cache: Whether to read and write the on-disk cache.
    """

    def __init__(
        self,
        tower: torch.nn.Module,
        model_name: str,
        info: dict[str, Any],
        config: dict[str, Any],
        disk_cache: bool = True,
    ) -> None:
        import open_clip

        super().__init__()
        self.tower = tower.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.info = info
        self.disk_cache = disk_cache
        self._key_base = {
            "weights_id": info["id"],
            "sha256": info["sha256"],
            "activation": info["activation"],
            "prompt_set": PROMPT_SET_VERSION,
            "config": config,
        }
        self._memory: dict[str, torch.Tensor] = {}
        self._on_device: dict[tuple[str, str], torch.Tensor] = {}

    def train(self, mode: bool = True) -> TextEncoder:
        """Keep the frozen tower in eval mode whatever ``mode`` is."""
        super().train(False)
        return self

    def cache_path(self, word: str) -> Path:
        """Return the on-disk cache file of ``word``."""
        return cache_root() / "text_embeddings" / f"{hash_config({**self._key_base, 'word': word})}.safetensors"

    @torch.no_grad()
    def _encode_group(self, sentences: list[str]) -> torch.Tensor:
        device = next(self.tower.parameters()).device
        parts = []
        for start in range(0, len(sentences), ENCODE_CHUNK):
            tokens = self.tokenizer(sentences[start : start + ENCODE_CHUNK]).to(device)
            parts.append(F.normalize(self.tower(tokens).float(), dim=-1))
        return F.normalize(torch.cat(parts).mean(dim=0), dim=-1)

    def encode_word(self, word: str) -> torch.Tensor:
        """Return the ``(D, 2)`` matrix (column 0 normal, column 1 abnormal) of one class word, on the CPU."""
        if word in self._memory:
            return self._memory[word]
        path = self.cache_path(word)
        if self.disk_cache and path.is_file():
            embedding = load_file(str(path))["text"]
        else:
            check_class_word(word, prompt_sentences, self.tokenizer)
            normal, abnormal = prompt_sentences(word)
            embedding = torch.stack([self._encode_group(normal), self._encode_group(abnormal)], dim=1).cpu()
            if self.disk_cache:
                write_bytes_atomic(path, save({"text": embedding.contiguous()}, metadata={"word": word}))
        self._memory[word] = embedding
        return embedding

    def clear_cache(self) -> None:
        """Forget the in-memory embeddings (the on-disk cache stays), so the next call encodes again."""
        self._memory.clear()
        self._on_device.clear()

    def forward(self, words: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Return ``(len(words), D, 2)`` text matrices on ``device`` (default the CPU).

        Each word's matrix is copied to an accelerator once and kept there, so a batch's matrices are stacked on
        the device: a host-to-device copy per batch would make the host wait for the GPU's queued work.
        """
        dev = torch.device(device or "cpu")
        if dev.type == "cpu":
            return torch.stack([self.encode_word(w) for w in words])
        for word in set(words):
            if (word, str(dev)) not in self._on_device:
                self._on_device[word, str(dev)] = self.encode_word(word).to(dev)
        return torch.stack([self._on_device[w, str(dev)] for w in words])
