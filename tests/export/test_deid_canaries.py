"""PS3.15 de-identification of every DICOM object medad exports: canaries in every identifying attribute of a
source (root level and nested in sequences, private tags, UIDs, dates) never reach any exported byte."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pydicom
import pytest
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from PIL import Image
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medad import cli
from medad.export.deid import METHOD_TEXT
from tests.export.conftest import blob, manifest_row

#: Modules of the source whose attributes identify the patient, study, trial or device (all of them canaried).
MODULES = (
    "patient",
    "clinical-trial-subject",
    "general-study",
    "patient-study",
    "clinical-trial-study",
    "clinical-trial-series",
    "general-equipment",
)
#: Modules canaried in their person / text / date attributes only (their codes and numbers are not identifying).
TEXT_MODULES = ("general-series", "general-acquisition", "general-image", "contrast-bolus", "device")
TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA", "TM", "DT", "AS", "UI"}
#: Not identifying under the Basic profile (kept), or structural: no canary.
KEPT = {"Manufacturer", "ManufacturerModelName", "SoftwareVersions", "PixelPaddingValue"}
UID_ROOT = "1.2.826.0.1.3680043.10.4242."
DATE, TIME, DATETIME, AGE, DECIMAL, INTEGER = "19230417", "112233", "19230417112233", "093Y", "987.654", "8675309"


def _canary(vr: str, n: int) -> object:
    values = {
        "PN": f"CNRY{n}^Canary",
        "DA": DATE,
        "TM": TIME,
        "DT": DATETIME,
        "AS": AGE,
        "UI": f"{UID_ROOT}{n}",
        "DS": DECIMAL,
        "IS": INTEGER,
    }
    if vr in values:
        return values[vr]
    return f"CNRY{n}" if vr in {"LO", "SH", "LT", "ST", "UT", "UC"} else None


def _nested_item(n: int) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = f"CNRY{n}a", f"CNRY{n}b", f"CNRY{n} meaning"
    item.PatientID, item.PersonName, item.InstitutionName = f"CNRY{n}c", f"CNRY{n}^Nested", f"CNRY{n}d"
    item.DeviceSerialNumber, item.StationName = f"CNRY{n}e", f"CNRY{n}f"
    return item


def canaried_source(path: Path, out: Path) -> tuple[Path, int]:
    """Write a copy of a DICOM file with a canary in every identifying attribute; return it and the count."""
    ds = pydicom.dcmread(path)
    iod = get_sop_class_iod_map()[ds.SOPClassUID]
    modules = {m["key"] for m in get_iod_module_map()[iod]}
    attributes = get_module_attribute_map()
    n = 0
    for module in (*MODULES, *TEXT_MODULES):
        if module not in modules:
            continue
        for item in attributes[module]:
            keyword = item["keyword"]
            if item["path"] or keyword in KEPT or not keyword or keyword.startswith("Pixel"):
                continue
            vr = dictionary_VR(keyword)
            if module in TEXT_MODULES and vr not in TEXT_VRS:
                continue
            n += 1
            if vr == "SQ":
                setattr(ds, keyword, Sequence([_nested_item(n)]))
            elif (value := _canary(vr, n)) is not None:
                setattr(ds, keyword, value)
    for k, keyword in enumerate(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")):
        setattr(ds, keyword, f"{UID_ROOT}9{k}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # PatientSex must stay an enumerated value (highdicom checks it): "O", which the profile empties
    ds.PatientSex, ds.InstitutionName, ds.StationName, ds.DeviceSerialNumber = "O", "CNRYI", "CNRYS", "CNRYD"
    ds.private_block(0x0011, "CNRY creator", create=True).add_new(0x10, "LO", "CNRY private value")
    target = out / "canaried.dcm"
    ds.save_as(target, enforce_file_format=True)
    return target, n


def _hits(out: Path) -> dict[str, list[str]]:
    needles = [b"cnry", DATE.encode(), TIME.encode(), AGE.lower().encode(), DECIMAL.encode(), INTEGER.encode()]
    needles.append(UID_ROOT.encode())
    found: dict[str, list[str]] = {}
    for path in out.rglob("*"):
        blobs = [str(path.relative_to(out)).encode()]
        if path.is_file():
            data = path.read_bytes()
            blobs.append(data)
            if path.name.endswith(".gz"):
                blobs.append(gzip.decompress(data))
            if path.suffix == ".png":
                blobs.append(repr(Image.open(path).text).encode())
        hits = [n.decode() for n in needles if any(n in b.lower() for b in blobs)]
        if hits:
            found[path.name] = hits
    return found


def test_canaries_in_every_identifying_attribute_never_reach_an_export(
    tmp_path: Path, dicom_sources, make_run, monkeypatch, capsys
) -> None:
    source, count = canaried_source(dicom_sources["ct"], tmp_path)
    assert count > 60  # patient, study, trial and equipment attributes, sequences included
    read = pydicom.dcmread(source)
    assert read.InstitutionName == "CNRYI" and read.DeviceSerialNumber == "CNRYD"
    assert "PatientBreedCodeSequence" in read and read.PatientBreedCodeSequence[0].PatientID.startswith("CNRY")
    preds, _ = make_run([manifest_row(source, "dicom", frame=0)], [blob((128, 128), (40, 70), 10)])
    out = tmp_path / "export"
    argv = ["medad", "export", str(preds), "--format", "png,nifti,dicom-seg,pmap", "--out", str(out), "--deidentify"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0, capsys.readouterr()
    objects = sorted(p.name for p in out.glob("*.dcm"))
    assert len(objects) == 3, objects
    assert _hits(out) == {}
    for name in objects:
        obj = pydicom.dcmread(out / name)
        assert obj.PatientIdentityRemoved == "YES" and obj.PatientSex == ""
        assert obj.DeidentificationMethod == METHOD_TEXT and len(METHOD_TEXT) <= 64
        assert [c.CodeValue for c in obj.DeidentificationMethodCodeSequence] == ["113100", "113105"]
        equipment = obj.ContributingEquipmentSequence
        assert all(item.get("DeviceSerialNumber", "0") == "0" for item in equipment)
        assert not any("InstitutionName" in item or "StationName" in item for item in equipment)


def test_without_deidentify_the_canaries_are_there(tmp_path: Path, dicom_sources, make_run) -> None:
    """The scan above can see canaries: without --deidentify the SEG carries the source's patient module."""
    from medad.export import export_predictions, fixed_threshold

    source, _ = canaried_source(dicom_sources["ct"], tmp_path)
    preds, manifest = make_run([manifest_row(source, "dicom", frame=0)], [blob((128, 128), (40, 70), 10)])
    out = export_predictions(
        preds, manifest, tmp_path / "plain", formats=("dicom-seg",), threshold=fixed_threshold(0.5)
    )
    hits = _hits(out)
    assert set(hits) == {p.name for p in out.glob("*.dcm")} and all("cnry" in h for h in hits.values())
    assert keyword_for_tag(0x00181000) == "DeviceSerialNumber"
    equipment = pydicom.dcmread(next(out.glob("*_seg.dcm"))).ContributingEquipmentSequence
    assert any(item.get("DeviceSerialNumber") == "CNRYD" for item in equipment)
