"""The ``medad`` command line: a thin layer that parses arguments and calls the library.

Every user error is a :class:`medad.errors.MedadError`; :func:`main` prints its message on one line and exits
with code 2, never with a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
import typer.core

from medad import __version__
from medad.errors import DataError, MedadError, as_medad_error, forget_warnings, printable, show_data_warnings
from medad.stats import defaults as ci_defaults

if TYPE_CHECKING:
    from medad.dimse.remote import Connection

app = typer.Typer(
    name="medad",
    help="Zero-shot lesion and anomaly detection for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print medad's version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """Zero-shot lesion and anomaly detection for medical images."""
    forget_warnings()  # each command says its warnings once, also when several run in one process


datasets_app = typer.Typer(help="Inspect and check datasets in their public layouts.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


def fail(message: str) -> None:
    """Print a one-line user error and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def require_roots(roots: list[Path]) -> None:
    """Refuse a missing dataset root before the command loads torch (seconds, or a minute on a loaded machine)."""
    for root in roots:
        if not root.expanduser().exists():
            raise DataError(f"dataset root {root} does not exist; check the path")


def _jsonl_root(data_root: Path | None) -> dict[str, Path]:
    return {"root": data_root} if data_root is not None else {}


def _taken_root(data_root: Path | None) -> dict[str, str]:
    """``--data-root`` sets the jsonl reader's ``root``: a ``--data-option root=...`` beside it is refused."""
    return {"root": "--data-root"} if data_root is not None else {}


CHECK_STRICT = "`medad datasets check` (it reads with strict=false to list every problem)"


IMAGES_DIR_HELP = "Kind folder: the images folder under the root (found without it: images, imgs, image, img)."
MASKS_DIR_HELP = "Kind folder: the masks folder under the root (found without it: masks, mask, gt, ground_truth)."


DATA_OPTION_HELP = (
    "A reader option of the dataset kind, KEY=VALUE, VALUE read as YAML (repeat the option), e.g. --kind nifti "
    "--data-option masks=DIR --data-option axis=0; the keys of docs/datasets.md, as a protocol's options:."
)
DataOptions = Annotated[
    list[str] | None, typer.Option("--data-option", metavar="KEY=VALUE", help=DATA_OPTION_HELP)
]


def _reader_options(
    kind: str | None,
    images_dir: str | None,
    masks_dir: str | None,
    data_options: list[str] | None = None,
    **taken: str,
) -> tuple[str | None, dict[str, Any]]:
    """The reader options: ``--images-dir`` / ``--masks-dir`` (the folder kind's; they make ``auto`` read it) and
    ``--data-option`` items; ``taken`` names the option that sets a reader key already (e.g. ``split="--split"``)."""
    from medad.data.options import parse_reader_options

    options = {key: value for key, value in (("images", images_dir), ("masks", masks_dir)) if value is not None}
    if options and kind not in (None, "auto", "folder"):
        fail(f"--images-dir/--masks-dir name the folders of --kind folder, not of --kind {kind}; drop them")
    flags = {key: flag for key, flag in (("images", "--images-dir"), ("masks", "--masks-dir")) if key in options}
    parsed = parse_reader_options(data_options or [], {**flags, **taken})
    return ("folder" if options else kind), {**options, **parsed}


THRESHOLD_HELP = (
    "Mask threshold, one of: fixed:V (a score in [0, 1]) | percentile:P:NORMALS_PRED_DIR (the P-th percentile of "
    "the pixel scores of a predictions folder of normal images) | f1[:VAL_PRED_DIR] (the best pixel F1, on the "
    "run's own labelled images, recorded as in-sample, or on a validation predictions folder) | "
    "youden[:VAL_PRED_DIR] (the same with Youden's J)."
)
DATA_ROOT_HELP = "For --kind jsonl: the folder the jsonl's relative paths start from (default: its folder)."
PER_FILE_HELP = (
    "With DICOM series: one SEG / Parametric Map / NIfTI per file instead of one per series (the default exports a "
    "series of single-frame files as one volume, ordered along the slice normal)."
)
TO_HELP = (
    "Store the DICOM SEG / Parametric Map exports in this PACS: a DICOMweb root (STOW-RS), e.g. "
    "http://HOST/dicom-web, or a DIMSE peer (C-STORE), dicom://AET@HOST:PORT."
)
CALLING_AET_HELP = "medad's own AE title towards dicom:// peers (default: $MEDAD_AE_TITLE, else MEDAD)."
MOVE_HELP = (
    "Fetch dicom:// studies with C-MOVE to medad's Storage SCP listening on this port (the PACS must know medad's "
    "AE title, host and this port) instead of C-GET."
)
CA_HELP = "PEM CA bundle to verify the DICOMweb server's TLS certificate (default: the system's)."
BACKBONE_WEIGHTS_HELP = "Backbone weights: a local file (Meta .pth, safetensors, .bin) or a timm / hf-hub id."
CLASS_WORD_HELP = (
    "Text class word of every image, e.g. 'skin lesion' (default: each class's word from its dataset kind, e.g. "
    "'skin lesion' with --kind isic; 'object' for plain files and folders)."
)
SEED_HELP = (
    "Seed the model is built under (an untrained head is drawn from it): the same command gives the same scores; "
    "a resumed run must use the same seed."
)
PROTOCOL_HELP = "Protocol YAML, or the name of a shipped protocol (e.g. demo; `medad protocols` lists them)."
TEXT_WEIGHTS_HELP = "CLIP text weights: a local file (OpenAI .pt, open_clip .safetensors/.bin) or an open_clip tag."


@datasets_app.command("check")
def datasets_check_command(
    root: Annotated[Path, typer.Argument(help="Dataset root (or a CSV / jsonl / DICOM / NIfTI file).")],
    kind: Annotated[str, typer.Option("--kind", help="Dataset kind (mvtec, visa, isic, ..., auto detects).")] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split to check.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    sha256: Annotated[bool, typer.Option("--sha256", help="Also list the sha256 of every image and mask.")] = False,
    data_root: Annotated[Path | None, typer.Option("--data-root", help=DATA_ROOT_HELP)] = None,
    images_dir: Annotated[str | None, typer.Option("--images-dir", help=IMAGES_DIR_HELP)] = None,
    masks_dir: Annotated[str | None, typer.Option("--masks-dir", help=MASKS_DIR_HELP)] = None,
    data_options: DataOptions = None,
) -> None:
    """Count images per class, show the detected layout variant and list every problem with its file."""
    from medad.data import check_dataset
    from medad.data.reporting import format_check
    from medad.utils.io import canonical_json

    folder_kind, dir_options = _reader_options(
        kind, images_dir, masks_dir, data_options, **_taken_root(data_root), split="--split", strict=CHECK_STRICT
    )
    options = {**dir_options, **_jsonl_root(data_root)}
    report = check_dataset(root, folder_kind or kind, split=split, sha256=sha256, **options)
    typer.echo(canonical_json(report).rstrip("\n") if as_json else format_check(report))
    if report["problems"]:
        raise typer.Exit(code=2)


@datasets_app.command("export")
def datasets_export_command(
    root: Annotated[Path, typer.Argument(help="Dataset root (or a CSV / jsonl file).")],
    out: Annotated[Path, typer.Option("--out", help="File to write, e.g. ROOT/meta.json or data.jsonl.")],
    fmt: Annotated[str, typer.Option("--format", help="meta-json (AnomalyCLIP/AdaCLIP) or jsonl (AA-CLIP).")] = (
        "meta-json"
    ),
    kind: Annotated[str, typer.Option("--kind", help="Dataset kind (mvtec, visa, isic, ..., auto detects).")] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split to export: test, train, ... or all.")] = "test",
    sha256: Annotated[bool, typer.Option("--sha256", help="Add each file's sha256 to the items.")] = False,
    relative_to: Annotated[
        Path | None, typer.Option("--relative-to", help="Write paths relative to this folder (default: OUT's).")
    ] = None,
    absolute: Annotated[bool, typer.Option("--absolute", help="Write absolute paths.")] = False,
    data_root: Annotated[Path | None, typer.Option("--data-root", help=DATA_ROOT_HELP)] = None,
    images_dir: Annotated[str | None, typer.Option("--images-dir", help=IMAGES_DIR_HELP)] = None,
    masks_dir: Annotated[str | None, typer.Option("--masks-dir", help=MASKS_DIR_HELP)] = None,
    data_options: DataOptions = None,
) -> None:
    """Write a dataset's manifest as AnomalyCLIP/AdaCLIP meta.json or AA-CLIP jsonl, for the research repos."""
    from medad.data import export_dataset

    if absolute and relative_to is not None:
        fail("--absolute and --relative-to exclude each other; give one")
    paths_root = None if absolute else (relative_to or out.expanduser().resolve().parent)
    folder_kind, dir_options = _reader_options(
        kind, images_dir, masks_dir, data_options, **_taken_root(data_root), split="--split"
    )
    manifest = export_dataset(
        root,
        out,
        fmt=fmt,
        kind=folder_kind or kind,
        split=split,
        sha256=sha256,
        paths_root=paths_root,
        progress=sys.stderr.isatty(),
        **dir_options,
        **_jsonl_root(data_root),
    )
    counts = ", ".join(f"{name} {n}" for name, n in manifest["split"].value_counts(sort=False).items())
    typer.echo(f"wrote {len(manifest)} images ({counts}) as {fmt} to {out}")


@datasets_app.command("synth")
def datasets_synth_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic dataset into.")],
    layout: Annotated[str, typer.Option("--layout", help="Native layout, e.g. mvtec, visa, isic2016, tn3k.")],
    n_normal: Annotated[int, typer.Option("--n-normal", help="Normal images per class.")] = 2,
    n_abnormal: Annotated[int, typer.Option("--n-abnormal", help="Abnormal images per class.")] = 3,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write a small synthetic dataset (exact masks) in a native public layout."""
    from medad.data import write_layout

    root = write_layout(out, layout, n_normal=n_normal, n_abnormal=n_abnormal, size=size, seed=seed)
    typer.echo(f"wrote synthetic '{layout}' dataset to {root}")


@app.command("train")
def train_command(
    data: Annotated[list[Path], typer.Option("--data", help="Auxiliary dataset root (repeat for several).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder; checkpoints go to OUT/checkpoints/epoch_NNN.")],
    kind: Annotated[str, typer.Option("--kind", help="Dataset kind of every --data root (auto detects).")] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split to train on (ZSAD practice: the test split).")] = "test",
    model: Annotated[str, typer.Option("--model", help="Registered model name.")] = "ad_dinov3",
    epochs: Annotated[int, typer.Option("--epochs", help="Fixed epochs; no selection on target data.")] = 100,
    lr: Annotated[float, typer.Option("--lr", help="AdamW lr; 1e-5 for ViT-L, about 1e-3 for ad_dinov3_tiny.")] = 1e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Effective batch per optimiser step.")] = 64,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", help="Images per forward pass.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA if any).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    compat: Annotated[
        str, typer.Option("--compat", help="Model mode: clean, or reference (the released code, quirks included).")
    ] = "clean",
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache frozen backbone features on disk.")] = True,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT's last checkpoint.")] = True,
    backbone_weights: Annotated[str | None, typer.Option("--backbone-weights", help=BACKBONE_WEIGHTS_HELP)] = None,
    text_weights: Annotated[str | None, typer.Option("--text-weights", help=TEXT_WEIGHTS_HELP)] = None,
    images_dir: Annotated[str | None, typer.Option("--images-dir", help=IMAGES_DIR_HELP)] = None,
    masks_dir: Annotated[str | None, typer.Option("--masks-dir", help=MASKS_DIR_HELP)] = None,
    data_options: DataOptions = None,
) -> None:
    """Train a model's adapters on auxiliary datasets for a fixed number of epochs (resumable)."""
    require_roots(data)
    from medad.engine import distributed
    from medad.engine.scorer import weights_options
    from medad.engine.train import train_on_roots

    folder_kind, dir_options = _reader_options(kind, images_dir, masks_dir, data_options, split="--split")
    result = train_on_roots(
        [str(p) for p in data],
        out,
        kind=folder_kind or kind,
        reader_options=dir_options,
        split=split,
        model_name=model,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        seed=seed,
        device=device,
        num_workers=workers,
        compat=compat,
        cache_features=cache,
        resume=resume,
        model_config={k: v for k, v in weights_options(backbone_weights, text_weights).items() if v is not None},
        distributed=distributed.launched(),  # under torchrun: DDP over the adapters, rank 0 writes (docs/scaling.md)
    )
    if not distributed.is_main_process():
        return
    typer.echo(f"trained {result.epochs} epochs ({result.steps} steps); checkpoint: {result.checkpoint}")


def _pacs_connection(
    ca_bundle: Path | None, calling_aet: str | None, move: int | None, urls: list[object]
) -> Connection:
    """How to reach a PACS: the DICOMweb CA bundle and, when a dicom:// URL or a DIMSE option is given, the DIMSE
    settings (AE title, C-MOVE port, timeouts; refused here, before any work, when wrong)."""
    from medad.dimse import Connection, DimseSettings, is_dicom_url

    uses_dimse = calling_aet is not None or move is not None or any(is_dicom_url(u) for u in urls)
    return Connection(ca_bundle, DimseSettings.from_env(calling_aet, move) if uses_dimse else None)


def _check_score_reader(paths: list[Path], kind: str | None, options: dict[str, Any]) -> None:
    """Refuse ``--data-option`` without ``--kind``, or with a key the kind's reader does not take, before scoring."""
    from medad.data.options import check_reader_options

    if options and kind is None:
        fail("--data-option sets a dataset kind's reader option; add --kind KIND (or --kind auto) to read PATH as a "
             "dataset root")
    if kind is not None and len(paths) == 1:
        check_reader_options(paths[0], kind, options)


@app.command("score")
def score_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders, DICOM or NIfTI files.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a re-run with the same inputs resumes).")],
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Folder from `medad train`.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model name, e.g. ad_dinov3_tiny.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 8,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA if any).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    compat: Annotated[
        str | None,
        typer.Option("--compat", help="Model mode: clean or reference (default: the checkpoint's or model's)."),
    ] = None,
    class_word: Annotated[
        str | None,
        typer.Option("--class-word", help=CLASS_WORD_HELP),
    ] = None,
    backbone_weights: Annotated[str | None, typer.Option("--backbone-weights", help=BACKBONE_WEIGHTS_HELP)] = None,
    text_weights: Annotated[str | None, typer.Option("--text-weights", help=TEXT_WEIGHTS_HELP)] = None,
    heatmaps: Annotated[bool, typer.Option("--heatmaps/--no-heatmaps", help="Heatmap PNGs by case id.")] = True,
    export: Annotated[
        str | None, typer.Option("--export", help="Also export masks: png,nifti,dicom-seg,pmap (into OUT/export).")
    ] = None,
    threshold: Annotated[str, typer.Option("--threshold", help="With --export: " + THRESHOLD_HELP)] = "fixed:0.5",
    deidentify: Annotated[bool, typer.Option("--deidentify", help="De-identify DICOM exports (PS3.15).")] = False,
    per_file: Annotated[bool, typer.Option("--per-file", help="With --export: " + PER_FILE_HELP)] = False,
    compile_backbone: Annotated[
        bool, typer.Option("--compile", help="torch.compile the backbone (GPU: faster after a one-off compile).")
    ] = False,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Read the one PATH as a dataset root in this layout (e.g. isic).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split with --kind.")] = "test",
    tile: Annotated[
        bool,
        typer.Option(
            "--tile",
            help="Score each image at its native size in model-size windows (Gaussian-blended) instead of resizing "
            "it: for images much larger than the model input (colonoscopy frames, dermoscopy); costs one forward "
            "pass per window.",
        ),
    ] = False,
    tile_overlap: Annotated[
        float | None,
        typer.Option("--tile-overlap", help="With --tile: window overlap, a fraction in [0, 1) (default 0.25)."),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help=TO_HELP)] = None,
    ca_bundle: Annotated[Path | None, typer.Option("--ca-bundle", help=CA_HELP)] = None,
    calling_aet: Annotated[str | None, typer.Option("--calling-aet", help=CALLING_AET_HELP)] = None,
    move: Annotated[int | None, typer.Option("--move", metavar="PORT", help=MOVE_HELP)] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another `medad score` is writing OUT, wait for it instead of refusing.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help=SEED_HELP)] = 0,
    images_dir: Annotated[str | None, typer.Option("--images-dir", help=IMAGES_DIR_HELP)] = None,
    masks_dir: Annotated[str | None, typer.Option("--masks-dir", help=MASKS_DIR_HELP)] = None,
    data_options: DataOptions = None,
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            "--reference",
            help="Normal reference images (a folder, or files; repeat the option) to score few-shot: each target "
            "patch is also compared with the references' patches (docs/fewshot.md).",
        ),
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="With --reference: how many references to draw.")] = None,
    reference_seed: Annotated[int, typer.Option("--reference-seed", help="With --reference: the draw's seed.")] = 0,
    reference_draw: Annotated[
        int, typer.Option("--reference-draw", help="With --reference: which draw of that seed (draws differ).")
    ] = 0,
    fewshot_weight: Annotated[
        float | None,
        typer.Option(
            "--fewshot-weight", help="With --reference: the few-shot map's weight in [0, 1] (default: the model's)."
        ),
    ] = None,
) -> None:
    """Score images: OUT/scores.csv, OUT/scores.json, OUT/heatmaps/*.png and OUT/predictions/.

    A PATH may be a DICOMweb study URL (http(s)://HOST:PORT/dicom-web/studies/UID), a series URL
    (.../series/UID), or a DIMSE study URL (dicom://AET@HOST:PORT/UID).
    """
    from medad.engine import distributed
    from medad.engine.request import ScoreRequest, ScoreSettings
    from medad.engine.scorer import score_files
    from medad.export import export_run, export_summary
    from medad.export.request import check_score_request
    from medad.utils.locking import hold_until_command_ends, score_lock

    if tile_overlap is not None and not tile:
        fail("--tile-overlap only applies with --tile; add --tile or drop --tile-overlap")
    check_score_request(out, export, threshold)  # refused before any scoring: bad --out, --export, --threshold
    pacs = _pacs_connection(ca_bundle, calling_aet, move, [*paths, to])
    if to is not None:
        from medad.dimse.remote import check_target

        check_target(export, deidentify, to, pacs, probe=True)  # the PACS answers (QIDO-RS / C-ECHO), before scoring
    folder_kind, dir_options = _reader_options(kind, images_dir, masks_dir, data_options, split="--split")
    _check_score_reader(paths, folder_kind, dir_options)
    request = ScoreRequest(
        paths=tuple(paths),
        out_dir=out,
        checkpoint=checkpoint,
        model_name=model,
        backbone_weights=backbone_weights,
        text_weights=text_weights,
        kind=folder_kind,
        reader_options=dir_options,
        split=split,
        heatmaps=heatmaps,
        dicomweb_ca_bundle=ca_bundle,
        reference_paths=tuple(reference or ()),
        shots=shots,
        reference_seed=reference_seed,
        reference_draw=reference_draw,
        fewshot_weight=fewshot_weight,
        dimse=pacs.dimse,
        settings=ScoreSettings(
            batch_size=batch_size,
            device=device,
            num_workers=workers,
            compat=compat,
            class_word=class_word,
            compile=compile_backbone,
            tile=tile,
            tile_overlap=0.25 if tile_overlap is None else tile_overlap,
            seed=seed,
            distributed=distributed.launched(),
        ),
    )
    request.settings.check()  # bad settings are refused before OUT (and its lock file) is made
    request.check_references()
    if not distributed.launched():  # under torchrun every rank writes OUT (docs/scaling.md)
        hold_until_command_ends(score_lock(out, wait), ctx)
    table = score_files(request)
    if not distributed.is_main_process():
        return
    typer.echo(f"scored {len(table)} images; results in {out}")
    export_skipped, export_error = False, None
    if export:
        from medad.dicomweb import finished_export

        folder = finished_export(out / "export", export, to, per_file=per_file) or export_run(
            out / "predictions",
            formats=export,
            threshold=threshold,
            deidentify=deidentify,
            out_dir=out / "export",
            per_file=per_file,
            overwrite=(out / "export" / "export.json").is_file(),  # this run's own export, asked with other options
        )
        summary, export_skipped = export_summary(folder)
        typer.echo(f"exported {export} to {folder}: {summary}")
        export_error = _export_notices(folder)
        if to is not None and export_error is None:
            from medad.dimse.remote import store_export

            typer.echo(store_export(folder, to, pacs))
    if table.attrs.get("skipped"):  # some inputs could not be read: the rest is written, the run exits 2
        from medad.engine.skipped import partial_error

        skipped = table.attrs["skipped"]
        raise partial_error(len(table), len(table) + len(skipped), skipped, out / "predictions")
    if export_error is not None:
        fail(export_error)
    if export_skipped:
        raise typer.Exit(code=2)


@app.command("eval")
def eval_command(
    predictions: Annotated[
        list[str],
        typer.Argument(
            metavar="[MODEL=]DIR",
            help="Predictions folder(s), optionally named MODEL=DIR (default name: the model in its metadata).",
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="Root of the dataset the predictions were scored on.")],
    kind: Annotated[str, typer.Option("--kind", help="Dataset kind (mvtec, visa, isic, ..., auto detects).")] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split that was scored.")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="Evaluation folder (default: DIR/../evaluation).")] = None,
    ci_resamples: Annotated[int, typer.Option("--ci-resamples", help="Bootstrap resamples (0: no CIs).")] = (
        ci_defaults.CI_RESAMPLES
    ),
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = ci_defaults.CI_SEED,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Score threshold of per-image Dice/IoU, in (0, 1].")
    ] = 0.5,
    ci_method: Annotated[str, typer.Option("--ci-method", help="Bootstrap interval: bca or percentile.")] = (
        ci_defaults.CI_METHOD
    ),
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence level of the intervals, in (0, 1).")
    ] = ci_defaults.CI_LEVEL,
    resolution: Annotated[
        str,
        typer.Option(
            "--resolution", help="native (masks at image size) or model (maps and masks resized to the model input)."
        ),
    ] = "native",
    images_dir: Annotated[str | None, typer.Option("--images-dir", help=IMAGES_DIR_HELP)] = None,
    masks_dir: Annotated[str | None, typer.Option("--masks-dir", help=MASKS_DIR_HELP)] = None,
    data_options: DataOptions = None,
    volume_score: Annotated[
        str,
        typer.Option(
            "--volume-score",
            help="A volume's score from its slices' image scores: max, topk_mean (k=3) or topk_mean:K.",
        ),
    ] = "max",
) -> None:
    """Evaluate predictions: metrics.json (with CIs), per_image.csv, curves.json, comparisons.json, and
    per_volume.csv when the inputs hold volumes (DICOM series, NIfTI files)."""
    from medad.data import load_manifest
    from medad.evaluation import evaluate
    from medad.evaluation.volumes import VolumeScore
    from medad.reports.cases import named_predictions

    names = ("--ci-resamples", "--confidence", "--ci-method")
    ci_defaults.check_ci_settings(ci_resamples, confidence, ci_method, names=names)
    scoring = VolumeScore.parse(volume_score, "--volume-score")  # refused before any work
    if not 0.0 < threshold <= 1.0:  # the anomaly-score range, as `medad score --threshold fixed:V` checks it
        effect = "no pixel at all" if threshold > 1.0 else "every pixel of every image"
        fail(
            f"--threshold {threshold:g} is outside the anomaly-score range (0, 1]: per-image Dice / IoU of "
            f"`map >= {threshold:g}` would mark {effect}; pass a value in (0, 1], e.g. --threshold 0.5"
        )

    folders = named_predictions(predictions)
    folder_kind, dir_options = _reader_options(kind, images_dir, masks_dir, data_options, split="--split")
    manifest = load_manifest(data, folder_kind or kind, split=split, **dir_options)
    target = out or Path(predictions[0].rpartition("=")[2]).resolve().parent / "evaluation"
    ci = {"n_resamples": ci_resamples, "seed": seed, "method": ci_method, "level": confidence}
    result = evaluate(
        folders, manifest, target, ci=ci, threshold=threshold, resolution=resolution, volume_score=scoring
    )
    typer.echo(f"evaluated {len(folders)} model(s) on {len(manifest)} images; results in {result['out_dir']}")


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="Evaluation folder, or run folder with evaluation/ inside.")],
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: RUN/report).")] = None,
    predictions: Annotated[list[str] | None, typer.Option("--predictions", help="[MODEL=]DIR, for heatmaps.")] = None,
    manifest: Annotated[list[str] | None, typer.Option("--manifest", help="[DATASET=]FILE (.csv/.json).")] = None,
    title: Annotated[str, typer.Option("--title")] = "medad evaluation report",
    cases: Annotated[int, typer.Option("--cases", help="Images per best/worst group.")] = 4,
) -> None:
    """Write report.html, report.md, tables and figures for an evaluation."""
    from medad.reports import build_report
    from medad.reports.cases import parse_keyed_paths

    html_path = build_report(
        run_dir,
        out,
        predictions=parse_keyed_paths(predictions or [], "--predictions"),
        manifest=parse_keyed_paths(manifest or [], "--manifest"),
        title=title,
        n_cases=cases,
    )
    typer.echo(f"report: {html_path}")


def _export_notices(folder: Path) -> str | None:
    """Print an export's warnings (an asked format that does not apply to some sources) on stderr; return its
    error (no asked format applies to any source), which the command ends with."""
    from medad.export import export_notices

    warnings, error = export_notices(folder)
    for warning in warnings:
        typer.echo(f"warning: {printable(warning)}", err=True)
    return error


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Predictions folder (or a `medad score` output folder).")],
    formats: Annotated[str, typer.Option("--format", help="Comma list of png,nifti,dicom-seg,pmap.")] = "png",
    threshold: Annotated[str, typer.Option("--threshold", help=THRESHOLD_HELP)] = "fixed:0.5",
    deidentify: Annotated[bool, typer.Option("--deidentify", help="PS3.15 Basic profile on DICOM exports.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Export folder (default RUN_DIR/export).")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Manifest if RUN_DIR holds none.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty export folder.")] = False,
    per_file: Annotated[bool, typer.Option("--per-file", help=PER_FILE_HELP)] = False,
    to: Annotated[str | None, typer.Option("--to", help=TO_HELP)] = None,
    ca_bundle: Annotated[Path | None, typer.Option("--ca-bundle", help=CA_HELP)] = None,
    calling_aet: Annotated[str | None, typer.Option("--calling-aet", help=CALLING_AET_HELP)] = None,
) -> None:
    """Export masks, heatmaps, overlays, NIfTI, DICOM SEG / Parametric Map and an offline review gallery."""
    from medad.export import export_run, export_summary

    pacs = _pacs_connection(ca_bundle, calling_aet, None, [to])
    if to is not None:
        from medad.dimse.remote import check_target

        check_target(formats, deidentify, to, pacs, probe=True, before="exporting")  # before anything is written

    folder = export_run(
        run_dir,
        formats=formats,
        threshold=threshold,
        deidentify=deidentify,
        out_dir=out,
        manifest_path=manifest,
        overwrite=overwrite,
        per_file=per_file,
    )
    summary, skipped = export_summary(folder)
    typer.echo(f"export written to {folder} (RESEARCH USE ONLY): {summary}")
    error = _export_notices(folder)
    if error is not None:
        fail(error)
    if to is not None:
        from medad.dimse.remote import store_export

        typer.echo(store_export(folder, to, pacs))
    if skipped:
        raise typer.Exit(code=2)


@app.command("export-model")
def export_model_command(
    out: Annotated[Path, typer.Option("--out", help="File to write (.onnx or .pt); a FILE.card.json goes beside it.")],
    class_word: Annotated[str, typer.Option("--class-word", help="Prompt word baked in, e.g. brain, skin, polyp.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (onnxruntime) or torchscript.")] = "onnx",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Folder from `medad train`.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model name, e.g. ad_dinov3_tiny.")] = None,
) -> None:
    """Export a scoring model (backbone, adapters and the class's text matrix) for deployment; checked on the CPU."""
    from medad.deploy import export_model

    typer.echo(export_model(out, class_word, fmt=fmt, checkpoint=checkpoint, model_name=model).describe())


WATCH_SOURCE_HELP = "Orthanc's REST root, e.g. http://pacs:8042: its /changes feed names the studies to score."
WATCH_TO_HELP = (
    "Where the results go: a DICOMweb root (STOW-RS), e.g. http://pacs:8042/dicom-web, or a DIMSE peer (C-STORE), "
    "dicom://AET@HOST:PORT."
)


@app.command("watch")
def watch_command(
    source: Annotated[str, typer.Argument(help=WATCH_SOURCE_HELP)],
    to: Annotated[str, typer.Option("--to", help=WATCH_TO_HELP)],
    state: Annotated[Path, typer.Option("--state", help="State folder (feed position, per-study record; resumes).")],
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Folder from `medad train`.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model name, e.g. ad_dinov3_tiny.")] = None,
    dicomweb: Annotated[
        str | None, typer.Option("--dicomweb", help="DICOMweb root to fetch studies from (default SOURCE/dicom-web).")
    ] = None,
    export: Annotated[str, typer.Option("--format", help="Results to store: dicom-seg, pmap.")] = "dicom-seg,pmap",
    threshold: Annotated[str, typer.Option("--threshold", help=THRESHOLD_HELP)] = "fixed:0.5",
    modality: Annotated[str | None, typer.Option("--modality", help="Score only these modalities, e.g. CT,MR.")] = None,
    body_part: Annotated[str | None, typer.Option("--body-part", help="Only these BodyPartExamined values.")] = None,
    sop_class: Annotated[str | None, typer.Option("--sop-class", help="Only series of these SOP Class UIDs.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Studies in progress at once (one scored at a time).")] = 1,
    queue: Annotated[int, typer.Option("--queue", help="At most this many studies waiting; the feed waits.")] = 100,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between reads of the feed.")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Score what is pending, then exit (cron, tests).")] = False,
    backlog: Annotated[
        bool, typer.Option("--backlog", help="On the first start, also score the studies already in the PACS.")
    ] = False,
    credentials: Annotated[
        Path | None, typer.Option("--credentials", help="File of MEDAD_DICOMWEB_*=VALUE lines (chmod 600).")
    ] = None,
    ca_bundle: Annotated[Path | None, typer.Option("--ca-bundle", help=CA_HELP)] = None,
    calling_aet: Annotated[str | None, typer.Option("--calling-aet", help=CALLING_AET_HELP)] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA if any).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 8,
    class_word: Annotated[str | None, typer.Option("--class-word", help=CLASS_WORD_HELP)] = None,
    seed: Annotated[int, typer.Option("--seed", help=SEED_HELP)] = 0,
    backbone_weights: Annotated[str | None, typer.Option("--backbone-weights", help=BACKBONE_WEIGHTS_HELP)] = None,
    text_weights: Annotated[str | None, typer.Option("--text-weights", help=TEXT_WEIGHTS_HELP)] = None,
) -> None:
    """Follow a PACS and answer each new stable study with SEG / Parametric Map results (docs/hospital.md)."""
    import logging

    from medad.engine.request import ScoreSettings
    from medad.watch import StudyFilter, WatchSettings, load_credentials, run_node

    if credentials is not None:
        load_credentials(credentials)
    logger = logging.getLogger("medad.watch")
    for old in [h for h in logger.handlers if h.get_name() == "medad-watch-stderr"]:  # a command run before
        logger.removeHandler(old)
    handler = logging.StreamHandler()
    handler.set_name("medad-watch-stderr")
    handler.setFormatter(logging.Formatter("%(asctime)s medad watch: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    settings = WatchSettings(
        source=source,
        to=to,
        state_dir=state,
        checkpoint=checkpoint,
        model_name=model,
        backbone_weights=backbone_weights,
        text_weights=text_weights,
        dicomweb=dicomweb,
        formats=export,
        threshold=threshold,
        score=ScoreSettings(batch_size=batch_size, device=device, class_word=class_word, seed=seed),
        study_filter=StudyFilter.parse(modality, body_part, sop_class),
        workers=workers,
        queue=queue,
        poll=poll,
        once=once,
        backlog=backlog,
        ca_bundle=None if ca_bundle is None else str(ca_bundle),
        calling_aet=calling_aet,
    )
    typer.echo(run_node(settings).describe())


@app.command("validate")
def validate_command(
    protocol: Annotated[Path, typer.Argument(help=PROTOCOL_HELP)],
    structure_only: Annotated[
        bool, typer.Option("--structure-only", help="Check the YAML only, not that data roots and weights exist.")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key, e.g. --set training.epochs=3.")
    ] = None,
) -> None:
    """Check a protocol without running it: keys, types, names, leakage guard, data roots and weights."""
    from medad.protocols import validate_protocol

    lp = validate_protocol(protocol, structure_only=structure_only, overrides=overrides or [])
    checked = "structure" if structure_only else "structure, data roots and weights"
    typer.echo(f"{protocol}: valid ({checked}); protocol {lp.name!r}")


@app.command("run")
def run_command(
    protocol: Annotated[Path, typer.Argument(help=PROTOCOL_HELP)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: the protocol's output:).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key, e.g. --set training.epochs=3.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress display on stderr.")] = True,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another run holds the run folder, wait for it instead of refusing.")
    ] = False,
) -> None:
    """Run a protocol (train, score, evaluate, stats, report, export); re-running resumes. Prints the run folder."""
    from medad.protocols import run_protocol

    run_dir = run_protocol(protocol, out=out, overrides=overrides or [], progress=progress, wait=wait)
    typer.echo(str(run_dir))


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list on stdout.")] = False,
) -> None:
    """List the registered models: kind, default image size, the weights each needs and their licences."""
    from medad.models.registry import describe_models, format_models
    from medad.utils.io import canonical_json

    entries = describe_models()
    typer.echo(canonical_json(entries).rstrip("\n") if as_json else format_models(entries))

@app.command("protocols")
def protocols_command() -> None:
    """List the protocols shipped with medad: run one by name (`medad run demo`), or copy its YAML to edit it."""
    from medad.protocols.bundled import bundled_protocols_dir, shipped_protocols

    for name, description in shipped_protocols():
        typer.echo(f"{name:<36} {description}")
    typer.echo(f"(in {bundled_protocols_dir()}; relative outputs of a shipped protocol go to the current folder)")


weights_app = typer.Typer(help="Check and convert frozen-weights files.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("check")
def weights_check_command(
    file: Annotated[Path, typer.Argument(help="Weights file (.pth, .pt, .bin, .safetensors).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Name a weights file's format, the architecture it fits (or why not), parameter count, sha256 and licence."""
    from medad.models.weights_files import check_weights_file, format_check
    from medad.utils.io import canonical_json

    report = check_weights_file(file)
    typer.echo(canonical_json(report).rstrip("\n") if as_json else format_check(report))
    if report["fits"] is None:
        raise typer.Exit(code=2)


@weights_app.command("convert")
def weights_convert_command(
    file: Annotated[Path, typer.Argument(help="Weights file (.pth, .pt, .bin, .safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="The .safetensors file to write.")],
    trained_on: Annotated[
        str | None,
        typer.Option("--trained-on", help="A release checkpoint's training data, e.g. mvtec,colondb (default: "
                     "what its file name says, else the release's default)."),
    ] = None,
) -> None:
    """Write a safetensors copy of a weights file that fits a known architecture (same tensors, bit for bit)."""
    from medad.models.release_data import TRAINING_DATA_KEY
    from medad.models.weights_files import convert_weights_file

    report = convert_weights_file(file, out, trained_on=trained_on.split(",") if trained_on else None)
    typer.echo(f"wrote {report['tensors']} tensors ({report['fits']['architecture']}) to {out}")
    if TRAINING_DATA_KEY in report:
        data = report[TRAINING_DATA_KEY]
        typer.echo(f"trained on: {', '.join(data) if data else 'unknown (say it with --trained-on)'}")


_METAVARS = {Path: "PATH", int: "N", float: "X", str: "TEXT"}


def _readable_metavar(param: typer.core.TyperArgument | typer.core.TyperOption) -> str:
    """A click-style placeholder (PATH, N, X, TEXT) for a parameter, from its annotation."""
    annotation = param.type_descriptor.annotation
    element = get_args(annotation)[0] if param.type_descriptor.is_list else annotation
    return _METAVARS.get(element, "VALUE") + ("..." if param.type_descriptor.is_list else "")


def readable_help(command: typer.core._click.Command) -> typer.core._click.Command:
    """Give every parameter of ``command`` (recursively) a readable placeholder in ``--help``.

    typer shows Python annotations such as ``<list[Path]>`` or ``<bool>`` in help; users expect ``PATH...``,
    ``N`` and bare flags. An explicit ``metavar=`` on a parameter wins.
    """
    help_option = command.get_help_option(typer.core._click.Context(command))  # made once, cached by the command
    for param in [*command.params, help_option]:
        if not isinstance(param, typer.core.TyperArgument | typer.core.TyperOption):
            continue
        if isinstance(param, typer.core.TyperArgument):  # typer prints an argument's annotation beside its name
            param.metavar = param.metavar or param.name.upper()
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        elif param.metavar is None:
            param.metavar = "" if param.is_flag else _readable_metavar(param)
    for sub in getattr(command, "commands", {}).values():
        readable_help(sub)
    return command


def main() -> None:
    """Console-script entry point."""
    try:
        with show_data_warnings():
            readable_help(typer.main.get_command(app))(prog_name="medad")
    except MedadError as exc:
        typer.echo(f"error: {printable(exc)}", err=True)
        sys.exit(exc.exit_code)
    except (RuntimeError, OSError) as exc:  # a user error wrapped by a library, or a full / read-only disk
        error = as_medad_error(exc)
        if error is None:
            raise
        typer.echo(f"error: {printable(error)}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept on disk and a re-run resumes from it", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
