"""PACS round trips over DIMSE against real servers on loopback: Orthanc's DICOM port (C-FIND + C-GET / C-MOVE in,
C-STORE out, the result found with dcmtk's findscu) and dcmtk's storescp as a C-STORE target (checked by dciodvfy)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.cli import run_medad
from tests.dicomweb.conftest import ct_mr_study
from tests.dimse.conftest import ORTHANC_AET, OrthancDimse, StoreScp, dcmtk

SEG_CLASS, PMAP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"


def _score(monkeypatch, capsys, url: str, out: Path, *extra: str) -> tuple[int, str]:
    args = ["score", url, "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu", "--no-heatmaps"]
    return run_medad(monkeypatch, capsys, *args, *extra)


def _findscu_series(orthanc: OrthancDimse, study: str) -> list[tuple[str, str]]:
    """(Modality, SeriesInstanceUID) of the study's series, as dcmtk's findscu reads them from Orthanc's port."""
    args = [dcmtk("findscu"), "-S", "-aet", "MEDAD", "-aec", ORTHANC_AET, "-k", "QueryRetrieveLevel=SERIES"]
    args += ["-k", f"StudyInstanceUID={study}", "-k", "SeriesInstanceUID", "-k", "Modality"]
    done = subprocess.run([*args, "127.0.0.1", str(orthanc.dicom_port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found, modality = [], ""
    for line in done.stderr.splitlines():  # findscu prints the answers on stderr: "(0008,0060) CS [SEG] ..."
        if "(0008,0060)" in line:
            modality = line.split("[", 1)[1].split("]", 1)[0].strip()
        if "(0020,000e)" in line:
            found.append((modality, line.split("[", 1)[1].split("]", 1)[0]))
    return found


@pytest.mark.slow
def test_score_over_c_get_store_back_over_c_store_found_by_findscu(orthanc_dimse, tmp_path, monkeypatch, capsys):
    study = ct_mr_study(orthanc_dimse, tmp_path)
    out = tmp_path / "run"
    export = ["--export", "dicom-seg,pmap", "--to", orthanc_dimse.dicom_url()]
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), out, *export)
    assert code == 0, text
    assert "scored 2 images" in text and "stored 6 DICOM object(s) on ORTHANC@127.0.0.1:" in text
    assert study not in text
    cached = sorted((out / "private" / "dimse").glob("*/*.dcm"))
    assert len(cached) == 2  # fetched by C-GET into OUT/private/ only
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in cached}

    local = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (out / "export").glob("*.dcm")}
    stored = {}
    for series in orthanc_dimse.rest(f"/studies/{orthanc_dimse.study_id(study)}/series"):
        for instance in series["Instances"]:
            tags = orthanc_dimse.rest(f"/instances/{instance}/simplified-tags")
            if tags["SOPClassUID"] in (SEG_CLASS, PMAP_CLASS):
                stored[tags["SOPInstanceUID"]] = instance
    assert set(stored) == local and len(local) == 6
    seg = next(i for i in stored.values() if orthanc_dimse.rest(f"/instances/{i}/simplified-tags")["Modality"] == "SEG")
    path = tmp_path / "back.dcm"
    path.write_bytes(orthanc_dimse.rest(f"/instances/{seg}/file"))
    back = hd.seg.segread(path)  # highdicom reads the stored SEG; it references the fetched source instances
    series_refs = back.ReferencedSeriesSequence
    refs = {str(r.ReferencedSOPInstanceUID) for s in series_refs for r in s.ReferencedInstanceSequence}
    assert refs and refs <= sources

    modalities = sorted(m for m, _ in _findscu_series(orthanc_dimse, study))
    assert modalities == ["CT", "MR", "OT", "OT", "SEG", "SEG", "SEG", "SEG"]  # dcmtk sees medad's 6 series

    # a re-run scores the same study again: medad's own SEG / PMAP series in it are not fetched as inputs
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), tmp_path / "again")
    assert code == 0 and "scored 2 images" in text, text


@pytest.mark.slow
def test_c_move_fetches_through_medads_storage_scp(orthanc_dimse, tmp_path, monkeypatch, capsys):
    study = ct_mr_study(orthanc_dimse, tmp_path)
    out = tmp_path / "run"
    move = ["--move", str(orthanc_dimse.move_port)]
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), out, *move)
    assert code == 0, text
    assert "scored 2 images" in text
    assert len(sorted((out / "private" / "dimse").glob("*/*.dcm"))) == 2


def test_store_to_dcmtk_storescp_files_validate(orthanc_dimse, storescp: StoreScp, tmp_path, monkeypatch, capsys):
    study = ct_mr_study(orthanc_dimse, tmp_path)
    out = tmp_path / "run"
    export = ["--export", "dicom-seg,pmap", "--to", storescp.url]
    code, text = _score(monkeypatch, capsys, orthanc_dimse.dicom_url(study), out, *export)
    assert code == 0, text
    assert f"stored 6 DICOM object(s) on {storescp.aet}@127.0.0.1:{storescp.port} (C-STORE)" in text
    received = sorted(p for p in storescp.folder.iterdir() if p.is_file())
    assert len(received) == 6
    classes = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in received)
    assert classes == [PMAP_CLASS] * 2 + [SEG_CLASS] * 4
    # `medad export --to dicom://` stores the same objects again: the same SOPInstanceUIDs, so the same 6 files
    args = ["export", str(out), "--format", "dicom-seg,pmap", "--out", str(tmp_path / "again"), "--to", storescp.url]
    code, text = run_medad(monkeypatch, capsys, *args, "--calling-aet", "MEDAD2")
    assert code == 0 and "stored 6 DICOM object(s)" in text, text
    assert sorted(p for p in storescp.folder.iterdir() if p.is_file()) == received
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (Debian package dicom3tools)")
    for path in received:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (path.name, errors)
