"""PACS round trip against a real Orthanc: score a study from its DICOMweb URL, store SEG + PMAP back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.cli import run_medad
from tests.dicomweb.conftest import PASSWORD, Orthanc, ct_mr_study

SEG_CLASS, PMAP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"


def _score_args(url: str, out: Path) -> list[str]:
    return ["score", url, "--model", "ad_dinov3_tiny", "--out", str(out), "--device", "cpu", "--no-heatmaps"]


def _results(orthanc: Orthanc, study_uid: str) -> dict[str, dict]:
    """SOPInstanceUID -> {tags, file} of the SEG / PMAP instances Orthanc holds in the study."""
    found = {}
    for series in orthanc.rest(f"/studies/{orthanc.study_id(study_uid)}/series"):
        for instance in series["Instances"]:
            tags = orthanc.rest(f"/instances/{instance}/simplified-tags")
            if tags["SOPClassUID"] in (SEG_CLASS, PMAP_CLASS):
                found[tags["SOPInstanceUID"]] = {"tags": tags, "id": instance}
    return found


@pytest.mark.slow
def test_score_url_then_store_seg_and_pmap_in_the_study(credentials, tmp_path, monkeypatch, capsys) -> None:
    orthanc = credentials
    study = ct_mr_study(orthanc, tmp_path)
    url = f"{orthanc.dicomweb}/studies/{study}"
    out = tmp_path / "run"
    code, text = run_medad(
        monkeypatch, capsys, *_score_args(url, out), "--export", "dicom-seg,pmap", "--to", orthanc.dicomweb
    )
    assert code == 0, text
    assert "scored 2 images" in text and "stored 6 DICOM object(s); 0 were already" in text
    assert PASSWORD not in text
    cached = sorted((out / "private" / "dicomweb").glob("*/*.dcm"))
    assert len(cached) == 2  # the fetched instances live in OUT/private/ only
    scores = (out / "scores.csv").read_text()
    assert study not in scores and "CT_small" not in scores

    export = out / "export"
    local = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in export.glob("*.dcm")}
    stored = _results(orthanc, study)
    assert set(stored) == set(local) and len(stored) == 6
    sources = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): pydicom.dcmread(p, stop_before_pixels=True)
        for p in cached
    }
    kinds = []
    for sop, item in stored.items():
        assert item["tags"]["StudyInstanceUID"] == study  # attached to the source study
        blob = orthanc.rest(f"/instances/{item['id']}/file")
        path = tmp_path / f"{sop}.dcm"
        path.write_bytes(blob)
        mine = pydicom.dcmread(local[sop])
        theirs = pydicom.dcmread(path)
        if theirs.SOPClassUID == SEG_CLASS:  # highdicom reads both back; the pixels equal the local export's
            back, ours = hd.seg.segread(path), hd.seg.segread(local[sop])
        else:
            back, ours = hd.pm.ParametricMap.from_dataset(theirs), hd.pm.ParametricMap.from_dataset(mine)
        np.testing.assert_array_equal(back.pixel_array, ours.pixel_array)
        assert back.SOPInstanceUID == sop
        refs = {
            str(ref.ReferencedSOPInstanceUID)
            for series in theirs.ReferencedSeriesSequence
            for ref in series.ReferencedInstanceSequence
        }
        assert refs and refs <= set(sources)  # the real source UIDs, not de-identified ones
        kinds.append(f"seg-{theirs.SegmentationType}" if theirs.SOPClassUID == SEG_CLASS else "pmap")
        if shutil.which("dciodvfy"):
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], errors
    assert sorted(kinds) == ["pmap", "pmap", "seg-BINARY", "seg-BINARY", "seg-FRACTIONAL", "seg-FRACTIONAL"]

    again, text = run_medad(
        monkeypatch, capsys, *_score_args(url, out), "--export", "dicom-seg,pmap", "--to", orthanc.dicomweb
    )
    assert again == 0, text
    assert "stored 0 DICOM object(s); 6 were already on the server" in text
    assert len(_results(orthanc, study)) == 6


def test_export_to_resumes_after_a_failure_and_never_stores_twice(credentials, tmp_path, monkeypatch, capsys):
    from dicomweb_client.api import DICOMwebClient

    from medad.engine.scorer import score_files

    orthanc = credentials
    study = ct_mr_study(orthanc, tmp_path)
    run = tmp_path / "run"
    score_files([f"{orthanc.dicomweb}/studies/{study}"], run, model_name="ad_dinov3_tiny", device="cpu", heatmaps=False)

    real_store, calls, failed = DICOMwebClient.store_instances, [], []

    def flaky_store(self, datasets, *args, **kwargs):  # the connection drops once, at the second object
        calls.append(str(datasets[0].SOPInstanceUID))
        if len(calls) == 2 and not failed:
            failed.append(True)
            import requests

            raise requests.ConnectionError("connection reset")
        return real_store(self, datasets, *args, **kwargs)

    monkeypatch.setattr(DICOMwebClient, "store_instances", flaky_store)
    args = ["export", str(run), "--format", "dicom-seg,pmap", "--to", orthanc.dicomweb]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "cannot reach the DICOMweb server" in text and "re-run resumes" in text
    assert "Traceback" not in text
    assert len(_results(orthanc, study)) == 1
    first_uids = {pydicom.dcmread(p).SOPInstanceUID for p in (run / "export").glob("*.dcm")}

    calls.clear()
    code, text = run_medad(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, text
    assert "stored 5 DICOM object(s); 1 were already on the server" in text
    # the re-export gave the same UIDs, so the object stored before the failure was found and not sent again
    assert {pydicom.dcmread(p).SOPInstanceUID for p in (run / "export").glob("*.dcm")} == first_uids
    assert len(calls) == 5 and len(set(calls)) == 5
    stored = _results(orthanc, study)
    assert set(stored) == first_uids
    listing = json.loads(json.dumps(orthanc.rest(f"/studies/{orthanc.study_id(study)}/instances")))
    assert len(listing) == 2 + 6  # two sources + six results, each once


def test_fetch_resumes_after_a_timeout_without_refetching(credentials, tmp_path, monkeypatch) -> None:
    from dicomweb_client.api import DICOMwebClient

    from medad.dicomweb import DicomWebError, fetch_resource, parse_study_url

    orthanc = credentials
    study = ct_mr_study(orthanc, tmp_path)
    resource = parse_study_url(f"{orthanc.dicomweb}/studies/{study}")
    real, calls = DICOMwebClient.retrieve_instance, []

    def flaky(self, *args, **kwargs):  # the server is too slow once, at the second instance
        calls.append(args)
        if len(calls) == 2:
            import requests

            raise requests.Timeout("slow")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", flaky)
    with pytest.raises(DicomWebError, match="did not answer within 30 s"):
        fetch_resource(resource, tmp_path / "out")
    folder = fetch_resource(resource, tmp_path / "out")
    assert len(calls) == 3  # the instance fetched before the failure was not fetched again
    assert len(list(folder.glob("*.dcm"))) == 2


def test_multiframe_series_url_gives_one_row_per_frame(credentials, tmp_path) -> None:
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from medad.dicomweb import is_image_sop_class, localise_inputs
    from medad.engine.scorer import inputs_manifest

    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))  # RLE, 2 frames, secondary capture
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    credentials.upload(ds, tmp_path)
    url = f"{credentials.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    paths = localise_inputs([url, tmp_path / "elsewhere.png"], tmp_path / "out")
    assert paths[1] == tmp_path / "elsewhere.png"  # local paths pass through unchanged
    manifest = inputs_manifest(paths[:1])
    assert len(manifest) == 2 and sorted(manifest["frame"].tolist()) == [0, 1]
    assert set(manifest["source_format"]) == {"dicom"}
    assert str(tmp_path / "out" / "private") in manifest["image_path"].iloc[0]
    assert is_image_sop_class("1.2.840.10008.5.1.4.1.1.481.1")  # RT Image is scored
    assert not is_image_sop_class("1.2.840.10008.5.1.4.1.1.481.2")  # RT Dose is not
    assert not is_image_sop_class(SEG_CLASS) and not is_image_sop_class(PMAP_CLASS)


@pytest.mark.slow
def test_a_series_round_trips_as_one_seg_series(credentials, tmp_path, monkeypatch, capsys) -> None:
    from tests.export.series_files import write_series

    orthanc = credentials
    paths = write_series(tmp_path / "series", n=4, shape=(32, 32), seed=5)
    for path in paths:
        orthanc.rest("/instances", "POST", data=path.read_bytes())
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    study = str(source.StudyInstanceUID)
    url = f"{orthanc.dicomweb}/studies/{study}"
    code, text = run_medad(
        monkeypatch, capsys, *_score_args(url, tmp_path / "run"), "--export", "dicom-seg,pmap", "--to", orthanc.dicomweb
    )
    assert code == 0, text
    assert "scored 4 images" in text and "stored 3 DICOM object(s)" in text
    stored = _results(orthanc, study)
    assert len(stored) == 3 and len({item["tags"]["SeriesInstanceUID"] for item in stored.values()}) == 3
    positions = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        positions[str(ds.SOPInstanceUID)] = [float(v) for v in ds.ImagePositionPatient]
    for sop, item in stored.items():
        path = tmp_path / f"{sop}.dcm"
        path.write_bytes(orthanc.rest(f"/instances/{item['id']}/file"))
        ds = pydicom.dcmread(path)
        assert int(ds.NumberOfFrames) == 4 and ds.StudyInstanceUID == study
        frames = ds.PerFrameFunctionalGroupsSequence
        refs = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames]
        assert sorted(refs) == sorted(positions)  # one frame per slice of the series
        for frame, ref in zip(frames, refs, strict=True):  # each frame lies on the slice it references
            where = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            np.testing.assert_allclose(where, positions[ref], atol=1e-4)
