"""The sweep's round-3 cases (issue 26): the joins between series export, DIMSE and ``medad watch``.

A series with mixed slice sizes (exported per file, with a warning naming the series), DIMSE peers that are dead,
refuse the association or refuse SEG objects, studies that hold no image series (over DICOMweb and DIMSE) and
``medad watch`` against a dead source. Peers are local: a closed port, pynetdicom AEs started in this process (the
real DIMSE implementation medad talks to), ``http.server`` threads. Each ends in one ``error:`` / ``warning:`` line
with the documented exit code, and what was already written is still there.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.robustness.cases_core import TINY, dicom, save_dicom, score_argv
from tests.robustness.cases_round2 import (
    FAST_PEER,
    Check,
    _closed_port,
    _mentions,
    _mixed_sizes,
    _no_scores,
    _series,
)
from tests.robustness.harness import Case, Expect, Setup

STUDY = "1.2.826.0.1.3680043.8.498.26"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: not an image
FAST_DIMSE = {"MEDAD_DIMSE_CONNECT_TIMEOUT": "3", "MEDAD_DIMSE_ACSE_TIMEOUT": "5", "MEDAD_DIMSE_TIMEOUT": "5"}
Peer = tuple[int, Callable[[], None]]


def _kept(*paths: Path, then: Check | None = None) -> Check:
    """A check: every path (files already written before the failure) still exists, then ``then`` holds."""

    def check(stderr: str) -> str | None:
        lost = [p.name for p in paths if not p.exists()]
        if lost:
            return f"outputs written before the failure were lost: {lost}"
        return then(stderr) if then is not None else None

    return check


# --- series ------------------------------------------------------------------------------------------------------


def _mixed_sizes_warned(tmp: Path) -> Setup:
    """A four-slice series with one slice of half the size: scored, exported per file, the warning names the series
    (its pseudonymous volume id, as export.json records it) and the SEG files are written."""
    _series(tmp / "in", 4, _mixed_sizes)
    argv = score_argv(tmp, tmp / "in", extra=("--export", "dicom-seg,nifti"))

    def per_file_named(stderr: str) -> str | None:
        record = json.loads((tmp / "out" / "export" / "export.json").read_text(encoding="utf-8"))
        volumes = [v for v in record["volumes"] if v["export"] == "per-file"]
        if len(volumes) != 1:
            return f"silent: {len(volumes)} per-file series in export.json, wanted 1"
        warned = [line for line in stderr.splitlines() if line.startswith("warning:") and "exported one object" in line]
        if len(warned) != 1 or volumes[0]["volume_id"] not in warned[0]:
            return f"the fallback warning does not name the series {volumes[0]['volume_id']}: {warned}"
        segs = list((tmp / "out" / "export").glob("*_seg.dcm"))
        return None if len(segs) == 4 else f"{len(segs)} binary SEG files, wanted 4 (one per file)"

    return Setup(argv, names="exported one object per file", check=per_file_named)


# --- DIMSE peers -------------------------------------------------------------------------------------------------


def _pynetdicom_peer(*, require_aet: bool, find: list[Any] | None, storage: bool) -> Peer:
    """A pynetdicom AE ``PACS`` on a free loopback port: Verification, Study Root C-FIND / C-GET (answering every
    SERIES query with ``find``, every IMAGE query with nothing) and, with ``storage``, SEG / Parametric Map storage;
    ``require_aet``: an association called by another AE title is rejected."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (
        ParametricMapStorage,
        SegmentationStorage,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        Verification,
    )

    ae = AE(ae_title="PACS")
    ae.require_called_aet = require_aet
    for uid in (Verification, StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet):
        ae.add_supported_context(uid)
    if storage:
        ae.add_supported_context(SegmentationStorage)
        ae.add_supported_context(ParametricMapStorage)

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        if str(event.identifier.QueryRetrieveLevel) == "SERIES":
            for item in find or []:
                yield 0xFF00, item
        yield 0x0000, None

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    return int(server.server_address[1]), server.shutdown


def _sr_series() -> list[Any]:
    """The C-FIND answer of a study that holds one SR series and no image series."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    item = Dataset()
    item.QueryRetrieveLevel, item.StudyInstanceUID = "SERIES", STUDY
    item.SeriesInstanceUID, item.Modality = generate_uid(), "SR"
    return [item]


def _closed_dimse() -> Peer:
    address, close = _closed_port()
    return int(address.rsplit(":", 1)[1]), close


DIMSE_PEERS: dict[str, tuple[Callable[[], Peer], str, str]] = {
    # peer -> (start, the called AE title medad uses, what the error line must say besides the peer)
    "dead": (_closed_dimse, "PACS", "nothing listens"),
    "rejects-association": (lambda: _pynetdicom_peer(require_aet=True, find=None, storage=True), "WRONGAET", "reject"),
}


def _dimse_to(peer: str) -> Callable[[Path], Setup]:
    """``medad score DICOM --export dicom-seg --to dicom://PEER``: refused before scoring, naming the peer."""

    def make(tmp: Path) -> Setup:
        start, aet, says = DIMSE_PEERS[peer]
        port, close = start()
        save_dicom(dicom("CT_small.dcm"), tmp / "in" / "ct.dcm")
        argv = score_argv(tmp, tmp / "in", extra=("--export", "dicom-seg", "--to", f"dicom://{aet}@127.0.0.1:{port}"))
        check = _mentions(says, _no_scores(tmp))
        return Setup(argv, names=f"{aet}@127.0.0.1:{port}", environ=dict(FAST_DIMSE), cleanup=close, check=check)

    return make


def _dimse_study(peer: str) -> Callable[[Path], Setup]:
    """``medad score dicom://PEER/STUDY``: one error naming the peer, nothing scored."""

    def make(tmp: Path) -> Setup:
        start, aet, says = DIMSE_PEERS[peer]
        port, close = start()
        argv = ["score", f"dicom://{aet}@127.0.0.1:{port}/{STUDY}", "--out", str(tmp / "out"), *TINY]
        check = _mentions(says, _no_scores(tmp))
        return Setup(argv, names=f"{aet}@127.0.0.1:{port}", environ=dict(FAST_DIMSE), cleanup=close, check=check)

    return make


def _dimse_export_to_dead(tmp: Path) -> Setup:
    """``medad export OUT --format dicom-seg --to dicom://DEAD``: refused before exporting; the scores are kept."""
    from tests.robustness.harness import _run_in_process

    save_dicom(dicom("CT_small.dcm"), tmp / "in" / "ct.dcm")
    _run_in_process(score_argv(tmp, tmp / "in"))
    port, close = _closed_dimse()
    argv = ["export", str(tmp / "out"), "--format", "dicom-seg", "--to", f"dicom://PACS@127.0.0.1:{port}"]
    check = _kept(tmp / "out" / "scores.csv", tmp / "out" / "predictions", then=_mentions("nothing listens"))
    return Setup(argv, names=f"PACS@127.0.0.1:{port}", environ=dict(FAST_DIMSE), cleanup=close, check=check)


def _dimse_refuses_seg(tmp: Path) -> Setup:
    """A peer that answers C-ECHO but accepts no SEG: the store fails after the scoring and the export, which are
    kept (a re-run of the same command stores them without scoring again)."""
    port, close = _pynetdicom_peer(require_aet=False, find=None, storage=False)
    save_dicom(dicom("CT_small.dcm"), tmp / "in" / "ct.dcm")
    argv = score_argv(tmp, tmp / "in", extra=("--export", "dicom-seg", "--to", f"dicom://PACS@127.0.0.1:{port}"))

    def export_kept(stderr: str) -> str | None:
        segs = list((tmp / "out" / "export").glob("*_seg.dcm"))
        return None if segs else "the export written before the store failed was lost"

    check = _kept(tmp / "out" / "scores.csv", then=_mentions("accepted none of the services", export_kept))
    return Setup(argv, names=f"PACS@127.0.0.1:{port}", environ=dict(FAST_DIMSE), cleanup=close, check=check)


# --- studies without an image series ------------------------------------------------------------------------------


def _dimse_no_images(tmp: Path) -> Setup:
    """``medad score dicom://PACS/STUDY`` of a study whose only series is an SR: one error, nothing scored."""
    port, close = _pynetdicom_peer(require_aet=False, find=_sr_series(), storage=False)
    argv = ["score", f"dicom://PACS@127.0.0.1:{port}/{STUDY}", "--out", str(tmp / "out"), *TINY]
    check = _mentions("has no image series", _no_scores(tmp))
    return Setup(argv, names=f"PACS@127.0.0.1:{port}", environ=dict(FAST_DIMSE), cleanup=close, check=check)


def _qido_peer(instances: list[dict[str, Any]]) -> tuple[str, Callable[[], None]]:
    """A DICOMweb server whose every search answers ``instances`` (the first page; a later page is empty)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            body = json.dumps(instances if int((query.get("offset") or ["0"])[0]) == 0 else []).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def close() -> None:
        server.shutdown()
        server.server_close()

    return f"127.0.0.1:{server.server_address[1]}", close


def _web_no_images(tmp: Path) -> Setup:
    """``medad score http://PACS/dicom-web/studies/UID`` of a study holding one SR instance: one error."""
    sr = {
        "00080016": {"vr": "UI", "Value": [SR_CLASS]},
        "00080018": {"vr": "UI", "Value": [f"{STUDY}.1.1"]},
        "0020000E": {"vr": "UI", "Value": [f"{STUDY}.1"]},
    }
    address, close = _qido_peer([sr])
    argv = ["score", f"http://{address}/dicom-web/studies/{STUDY}", "--out", str(tmp / "out"), *TINY]
    check = _mentions("holds no image instances", _no_scores(tmp))
    return Setup(argv, names=address, environ=dict(FAST_PEER), cleanup=close, check=check)


# --- medad watch --------------------------------------------------------------------------------------------------


def _watch_dead_source(to: str) -> Callable[[Path], Setup]:
    """``medad watch DEAD --to ...``: one error naming the source, before the model is built; the state folder is
    left ready for the next start."""

    def make(tmp: Path) -> Setup:
        address, close = _closed_port()
        target = to.format(port=address.rsplit(":", 1)[1])
        argv = ["watch", f"http://{address}", "--to", target, "--state", str(tmp / "state"), *TINY[:4], "--once"]
        check = _mentions("cannot reach")
        return Setup(argv, names=f"http://{address}", environ={**FAST_PEER, **FAST_DIMSE}, cleanup=close, check=check)

    return make


E = Expect
CASES: list[Case] = [
    Case("r3-series-mixed-sizes-per-file", _mixed_sizes_warned, E.WARNING, note="one slice of half the size"),
    *[Case(f"r3-score-to-dimse-{p}", _dimse_to(p), E.ERROR, True, "refused before scoring") for p in DIMSE_PEERS],
    *[Case(f"r3-dimse-study-{p}", _dimse_study(p), E.ERROR, True, "a dicom:// study as PATH") for p in DIMSE_PEERS],
    Case("r3-export-to-dimse-dead", _dimse_export_to_dead, E.ERROR, note="the scores are kept"),
    Case("r3-dimse-refuses-seg-after-scoring", _dimse_refuses_seg, E.ERROR, note="scores and export kept"),
    Case("r3-dimse-study-no-image-series", _dimse_no_images, E.ERROR, True, note="only an SR series"),
    Case("r3-dicomweb-study-no-image-series", _web_no_images, E.ERROR, True, note="only an SR instance"),
    Case("r3-watch-dead-source", _watch_dead_source("http://127.0.0.1:{port}/dicom-web"), E.ERROR, True),
    Case("r3-watch-dead-source-dimse-to", _watch_dead_source("dicom://PACS@127.0.0.1:{port}"), E.ERROR, True),
]
