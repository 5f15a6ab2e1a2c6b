"""`medad watch` against a real Orthanc on loopback: three studies (CT, MR, broken), a node killed with SIGKILL while
storing a study's results, a restart that finishes it without storing anything twice, then later studies."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medad.engine.request import ScoreSettings
from medad.watch import StudyFilter, WatchSettings, WatchState, run_node
from tests.watch import stall_watch
from tests.watch.conftest import (
    PASSWORD,
    PATIENT_ID,
    PATIENT_NAME,
    RESULT_CLASSES,
    USER,
    Orthanc,
    result_series,
    upload_study,
    wait_stable,
)

ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = ("MEDAD_DICOMWEB_USER", "MEDAD_DICOMWEB_PASSWORD", "MEDAD_DICOMWEB_TOKEN", "MEDAD_DICOMWEB_TOKEN_FILE",
             "MEDAD_DICOMWEB_PASSWORD_FILE", "MEDAD_DICOMWEB_CA_BUNDLE")


def _settings(pacs: Orthanc, state: Path, **fields: object) -> WatchSettings:
    base: dict[str, object] = {
        "source": pacs.url,
        "to": pacs.dicomweb,
        "state_dir": state,
        "model_name": "ad_dinov3_tiny",
        "formats": "dicom-seg",
        "score": ScoreSettings(device="cpu", batch_size=2),
        "once": True,
        "backlog": True,
        "poll": 0.5,
    }
    return WatchSettings(**{**base, **fields})  # type: ignore[arg-type]


def _stalled_node(pacs: Orthanc, state: Path, credentials: Path, nth: int) -> tuple[str, str]:
    """Run the node as a process (credentials from a file only) until its ``nth`` study stalls mid-store; SIGKILL it.
    Returns its stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(PYTHONPATH=str(ROOT), MEDAD_DICOMWEB_RETRIES="1", HF_HUB_OFFLINE="1")
    args = ["watch", pacs.url, "--to", pacs.dicomweb, "--state", str(state), "--model", "ad_dinov3_tiny",
            "--format", "dicom-seg", "--device", "cpu", "--once", "--backlog", "--poll", "0.5",
            "--credentials", str(credentials)]
    proc = subprocess.Popen(stall_watch.command(nth, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True, cwd=ROOT)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # the node logs on stderr; the hook says when it stalls
        lines.append(line)
        if "medad: stalled" in line or time.monotonic() > deadline:
            break
    proc.kill()  # SIGKILL: no handler, no cleanup
    out, rest = proc.communicate(timeout=60)
    err = "".join(lines) + rest
    assert "medad: stalled in study" in err, err
    return out, err


def _statuses(state: Path) -> dict[str, tuple[str, int]]:
    store = WatchState(state)
    try:
        return {s.study_uid: (s.status, s.attempts) for s in store.studies()}
    finally:
        store.close()


@pytest.mark.slow
def test_three_studies_a_kill_mid_study_a_restart_and_later_studies(
    pacs: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    studies = []
    for name, broken in (("CT_small.dcm", False), ("MR_small.dcm", False), ("CT_small.dcm", True)):
        studies.append(upload_study(pacs, tmp_path, name, broken=broken))
        wait_stable(pacs, studies[-1])  # one after the other: the feed names them in this order
    ct, mr, broken = studies
    credentials = tmp_path / "pacs.env"
    credentials.write_text(
        f"# the node's PACS account\nMEDAD_DICOMWEB_USER={USER}\nMEDAD_DICOMWEB_PASSWORD={PASSWORD}\n"
    )
    credentials.chmod(0o600)
    state = tmp_path / "state"

    # the second study (MR) is killed after 1 of its 2 SEG objects was stored
    out, err = _stalled_node(pacs, state, credentials, nth=2)
    assert _statuses(state) == {ct: ("done", 1), mr: ("running", 1), broken: ("queued", 0)}
    assert len(result_series(pacs, mr)) == 1

    # restart (in this process, credentials from the environment): the MR study is redone, the broken one recorded
    monkeypatch.setenv("MEDAD_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDAD_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.setenv("MEDAD_DICOMWEB_RETRIES", "1")
    caplog.set_level(logging.INFO, logger="medad.watch")
    summary = run_node(_settings(pacs, state))
    assert (summary.done, summary.failed, summary.queued) == (1, 1, 0)
    counts = {uid: result_series(pacs, uid) for uid in (ct, mr, broken)}
    assert [sorted(c.values()) for c in counts.values()] == [[1, 1], [1, 1], []]  # 2 SEG series each, none twice
    rows = {row["study"]: row for row in json.loads((state / "report.json").read_text())["studies"]}
    assert len(rows) == 3
    redone = next(r for r in rows.values() if r["attempts"] == 2)
    assert (redone["status"], redone["stored"], redone["already_stored"]) == ("done", 1, 1)
    failed = next(r for r in rows.values() if r["status"] == "failed")
    assert failed["reason"].startswith("unreadable: none of the study's 1 image(s) could be read")

    # later, two at a time: a CT study is scored, an MR one excluded by --modality; the first three are not touched
    later_ct = upload_study(pacs, tmp_path, "CT_small.dcm")
    later_mr = upload_study(pacs, tmp_path, "MR_small.dcm")
    wait_stable(pacs, later_ct, later_mr)
    summary = run_node(_settings(pacs, state, study_filter=StudyFilter.parse("CT", None, None), workers=2))
    assert (summary.done, summary.failed) == (1, 1)
    assert sorted(result_series(pacs, later_ct).values()) == [1, 1]
    assert result_series(pacs, later_mr) == {}
    assert {uid: result_series(pacs, uid) for uid in (ct, mr, broken)} == counts
    statuses = _statuses(state)
    assert statuses[later_ct] == ("done", 1) and statuses[later_mr] == ("failed", 1)
    report = (state / "report.json").read_text()
    assert "wrong modality: the study's image series are MR; --modality allows CT" in report

    # a late series arrives in the first CT study, long done: the study is scored again, only the new results stored
    last = pacs.rest("/changes?last")["Last"]
    upload_study(pacs, tmp_path, "CT_small.dcm", study=ct)
    wait_stable(pacs, ct, after=last)
    summary = run_node(_settings(pacs, state))
    assert (summary.done, summary.failed) == (1, 0)
    assert sorted(result_series(pacs, ct).values()) == [1, 1, 1, 1]
    late = next(r for r in json.loads((state / "report.json").read_text())["studies"] if r["instances"] == 2)
    assert (late["attempts"], late["stored"], late["already_stored"]) == (2, 2, 2)

    # every stored object says what it is not
    metadata = pacs.rest(f"/dicom-web/studies/{later_ct}/metadata")
    descriptions = [m["0008103E"]["Value"][0] for m in metadata if m["00080016"]["Value"][0] in RESULT_CLASSES]
    assert len(descriptions) == 2 and all(d.startswith("RESEARCH USE ONLY") for d in descriptions)

    # no credential anywhere: logs, terminal, state folder, stored results; no patient identifier outside private/
    shared = out + err + caplog.text + report
    for secret in (PASSWORD, f"{USER}:{PASSWORD}"):
        assert secret not in shared
        for path in state.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
        assert secret not in str(metadata)
    for private in (PATIENT_ID, PATIENT_NAME, ct, mr, broken, later_ct, later_mr):
        assert private not in shared
    assert not (state / "private" / "work").exists() or not any((state / "private" / "work").iterdir())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
