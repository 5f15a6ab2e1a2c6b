"""The sweep's cases for the data layer and faults (issue 14, sections 1-3 and 6, and what hospital folders hold).

Every case writes its inputs into its own folder: plain images made with Pillow, DICOM files derived from
pydicom's bundled test files, NIfTI volumes made with nibabel. Scoring runs the tiny random-weight model on the
CPU. Disk faults are made for real where a process can (``RLIMIT_FSIZE``), else by a ``sitecustomize`` in the
child that makes the chosen write fail with the errno a full or read-only disk gives.
"""

from __future__ import annotations

import copy
import errno
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

from tests.robustness.harness import Case, Expect, Setup

TINY = ["--model", "ad_dinov3_tiny", "--device", "cpu", "--no-heatmaps", "--batch-size", "4"]
IS_ROOT = os.geteuid() == 0


# --- builders --------------------------------------------------------------------------------------------------


def png(path: Path, size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Write a random image (``size`` = (W, H)) in ``mode``; the format follows the suffix unless ``fmt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(data).convert(mode).save(path, format=fmt)
    return path


def good_folder(tmp: Path, n: int = 2, size: tuple[int, int] = (32, 32)) -> Path:
    """A folder of ``n`` readable PNGs."""
    folder = tmp / "in"
    for k in range(n):
        png(folder / f"good_{k}.png", size, seed=k)
    return folder


def score_argv(tmp: Path, *paths: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """``medad score PATHS --out TMP/out`` with the tiny model on the CPU."""
    return ["score", *map(str, paths), "--out", str(tmp / "out"), *TINY, *extra]


DICOM_BY_CASE = "DICOM image of case case-"
"""How a skipped DICOM source is named on stderr: by case id, never by its path (issue 22, section 6)."""


def skipped_dicom(tmp: Path, bad: Path, expected: int) -> Callable[[str], str | None]:
    """A check: the rest was scored and stderr never names the skipped DICOM source's path."""
    rows = scored_rows(tmp, expected)

    def check(stderr: str) -> str | None:
        return f"stderr names the DICOM source path {bad}" if str(bad) in stderr else rows(stderr)

    return check


def scored_rows(tmp: Path, expected: int) -> Callable[[str], str | None]:
    """A check: ``scores.csv`` holds ``expected`` rows (the readable images were scored)."""

    def check(_: str) -> str | None:
        table = tmp / "out" / "scores.csv"
        if not table.is_file():
            return "no scores.csv written"
        rows = len(pd.read_csv(table))
        return None if rows == expected else f"scores.csv has {rows} rows, wanted {expected}"

    return check


def dicom(name: str = "CT_small.dcm") -> pydicom.Dataset:
    """A copy of one of pydicom's bundled test files."""
    return copy.deepcopy(pydicom.dcmread(get_testdata_file(name)))


def save_dicom(ds: pydicom.Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return path


def case_of(source: Path) -> str:
    """The case id medad names a DICOM / NIfTI source by on stderr (never by its path, which may hold a name)."""
    from medad.data import manifest_from_paths

    manifest = manifest_from_paths([str(source.parent)])
    return str(manifest.loc[manifest["image_path"] == str(source), "case_id"].iloc[0])


def dicom_folder(tmp: Path) -> Path:
    """A folder with two readable DICOM files (CT and MR)."""
    folder = tmp / "in"
    save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
    save_dicom(dicom("MR_small.dcm"), folder / "mr.dcm")
    return folder


def nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def sitecustomize(tmp: Path, code: str) -> dict[str, str]:
    """Environment that runs ``code`` in the child at start-up (a fault injected into the standard library)."""
    folder = tmp / "site"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(code, encoding="utf-8")
    return {"PYTHONPATH": str(folder)}


def failing_mkstemp(tmp: Path, marker: str, code: int) -> dict[str, str]:
    """A child whose temporary files in folders containing ``marker`` fail with errno ``code`` (disk full...)."""
    return sitecustomize(
        tmp,
        "import errno, os, tempfile\n"
        "_real = tempfile.mkstemp\n"
        "def _mkstemp(*args, **kwargs):\n"
        f"    if {marker!r} in str(kwargs.get('dir', '')):\n"
        f"        raise OSError({code}, os.strerror({code}))\n"
        "    return _real(*args, **kwargs)\n"
        "tempfile.mkstemp = _mkstemp\n",
    )


def fsize_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` that caps the size of any file the child writes (``ulimit -f``)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# --- case factories --------------------------------------------------------------------------------------------


def bad_image_case(
    name: str, write: Callable[[Path], Path], note: str, *, fast: bool = False, extra: tuple[str, ...] = ()
) -> Case:
    """A bad plain image among two good ones: skipped and named, the two others scored."""

    def make(tmp: Path) -> Setup:
        folder = good_folder(tmp)
        bad = write(folder)
        return Setup(score_argv(tmp, folder, extra=extra), names=str(bad), check=scored_rows(tmp, 2))

    return Case(name, make, Expect.SKIPPED, fast=fast, note=note)


def bad_dicom_case(name: str, edit: Callable[[pydicom.Dataset], None], note: str, *, fast: bool = False) -> Case:
    """A DICOM file with a bad header among two good ones, scored: skipped and named by its case id."""

    def make(tmp: Path) -> Setup:
        folder = dicom_folder(tmp)
        ds = dicom()
        edit(ds)
        bad = save_dicom(ds, folder / "bad.dcm")
        return Setup(score_argv(tmp, folder), names=case_of(bad), check=skipped_dicom(tmp, bad, 2))

    return Case(name, make, Expect.SKIPPED, fast=fast, note=note)


def check_dicom_case(name: str, edit: Callable[[pydicom.Dataset], None], note: str) -> Case:
    """``medad datasets check`` of a bad DICOM file: the problem listed with the file, no traceback."""

    def make(tmp: Path) -> Setup:
        ds = dicom()
        edit(ds)
        save_dicom(ds, tmp / "in" / "bad.dcm")
        return Setup(["datasets", "check", str(tmp / "in"), "--kind", "dicom"], names="bad.dcm")

    return Case(name, make, Expect.PROBLEM, note=note)


def ok_case(
    name: str, write: Callable[[Path], None], note: str, *, rows: int | None = None, fast: bool = False
) -> Case:
    """Inputs that must simply score (``rows``: how many rows scores.csv must have)."""

    def make(tmp: Path) -> Setup:
        folder = tmp / "in"
        folder.mkdir(parents=True, exist_ok=True)
        write(folder)
        return Setup(score_argv(tmp, folder), check=None if rows is None else scored_rows(tmp, rows))

    return Case(name, make, Expect.OK, fast=fast, note=note)


def error_case(name: str, make: Callable[[Path], Setup], note: str, *, fast: bool = False) -> Case:
    return Case(name, make, Expect.ERROR, fast=fast, note=note)


# --- raw bad files ----------------------------------------------------------------------------------------------


def _truncated(folder: Path, name: str = "bad.png", keep: float = 0.5) -> Path:
    path = png(folder / name, (64, 64), seed=9)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _bomb(folder: Path) -> Path:
    path = folder / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)  # 144 megapixels in a few kB
    return path


def _set_window(width: str) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.WindowCenter = "40"
        ds.WindowWidth = width

    return edit


def _non_numeric_window(ds: pydicom.Dataset) -> None:
    ds.WindowCenter = "40"
    ds.add(pydicom.DataElement(0x00281051, "LO", "wide"))  # WindowWidth written with a text VR


def _bits_over(ds: pydicom.Dataset) -> None:
    ds.BitsStored = 20


def _rows_mismatch(ds: pydicom.Dataset) -> None:
    ds.Rows = 200


def _slope_zero(ds: pydicom.Dataset) -> None:
    ds.RescaleSlope = 0


def _zeroed_j2k(folder: Path) -> Path:
    ds = dicom("MR_small_jp2klossless.dcm")
    raw = bytearray(ds.PixelData)
    start = len(raw) // 3
    raw[start : start + 200] = bytes(200)
    ds.PixelData = bytes(raw)
    return save_dicom(ds, folder / "zeroed_j2k.dcm")


def _garbage_j2k(folder: Path) -> Path:
    ds = dicom("MR_small_jp2klossless.dcm")
    raw = bytearray(ds.PixelData)
    rng = np.random.default_rng(1)
    raw[40:-40] = rng.integers(0, 255, len(raw) - 80, dtype=np.uint8).tobytes()
    ds.PixelData = bytes(raw)
    return save_dicom(ds, folder / "garbage_j2k.dcm")


# --- cases -----------------------------------------------------------------------------------------------------


def _make_train(tmp: Path, corrupt: bool) -> tuple[Path, Path]:
    from medad.data import write_layout

    root = write_layout(tmp / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0)
    bad = sorted(Path(root).rglob("*.png"))[0]
    if corrupt:
        bad.write_bytes(bad.read_bytes()[:40])
    return Path(root), bad


def _train_argv(root: Path, out: Path) -> list[str]:
    return [
        "train", "--data", str(root), "--out", str(out), "--model", "ad_dinov3_tiny", "--epochs", "1",
        "--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "--no-cache",
    ]  # fmt: skip


def _train_unreadable(tmp: Path) -> Setup:
    root, bad = _make_train(tmp, corrupt=True)

    def no_checkpoint(_: str) -> str | None:
        return "a checkpoint was written" if (tmp / "run" / "checkpoints").exists() else None

    return Setup(_train_argv(root, tmp / "run"), names=str(bad), check=no_checkpoint)


def _train_disk_full(tmp: Path) -> Setup:
    root, _ = _make_train(tmp, corrupt=False)
    env = failing_mkstemp(tmp, ".epoch_", errno.ENOSPC)
    return Setup(_train_argv(root, tmp / "run"), names="is full", env=env)


def _rerun_after_removal(tmp: Path) -> Setup:
    folder = good_folder(tmp, n=3)
    bad = _truncated(folder)
    argv = score_argv(tmp, folder)

    def rerun(_: str) -> str | None:
        from tests.robustness.harness import _run_in_process

        before = pd.read_csv(tmp / "out" / "scores.csv")
        bad.unlink()
        outcome = _run_in_process(argv)
        if outcome.code != 0:
            return f"rerun after removing the bad file: exit {outcome.code}: {outcome.stderr.strip()[-200:]}"
        after = pd.read_csv(tmp / "out" / "scores.csv")
        same = before.set_index("case_id")["image_score"].equals(after.set_index("case_id")["image_score"])
        return None if same and len(after) == 3 else "the rerun's scores differ from the first run's"

    return Setup(argv, names=str(bad), check=rerun)


def _rerun_after_fix(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    bad = _truncated(folder)
    argv = score_argv(tmp, folder)

    def rerun(_: str) -> str | None:
        from tests.robustness.harness import _run_in_process

        png(bad, (64, 64), seed=9)
        outcome = _run_in_process(argv)
        if outcome.code != 0:
            return f"rerun after fixing the file: exit {outcome.code}: {outcome.stderr.strip()[-200:]}"
        rows = len(pd.read_csv(tmp / "out" / "scores.csv"))
        return None if rows == 3 else f"rerun scored {rows} rows, wanted 3"

    return Setup(argv, names=str(bad), check=rerun)


def _eval_skipped(tmp: Path) -> Setup:
    from medad.cli import main  # noqa: F401  (imported for the in-process score below)
    from medad.data import write_layout
    from tests.robustness.harness import _run_in_process

    root = Path(write_layout(tmp / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0))
    bad = sorted(root.rglob("test/*/*.png"))[0]
    bad.write_bytes(b"not an image")
    _run_in_process(["score", str(root), "--kind", "mvtec", "--out", str(tmp / "out"), *TINY])
    return Setup(["eval", str(tmp / "out" / "predictions"), "--data", str(root), "--kind", "mvtec"], names="skipped")


def rerun_matches_clean_run(tmp: Path, folder: Path) -> Callable[[str], str | None]:
    """A check: once the fault is gone, rerunning into the same folder succeeds with the scores of a clean run
    (both runs draw the tiny model's random weights from the same seed)."""

    def check(_: str) -> str | None:
        import torch

        from tests.robustness.harness import _run_in_process

        torch.manual_seed(0)
        again = _run_in_process(score_argv(tmp, folder))
        torch.manual_seed(0)
        clean = _run_in_process(["score", str(folder), "--out", str(tmp / "clean"), *TINY])
        if again.code != 0 or clean.code != 0:
            return f"rerun after the fault: exit {again.code}: {again.stderr.strip()[-200:]}"
        first = pd.read_csv(tmp / "out" / "scores.csv")["image_score"].tolist()
        second = pd.read_csv(tmp / "clean" / "scores.csv")["image_score"].tolist()
        return None if first == second else "the rerun's scores differ from a clean run's"

    return check


def _score_fsize(tmp: Path) -> Setup:
    folder = good_folder(tmp, n=2, size=(400, 400))
    check = rerun_matches_clean_run(tmp, folder)
    return Setup(score_argv(tmp, folder), names="file-size limit", preexec=fsize_limit(400_000), check=check)


def _score_disk_full(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    env = failing_mkstemp(tmp, "chunks", errno.ENOSPC)
    return Setup(score_argv(tmp, folder), names="is full", env=env, check=rerun_matches_clean_run(tmp, folder))


def _score_read_only(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    return Setup(score_argv(tmp, folder), names="read-only", env=failing_mkstemp(tmp, "out", errno.EROFS))


def _score_max_pixels_env(tmp: Path) -> Setup:
    folder = good_folder(tmp, n=2, size=(64, 64))
    png(folder / "wide.png", (300, 300))
    return Setup(
        score_argv(tmp, folder), names="wide.png", env={"MEDAD_MAX_IMAGE_PIXELS": "10000"}, check=scored_rows(tmp, 2)
    )


def _bad_pixel_env(tmp: Path) -> Setup:
    return Setup(score_argv(tmp, good_folder(tmp)), names="MEDAD_MAX_IMAGE_PIXELS", env={"MEDAD_MAX_IMAGE_PIXELS": "x"})


def _nan_nifti(value: float) -> Callable[[Path], Setup]:
    def make(tmp: Path) -> Setup:
        data = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
        data[3, 4, 1] = value
        path = nifti(tmp / "in" / "vol.nii.gz", data)
        return Setup(score_argv(tmp, path), names=case_of(path), check=scored_rows(tmp, 3))

    return make


def _nan_nifti_check(tmp: Path) -> Setup:
    data = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    data[..., 1] = np.nan
    nifti(tmp / "in" / "vol.nii.gz", data)
    return Setup(["datasets", "check", str(tmp / "in"), "--kind", "nifti"], names="NaN")


def _mask_layout(tmp: Path, mask: np.ndarray) -> Setup:
    from medad.data import write_layout

    root = Path(write_layout(tmp / "data", "mvtec", n_normal=1, n_abnormal=2, size=32, seed=0))
    target = sorted(root.rglob("ground_truth/*/*.png"))[0]
    Image.fromarray(mask).save(target)
    return Setup(["datasets", "check", str(root), "--kind", "mvtec"], names=target.name)


def _gradient_mask(tmp: Path) -> Setup:
    return _mask_layout(tmp, np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1)))


def _noise_mask(tmp: Path) -> Setup:
    return _mask_layout(tmp, np.random.default_rng(0).integers(0, 6, (32, 32), dtype=np.uint8))


def _wrong_size_mask(tmp: Path) -> Setup:
    return _mask_layout(tmp, np.zeros((16, 20), dtype=np.uint8))


def _truncated_nifti(folder: Path) -> Path:
    path = nifti(folder / "cut.nii", np.random.default_rng(0).random((24, 24, 4)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:-2000])
    return path


def _nifti_with_good_images(write: Callable[[Path], Path], rows: int) -> Callable[[Path], Setup]:
    def make(tmp: Path) -> Setup:
        folder = good_folder(tmp)
        bad = write(folder)
        return Setup(score_argv(tmp, folder), names=case_of(bad), check=scored_rows(tmp, rows))

    return make


def _all_nan_nifti(folder: Path) -> Path:
    return nifti(folder / "nan.nii.gz", np.full((8, 8, 2), np.nan, dtype=np.float32))


def _missing_path(tmp: Path) -> Setup:
    return Setup(score_argv(tmp, tmp / "nowhere"), names="nowhere")


def _empty_folder(tmp: Path) -> Setup:
    (tmp / "in").mkdir()
    return Setup(score_argv(tmp, tmp / "in"), names=str(tmp / "in"))


def _only_clutter(tmp: Path) -> Setup:
    folder = tmp / "in"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return Setup(score_argv(tmp, folder), names=str(folder))


def _pdf_among_images(named: bool) -> Callable[[Path], Setup]:
    """A PDF beside the images: the folder is scored, or (``named``) the PDF is given on the command line."""

    def make(tmp: Path) -> Setup:
        folder = good_folder(tmp)
        (folder / "report.pdf").write_bytes(b"%PDF-1.4\n")
        inputs = (folder / "good_0.png", folder / "report.pdf") if named else (folder,)
        return Setup(score_argv(tmp, *inputs), names="report.pdf")

    return make


def _same_file_twice(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    return Setup(score_argv(tmp, folder / "good_0.png", folder / "good_0.png"), names="case_id")


def _batch_zero(tmp: Path) -> Setup:
    return Setup(score_argv(tmp, good_folder(tmp), extra=("--batch-size", "0")), names="batch_size")


def _dicom_as_png(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    png(folder / "fake.dcm", fmt="PNG")
    return Setup(score_argv(tmp, folder), names="fake.dcm")


def _zero_byte_dicom(tmp: Path) -> Setup:
    folder = dicom_folder(tmp)
    (folder / "empty.dcm").write_bytes(b"")
    return Setup(score_argv(tmp, folder), names="empty.dcm")


def _truncated_dicom(tmp: Path) -> Setup:
    folder = dicom_folder(tmp)
    bad = Path(shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "truncated.dcm"))
    return Setup(score_argv(tmp, folder), names=case_of(bad), check=skipped_dicom(tmp, bad, 2))


def _no_preamble(tmp: Path) -> Setup:
    folder = dicom_folder(tmp)
    shutil.copy(get_testdata_file("ExplVR_LitEndNoMeta.dcm"), folder / "raw.dcm")
    return Setup(score_argv(tmp, folder), names="raw.dcm")


def _nifti_4d(tmp: Path) -> Setup:
    path = nifti(tmp / "in" / "fourd.nii.gz", np.zeros((4, 4, 2, 2), dtype=np.float32))
    return Setup(score_argv(tmp, path), names="fourd.nii.gz")


def _workers_skip(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    bad = _truncated(folder)
    return Setup(score_argv(tmp, folder, extra=("--workers", "2")), names=str(bad), check=scored_rows(tmp, 2))


def _unreadable_permissions(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    locked = png(folder / "locked.png", seed=5)
    locked.chmod(0)
    if IS_ROOT:  # root reads a chmod 0 file anyway: the run must simply score all three
        return Setup(score_argv(tmp, folder), check=scored_rows(tmp, 3))
    return Setup(score_argv(tmp, folder), names=str(locked), check=scored_rows(tmp, 2))


def _symlink_loop(folder: Path) -> None:
    png(folder / "a.png")
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)


def _broken_symlink(folder: Path) -> None:
    png(folder / "a.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")


def _long_path(folder: Path) -> None:
    deep = folder
    for k in range(3):
        deep = deep / (f"{k}" + "d" * 120)
    png(deep / ("n" * 200 + ".png"))  # a 200-byte name in a path of over 600 bytes


def _non_utf8_name(tmp: Path) -> Setup:
    folder = good_folder(tmp)
    png(Path(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")))
    return Setup(score_argv(tmp, folder), names="caf\\xe9.png")


def _dicomdir(folder: Path) -> None:
    save_dicom(dicom(), folder / "IMG0001")
    ds = pydicom.Dataset()
    ds.FileSetID = "MEDAD"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    ds.save_as(folder / "DICOMDIR", enforce_file_format=False)


def _mixed_series(folder: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPGExtended.dcm"):
        save_dicom(dicom(name), folder / f"{name.lower()}")


def _multiframe(folder: Path) -> None:
    ds = dicom("MR_small.dcm")
    frames = 12
    ds.PixelData = ds.PixelData * frames
    ds.NumberOfFrames = frames
    save_dicom(ds, folder / "multi.dcm")


def _many_formats(folder: Path) -> None:
    png(folder / "a.PNG", fmt="PNG")
    png(folder / "b.jpeg", fmt="JPEG")
    png(folder / "c.tif", fmt="TIFF")
    png(folder / "d.bmp", fmt="BMP")
    png(folder / "e.png", mode="RGBA")
    png(folder / "f.png", mode="P")
    png(folder / "g.png", mode="L")
    png(folder / "h.jpg", mode="CMYK", fmt="JPEG")
    png(folder / "i.png", mode="LA")
    png(folder / "j.png", mode="1")
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(folder / "k16.png")


def _odd_sizes(folder: Path) -> None:
    png(folder / "one.png", (1, 1))
    png(folder / "wide.png", (2000, 8))
    png(folder / "tall.png", (7, 900))


def _exif_rotated(folder: Path) -> None:
    image = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(folder / "rot.jpg", exif=exif)


def _hidden_and_clutter(folder: Path) -> None:
    png(folder / "a.png")
    png(folder / ".hidden.png")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "._a.png").write_bytes(b"\0\5\26\7")  # macOS resource fork
    (folder / "empty_sub").mkdir()


def _unicode_names(folder: Path) -> None:
    png(folder / "patient scan ü 中文.png")
    png(folder / "x (1).png", seed=2)


def _duplicates(folder: Path) -> None:
    png(folder / "a.png")
    shutil.copy(folder / "a.png", folder / "a_copy.png")


def _dicom_kinds(folder: Path) -> None:
    for name in (
        "MR_small_bigendian.dcm", "ExplVR_BigEnd.dcm", "SC_rgb_rle.dcm", "MR_small_jpeg_ls_lossless.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
    ):  # fmt: skip
        shutil.copy(get_testdata_file(name), folder / name)


def _monochrome1(folder: Path) -> None:
    ds = dicom()
    ds.PhotometricInterpretation = "MONOCHROME1"
    save_dicom(ds, folder / "mono1.dcm")


def _window_center_only(folder: Path) -> None:
    ds = dicom()
    ds.WindowCenter = "40"
    if "WindowWidth" in ds:
        del ds.WindowWidth
    save_dicom(ds, folder / "center_only.dcm")


def _two_windows(folder: Path) -> None:
    ds = dicom()
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["400", "2000"]
    save_dicom(ds, folder / "two_windows.dcm")


def _constant_nifti(folder: Path) -> None:
    nifti(folder / "flat.nii.gz", np.full((16, 16, 2), 7.0, dtype=np.float32))


def _nifti_2d(folder: Path) -> None:
    nifti(folder / "flat2d.nii", np.random.default_rng(0).random((16, 20)).astype(np.float32))


def _sr_dicom(tmp: Path) -> Setup:
    folder = dicom_folder(tmp)
    ds = dicom()
    del ds.PixelData
    save_dicom(ds, folder / "report_sr.dcm")
    return Setup(score_argv(tmp, folder), names="report_sr.dcm")


def _csv_missing_file(tmp: Path) -> Setup:
    csv = tmp / "list.csv"
    png(tmp / "a.png")
    csv.write_text(f"image_path,label\n{tmp / 'a.png'},0\n{tmp / 'gone.png'},1\n", encoding="utf-8")
    return Setup(["datasets", "check", str(csv), "--kind", "csv"], names="gone.png")


def _check_text_as_png(tmp: Path) -> Setup:
    from medad.data import write_layout

    root = Path(write_layout(tmp / "data", "mvtec", n_normal=2, n_abnormal=1, size=32, seed=0))
    target = sorted(root.rglob("test/good/*.png"))[0]
    target.write_text("hello", encoding="utf-8")
    return Setup(["datasets", "check", str(root), "--kind", "mvtec"], names=target.name)


def _j2k_case(name: str, write: Callable[[Path], Path], note: str) -> Case:
    """A damaged JPEG 2000 DICOM among two good DICOM files: skipped and named."""

    def make(tmp: Path) -> Setup:
        folder = dicom_folder(tmp)
        bad = write(folder)
        return Setup(score_argv(tmp, folder), names=DICOM_BY_CASE, check=skipped_dicom(tmp, bad, 2))

    return Case(name, make, Expect.SKIPPED, note=note)


CASES: list[Case] = [
    # section 1: one bad file must not end a scoring or training run
    bad_image_case("s1-truncated-png", _truncated, "half a PNG", fast=True),
    bad_image_case("s1-zero-byte-png", lambda f: _write(f, "zero.png", b""), "an empty .png"),
    bad_image_case("s1-text-as-png", lambda f: _write(f, "notes.png", b"these are notes\n"), "text named .png"),
    bad_image_case("s1-truncated-jpeg", lambda f: _truncated(f, "cut.jpg", 0.6), "JPEG without its end"),
    bad_image_case("s1-html-as-jpeg", lambda f: _write(f, "page.jpg", b"<html></html>"), "an HTML error page"),
    bad_image_case("s1-decompression-bomb", _bomb, "144 megapixels in a few kB"),
    Case("s1-pixel-limit-env", _score_max_pixels_env, Expect.SKIPPED, note="MEDAD_MAX_IMAGE_PIXELS lowered"),
    error_case("s1-pixel-limit-env-bad", _bad_pixel_env, "MEDAD_MAX_IMAGE_PIXELS=x"),
    Case("s1-truncated-nifti", _nifti_with_good_images(_truncated_nifti, 2), Expect.SKIPPED, note="cut .nii"),
    Case("s1-all-nan-nifti", _nifti_with_good_images(_all_nan_nifti, 2), Expect.SKIPPED, note="no finite voxel"),
    Case("s1-truncated-dicom", _truncated_dicom, Expect.SKIPPED, note="pydicom's MR_truncated.dcm"),
    _j2k_case("s1-garbage-j2k", _garbage_j2k, "undecodable JPEG 2000"),
    Case("s1-workers-skip", _workers_skip, Expect.SKIPPED, note="skip inside DataLoader workers"),
    Case("s1-rerun-after-removal", _rerun_after_removal, Expect.SKIPPED, fast=True, note="reuses the scores"),
    Case("s1-rerun-after-fix", _rerun_after_fix, Expect.SKIPPED, note="fixed file scored, rest reused"),
    error_case("s1-eval-skipped", _eval_skipped, "eval names the skipped images, counts none as normal"),
    error_case("s1-train-unreadable", _train_unreadable, "refused before the first step", fast=True),
    # section 2: no silent wrong results
    Case("s2-nan-nifti", _nan_nifti(float("nan")), Expect.WARNING, fast=True, note="NaN replaced, reported"),
    Case("s2-inf-nifti", _nan_nifti(float("inf")), Expect.WARNING, note="Inf replaced, reported"),
    Case("s2-nan-nifti-check", _nan_nifti_check, Expect.PROBLEM, note="datasets check reports NaN"),
    _j2k_case("s2-zeroed-j2k", _zeroed_j2k, "200 zeroed bytes in a JPEG 2000 stream"),
    Case("s2-gradient-mask", _gradient_mask, Expect.PROBLEM, note="a gradient mask binarised at >0"),
    Case("s2-noise-mask", _noise_mask, Expect.PROBLEM, note="a noise mask binarised at >0"),
    bad_dicom_case("s2-rescale-slope-0", _slope_zero, "a blank image", fast=True),
    check_dicom_case("s2-rescale-slope-0-check", _slope_zero, "datasets check"),
    # section 3: one clear message instead of a traceback
    bad_dicom_case("s3-window-width-0", _set_window("0"), "WindowWidth 0", fast=True),
    bad_dicom_case("s3-window-width-negative", _set_window("-5"), "WindowWidth -5"),
    bad_dicom_case("s3-window-width-tiny", _set_window("0.0001"), "WindowWidth 0.0001"),
    bad_dicom_case("s3-window-width-text", _non_numeric_window, "WindowWidth 'wide'"),
    bad_dicom_case("s3-bits-stored-over-allocated", _bits_over, "BitsStored 20 > BitsAllocated 16"),
    bad_dicom_case("s3-rows-mismatch", _rows_mismatch, "Rows 200 for 128 rows of pixels"),
    check_dicom_case("s3-window-width-0-check", _set_window("0"), "datasets check"),
    check_dicom_case("s3-window-width-text-check", _non_numeric_window, "datasets check"),
    check_dicom_case("s3-bits-stored-check", _bits_over, "datasets check"),
    check_dicom_case(
        "s3-rows-mismatch-check",
        _rows_mismatch,
        "datasets check",
    ),
    error_case("s3-score-file-size-limit", _score_fsize, "ulimit -f while writing a predictions chunk"),
    error_case("s3-score-disk-full", _score_disk_full, "ENOSPC on a predictions chunk"),
    error_case("s3-score-read-only", _score_read_only, "EROFS on the output folder"),
    error_case("s3-train-disk-full", _train_disk_full, "ENOSPC on the training checkpoint"),
    # what hospital folders really hold
    ok_case("h-hidden-and-clutter", _hidden_and_clutter, ".DS_Store, Thumbs.db, ._ files, empty folder", rows=1),
    ok_case("h-dicomdir", _dicomdir, "a DICOMDIR index beside the image", rows=1, fast=True),
    ok_case("h-mixed-series", _mixed_series, "CT, MR, RLE and JPEG in one folder", rows=4),
    ok_case("h-multiframe", _multiframe, "a 12-frame file", rows=12),
    ok_case("h-many-formats", _many_formats, "PNG/JPEG/TIFF/BMP in RGBA, P, L, CMYK, LA, 1, 16-bit", rows=11),
    ok_case("h-odd-sizes", _odd_sizes, "1x1, 2000x8, 7x900", rows=3),
    ok_case("h-exif-rotated", _exif_rotated, "EXIF orientation 6", rows=1),
    ok_case("h-unicode-names", _unicode_names, "spaces, umlauts, CJK", rows=2),
    error_case("h-non-utf8-name", _non_utf8_name, "a Latin-1 file name: refused, named with escapes"),
    ok_case("h-long-path", _long_path, "a path of over 600 bytes", rows=1),
    ok_case("h-symlink-loop", _symlink_loop, "a folder symlink pointing at its parent", rows=1),
    ok_case("h-broken-symlink", _broken_symlink, "a dangling symlink", rows=1),
    ok_case("h-duplicates", _duplicates, "the same image under two names", rows=2),
    ok_case("h-dicom-kinds", _dicom_kinds, "big endian, no meta, RLE RGB, JPEG-LS, YBR 422", rows=5),
    ok_case("h-monochrome1", _monochrome1, "MONOCHROME1", rows=1),
    ok_case("h-window-center-only", _window_center_only, "WindowCenter without WindowWidth", rows=1),
    ok_case("h-two-windows", _two_windows, "two VOI windows", rows=1),
    ok_case("h-constant-nifti", _constant_nifti, "a constant volume", rows=2),
    ok_case("h-nifti-2d", _nifti_2d, "a 2D NIfTI", rows=1),
    Case(
        "h-unreadable-permissions",
        _unreadable_permissions,
        Expect.OK if IS_ROOT else Expect.SKIPPED,
        note="chmod 0 (root reads it anyway)",
    ),
    error_case("h-missing-path", _missing_path, "a path that does not exist", fast=True),
    error_case("h-empty-folder", _empty_folder, "no images at all"),
    error_case("h-only-clutter", _only_clutter, "only .DS_Store and Thumbs.db"),
    Case("h-pdf-in-folder", _pdf_among_images(named=False), Expect.WARNING, note="a PDF among the images: left out"),
    error_case("h-pdf-named", _pdf_among_images(named=True), "a PDF named on the command line: refused before scoring"),
    error_case("h-same-file-twice", _same_file_twice, "one file given twice"),
    error_case("h-batch-size-0", _batch_zero, "--batch-size 0"),
    error_case("h-png-named-dcm", _dicom_as_png, "a PNG named .dcm"),
    error_case("h-zero-byte-dicom", _zero_byte_dicom, "an empty .dcm"),
    error_case("h-dicom-without-preamble", _no_preamble, "a raw dataset without the DICM header: refused, named"),
    error_case("h-nifti-4d", _nifti_4d, "a 4D NIfTI"),
    error_case("h-dicom-without-pixels", _sr_dicom, "a DICOM SR (no pixel data) beside the images"),
    Case("h-mask-wrong-size", _wrong_size_mask, Expect.PROBLEM, note="a 20x16 mask for a 32x32 image"),
    Case("h-csv-missing-file", _csv_missing_file, Expect.PROBLEM, note="a CSV row pointing at nothing"),
    Case("h-check-text-as-png", _check_text_as_png, Expect.PROBLEM, note="datasets check of a text .png"),
]
