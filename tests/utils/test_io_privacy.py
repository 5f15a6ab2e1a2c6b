"""Atomic writes leave nothing behind on failure; case ids and redaction hide identifiers."""

from __future__ import annotations

import logging

import pytest

from medad.utils.io import atomic_open, canonical_json, hash_config, sha256_file, write_json_atomic
from medad.utils.privacy import RedactFilter, case_id


def test_atomic_open_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("partial")
        raise RuntimeError("killed")
    assert target.read_text() == canonical_json({"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_canonical_json_and_hash_ignore_key_order(tmp_path):
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert hash_config({"b": 1, "a": 2}) == hash_config({"a": 2, "b": 1})
    assert hash_config({"a": 1}) != hash_config({"a": 2})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_case_id_is_stable_salted_and_hides_the_key():
    key = "/data/DOE^JOHN/1CT1.dcm"
    assert case_id(key) == case_id(key)
    assert case_id(key) != case_id(key, salt="study-2")
    assert case_id(key).startswith("case-") and "DOE" not in case_id(key) and "1CT1" not in case_id(key)


def test_redact_filter_scrubs_log_records(caplog):
    logger = logging.getLogger("medad.test.redact")
    redactor = RedactFilter(["DOE^JOHN"])
    redactor.update(["1CT1"])
    logger.addFilter(redactor)
    with caplog.at_level(logging.INFO, logger="medad.test.redact"):
        logger.info("reading %s for patient %s", "/d/1CT1.dcm", "DOE^JOHN")
    assert "DOE^JOHN" not in caplog.text and "1CT1" not in caplog.text
    assert caplog.text.count("[redacted]") == 2


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path) -> None:
    import stat

    from medad.utils.io import write_text_atomic

    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # open() under the process umask, as any tool writes a file
    write_text_atomic(tmp_path / "atomic.txt", "x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)  # e.g. 0644 under umask 022, not mkstemp's 0600
