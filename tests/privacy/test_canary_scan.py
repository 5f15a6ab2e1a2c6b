"""No patient data in shareable outputs: canary strings planted in every identifying place of the inputs (file
and folder names, NIfTI header text, PNG text chunks, JPEG EXIF, DICOM identifying attributes, nested too) never
appear in any output byte outside ``private/`` after score (+ every export format), export, eval, report and a
protocol run. Outputs are scanned raw, gunzipped (.gz / .nii.gz), as PNG chunks (zTXt / iTXt inflated), as zip
members (.npz) and by file name (and symlink target)."""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from medad.cli import app

CANARY = "ZQXCANARY"
UID_ROOT = "1.2.999.424242"
DATE = "19010203"
NEEDLES = (CANARY.lower().encode(), UID_ROOT.encode(), DATE.encode())

PROTOCOL = """\
name: privacy-test
output: runs
synthetic:
  industrial: {{layout: mvtec, classes: [bottle], n_normal: 2, n_abnormal: 4, size: 32, seed: 0}}
  medical: {{layout: mvtec_style, classes: [skin], n_normal: 2, n_abnormal: 4, size: 32, seed: 1}}
models:
  - name: clean
    model: ad_dinov3_tiny
    options: {{image_size: 32}}
training:
  datasets:
    - {{name: industrial, kind: mvtec, synthetic: industrial}}
  epochs: 1
  lr: 1.0e-3
  batch_size: 4
targets:
  - {{name: medical, kind: mvtec_style, synthetic: medical}}
  - {{name: clinic, kind: folder, root: "{root}"}}
scoring: {{batch_size: 4, chunk_size: 4}}
statistics: {{resamples: 20, seed: 0}}
exports:
  - formats: [png, nifti]
"""


# ---------------------------------------------------------------- canary inputs


def _png(path: Path, seed: int, size: int = 32) -> None:
    """An 8-bit PNG with the canary in tEXt, zTXt and iTXt chunks."""
    info = PngInfo()
    info.add_text("Author", f"{CANARY}PNGTEXT^Jane")
    info.add_text("Comment", f"{CANARY}PNGZTXT patient Doe", zip=True)
    info.add_itxt("Description", f"{CANARY}PNGITXT", lang="en", tkey="Patient")
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, pnginfo=info)


def _jpeg(path: Path) -> None:
    """A JPEG whose EXIF names the patient (Artist, ImageDescription, Copyright)."""
    exif = Image.Exif()
    exif[0x013B] = f"{CANARY}EXIFARTIST"
    exif[0x010E] = f"{CANARY}EXIFDESC"
    exif[0x8298] = f"{CANARY}EXIFCOPY"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, exif=exif.tobytes())


def _nifti(path: Path) -> None:
    """A small 3-D NIfTI with the canary in every header text field."""
    rng = np.random.default_rng(4)
    img = nib.Nifti1Image(rng.random((24, 24, 2)).astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0]))
    header = img.header
    header["descrip"] = f"{CANARY}DESCRIP".encode()
    header["aux_file"] = f"{CANARY}AUX".encode()
    header["intent_name"] = f"{CANARY}INT".encode()
    header["db_name"] = f"{CANARY}DB".encode()
    nib.save(img, path)


def _dicom(path: Path) -> None:
    """pydicom's CT with the canary (or a canary UID / date) in the identifying attributes, nested ones too."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    text = {
        "PatientName": f"{CANARY}PN^JANE",
        "PatientID": f"{CANARY}PID",
        "OtherPatientIDs": f"{CANARY}OPID",
        "PatientAddress": f"{CANARY}ADDR",
        "PatientComments": f"{CANARY}PCOMMENT",
        "InstitutionName": f"{CANARY}INST",
        "InstitutionAddress": f"{CANARY}IADDR",
        "InstitutionalDepartmentName": f"{CANARY}DEPT",
        "ReferringPhysicianName": f"{CANARY}REF^DR",
        "PerformingPhysicianName": f"{CANARY}PERF^DR",
        "OperatorsName": f"{CANARY}OP^X",
        "StationName": f"{CANARY}STN",
        "DeviceSerialNumber": f"{CANARY}SERIAL",
        "AccessionNumber": f"{CANARY}ACC",
        "StudyID": f"{CANARY}SID",
        "StudyDescription": f"{CANARY}STUDYDESC",
        "SeriesDescription": f"{CANARY}SERIESDESC",
        "ProtocolName": f"{CANARY}PROTO",
        "ImageComments": f"{CANARY}ICOMMENT",
    }
    for keyword, value in text.items():
        setattr(ds, keyword, value)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate"):
        setattr(ds, keyword, DATE)
    ds.StudyInstanceUID = f"{UID_ROOT}.1"
    ds.SeriesInstanceUID = f"{UID_ROOT}.2"
    ds.SOPInstanceUID = f"{UID_ROOT}.3"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.FrameOfReferenceUID = f"{UID_ROOT}.4"
    request = Dataset()
    request.RequestedProcedureID = f"{CANARY}RPID"
    request.ScheduledProcedureStepID = f"{CANARY}SPSID"
    request.RequestedProcedureDescription = f"{CANARY}RPDESC"
    ds.RequestAttributesSequence = Sequence([request])
    equipment = Dataset()
    equipment.Manufacturer = f"{CANARY}MAKER"
    equipment.DeviceSerialNumber = f"{CANARY}NESTEDSERIAL"
    equipment.InstitutionName = f"{CANARY}NESTEDINST"
    equipment.StationName = f"{CANARY}NSTN"
    ds.ContributingEquipmentSequence = Sequence([equipment])
    other = Dataset()
    other.PatientID = f"{CANARY}NESTEDPID"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.save_as(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of mixed canary sources for ``medad score``, and a labelled folder dataset for eval / a protocol."""
    base = tmp_path_factory.mktemp("privacy")
    mixed = base / f"{CANARY}_DIR_Doe^Jane"
    mixed.mkdir()
    _png(mixed / f"{CANARY}_PNGFILE_Doe.png", 0)
    _jpeg(mixed / f"{CANARY}_JPGFILE_Doe.jpg")
    _nifti(mixed / f"{CANARY}_NIIFILE_Doe.nii.gz")
    _dicom(mixed / f"{CANARY}_DCMFILE_Doe.dcm")
    root = base / f"{CANARY}_ROOT_Smith"
    for sub in ("images", "masks", "normals"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        _png(root / "images" / f"{CANARY}_lesion{i}_Smith.png", 10 + i)
        mask = np.zeros((32, 32), np.uint8)
        mask[8 + 4 * i : 18 + 4 * i, 6:20] = 255
        Image.fromarray(mask).save(root / "masks" / f"{CANARY}_lesion{i}_Smith_mask.png")
        _png(root / "normals" / f"{CANARY}_normal{i}_Smith.png", 20 + i)
    return {"base": base, "mixed": mixed, "root": root}


# ---------------------------------------------------------------- the scan


def _png_chunks(data: bytes) -> Iterator[bytes]:
    """Each chunk's payload of a PNG, zTXt / iTXt text inflated."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        yield payload
        if kind == b"zTXt":
            yield zlib.decompress(payload.split(b"\0", 1)[1][1:])
        elif kind == b"iTXt":
            _keyword, rest = payload.split(b"\0", 1)
            if rest[:1] == b"\1":
                yield zlib.decompress(rest[2:].split(b"\0", 2)[2])
        pos += 12 + length


def _views(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The ways a file's bytes are read: raw, gunzipped, PNG chunks, zip members."""
    yield "raw", data
    if data[:2] == b"\x1f\x8b":
        yield "gunzipped", gzip.decompress(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for chunk in _png_chunks(data):
            yield "png chunk", chunk
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"zip member {member}", member.encode() + b"\n" + archive.read(member)


def scan(root: Path) -> list[str]:
    """Every canary hit under ``root`` outside any ``private/`` folder: file names, link targets and bytes."""
    hits: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "private" in rel.parts:
            continue
        name = rel.as_posix().lower().encode()
        hits += [f"{rel}: in its name" for n in NEEDLES if n in name]
        if path.is_symlink():
            target = str(path.readlink()).lower().encode()
            hits += [f"{rel}: in its link target" for n in NEEDLES if n in target]
            continue
        if not path.is_file():
            continue
        for view, data in _views(path, path.read_bytes()):
            lower = data.lower()
            for needle in NEEDLES:
                at = lower.find(needle)
                if at >= 0:
                    hits.append(f"{rel} ({view}): {data[max(0, at - 40) : at + 40]!r}")
    return hits


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"medad {' '.join(args)}: {result.output}\n{result.exception!r}"
    return result.output


# ---------------------------------------------------------------- the tests


def test_scan_finds_every_planted_canary(inputs: dict[str, Path]) -> None:
    """The scan itself sees each kind of canary (so 0 hits below means something)."""
    files = [p for p in inputs["base"].rglob("*") if p.is_file()]
    seen = b"\n".join(data.lower() for p in files for _, data in _views(p, p.read_bytes()))
    planted = ("PNGTEXT", "PNGZTXT", "PNGITXT", "EXIFARTIST", "DESCRIP", "AUX", "NESTEDSERIAL", "PN^JANE", UID_ROOT)
    assert [w for w in planted if w.lower().encode() not in seen] == []
    hits = scan(inputs["base"])
    assert len([h for h in hits if "in its name" in h]) == len(files) + 5 and len(hits) > 2 * len(files)


@pytest.fixture(scope="module")
def outputs(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``medad score`` (+ every export format, de-identified), ``export``, ``eval`` and ``report`` outputs."""
    out = tmp_path_factory.mktemp("outputs")
    model = ["--model", "ad_dinov3_tiny", "--batch-size", "4", "--device", "cpu"]
    formats = "png,nifti,dicom-seg,pmap"
    _cli("score", str(inputs["mixed"]), "--out", str(out / "score"), *model, "--export", formats, "--deidentify")
    _cli("export", str(out / "score"), "--format", formats, "--deidentify", "--out", str(out / "export"))
    labelled = out / "labelled"
    _cli("score", str(inputs["root"]), "--kind", "folder", "--out", str(labelled), *model)
    _cli("eval", f"tiny={labelled / 'predictions'}", "--data", str(inputs["root"]), "--kind", "folder", "--out",
         str(out / "evaluation"), "--ci-resamples", "20")  # fmt: skip
    manifest = labelled / "private" / "predictions.manifest.csv"
    _cli("report", str(out / "evaluation"), "--out", str(out / "report"), "--predictions",
         f"tiny={labelled / 'predictions'}", "--manifest", f"folder={manifest}")  # fmt: skip
    return out


def test_score_export_eval_report_write_no_canary_outside_private(outputs: Path) -> None:
    assert (outputs / "score" / "private" / "predictions.manifest.csv").is_file()
    assert (outputs / "labelled" / "private" / "predictions.manifest.csv").is_file()
    assert (outputs / "report" / "report.html").is_file() and list((outputs / "export").glob("*_overlay.png"))
    assert {p.suffixes[-1] for p in (outputs / "export").iterdir()} >= {".png", ".gz", ".npy", ".dcm", ".json"}
    assert [h for h in scan(outputs) if ".dcm " not in h] == []


def test_deidentified_dicom_exports_hold_no_canary(outputs: Path) -> None:
    assert list(outputs.rglob("*_seg.dcm")) and list(outputs.rglob("*_pmap.dcm"))
    assert [h for h in scan(outputs) if ".dcm " in h] == []


def test_protocol_run_writes_no_canary_outside_private(inputs: dict[str, Path], tmp_path: Path) -> None:
    protocol = tmp_path / "privacy-test.yaml"
    protocol.write_text(PROTOCOL.format(root=inputs["root"]), encoding="utf-8")
    out = tmp_path / "out"
    printed = _cli("run", str(protocol), "--out", str(out), "--no-progress").splitlines()
    run_dir = Path([line for line in printed if Path(line).is_dir()][-1])
    private = run_dir / "private"
    assert str(inputs["root"]) in (private / "protocol.resolved.yaml").read_text()
    assert "<root of clinic>" in (run_dir / "protocol.resolved.yaml").read_text()
    assert (private / "data" / "clinic.manifest.csv").is_file() and (private / "provenance.json").is_file()
    assert list((run_dir / "exports").glob("*/*_overlay.png"))
    assert scan(out) == []
