"""One study, start to end: pick its series, fetch them, score, export SEG / Parametric Map, give the results their
deterministic UIDs and store them back.

Each step uses the library's own: QIDO / WADO / STOW from :mod:`medad.dicomweb`, scoring from
:mod:`medad.engine.scorer` (with the node's one model), the export API of :mod:`medad.export`. A study the node
may not or cannot score raises :class:`StudyRejectedError` with the reason the state records; a server that does not
answer raises :class:`~medad.dicomweb.DicomWebError` or :class:`~medad.dimse.DimseError` (the node tries the study
again later).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medad.dicomweb import (
    DicomWebError,
    DicomWebResource,
    export_dicom_files,
    fetch_resource,
    finished_export,
    is_image_sop_class,
    store_files,
)
from medad.dicomweb.client import call, connect, parse_store_url
from medad.dimse import is_dicom_url
from medad.dimse import store_files as c_store_files
from medad.engine.request import ScoreSettings
from medad.engine.score_tables import write_score_tables
from medad.engine.scorer import inputs_manifest, score
from medad.errors import MedadError
from medad.export import export_run, export_summary
from medad.export.thresholds import Threshold
from medad.models import AnomalyModel
from medad.watch.settings import StudyFilter, WatchSettings
from medad.watch.uids import assign_result_uids

log = logging.getLogger("medad.watch")

_SOP_CLASS, _SERIES, _MODALITY, _BODY_PART = "00080016", "0020000E", "00080060", "00180015"


class StudyRejectedError(MedadError):
    """The study holds nothing this node may score, or nothing it could read: recorded, and the node goes on."""


@dataclasses.dataclass
class SeriesInfo:
    """What QIDO-RS says of one series: modality, body part, the SOP classes of its instances."""

    modality: str = ""
    body_part: str = ""
    sop_classes: set[str] = dataclasses.field(default_factory=set)
    images: int = 0

    @property
    def has_images(self) -> bool:
        return any(is_image_sop_class(uid) for uid in self.sop_classes)


@dataclasses.dataclass(frozen=True)
class Scorer:
    """The node's one model, how it scores and the mask threshold (resolved once at start, so every study is cut
    at the same value); one study is scored at a time (one model, one device)."""

    model: AnomalyModel
    settings: ScoreSettings
    threshold: Threshold
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _first(item: Mapping[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def list_series(settings: WatchSettings, study_uid: str) -> dict[str, SeriesInfo]:
    """The study's series by SeriesInstanceUID, from two QIDO-RS searches (series, then instances)."""
    resource = parse_store_url(settings.dicomweb_root)
    client, server = connect(resource, settings.ca_bundle), resource.server
    found = call(
        server,
        "listing the study's series (QIDO-RS)",
        client.search_for_series,
        study_instance_uid=study_uid,
        fields=[_MODALITY, _BODY_PART],
        get_remaining=True,
    )
    series = {
        _first(s, _SERIES): SeriesInfo(_first(s, _MODALITY).upper(), _first(s, _BODY_PART).upper()) for s in found
    }
    instances = call(
        server,
        "listing the study's instances (QIDO-RS)",
        client.search_for_instances,
        study_instance_uid=study_uid,
        fields=[_SOP_CLASS, _SERIES],
        get_remaining=True,
    )
    for item in instances:
        info, sop_class = series.setdefault(_first(item, _SERIES), SeriesInfo()), _first(item, _SOP_CLASS)
        info.sop_classes.add(sop_class)
        info.images += is_image_sop_class(sop_class)
    return series


def image_instances(settings: WatchSettings, study_uid: str) -> int:
    """How many image instances the study's series the filter keeps hold now (0 when it keeps none)."""
    series = list_series(settings, study_uid)
    try:
        return sum(series[uid].images for uid in select_series(series, settings.study_filter))
    except StudyRejectedError:
        return 0


def _image_sop_classes(info: SeriesInfo) -> set[str]:
    return {uid for uid in info.sop_classes if is_image_sop_class(uid)}


def select_series(series: Mapping[str, SeriesInfo], rule: StudyFilter) -> list[str]:
    """The image series the filter lets through, in UID order.

    Raises:
        StudyRejectedError: no image series at all, or the filter excludes every one (the reason names what was seen
            and which option excluded it).
    """
    images = {uid: info for uid, info in series.items() if info.has_images}
    if not images:
        raise StudyRejectedError(
            f"no image series: the study holds {sum(len(i.sop_classes) for i in series.values())} SOP class(es) of "
            "non-image objects only (SEG, SR, ...)"
        )
    checks = (
        ("wrong modality", "--modality", rule.modalities, lambda i: {i.modality}),
        ("wrong body part", "--body-part", rule.body_parts, lambda i: {i.body_part}),
        ("wrong SOP class", "--sop-class", rule.sop_classes, _image_sop_classes),
    )
    for label, flag, allowed, values in checks:
        if not allowed:
            continue
        kept = {uid: info for uid, info in images.items() if values(info) & allowed}
        if not kept:
            seen = sorted({v or "(none)" for info in images.values() for v in values(info)})
            raise StudyRejectedError(
                f"{label}: the study's image series are {', '.join(seen)}; {flag} allows {', '.join(sorted(allowed))}"
            )
        images = kept
    return sorted(images)


def fetch_series(settings: WatchSettings, study_uid: str, series: Sequence[str], work: Path) -> list[Path]:
    """Fetch the chosen series into ``work/private/dicomweb/`` (resumable); the folders that hold images."""
    folders = []
    for uid in series:
        resource = DicomWebResource(parse_store_url(settings.dicomweb_root).base_url, study_uid, uid)
        try:
            folders.append(fetch_resource(resource, work, settings.ca_bundle))
        except DicomWebError:
            raise
        except MedadError as exc:
            log.info("a series held no readable image instance (%s)", exc)
    if not folders:
        raise StudyRejectedError("unreadable: no instance of the chosen series holds pixel data")
    return folders


def score_study(scorer: Scorer, folders: Sequence[Path], work: Path) -> dict[str, int]:
    """Score the fetched series into ``work/predictions`` with the node's model; image counts for the record.

    Raises:
        StudyRejectedError: no image could be read (the reasons of the first ones are named).
    """
    try:
        manifest = inputs_manifest(folders)
        with scorer.lock:
            reader = score(scorer.model, manifest, work / "predictions", scorer.settings, progress=False)
    except MedadError as exc:
        raise StudyRejectedError(f"unreadable: {exc}") from None
    table = write_score_tables(work, manifest, reader, heatmaps=False)
    skipped = table.attrs.get("skipped") or []
    if len(table) == 0:
        reasons = "; ".join(sorted({str(s.get("reason", "?")) for s in skipped})[:2])
        raise StudyRejectedError(f"unreadable: none of the study's {len(skipped)} image(s) could be read ({reasons})")
    return {"images": len(table), "unreadable_images": len(skipped)}


def export_study(settings: WatchSettings, threshold: Threshold, work: Path) -> tuple[Path, str]:
    """Export SEG / Parametric Map (whatever the export API's grouping is) into ``work/export``; reuse a finished
    one. Returns the folder and the export's summary line.

    Raises:
        StudyRejectedError: the export wrote no DICOM object (the export's reason).
    """
    folder = finished_export(work / "export", settings.formats, settings.to)
    try:
        if folder is None:
            folder = export_run(
                work / "predictions",
                formats=settings.formats,
                threshold=threshold,
                out_dir=work / "export",
                overwrite=True,
            )
        export_dicom_files(folder)
    except MedadError as exc:
        raise StudyRejectedError(f"not exportable: {exc}") from None
    return folder, export_summary(folder)[0]


def store_results(settings: WatchSettings, files: list[Path]) -> tuple[int, int]:
    """Store the result files at ``--to``; return (objects sent, objects the server already held).

    A DICOMweb server is asked first (QIDO-RS) and only what it lacks is sent; a ``dicom://`` peer cannot be asked
    what it holds, so every object is sent with C-STORE (the same UIDs again: the PACS files them as the same
    objects).
    """
    if is_dicom_url(settings.to):
        c_store_files(files, settings.to, settings.connection.dimse_settings)
        return len(files), 0
    result = store_files(files, settings.to, settings.ca_bundle)
    return result.stored, result.already_stored


def process_study(
    settings: WatchSettings, scorer: Scorer, node_fingerprint: str, study_uid: str, work: Path
) -> tuple[dict[str, Any], list[str]]:
    """Run every step for one study; return the record (counts and summaries, no UID) and the result UIDs."""
    series = list_series(settings, study_uid)
    chosen = select_series(series, settings.study_filter)
    folders = fetch_series(settings, study_uid, chosen, work)
    counts = score_study(scorer, folders, work)
    folder, summary = export_study(settings, scorer.threshold, work)
    files = export_dicom_files(folder)
    uids = assign_result_uids(files, study_uid, node_fingerprint)
    stored, already = store_results(settings, files)
    record = {
        "series": len(chosen),
        "instances": sum(series[uid].images for uid in chosen),
        **counts,
        "export": summary,
        "stored": stored,
        "already_stored": already,
    }
    return record, uids
