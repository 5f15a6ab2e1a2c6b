"""Case ids are HMAC-SHA256 under a per-project secret key, kept in $MEDAD_HOME (never the real home in tests)."""

from __future__ import annotations

import hashlib
import stat

import numpy as np
import pytest
from PIL import Image

from medad.errors import ConfigError
from medad.utils import privacy
from medad.utils.privacy import KEY_ENV, case_id, key_fingerprint, key_path, redact_paths, shareable_manifest


def _unsalted(key: str, salt: str = "") -> str:
    """What the old, unkeyed case id was: anyone could recompute it from a guessed file name."""
    return "case-" + hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:12]


def test_key_file_is_made_once_in_medad_home_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAD_HOME", str(tmp_path / "home"))
    path = key_path()
    assert path == tmp_path / "home" / "case_id.key" and not path.exists()
    first = case_id("isic/ISIC_0000001.jpg")
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    key_text = path.read_text()
    privacy._KEYS.clear()  # a new process reads the same file
    assert case_id("isic/ISIC_0000001.jpg") == first and path.read_text() == key_text


def test_ids_cannot_be_recomputed_from_a_guessed_name_and_differ_per_project(tmp_path, monkeypatch):
    name = "files//data/DOE^JANE/scan.png"
    monkeypatch.setenv("MEDAD_HOME", str(tmp_path / "project-a"))
    a = case_id(name)
    assert a != _unsalted(name) and "DOE" not in a
    monkeypatch.setenv("MEDAD_HOME", str(tmp_path / "project-b"))
    assert case_id(name) != a
    # sharing the key links two studies: the env var gives the same ids wherever it is set
    monkeypatch.setenv(KEY_ENV, "0123456789abcdef-shared-study-key")
    linked = case_id(name)
    fingerprint = key_fingerprint()
    monkeypatch.setenv("MEDAD_HOME", str(tmp_path / "project-a"))
    assert case_id(name) == linked and key_fingerprint() == fingerprint


def test_short_key_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ConfigError, match=r"MEDAD_CASE_ID_KEY.*at least 16"):
        case_id("x")


def test_same_file_name_in_unrelated_folders_gets_unrelated_ids(tmp_path):
    from medad.data import manifest_from_paths

    for folder in ("clinic-a", "clinic-b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "DOE_JANE.png")
    manifest = manifest_from_paths([str(tmp_path / "clinic-a"), str(tmp_path / "clinic-b")])
    ids = manifest["case_id"].tolist()
    assert len(set(ids)) == 2
    assert all(i != _unsalted(f"files/{p}") for i, p in zip(ids, manifest["image_path"], strict=True))
    shared = shareable_manifest(manifest)
    assert set(shared["image_path"]) == {""} and shared["case_id"].tolist() == ids


def test_redact_paths_hides_every_path_in_a_command_line():
    argv = ["medad", "run", "/data/DOE^JANE/p.yaml", "--out", "runs/DOE", "--set", "targets.0.root=/x/DOE", "-q"]
    assert redact_paths(argv) == ["medad", "run", "<path>", "--out", "<path>", "--set", "targets.0.root=<path>", "-q"]


def test_env_key_of_bytes_that_are_not_utf8_is_refused_naming_the_variable(monkeypatch):
    import os

    monkeypatch.setitem(os.environ, KEY_ENV, os.fsdecode(b"\xff\xfe-not-utf8-0123456789abcdef"))
    with pytest.raises(ConfigError, match=r"\$MEDAD_CASE_ID_KEY holds bytes that are not UTF-8 text.*secrets"):
        case_id("x")


def test_binary_key_file_is_refused_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAD_HOME", str(tmp_path))
    key_path().write_bytes(bytes(range(128, 192)))
    with pytest.raises(ConfigError, match=r"case_id\.key holds binary bytes, not UTF-8 text.*delete it"):
        case_id("x")
