"""DICOM input: one manifest row per frame, and a display-correct pixel pipeline.

Grayscale frames go through stored values -> Modality LUT (rescale) -> VOI LUT or window -> scaling to [0, 1]
-> MONOCHROME1 inversion (last, as PS3.3 defines it). Colour frames come back as RGB (pydicom converts YBR);
PALETTE COLOR goes through the palette. Compressed transfer syntaxes decode through the ``dicom`` extra
(pylibjpeg and its plugins); a missing decoder is a :class:`~medad.errors.DataError` naming what to install.
Patient identifiers are never read into messages: errors name only the file.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.pixels.utils import get_expected_length

from medad.data.description import DatasetDescription, Detector, register_dataset
from medad.data.manifest import ManifestBuilder, holds_only, is_ignored, require_dir
from medad.errors import DataError
from medad.utils.privacy import case_id

DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".ima"})
_PLUGIN_HINT: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (JPEG Baseline)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (JPEG Extended)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (JPEG Lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (JPEG Lossless SV1)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (JPEG-LS Lossless)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (JPEG-LS Near-lossless)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (JPEG 2000 Lossless)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg (HTJ2K Lossless RPCL)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (RLE Lossless)",
}


def looks_like_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: a DICOM extension or the ``DICM`` preamble marker."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def describe(path: Path | str, name: str | None = None) -> str:
    """How messages name a DICOM source: ``name`` when given (``case <id>``, a dataset-relative name), else
    ``DICOM file PATH`` (for a caller that gave the path itself)."""
    return name if name else f"DICOM file {path}"


@contextlib.contextmanager
def library_log() -> Iterator[list[str]]:
    """Collect what pydicom (and its decoder plugins) log while the block runs, instead of letting it reach
    stderr as tracebacks; the messages (first line each, no traceback) come back in the yielded list, for the
    one message medad raises."""
    logger = logging.getLogger("pydicom")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            first = record.getMessage().strip().splitlines()
            if first and record.levelno >= logging.WARNING and first[0] not in messages:
                messages.append(first[0][:200])

    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def read_header(path: Path, name: str | None = None) -> pydicom.Dataset:
    """Read a DICOM file's attributes with the pixel data deferred; a broken file is a DataError."""
    try:
        with library_log():
            return pydicom.dcmread(path, defer_size="1 KB")
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{describe(path, name)} cannot be read ({type(exc).__name__}); it is truncated or not DICOM - "
            "re-export it or remove it"
        ) from None


def number_of_frames(ds: pydicom.Dataset) -> int:
    """The frame count of an image dataset (1 when NumberOfFrames is absent)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def dicom_files(root: Path) -> list[Path]:
    """Every DICOM file under ``root`` (a file or a folder, searched recursively), sorted by path."""
    if root.is_file():
        return [root]
    require_dir(root, "DICOM folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and not is_ignored(p) and looks_like_dicom(p))


def relative_name(path: Path, base: Path) -> str:
    """A DICOM file's name relative to the folder the user gave (its file name when it was given itself)."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


NON_IMAGE_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose: a dose grid
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
        "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map (e.g. a model's own score map)
        "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    }
)
"""SOP classes that carry pixel data that is not an image of a patient (a dose grid, a segmentation, a score
map): refused as inputs, since a model would score them as pictures."""


def not_an_image(ds: pydicom.Dataset) -> str | None:
    """Why a DICOM dataset is not an image a model can score (no pixel data; a non-image SOP class such as RT
    Dose, SEG or a Parametric Map), or ``None`` when it is one."""
    sop = str(ds.get("SOPClassUID", "") or "")
    kind = pydicom.uid.UID(sop).name if sop else "unknown SOP class"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return f"is a DICOM file without pixel data ({kind}, not an image); remove it from the input"
    if sop in NON_IMAGE_SOP_CLASSES:
        return (
            f"is a {kind} object: its pixel data is not an image of the patient, so a model cannot score it; "
            "remove it from the input (score the images it refers to)"
        )
    return None


def make_dicom(root: str | Path, split: str = "test", class_name: str = "object", strict: bool = True) -> pd.DataFrame:
    """Manifest of DICOM files or folders: one row per frame, labels unknown.

    Args:
        root: A DICOM file or a folder searched recursively.
        split: Split name written in the manifest.
        class_name: Class word for every row.
        strict: Raise one DataError listing every unreadable file or file without pixel data.

    Returns:
        The manifest (``source_format="dicom"``, ``frame`` = frame index, ``group_id`` = pseudonymised series).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"DICOM path {root} does not exist; check the path")
    base = root if root.is_dir() else root.parent
    builder = ManifestBuilder("dicom", base, split, "dicom")
    for path in dicom_files(root):
        rel = relative_name(path, base)  # problems name the file as the user gave it, never by its full path
        try:
            ds = read_header(path, rel)
        except DataError as exc:
            builder.problem(rel, str(exc).removeprefix(f"{rel} "))
            continue
        refusal = not_an_image(ds)
        if refusal is not None:
            builder.problem(rel, refusal)
            continue
        series = str(ds.get("SeriesInstanceUID", "")) or str(path)
        for frame in range(number_of_frames(ds)):
            builder.add(
                path,
                class_name=class_name,
                label=None,
                group_id=case_id(f"series/{series}"),
                source_format="dicom",
                frame=frame,
            )
    return builder.build(strict)


_J2K_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
     "1.2.840.10008.1.2.4.203"}
)  # fmt: skip
_ZERO_RUN = re.compile(rb"\x00{128,}")
VOI_LUT_FUNCTIONS: frozenset[str] = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})
"""The VOI LUT Function values PS3.3 C.11.2.1.3 defines (an empty one means LINEAR)."""
_DISPLAY_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)


def _int_attr(ds: pydicom.Dataset, who: str, keyword: str, default: int) -> int:
    """An integer header attribute, or a DataError naming the source and the attribute."""
    try:
        value = ds.get(keyword, default)
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        raise DataError(f"{who} has a non-numeric {keyword}; fix the header or re-export it") from None


def _first_number(ds: pydicom.Dataset, keyword: str, who: str) -> float | None:
    """The first value of a numeric display attribute as a finite float (``None`` when absent or empty), or a
    DataError naming the attribute (text such as 'abc', NaN, infinity)."""
    if keyword not in ds:
        return None
    raw = ds[keyword].value
    first = raw[0] if isinstance(raw, (pydicom.multival.MultiValue, list, tuple)) and len(raw) else raw
    if first is None or str(first).strip() == "":
        return None
    try:
        value = float(first)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise DataError(
            f"{who} has {keyword} {str(first)[:20]!r}, which is not a finite number; fix {keyword} in the header "
            "or re-export it"
        )
    return value


def _set_number(ds: pydicom.Dataset, keyword: str, value: float | None) -> None:
    """Store a checked display attribute as one DS number (or remove it when empty), so pydicom's LUT functions
    read a number whatever VR or multiplicity the file used."""
    if keyword in ds:
        del ds[keyword]
    if value is not None:
        ds.add_new(keyword, "DS", pydicom.valuerep.DSfloat(value, auto_format=True))


def _check_lut_sequence(ds: pydicom.Dataset, keyword: str, who: str) -> None:
    """A Modality or VOI LUT Sequence must hold an item with a 3-number LUTDescriptor and its LUTData."""
    if keyword not in ds:
        return
    items = ds[keyword].value
    usable = False
    if items:
        item = items[0]
        try:
            descriptor = [int(v) for v in item.LUTDescriptor]
            usable = len(descriptor) == 3 and "LUTData" in item and item.LUTData is not None
        except _DISPLAY_ERRORS:
            usable = False
    if not usable:
        raise DataError(
            f"{who} has a {keyword} without a usable LUTDescriptor (3 numbers) and LUTData; fix the LUT or delete "
            f"{keyword} from the header so medad windows by the other attributes"
        )


def check_display_attributes(ds: pydicom.Dataset, who: str) -> None:
    """Check (and normalise in place) every attribute the display pipeline reads: RescaleSlope/Intercept,
    WindowCenter/WindowWidth (PS3.3 C.11.2.1.2: width >= 1), VOILUTFunction, the Modality and VOI LUT
    Sequences and PixelRepresentation; a bad one is a DataError naming it instead of a TypeError in pydicom."""
    try:
        slope = float(ds.get("RescaleSlope", 1) or 0) if "RescaleSlope" in ds else 1.0
    except (TypeError, ValueError):
        raise DataError(f"{who} has a non-numeric RescaleSlope; fix the header or re-export it") from None
    if slope == 0 or not np.isfinite(slope):
        raise DataError(
            f"{who} has RescaleSlope {slope:g}, which maps every pixel to one value (a blank image); fix the header "
            "(RescaleSlope is usually 1) or re-export it"
        )
    _int_attr(ds, who, "PixelRepresentation", 0)
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter"):
        _set_number(ds, keyword, _first_number(ds, keyword, who))
    if "WindowWidth" in ds and "VOILUTSequence" not in ds:
        _check_window_width(ds, who)
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if function and function not in VOI_LUT_FUNCTIONS:
        raise DataError(
            f"{who} has VOILUTFunction {function[:20]!r}, not one of {sorted(VOI_LUT_FUNCTIONS)} (PS3.3 C.11.2.1.3); "
            "fix it or delete it from the header (LINEAR is the default)"
        )
    if "VOILUTFunction" in ds:
        del ds["VOILUTFunction"]
        if function:
            ds.VOILUTFunction = function
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        _check_lut_sequence(ds, keyword, who)


def _check_window_width(ds: pydicom.Dataset, who: str) -> None:
    """WindowWidth must be a number >= 1 (PS3.3 C.11.2.1.2); stored back as one DS number."""
    raw = ds["WindowWidth"].value
    first = raw[0] if isinstance(raw, pydicom.multival.MultiValue) and len(raw) else raw
    try:
        width = float(first)
    except (TypeError, ValueError):
        width = float("nan")
    if not width >= 1 or not np.isfinite(width):
        raise DataError(
            f"{who} has WindowWidth {str(first)[:20]!r}, which is not a number >= 1 (PS3.3 C.11.2.1.2); fix the "
            "window in the header or delete WindowCenter/WindowWidth so medad windows by the image's range"
        )
    _set_number(ds, "WindowWidth", width)


def check_pixel_header(ds: pydicom.Dataset, path: Path, name: str | None = None) -> None:
    """Refuse a header that would decode into garbage or a traceback: BitsStored > BitsAllocated, a pixel data
    length that does not match Rows x Columns x samples x frames (uncompressed), a frame over the pixel limit,
    and any display attribute :func:`check_display_attributes` refuses. Messages name the source as
    :func:`describe` does."""
    from medad.data.readers import check_pixel_count

    who = describe(path, name)
    rows, columns = _int_attr(ds, who, "Rows", 0), _int_attr(ds, who, "Columns", 0)
    allocated, stored = _int_attr(ds, who, "BitsAllocated", 8), _int_attr(ds, who, "BitsStored", 8)
    samples, frames = _int_attr(ds, who, "SamplesPerPixel", 1), number_of_frames(ds)
    if rows < 1 or columns < 1:
        raise DataError(f"{who} has Rows {rows} x Columns {columns}; it is not an image - remove it")
    check_pixel_count("", rows * columns, who)
    if not 1 <= stored <= allocated:
        raise DataError(
            f"{who} has BitsStored {stored} but BitsAllocated {allocated} (BitsStored must be 1 to BitsAllocated); "
            "fix the header or re-export it"
        )
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if "PixelData" in ds and not pydicom.uid.UID(syntax).is_compressed:
        try:
            expected = int(get_expected_length(ds, "bytes"))  # knows YBR_FULL_422 and 1-bit packing
        except (AttributeError, TypeError, ValueError, KeyError):
            expected = rows * columns * samples * frames * allocated // 8
        actual = len(ds.PixelData)
        if actual < expected or actual > expected + 1:
            raise DataError(
                f"{who} holds {actual} bytes of pixel data but Rows {rows} x Columns {columns} x {samples} "
                f"sample(s) x {frames} frame(s) at {allocated} bits need {expected}; the header does not match the "
                "pixels (or the file is truncated) - re-export it"
            )
    check_display_attributes(ds, who)


def _check_j2k(ds: pydicom.Dataset, who: str, index: int) -> None:
    """Refuse a JPEG 2000 frame whose codestream lacks its end marker or holds a long run of zero bytes: a
    damaged stream that the decoder would otherwise turn silently into a wrong image."""
    from pydicom.encaps import generate_frames

    frames = number_of_frames(ds)
    try:
        for k, stream in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if k != index:
                continue
            tail = stream[-4:]
            zeros = _ZERO_RUN.search(stream)
            if b"\xff\xd9" not in tail or zeros is not None:
                where = f"{len(zeros.group())} zero bytes at offset {zeros.start()}" if zeros else "no end marker"
                raise DataError(
                    f"{who} frame {index}: the JPEG 2000 stream is damaged ({where}) and would decode into a wrong "
                    "image; re-export it from the source"
                )
            return
    except (ValueError, EOFError, KeyError) as exc:
        raise DataError(f"{who} has broken encapsulated pixel data ({type(exc).__name__}); re-export it") from None


def _decode_error(exc: Exception, ds: pydicom.Dataset, who: str, logged: list[str]) -> DataError:
    """The one DataError for a frame pydicom could not decode; what its decoders logged becomes the reason."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    said = f" (the decoders said: {'; '.join(logged)[:240]})" if logged else ""
    if isinstance(exc, (RuntimeError, NotImplementedError, ImportError)):
        if "raised by all available plugins" in str(exc):
            return DataError(
                f"{who} pixel data ({syntax}) could not be decoded by any installed plugin{said}; the compressed "
                "stream is corrupt or unsupported - re-export it uncompressed"
            )
        hint = _PLUGIN_HINT.get(syntax, "a pydicom decoding plugin for this transfer syntax")
        return DataError(
            f"{who} uses a compressed transfer syntax ({syntax}) that no installed decoder handles; install {hint} "
            "with `pip install 'medad[dicom]'`"
        )
    return DataError(
        f"{who} pixel data cannot be decoded ({type(exc).__name__}){said}; the file is truncated or corrupt - "
        "re-export it"
    )


def _decode_frame(path: Path, index: int, name: str | None = None) -> tuple[np.ndarray, pydicom.Dataset]:
    """Decode one frame after the header checks; every failure is one DataError naming the source."""
    who = describe(path, name)
    ds = read_header(path, name)
    if "PixelData" not in ds:
        raise DataError(f"{who} has no pixel data (not an image); remove it from the input")
    frames = number_of_frames(ds)
    if index >= frames:
        raise DataError(f"{who} has {frames} frame(s), frame {index} was asked; rebuild the manifest")
    check_pixel_header(ds, path, name)
    if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) in _J2K_SYNTAXES:
        _check_j2k(ds, who, index)
    with library_log() as logged:  # decoder plugins log tracebacks: they become the one message below
        try:
            arr = pixel_array(path, index=index if frames > 1 else None)
        except (RuntimeError, NotImplementedError, ImportError, ValueError, EOFError, OSError, TypeError, KeyError,
                AttributeError) as exc:  # fmt: skip
            raise _decode_error(exc, ds, who, logged) from None
    return arr, ds


def _stored_range(ds: pydicom.Dataset) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8) or 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        return np.array([0, 2**bits - 1], dtype=np.int64)
    return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)


def _scale(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    low, high = float(np.min(bounds)), float(np.max(bounds))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def dicom_frame_to_rgb(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Turn one decoded frame into an (H, W, 3) float32 image in [0, 1] for display.

    Grayscale: modality LUT, then VOI LUT / window (or the frame's min-max when none is given), scaled to
    [0, 1], then MONOCHROME1 inversion last. RGB (YBR is already converted by pydicom) and PALETTE COLOR are
    scaled by their bit depth.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = 16 if rgb.dtype == np.uint16 else 8
        return (rgb.astype(np.float32) / (2**bits - 1)).clip(0, 1)
    if arr.ndim == 3:
        bits = int(ds.get("BitsStored", 8) or 8)
        return (arr.astype(np.float32) / (2**bits - 1)).clip(0, 1)
    values = apply_modality_lut(arr, ds)
    has_voi = ("WindowCenter" in ds and "WindowWidth" in ds) or "VOILUTSequence" in ds
    if has_voi:
        bounds = apply_voi_lut(apply_modality_lut(_stored_range(ds), ds), ds, index=0)
        values = apply_voi_lut(values, ds, index=0)
    else:
        bounds = np.array([values.min(), values.max()])
    gray = _scale(np.asarray(values), np.asarray(bounds))
    if photometric == "MONOCHROME1":
        gray = 1.0 - gray
    return np.repeat(gray[..., None], 3, axis=2)


def read_dicom_frame(path: str | Path, frame: int = 0, name: str | None = None) -> np.ndarray:
    """Read frame ``frame`` of a DICOM image as an (H, W, 3) float32 image in [0, 1].

    ``name`` is how messages name the source (e.g. ``case <id>``); without it they give the path. A non-image
    object (RT Dose, SEG, Parametric Map, no pixel data) is refused.
    """
    who = describe(path, name)
    arr, ds = _decode_frame(Path(path), frame, name)
    refusal = not_an_image(ds)
    if refusal is not None:
        raise DataError(f"{who} {refusal}")
    try:
        return dicom_frame_to_rgb(arr, ds)
    except _DISPLAY_ERRORS as exc:  # a LUT or palette pydicom cannot apply: named, not a traceback
        raise DataError(
            f"{who} has display attributes (modality LUT, VOI LUT, window or palette) that cannot be applied "
            f"({type(exc).__name__}); fix the header or re-export it"
        ) from None


def dicom_frame_shape(path: str | Path, name: str | None = None) -> tuple[int, int]:
    """(Rows, Columns) of a DICOM image without decoding its pixels; a header that cannot give them is a
    DataError naming the source (as :func:`describe` does)."""
    path = Path(path)
    who = describe(path, name)
    ds = read_header(path, name)
    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{who} has no Rows/Columns (not an image); remove it from the input")
    return _int_attr(ds, who, "Rows", 0), _int_attr(ds, who, "Columns", 0)


def read_dicom_mask(row: Mapping[str, Any]) -> np.ndarray:
    """Read the mask of a DICOM row from a plain mask image or a DICOM frame (binarised ``>0``); messages name
    the mask by the row's case id when it has one."""
    mask_path = Path(str(row["mask_path"]))
    frame = row.get("frame")
    index = 0 if frame is None or pd.isna(frame) else int(frame)
    case = str(row.get("case_id") or "")
    arr, _ = _decode_frame(mask_path, index, f"DICOM mask of case {case}" if case else None)
    return arr.reshape(arr.shape[0], arr.shape[1], -1).max(axis=2) > 0


register_dataset(
    DatasetDescription(
        name="dicom",
        make=make_dicom,
        detectors=(
            Detector(103, "a DICOM file", lambda r: r.is_file() and looks_like_dicom(r)),
            Detector(121, "folder of DICOM files", lambda r: holds_only(r, looks_like_dicom)),
        ),
    )
)
