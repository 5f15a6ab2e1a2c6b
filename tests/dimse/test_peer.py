"""``dicom://`` URLs are parsed strictly, AE titles and timeouts are checked, and bad ones are refused on one line
before any work (no server needed)."""

from __future__ import annotations

import pytest

from medad.dimse import DicomPeer, DimseError, DimseSettings, is_dicom_url, parse_dicom_url
from medad.dimse.remote import scheme_of
from tests.cli import run_medad


def test_a_study_url_and_a_destination() -> None:
    assert parse_dicom_url("dicom://PACS@pacs.local:104/1.2.840.1.5", study=True) == DicomPeer(
        "PACS", "pacs.local", 104, "1.2.840.1.5"
    )
    assert parse_dicom_url("dicom://STORE_1@10.0.0.7:11112", study=False) == DicomPeer("STORE_1", "10.0.0.7", 11112)
    assert parse_dicom_url("dicom:/PACS@[::1]:104/1.2", study=True).host == "::1"  # a Path's collapsed "//"
    assert parse_dicom_url("dicom://PACS@h:104/1.2", study=True).name == "PACS@h:104"


@pytest.mark.parametrize(
    ("url", "study", "expected"),
    [
        ("dicom://pacs.local:104/1.2", True, "is not a DIMSE URL; give dicom://AET@HOST:PORT/STUDY_UID"),
        ("dicom://PACS@pacs.local/1.2", True, "is not a DIMSE URL"),
        ("dicom://@pacs.local:104/1.2", True, "is not a DICOM AE title"),
        ("dicom://A_VERY_LONG_AE_TITLE@h:104/1.2", True, "is not a DICOM AE title"),
        ("dicom://PACS@h:70000/1.2", True, "is not 1-65535"),
        ("dicom://PACS@h:104", True, "PACS@h:104 names no study"),
        ("dicom://PACS@h:104/studies/1.2", True, "is not a study UID"),
        ("dicom://PACS@h:104/1.02.3", False, "is not a study UID"),
    ],
)
def test_bad_urls_are_refused_naming_the_form(url: str, study: bool, expected: str) -> None:
    with pytest.raises(DimseError) as info:
        parse_dicom_url(url, study=study)
    assert expected in str(info.value)
    assert "/1.2" not in str(info.value) and "1.02.3" not in str(info.value)  # no study UID in messages


def test_the_scheme_dispatch() -> None:
    assert scheme_of("dicom://PACS@h:104/1.2").name == "DIMSE"
    assert scheme_of("http://h:8042/dicom-web/studies/1.2").name == "DICOMweb"
    assert scheme_of("/data/ct/1.dcm") is None and not is_dicom_url("dicomfiles/x.dcm")


def test_settings_from_options_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDAD_AE_TITLE", "MEDAD_DIMSE_TIMEOUT", "MEDAD_DIMSE_CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert DimseSettings.from_env() == DimseSettings()
    assert DimseSettings().calling_aet == "MEDAD" and DimseSettings().dimse_timeout == 120
    monkeypatch.setenv("MEDAD_AE_TITLE", "AINODE")
    monkeypatch.setenv("MEDAD_DIMSE_TIMEOUT", "5")
    settings = DimseSettings.from_env(move_port=11113)
    assert (settings.calling_aet, settings.dimse_timeout, settings.move_port) == ("AINODE", 5.0, 11113)
    assert DimseSettings.from_env("CLI_AE").calling_aet == "CLI_AE"  # the option wins over the environment
    monkeypatch.setenv("MEDAD_DIMSE_CONNECT_TIMEOUT", "soon")
    with pytest.raises(DimseError, match="MEDAD_DIMSE_CONNECT_TIMEOUT='soon' is not a positive number"):
        DimseSettings.from_env()


def test_bad_options_end_in_one_line_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    base = ["score", "dicom://PACS@127.0.0.1:9/1.2", "--model", "ad_dinov3_tiny", "--out", str(out)]
    code, text = run_medad(monkeypatch, capsys, *base, "--calling-aet", "BAD\\AE")
    assert code == 2 and text.startswith("error: --calling-aet 'BAD\\\\AE' is not a DICOM AE title"), text
    code, text = run_medad(monkeypatch, capsys, *base, "--move", "0")
    assert code == 2 and "error: --move 0 is not a TCP port" in text, text
    code, text = run_medad(monkeypatch, capsys, *base, "--export", "png", "--to", "dicom://PACS@127.0.0.1:9")
    assert code == 2 and "error: --to stores DICOM SEG / Parametric Map objects" in text, text
    code, text = run_medad(monkeypatch, capsys, *base, "--export", "dicom-seg", "--to", "dicom://127.0.0.1:9")
    assert code == 2 and "is not a DIMSE URL; give dicom://AET@HOST:PORT" in text, text
    assert not (out / "predictions").exists()
