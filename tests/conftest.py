"""Test-wide settings: offline hubs, headless plotting, deterministic torch on few threads."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _isolated_case_id_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the case-id key (``$MEDAD_HOME/case_id.key``) out of the user's home, for module fixtures too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDAD_HOME", str(tmp_path_factory.getbasetemp() / "medad_home"))
        patch.delenv("MEDAD_CASE_ID_KEY", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every medad cache (text embeddings, resized images) out of the user's home."""
    monkeypatch.setenv("MEDAD_CACHE", str(tmp_path_factory.getbasetemp() / "medad_cache"))


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    """Each test starts like a new process: warnings said once per process (``warn_once``) are said again."""
    from medad.errors import forget_warnings

    forget_warnings()
