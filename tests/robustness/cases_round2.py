"""The sweep's round-2 cases (issue 22 §7): trained-model checkpoints, weights files, DICOM series and non-image
SOP classes, DICOMweb peers, own folders and CSVs, eval / export options, case-id keys and seeds.

Inputs are tiny and made here: checkpoints are saved from the untrained tiny model (no training), weights files
are the tiny model's own backbone / text tower, DICOM files derive from pydicom's bundled test files, DICOMweb
peers are local sockets and ``http.server`` threads (a closed port, a socket that accepts and never answers, HTTP
500, a web server that is not DICOMweb). Everything runs in this process, so the cases take seconds.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

from tests.robustness.cases_core import (
    TINY,
    case_of,
    dicom,
    good_folder,
    nifti,
    png,
    save_dicom,
    score_argv,
    scored_rows,
)
from tests.robustness.harness import Case, Expect, Setup

CPU = ["--device", "cpu", "--no-heatmaps", "--batch-size", "4"]
Check = Callable[[str], "str | None"]


# --- checkpoints -------------------------------------------------------------------------------------------------


def _checkpoint(tmp: Path) -> Path:
    """An untrained tiny checkpoint (``card.json`` + ``adapters.safetensors``), saved without training."""
    from medad.models import create_model
    from medad.models.checkpoint import save_checkpoint

    return save_checkpoint(create_model("ad_dinov3_tiny"), tmp / "ckpt")


def _resave(folder: Path, edit: Callable[[dict], dict]) -> Path:
    """Rewrite the adapters through ``edit`` (state dict -> state dict) and record their new sha256 in the card, so
    only the edit is wrong."""
    from safetensors.torch import load_file, save_file

    from medad.models.checkpoint import CHECKPOINT_FORMAT
    from medad.utils.io import sha256_file

    adapters = folder / "adapters.safetensors"
    save_file(edit(load_file(str(adapters))), str(adapters), metadata={"format": CHECKPOINT_FORMAT})
    _edit_card(folder, lambda card: {**card, "adapters_sha256": sha256_file(adapters)})
    return adapters


def _edit_card(folder: Path, edit: Callable[[dict], dict]) -> Path:
    path = folder / "card.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    return path


def _score_checkpoint(tmp: Path, ckpt: Path, names: str, check: Check | None = None) -> Setup:
    folder = good_folder(tmp)
    argv = ["score", str(folder), "--out", str(tmp / "out"), "--checkpoint", str(ckpt), *CPU]
    return Setup(argv, names=names, check=check)


def _no_scores(tmp: Path) -> Check:
    """A check: the refusal came before scoring (no ``scores.csv``, no prediction chunk)."""

    def check(_: str) -> str | None:
        written = list((tmp / "out").rglob("*.npz")) + list((tmp / "out").rglob("scores.csv"))
        return f"late: scoring ran before the refusal ({written[0].name})" if written else None

    return check


def _mentions(text: str, then: Check | None = None) -> Check:
    """A check: stderr mentions ``text`` (case-insensitive), then ``then`` holds."""

    def check(stderr: str) -> str | None:
        if text.lower() not in stderr.lower():
            return f"the message does not say {text!r}: {stderr.strip().splitlines()[-1:]}"
        return then(stderr) if then is not None else None

    return check


def _lacks(text: str, then: Check | None = None) -> Check:
    """A check: stderr does not contain ``text`` (a wrong hint or a patient's name), then ``then`` holds."""

    def check(stderr: str) -> str | None:
        if text in stderr:
            return f"the message says {text!r}: {stderr.strip().splitlines()[-1:]}"
        return then(stderr) if then is not None else None

    return check


def _ckpt_case(
    name: str, edit: Callable[[Path], Path], note: str, *, names: str | None = None, fast: bool = False
) -> Case:
    """A checkpoint spoilt by ``edit`` (which returns the file it spoilt): refused before scoring, the error naming
    that file, or ``names`` (``"ckpt"``: the checkpoint folder, so a user with several knows which is broken)."""

    def make(tmp: Path) -> Setup:
        ckpt = _checkpoint(tmp)
        named = edit(ckpt)
        return _score_checkpoint(tmp, ckpt, names=names or named.name, check=_no_scores(tmp))

    return Case(name, make, Expect.ERROR, fast=fast, note=note)


def _truncate_adapters(ckpt: Path) -> Path:
    from medad.utils.io import sha256_file

    adapters = ckpt / "adapters.safetensors"
    adapters.write_bytes(adapters.read_bytes()[:200])
    _edit_card(ckpt, lambda card: {**card, "adapters_sha256": sha256_file(adapters)})
    return adapters


def _corrupt_adapters(ckpt: Path) -> Path:
    adapters = ckpt / "adapters.safetensors"
    adapters.write_bytes(adapters.read_bytes()[:-64])  # the card's sha256 no longer matches
    return adapters


def _fill(value: float) -> Callable[[Path], Path]:
    def edit(ckpt: Path) -> Path:
        def spoil(state: dict) -> dict:
            first = sorted(state)[0]
            state[first] = state[first].clone().fill_(value)
            return state

        return _resave(ckpt, spoil)

    return edit


def _rename_keys(ckpt: Path) -> Path:
    return _resave(ckpt, lambda state: {f"old.{k}": v for k, v in state.items()})


def _drop_key(ckpt: Path) -> Path:
    return _resave(ckpt, lambda state: {k: v for k, v in state.items() if k != sorted(state)[-1]})


def _wrong_shapes(ckpt: Path) -> Path:
    import torch

    return _resave(ckpt, lambda state: {k: torch.zeros(*[max(1, d // 2) for d in v.shape]) for k, v in state.items()})


def _card_field(**changes: object) -> Callable[[Path], Path]:
    return lambda ckpt: _edit_card(ckpt, lambda card: {**card, **changes})


def _card_config(**changes: object) -> Callable[[Path], Path]:
    return lambda ckpt: _edit_card(ckpt, lambda card: {**card, "config": {**card["config"], **changes}})


def _card_garbage(ckpt: Path) -> Path:
    (ckpt / "card.json").write_bytes(b"\x00\xffnot json")
    return ckpt / "card.json"


def _card_missing(ckpt: Path) -> Path:
    (ckpt / "card.json").unlink()
    return ckpt / "card.json"


def _ckpt_is_file(tmp: Path) -> Setup:
    (tmp / "ckpt.safetensors").write_bytes(b"\0" * 16)
    return _score_checkpoint(tmp, tmp / "ckpt.safetensors", names="ckpt.safetensors", check=_no_scores(tmp))


def _ckpt_wrong_method(tmp: Path) -> Setup:
    ckpt = _checkpoint(tmp)
    _edit_card(ckpt, lambda card: {**card, "name": "winclip_tiny"})
    check = _lacks("no separate backbone", _no_scores(tmp))  # issue 22 §5: the hint pointed the wrong way
    return _score_checkpoint(tmp, ckpt, names="ckpt", check=check)


# --- weights files -----------------------------------------------------------------------------------------------


def _tiny_weights(tmp: Path, edit: Callable[[dict], dict] | None = None) -> tuple[Path, Path]:
    """The tiny model's own backbone and text tower as safetensors files (they fit ``ad_dinov3_tiny``)."""
    from safetensors.torch import save_file

    from medad.models import create_model

    model = create_model("ad_dinov3_tiny")
    backbone = {k: v.contiguous() for k, v in model.backbone.model.state_dict().items()}
    text = {k: v.contiguous() for k, v in model.text_encoder.tower.state_dict().items()}
    paths = tmp / "backbone.safetensors", tmp / "text.safetensors"
    save_file(edit(backbone) if edit else backbone, str(paths[0]))
    save_file(text, str(paths[1]))
    return paths


def _score_weights(tmp: Path, backbone: str, text: str | None, names: str, check: Check | None = None) -> Setup:
    folder = good_folder(tmp)
    argv = ["score", str(folder), "--out", str(tmp / "out"), "--model", "ad_dinov3_tiny", *CPU]
    argv += ["--backbone-weights", backbone] + (["--text-weights", text] if text else [])
    return Setup(argv, names=names, check=check or _no_scores(tmp))


def _weights_truncated(tmp: Path) -> Setup:
    backbone, text = _tiny_weights(tmp)
    backbone.write_bytes(backbone.read_bytes()[: backbone.stat().st_size // 2])
    return _score_weights(tmp, str(backbone), str(text), names=backbone.name)


def _weights_nan(tmp: Path) -> Setup:
    def spoil(state: dict) -> dict:
        key = "patch_embed.proj.weight"
        state[key] = state[key].clone().fill_(float("nan"))
        return state

    backbone, text = _tiny_weights(tmp, spoil)
    return _score_weights(tmp, str(backbone), str(text), names=backbone.name)


def _weights_swapped(tmp: Path) -> Setup:
    _, text = _tiny_weights(tmp)
    return _score_weights(tmp, str(text), str(text), names=text.name)  # a text tower given as the backbone


def _weights_backbone_only(tmp: Path) -> Setup:
    backbone, _ = _tiny_weights(tmp)
    return _score_weights(tmp, str(backbone), None, names="--text-weights", check=_lacks("text_weights is None"))


def _weights_random_bytes(tmp: Path) -> Setup:
    _, text = _tiny_weights(tmp)
    (tmp / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    return _score_weights(tmp, str(tmp / "noise.pth"), str(text), names="noise.pth")


def _weights_folder(tmp: Path) -> Setup:
    _, text = _tiny_weights(tmp)
    (tmp / "weights_dir").mkdir()
    return _score_weights(tmp, str(tmp / "weights_dir"), str(text), names="weights_dir")


def _weights_hub_id(tmp: Path) -> Setup:
    _, text = _tiny_weights(tmp)
    hub = "timm/vit_small_patch16_dinov3.lvd1689m"  # offline (HF_HUB_OFFLINE=1): must not be taken for a file
    setup = _score_weights(tmp, hub, str(text), names=hub, check=_lacks("does not exist", _no_scores(tmp)))
    setup.environ = {"HF_HUB_OFFLINE": "1"}
    return setup


def _weights_check_truncated(tmp: Path) -> Setup:
    backbone, _ = _tiny_weights(tmp)
    backbone.write_bytes(backbone.read_bytes()[:100])
    return Setup(["weights", "check", str(backbone)], names=backbone.name)


def _weights_check_empty(tmp: Path) -> Setup:
    (tmp / "empty.safetensors").write_bytes(b"")
    return Setup(["weights", "check", str(tmp / "empty.safetensors")], names="empty.safetensors")


def _weights_convert_into_folder(tmp: Path) -> Setup:
    """``weights convert`` of a real-layout ViT-S/16 file (random values) to ``--out`` that is an existing folder:
    one error naming it, and no temporary file left behind (issue 22 §2)."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "vits16.safetensors"))
    (tmp / "out.safetensors").mkdir()

    def no_leftovers(_: str) -> str | None:
        left = [p.name for p in tmp.rglob("*") if p.is_file() and p.name not in {"vits16.safetensors"}]
        return f"files left behind: {left}" if left else None

    argv = ["weights", "convert", str(tmp / "vits16.safetensors"), "--out", str(tmp / "out.safetensors")]
    return Setup(argv, names="out.safetensors", check=no_leftovers)


# --- DICOM series and SOP classes ----------------------------------------------------------------------------------


def _series(folder: Path, n: int, edit: Callable[[int, pydicom.Dataset], None] | None = None) -> list[Path]:
    """``n`` slices of one CT series (pydicom's CT_small), 5 mm apart, each edited by ``edit(k, ds)``."""
    series_uid, paths = pydicom.uid.generate_uid(), []
    base = dicom("CT_small.dcm")
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5 * k]
        if edit is not None:
            edit(k, ds)
        paths.append(save_dicom(ds, folder / f"slice_{k:02d}.dcm"))
    return paths


def _series_case(name: str, edit: Callable[[int, pydicom.Dataset], None], note: str, rows: int = 4) -> Case:
    """A four-slice series scored and exported as DICOM SEG + NIfTI: every slice scored, the export succeeds."""

    def make(tmp: Path) -> Setup:
        _series(tmp / "in", 4, edit)
        argv = score_argv(tmp, tmp / "in", extra=("--export", "dicom-seg,nifti"))
        return Setup(argv, check=scored_rows(tmp, rows))

    return Case(name, make, Expect.OK, note=note)


def _mixed_sizes(k: int, ds: pydicom.Dataset) -> None:
    if k == 2:
        small = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = small.shape
        ds.PixelData = small.tobytes()


def _missing_slice(k: int, ds: pydicom.Dataset) -> None:
    ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5 * k + (10 if k >= 2 else 0)]


def _duplicate_position(k: int, ds: pydicom.Dataset) -> None:
    ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5 * min(k, 1)]


def _mixed_orientation(k: int, ds: pydicom.Dataset) -> None:
    if k % 2:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]


def _with_good_ct(name: str, path: str, note: str, *, fast: bool = False) -> Case:
    """A non-image SOP class (RT Dose, RT Struct, SR) beside a CT image: refused, named."""

    def make(tmp: Path) -> Setup:
        folder = tmp / "in"
        save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
        target = folder / Path(path).name
        target.write_bytes(Path(path).read_bytes())
        return Setup(score_argv(tmp, folder), names=target.name, check=_no_scores(tmp))

    return Case(name, make, Expect.ERROR, fast=fast, note=note)


def _basic_text_sr(folder: Path) -> str:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "Doe^Jane"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    path = folder / "report.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return str(path)


def _sr_case(tmp: Path) -> Setup:
    folder = tmp / "in"
    save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
    _basic_text_sr(folder)
    return Setup(score_argv(tmp, folder), names="report.dcm", check=_no_scores(tmp))


def _text_attr(keyword: str, tag: int, value: str) -> Callable[[pydicom.Dataset], None]:
    """Write ``keyword`` (a numeric VOI / rescale attribute) as text with an LO VR."""

    def edit(ds: pydicom.Dataset) -> None:
        if keyword in ds:
            delattr(ds, keyword)
        if keyword == "WindowCenter":
            ds.WindowWidth = "400"
        ds.add(pydicom.DataElement(tag, "LO", value))

    return edit


def _bad_dicom(edit: Callable[[pydicom.Dataset], None], check_only: bool) -> Callable[[Path], Setup]:
    """A DICOM with ``edit`` applied beside two good ones: scored (the bad one skipped) or ``datasets check``ed."""

    def make(tmp: Path) -> Setup:
        folder = tmp / "in"
        save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
        save_dicom(dicom("MR_small.dcm"), folder / "mr.dcm")
        ds = dicom()
        edit(ds)
        bad = save_dicom(ds, folder / "bad.dcm")
        if check_only:
            return Setup(["datasets", "check", str(folder), "--kind", "dicom"], names="bad.dcm")
        check = _lacks(str(bad), scored_rows(tmp, 2))  # issue 22 §6: named by case id, never by its path
        return Setup(score_argv(tmp, folder), names=case_of(bad), check=check)

    return make


def _one_pixel_png(tmp: Path) -> Setup:
    png(tmp / "in" / "dot.png", (1, 1))
    return Setup(score_argv(tmp, tmp / "in" / "dot.png"), names="dot.png")


def _one_voxel_nifti(tmp: Path) -> Setup:
    path = nifti(tmp / "in" / "voxel.nii.gz", np.ones((1, 1, 1), dtype=np.float32))
    return Setup(score_argv(tmp, path), names=case_of(path))  # a NIfTI source is named by case id, like a DICOM one


def _patient_folder(tmp: Path) -> Setup:
    """Sources in a folder named after the patient, one unreadable, exported de-identified: stderr names no path."""
    folder = tmp / "DOE_JOHN_19570312"
    save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
    save_dicom(dicom("MR_small.dcm"), folder / "mr.dcm")
    (folder / "cut.dcm").write_bytes((folder / "ct.dcm").read_bytes()[:-2000])  # header intact, pixels short
    argv = score_argv(tmp, folder, extra=("--export", "dicom-seg", "--deidentify"))
    return Setup(argv, names="skipped", check=_lacks("DOE_JOHN"))


# --- DICOMweb peers ------------------------------------------------------------------------------------------------


def _closed_port() -> tuple[str, Callable[[], None]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}", lambda: None


def _silent_peer() -> tuple[str, Callable[[], None]]:
    """A socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        for conn in held:
            conn.close()
        server.close()

    return f"127.0.0.1:{server.getsockname()[1]}", close


def _http_peer(status: int, body: bytes, content_type: str) -> Callable[[], tuple[str, Callable[[], None]]]:
    """An HTTP server answering every request with ``status`` and ``body``."""

    def start() -> tuple[str, Callable[[], None]]:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_OPTIONS = _answer  # noqa: N815 (http.server's method names)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def close() -> None:
            server.shutdown()
            server.server_close()

        return f"127.0.0.1:{server.server_address[1]}", close

    return start


PEERS: dict[str, tuple[Callable[[], tuple[str, Callable[[], None]]], str]] = {
    # peer -> (start, what the error line must say besides the address)
    "closed-port": (_closed_port, ""),
    "never-answers": (_silent_peer, "time"),
    "http-500": (_http_peer(500, b"internal error", "text/plain"), "500"),
    "not-dicomweb": (_http_peer(200, b"<html><body>welcome</body></html>", "text/html"), "DICOMweb"),
}
FAST_PEER = {"MEDAD_DICOMWEB_TIMEOUT": "2", "MEDAD_DICOMWEB_RETRIES": "0"}


def _store_to(peer: str) -> Callable[[Path], Setup]:
    """``medad score DICOM --export dicom-seg --to PEER``: the destination refused before scoring."""

    def make(tmp: Path) -> Setup:
        address, close = PEERS[peer][0]()
        folder = tmp / "in"
        save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
        argv = score_argv(tmp, folder, extra=("--export", "dicom-seg", "--to", f"http://{address}/dicom-web"))
        check = _mentions(PEERS[peer][1], _no_scores(tmp))
        return Setup(argv, names=address, environ=dict(FAST_PEER), cleanup=close, check=check)

    return make


def _export_to(peer: str) -> Callable[[Path], Setup]:
    """``medad export PRED --format dicom-seg --to PEER``: refused before the export is written."""

    def make(tmp: Path) -> Setup:
        from tests.robustness.harness import _run_in_process

        folder = tmp / "in"
        save_dicom(dicom("CT_small.dcm"), folder / "ct.dcm")
        _run_in_process(score_argv(tmp, folder))
        address, close = PEERS[peer][0]()
        argv = ["export", str(tmp / "out"), "--format", "dicom-seg", "--to", f"http://{address}/dicom-web"]

        def nothing_exported(_: str) -> str | None:
            written = list((tmp / "out" / "export").rglob("*.dcm")) if (tmp / "out" / "export").exists() else []
            return f"late: the export was written before the refusal ({len(written)} files)" if written else None

        check = _mentions(PEERS[peer][1], nothing_exported)
        return Setup(argv, names=address, environ=dict(FAST_PEER), cleanup=close, check=check)

    return make


def _study_url(peer: str) -> Callable[[Path], Setup]:
    """``medad score http://PEER/dicom-web/studies/UID``: one error naming the server."""

    def make(tmp: Path) -> Setup:
        address, close = PEERS[peer][0]()
        url = f"http://{address}/dicom-web/studies/1.2.826.0.1.3680043.8.498.1"
        argv = ["score", url, "--out", str(tmp / "out"), *TINY]
        check = _mentions(PEERS[peer][1], _no_scores(tmp))
        return Setup(argv, names=address, environ=dict(FAST_PEER), cleanup=close, check=check)

    return make


# --- own folders, CSVs, eval and export options -------------------------------------------------------------------


def _own_folder(tmp: Path, images: str = "imgs", masks: str = "masks", n: int = 3) -> Path:
    """A researcher's own folder: ``images/`` and ``masks/`` paired by stem, one normal (empty mask)."""
    root = tmp / "study"
    for k in range(n):
        png(root / images / f"case{k}.png", seed=k)
        mask = np.zeros((32, 32), np.uint8)
        if k:
            mask[8:20, 8:20] = 255
        (root / masks).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / masks / f"case{k}.png")
    return root


def _own_folder_auto(tmp: Path) -> Setup:
    root = _own_folder(tmp)

    def masks_not_images(_: str) -> str | None:
        from medad.data import check_dataset

        summary = check_dataset(root, "auto")
        return None if summary["total"] == 3 else f"silent: {summary['total']} images counted, wanted 3 (masks too)"

    return Setup(["datasets", "check", str(root), "--kind", "auto"], check=masks_not_images)


def _own_reader_options(tmp: Path) -> Setup:
    root = _own_folder(tmp, images="scans", masks="labels")
    argv = ["datasets", "check", str(root), "--kind", "folder", "--images-dir", "scans", "--masks-dir", "labels"]
    return Setup(argv)


def _own_folder_wrong_name(tmp: Path) -> Setup:
    root = _own_folder(tmp, images="scans", masks="labels")
    return Setup(["datasets", "check", str(root), "--kind", "folder"], names="--images-dir")


def _csv(tmp: Path, header: str, rows: list[str], name: str = "list.csv") -> Path:
    path = tmp / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _scored_csv(tmp: Path, with_masks: bool) -> tuple[Path, Path]:
    """A CSV of the own folder's images (and masks), no label column, scored with the tiny model."""
    from tests.robustness.harness import _run_in_process

    root = _own_folder(tmp)
    rows = [
        f"{root / 'imgs' / f'case{k}.png'}" + (f",{root / 'masks' / f'case{k}.png'}" if with_masks else "")
        for k in range(3)
    ]
    csv = _csv(tmp, "image_path,mask_path" if with_masks else "image_path", rows)
    _run_in_process(["score", str(csv), "--kind", "csv", "--out", str(tmp / "out"), *TINY])
    return csv, tmp / "out" / "predictions"


def _csv_labels_inferred(tmp: Path) -> Setup:
    csv, predictions = _scored_csv(tmp, with_masks=True)
    return Setup(["eval", str(predictions), "--data", str(csv), "--kind", "csv", "--ci-resamples", "0"], names="label")


def _csv_nothing_to_evaluate(tmp: Path) -> Setup:
    csv, predictions = _scored_csv(tmp, with_masks=False)
    return Setup(["eval", str(predictions), "--data", str(csv), "--kind", "csv", "--ci-resamples", "0"], names="label")


def _csv_missing_mask(tmp: Path) -> Setup:
    png(tmp / "a.png")
    csv = _csv(tmp, "image_path,mask_path,label", [f"{tmp / 'a.png'},{tmp / 'gone_mask.png'},1"])
    return Setup(["datasets", "check", str(csv), "--kind", "csv"], names="gone_mask.png")


def _csv_header_only(tmp: Path) -> Setup:
    csv = _csv(tmp, "image_path,label", [])
    return Setup(["score", str(csv), "--kind", "csv", "--out", str(tmp / "out"), *TINY], names="list.csv")


def _csv_semicolons(tmp: Path) -> Setup:
    png(tmp / "a.png")
    csv = _csv(tmp, "image_path;label", [f"{tmp / 'a.png'};0"])
    return Setup(["score", str(csv), "--kind", "csv", "--out", str(tmp / "out"), *TINY], names="image_path")


def _scored_mvtec(tmp: Path) -> Path:
    """A tiny MVTec layout (2 normal, 2 abnormal) scored into ``tmp/out``; returns the data root."""
    from medad.data import write_layout
    from tests.robustness.harness import _run_in_process

    root = Path(write_layout(tmp / "data", "mvtec", n_normal=2, n_abnormal=2, size=32, seed=0))
    _run_in_process(["score", str(root), "--kind", "mvtec", "--out", str(tmp / "out"), *TINY])
    return root


def _eval_threshold(value: str) -> Callable[[Path], Setup]:
    def make(tmp: Path) -> Setup:
        root = _scored_mvtec(tmp)
        argv = ["eval", str(tmp / "out" / "predictions"), "--data", str(root), "--kind", "mvtec"]
        return Setup([*argv, "--ci-resamples", "0", "--threshold", value], names="--threshold")

    return make


def _export_formats(formats: str) -> Callable[[Path], Setup]:
    """``medad export`` of PNG predictions in formats that need DICOM / NIfTI sources."""

    def make(tmp: Path) -> Setup:
        _scored_mvtec(tmp)
        return Setup(["export", str(tmp / "out"), "--format", formats], names="dicom-seg")

    return make


def _export_f1_score_folder(tmp: Path) -> Setup:
    _scored_mvtec(tmp)

    def marked(_: str) -> str | None:
        record = json.loads((tmp / "out" / "export" / "export.json").read_text(encoding="utf-8"))
        return None if "sample" in json.dumps(record).lower() else "silent: export.json does not mark the in-sample F1"

    return Setup(["export", str(tmp / "out"), "--format", "png", "--threshold", "f1"], check=marked)


def _export_model_suffix(tmp: Path) -> Setup:
    argv = ["export-model", "--model", "ad_dinov3_tiny", "--class-word", "skin", "--format", "onnx"]
    return Setup([*argv, "--out", str(tmp / "model.pt")], names="model.pt")


def _long_class_word(tmp: Path) -> Setup:
    word = " ".join(["lesion"] * 5000)
    return Setup(score_argv(tmp, good_folder(tmp), extra=("--class-word", word)), names="--class-word")


def _long_class_word_protocol(tmp: Path) -> Setup:
    from tests.robustness.cases_protocols import BASE

    word = " ".join(["lesion"] * 5000)
    words = f"    class_words: {{medical: {{skin: '{word}'}}}}\n"
    text = BASE.replace("    options: {image_size: 64}\n", "    options: {image_size: 64}\n" + words)
    (tmp / "study.yaml").write_text(text, encoding="utf-8")
    return Setup(["validate", str(tmp / "study.yaml"), "--structure-only"], names="class_words")


def _set_deep_key(tmp: Path) -> Setup:
    from tests.robustness.cases_protocols import BASE

    (tmp / "study.yaml").write_text(BASE, encoding="utf-8")
    argv = ["validate", str(tmp / "study.yaml"), "--structure-only", "--set", "foo.bar.baz=1"]
    return Setup(argv, names="foo", check=_lacks("line 1"))


def _refused_leaves_no_folder(tmp: Path) -> Setup:
    def no_folder(_: str) -> str | None:
        out = tmp / "out"
        left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        return f"late: the refused run left {out.name}/ holding {left}" if out.exists() else None

    return Setup(score_argv(tmp, tmp / "nowhere"), names="nowhere", check=no_folder)


# --- case-id keys and seeds ----------------------------------------------------------------------------------------


def _key_env(value: str) -> Callable[[Path], Setup]:
    def make(tmp: Path) -> Setup:
        setup = Setup(score_argv(tmp, good_folder(tmp)), names="MEDAD_CASE_ID_KEY")
        setup.environ = {"MEDAD_CASE_ID_KEY": value}
        return setup

    return make


def _key_file(data: bytes) -> Callable[[Path], Setup]:
    def make(tmp: Path) -> Setup:
        from medad.utils import privacy

        (tmp / "home").mkdir()
        (tmp / "home" / "case_id.key").write_bytes(data)
        privacy._KEYS.clear()  # a key file read by an earlier case is cached by path; this one is new anyway
        setup = Setup(score_argv(tmp, good_folder(tmp)), names="case_id.key")
        setup.environ = {"MEDAD_CASE_ID_KEY": None, "MEDAD_HOME": str(tmp / "home")}
        return setup

    return make


def _score_twice(tmp: Path) -> Setup:
    """The same score command into two folders gives byte-identical scores (issue 22 §1)."""
    folder = good_folder(tmp)

    def same_bytes(_: str) -> str | None:
        import torch

        from tests.robustness.harness import _run_in_process

        torch.manual_seed(12345)  # whatever the global RNG holds, the model must be built from its own seed
        again = _run_in_process(["score", str(folder), "--out", str(tmp / "again"), *TINY])
        if again.code != 0:
            return f"the second run ended {again.code}: {again.stderr.strip()[-200:]}"
        first, second = (tmp / "out" / "scores.csv").read_bytes(), (tmp / "again" / "scores.csv").read_bytes()
        return None if first == second else "silent: two runs of the same command gave different scores.csv"

    return Setup(score_argv(tmp, folder), check=same_bytes)


def _resume_other_seed(tmp: Path) -> Setup:
    """A score folder resumed with another ``--seed``: refused (the model would differ), naming --seed."""
    from tests.robustness.harness import _run_in_process

    folder = good_folder(tmp)
    _run_in_process(score_argv(tmp, folder, extra=("--seed", "1")))
    return Setup(score_argv(tmp, folder, extra=("--seed", "2")), names="--seed")


def _seed_recorded(tmp: Path) -> Setup:
    def recorded(_: str) -> str | None:
        meta = json.loads((tmp / "out" / "predictions" / "meta.json").read_text(encoding="utf-8"))
        return None if "seed" in json.dumps(meta) else "silent: predictions/meta.json does not record the seed"

    return Setup(score_argv(tmp, good_folder(tmp), extra=("--seed", "3")), check=recorded)


def _nan_outputs_not_in_scores(tmp: Path) -> Setup:
    """A NaN checkpoint must not produce a scores.csv of NaN (checked by the refusal's check)."""
    ckpt = _checkpoint(tmp)
    _fill(float("nan"))(ckpt)

    def no_nan_table(_: str) -> str | None:
        table = tmp / "out" / "scores.csv"
        if table.is_file() and pd.read_csv(table)["image_score"].isna().any():
            return "silent: scores.csv holds NaN scores"
        return _no_scores(tmp)("")

    return _score_checkpoint(tmp, ckpt, names="adapters.safetensors", check=no_nan_table)


E = Expect
WC_TAG, RI_TAG = 0x00281050, 0x00281052
CASES: list[Case] = [
    # trained-model checkpoints
    _ckpt_case("r2-ckpt-truncated-adapters", _truncate_adapters, "half an adapters file, sha256 updated", fast=True),
    _ckpt_case("r2-ckpt-sha-mismatch", _corrupt_adapters, "adapters changed after the card was written"),
    _ckpt_case("r2-ckpt-nan-adapters", _fill(float("nan")), "NaN adapter weights: refuse naming the file", fast=True),
    _ckpt_case("r2-ckpt-inf-adapters", _fill(float("inf")), "Inf adapter weights"),
    Case("r2-ckpt-nan-no-nan-table", _nan_outputs_not_in_scores, E.ERROR, note="no scores.csv of NaN"),
    _ckpt_case("r2-ckpt-wrong-keys", _rename_keys, "every adapter key renamed", names="ckpt"),
    _ckpt_case("r2-ckpt-missing-key", _drop_key, "one adapter tensor missing", names="ckpt", fast=True),
    _ckpt_case("r2-ckpt-wrong-shapes", _wrong_shapes, "adapter tensors of half the size", names="ckpt"),
    _ckpt_case("r2-ckpt-card-layers-mismatch", _card_config(layers=[1, 2]), "card: 2 layers, file: 4", names="ckpt"),
    _ckpt_case("r2-ckpt-card-adapter-dim", _card_field(adapter_dim=16), "adapter_dim 16, tensors 32", names="ckpt"),
    _ckpt_case("r2-ckpt-card-image-size-text", _card_config(image_size="big"), "image_size 'big'", names="ckpt"),
    _ckpt_case("r2-ckpt-card-unknown-model", _card_field(name="nope_model"), "unregistered model", names="ckpt"),
    _ckpt_case("r2-ckpt-card-compat-bogus", _card_config(compat="weird"), "compat 'weird'", names="ckpt", fast=True),
    _ckpt_case("r2-ckpt-card-not-json", _card_garbage, "binary card.json", fast=True),
    _ckpt_case("r2-ckpt-card-missing", _card_missing, "adapters without a card", fast=True),
    Case("r2-ckpt-is-a-file", _ckpt_is_file, E.ERROR, fast=True, note="--checkpoint given a file"),
    Case("r2-ckpt-wrong-method", _ckpt_wrong_method, E.ERROR, fast=True, note="card names winclip_tiny (no adapters)"),
    # weights files
    Case("r2-weights-truncated-safetensors", _weights_truncated, E.ERROR, fast=True, note="backbone cut in half"),
    Case("r2-weights-nan-backbone", _weights_nan, E.ERROR, fast=True, note="a backbone whose weights are NaN"),
    Case("r2-weights-wrong-architecture", _weights_swapped, E.ERROR, note="a text tower given as backbone"),
    Case("r2-weights-backbone-only", _weights_backbone_only, E.ERROR, fast=True, note="name --text-weights"),
    Case("r2-weights-random-bytes", _weights_random_bytes, E.ERROR, fast=True, note="4 kB of noise named .pth"),
    Case("r2-weights-folder", _weights_folder, E.ERROR, note="--backbone-weights given a folder"),
    Case("r2-weights-hub-id-offline", _weights_hub_id, E.ERROR, fast=True, note="a timm/ hub id offline: no file"),
    Case("r2-weights-check-truncated", _weights_check_truncated, E.ERROR, fast=True, note="weights check of 100 bytes"),
    Case("r2-weights-check-empty", _weights_check_empty, E.ERROR, fast=True, note="weights check of an empty file"),
    Case("r2-weights-convert-into-folder", _weights_convert_into_folder, E.ERROR, note="--out an existing folder"),
    # DICOM series and SOP classes
    _series_case("r2-series-mixed-sizes", _mixed_sizes, "one slice of half the size"),
    _series_case("r2-series-missing-slice", _missing_slice, "a 10 mm gap in a 5 mm series"),
    _series_case("r2-series-duplicate-positions", _duplicate_position, "three slices at one position"),
    _series_case("r2-series-mixed-orientation", _mixed_orientation, "axial and coronal slices in one series"),
    _with_good_ct("r2-rtdose-beside-ct", get_testdata_file("rtdose.dcm"), "an RT Dose grid is not an image", fast=True),
    _with_good_ct("r2-rtstruct-beside-ct", get_testdata_file("rtstruct.dcm"), "an RT Struct set", fast=True),
    _with_good_ct("r2-rtplan-beside-ct", get_testdata_file("rtplan.dcm"), "an RT Plan", fast=True),
    Case("r2-basic-text-sr", _sr_case, E.ERROR, fast=True, note="a Basic Text SR beside a CT"),
    Case("r2-window-center-text", _bad_dicom(_text_attr("WindowCenter", WC_TAG, "mid"), False), E.SKIPPED, fast=True),
    Case("r2-window-center-text-check", _bad_dicom(_text_attr("WindowCenter", WC_TAG, "mid"), True), E.PROBLEM, True),
    Case("r2-rescale-intercept-text", _bad_dicom(_text_attr("RescaleIntercept", RI_TAG, "low"), False), E.SKIPPED),
    Case("r2-one-pixel-png", _one_pixel_png, E.WARNING, fast=True, note="1x1 px, below the patch size"),
    Case("r2-one-voxel-nifti", _one_voxel_nifti, E.WARNING, fast=True, note="a 1x1x1 volume"),
    Case("r2-deidentified-skip-names-no-path", _patient_folder, E.SKIPPED, fast=True, note="patient name in a folder"),
    # DICOMweb peers: --to of score and export, and study URLs
    *[Case(f"r2-score-to-{p}", _store_to(p), E.ERROR, p != "never-answers", "refused before scoring") for p in PEERS],
    *[Case(f"r2-export-to-{p}", _export_to(p), E.ERROR, note="before exporting") for p in ("closed-port", "http-500")],
    *[Case(f"r2-study-url-{p}", _study_url(p), E.ERROR, p != "never-answers", "a study URL as PATH") for p in PEERS],
    # own folders and CSVs
    Case("r2-own-folder-imgs-masks-auto", _own_folder_auto, E.OK, fast=True, note="masks must not count as images"),
    Case("r2-own-folder-dir-options", _own_reader_options, E.OK, fast=True, note="--images-dir/--masks-dir on the CLI"),
    Case("r2-own-folder-names-the-options", _own_folder_wrong_name, E.ERROR, fast=True, note="name the folder options"),
    Case("r2-csv-labels-inferred-from-masks", _csv_labels_inferred, E.WARNING, note="no label column, masks"),
    Case("r2-csv-nothing-to-evaluate", _csv_nothing_to_evaluate, E.ERROR, note="no labels, no masks: exit 2"),
    Case("r2-csv-missing-mask", _csv_missing_mask, E.PROBLEM, fast=True, note="a mask_path pointing at nothing"),
    Case("r2-csv-header-only", _csv_header_only, E.ERROR, fast=True, note="a CSV without rows"),
    Case("r2-csv-semicolons", _csv_semicolons, E.ERROR, fast=True, note="a semicolon-separated CSV"),
    # eval and export options
    Case("r2-eval-threshold-minus-1", _eval_threshold("-1"), E.ERROR, note="all pixels positive"),
    Case("r2-eval-threshold-2", _eval_threshold("2"), E.ERROR, note="no pixel positive"),
    Case("r2-export-nothing-applicable", _export_formats("nifti,dicom-seg,pmap"), E.ERROR, note="PNG sources"),
    Case("r2-export-some-not-applicable", _export_formats("png,dicom-seg"), E.WARNING, note="say what was not"),
    Case("r2-export-f1-on-score-folder", _export_f1_score_folder, E.OK, note="f1 like fixed:0.5, marked in-sample"),
    Case("r2-export-model-onnx-named-pt", _export_model_suffix, E.ERROR, fast=True, note="an ONNX file named .pt"),
    Case("r2-score-class-word-too-long", _long_class_word, E.ERROR, fast=True, note="5,000 words, cut silently"),
    Case("r2-validate-class-word-too-long", _long_class_word_protocol, E.ERROR, fast=True, note="in a protocol"),
    Case("r2-set-deep-unknown-key", _set_deep_key, E.ERROR, fast=True, note="not blamed on line 1 of the YAML"),
    Case("r2-refused-leaves-no-folder", _refused_leaves_no_folder, E.ERROR, fast=True, note="no lock-only folder"),
    # case-id keys and seeds
    Case("r2-case-id-key-env-not-utf8", _key_env("\udcff\udcfe" * 12), E.ERROR, fast=True, note="bytes, not UTF-8"),
    Case("r2-case-id-key-file-binary", _key_file(bytes(range(256))), E.ERROR, fast=True, note="a binary key file"),
    Case("r2-case-id-key-file-empty", _key_file(b""), E.ERROR, fast=True, note="an empty key file"),
    Case("r2-score-twice-same-bytes", _score_twice, E.OK, note="no checkpoint: the same model both times"),
    Case("r2-score-resume-other-seed", _resume_other_seed, E.ERROR, note="a resume must not mix two models"),
    Case("r2-score-seed-recorded", _seed_recorded, E.OK, fast=True, note="the seed is in predictions/meta.json"),
]
