"""`medad watch` refusals end in one `error:` line (exit 2, no traceback, no secret), a credentials file is loaded
safely, and SIGTERM stops the node after the study in progress."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import medad.watch.study as watch_study
from medad.dicomweb import DicomWebError
from medad.engine.request import ScoreSettings
from medad.errors import ConfigError
from medad.watch import WatchSettings, WatchState, load_credentials, run_node
from tests.cli import run_medad
from tests.dicomweb.conftest import free_port
from tests.watch.conftest import PASSWORD, USER, Orthanc, result_series, upload_study, wait_stable

SECRET = "s3cret-watch-token-0451"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MEDAD_DICOMWEB_* credentials now, and none left behind (set first, so teardown restores the original)."""
    for name in ("USER", "PASSWORD", "PASSWORD_FILE", "TOKEN", "TOKEN_FILE", "CA_BUNDLE"):
        monkeypatch.setenv(f"MEDAD_DICOMWEB_{name}", "")
        monkeypatch.delenv(f"MEDAD_DICOMWEB_{name}")
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "0")


def _watch(state: Path, source: str, *extra: str) -> list[str]:
    return ["watch", source, "--to", f"{source}/dicom-web", "--state", str(state), "--model", "ad_dinov3_tiny",
            "--once", *extra]


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip() and "medad watch:" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def test_a_dead_pacs_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    source = f"http://127.0.0.1:{free_port()}"
    code, output = run_medad(monkeypatch, capsys, *_watch(tmp_path / "state", source))
    assert code == 2
    assert f"cannot reach the DICOMweb server {source}" in _one_error_line(output)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the test reads stderr
        pass


@pytest.fixture
def plain_web_server(tmp_path: Path) -> Iterator[str]:
    """A web server that is not Orthanc (every path answers 404), on a free loopback port."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_source_without_a_change_feed_is_named_with_the_fix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_credentials: None,
    plain_web_server: str,
) -> None:
    code, output = run_medad(monkeypatch, capsys, *_watch(tmp_path / "state", plain_web_server))
    assert code == 2
    line = _one_error_line(output)
    assert f"{plain_web_server} did not answer like Orthanc's REST API" in line and "docs/hospital.md" in line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--workers", "0"), "--workers 0 must be >= 1"),
        (("--queue", "0"), "--queue 0 must be >= 1"),
        (("--poll", "0"), "--poll 0.0 must be a positive number of seconds"),
        (("--format", "png"), "--to stores DICOM SEG / Parametric Map objects"),
        (("--threshold", "f1"), "--threshold f1 picks the cut on the scored images' own labels, and a PACS study"),
        (("--threshold", "fixed:x"), "threshold 'fixed:x': 'x' is not a number"),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_credentials: None,
    option: tuple[str, str],
    message: str,
) -> None:
    code, output = run_medad(monkeypatch, capsys, *_watch(tmp_path / "state", "http://127.0.0.1:9", *option))
    assert code == 2 and message in _one_error_line(output)
    assert not (tmp_path / "state").exists()


def test_a_credentials_file_readable_by_others_is_refused_without_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    file = tmp_path / "pacs.env"
    file.write_text(f"MEDAD_DICOMWEB_TOKEN={SECRET}\n")
    file.chmod(0o644)
    code, output = run_medad(monkeypatch, capsys, *_watch(tmp_path / "state", "http://127.0.0.1:9", "--credentials",
                                                          str(file)))
    assert code == 2 and f"chmod 600 {file}" in _one_error_line(output)
    assert SECRET not in output and "MEDAD_DICOMWEB_TOKEN" not in os.environ


def test_a_credentials_file_sets_the_environment_and_names_a_bad_line_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    file = tmp_path / "pacs.env"
    file.write_text(f"# comment\n\nexport MEDAD_DICOMWEB_TOKEN='{SECRET}'\n")
    file.chmod(0o600)
    assert load_credentials(file) == ["MEDAD_DICOMWEB_TOKEN"]
    assert os.environ["MEDAD_DICOMWEB_TOKEN"] == SECRET
    monkeypatch.delenv("MEDAD_DICOMWEB_TOKEN")
    file.write_text(f"MEDAD_DICOMWEB_TOKEN={SECRET}\nPASSWORD={SECRET}\n")
    with pytest.raises(ConfigError, match="line 2 of the credentials file") as caught:
        load_credentials(file)
    assert SECRET not in str(caught.value) and "MEDAD_DICOMWEB_TOKEN" not in os.environ


@pytest.mark.slow
def test_sigterm_stops_the_node_after_the_study_in_progress(
    pacs: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", PASSWORD)
    first = upload_study(pacs, tmp_path, "CT_small.dcm")
    wait_stable(pacs, first)
    second = upload_study(pacs, tmp_path, "CT_small.dcm")
    wait_stable(pacs, second)
    original = watch_study.score_study

    def score_then_signal(*args: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the first study is being scored
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(watch_study, "score_study", score_then_signal)
    settings = WatchSettings(source=pacs.url, to=pacs.dicomweb, state_dir=tmp_path / "state",
                             model_name="ad_dinov3_tiny", formats="dicom-seg", score=ScoreSettings(device="cpu"),
                             backlog=True, poll=0.5)  # follow mode: only the signal ends it
    summary = run_node(settings)
    assert (summary.done, summary.queued) == (1, 1)
    assert sorted(result_series(pacs, first).values()) == [1, 1] and result_series(pacs, second) == {}
    state = WatchState(tmp_path / "state")
    assert {s.study_uid: s.status for s in state.studies()} == {first: "done", second: "queued"}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the node's handler is gone


@pytest.mark.slow
def test_a_pacs_failing_mid_study_keeps_it_queued_and_a_rerun_finishes_it(
    pacs: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", PASSWORD)
    study = upload_study(pacs, tmp_path, "CT_small.dcm")
    wait_stable(pacs, study)

    def dead_pacs(*args: object) -> object:
        raise DicomWebError(f"cannot reach the DICOMweb server {pacs.dicomweb} while storing a result (STOW-RS)")

    original = watch_study.store_files
    monkeypatch.setattr(watch_study, "store_files", dead_pacs)
    settings = WatchSettings(source=pacs.url, to=pacs.dicomweb, state_dir=tmp_path / "state",
                             model_name="ad_dinov3_tiny", score=ScoreSettings(device="cpu"), backlog=True, once=True,
                             poll=0.5)  # the default formats: binary and fractional SEG, Parametric Map
    with pytest.raises(DicomWebError, match="cannot reach"):
        run_node(settings)
    state = WatchState(tmp_path / "state")
    row = state.studies()[0]
    assert (row.status, row.attempts, row.reason.startswith("server: cannot reach")) == ("queued", 1, True)
    assert list((state.private / "work" / row.pseudonym / "export").glob("*.dcm"))  # the export is kept
    state.close()
    monkeypatch.setattr(watch_study, "store_files", original)  # the PACS is back
    assert run_node(settings).done == 1
    assert sorted(result_series(pacs, study).values()) == [1, 1, 1]
