"""Connections without a server: credentials from the environment, TLS verification, URL parsing."""

from __future__ import annotations

import pytest

from medad.dicomweb import DicomWebError, parse_store_url, parse_study_url
from medad.dicomweb.client import make_session


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USER", "PASSWORD", "PASSWORD_FILE", "TOKEN", "TOKEN_FILE", "CA_BUNDLE", "TIMEOUT", "RETRIES"):
        monkeypatch.delenv(f"MEDAD_DICOMWEB_{name}", raising=False)


def test_urls_parse_into_root_study_and_series() -> None:
    url = parse_study_url("https://pacs.example.org/dicom-web/studies/1.2.3/series/4.5.6/")
    assert (url.base_url, url.study_uid, url.series_uid) == ("https://pacs.example.org/dicom-web", "1.2.3", "4.5.6")
    # pathlib collapses '//' when typer hands a URL over as a Path; the scheme is restored
    assert parse_study_url("http:/h:8042/dicom-web/studies/1.2").base_url == "http://h:8042/dicom-web"
    assert parse_store_url("http://h/dicom-web/studies/1.2").base_url == "http://h/dicom-web"
    assert parse_store_url("http://h/dicom-web/").base_url == "http://h/dicom-web"


def test_tls_verified_by_default_and_ca_bundle(tmp_path, monkeypatch) -> None:
    session, timeout = make_session()
    assert session.verify is True and timeout == 30.0 and "Authorization" not in session.headers
    with pytest.raises(DicomWebError, match=r"CA bundle .* does not exist"):
        make_session(tmp_path / "missing.pem")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("MEDAD_DICOMWEB_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("MEDAD_DICOMWEB_TIMEOUT", "5")
    session, timeout = make_session()
    assert session.verify == str(bundle) and timeout == 5.0


def test_bearer_token_from_a_file_and_basic_auth(tmp_path, monkeypatch) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    monkeypatch.setenv("MEDAD_DICOMWEB_TOKEN_FILE", str(token))
    session, _ = make_session()
    assert session.headers["Authorization"] == "Bearer tok-123"
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", "u")
    with pytest.raises(DicomWebError, match="set only one kind"):
        make_session()
    monkeypatch.delenv("MEDAD_DICOMWEB_TOKEN_FILE")
    with pytest.raises(DicomWebError, match="no password"):
        make_session()
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD_FILE", str(secret))
    session, _ = make_session()
    assert session.auth == ("u", "s3cret")
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(DicomWebError, match="MEDAD_DICOMWEB_PASSWORD_FILE") as exc:
        make_session()
    assert "nope" not in str(exc.value)  # the file name of a secret is not echoed either
