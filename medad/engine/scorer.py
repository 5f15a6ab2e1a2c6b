"""Batched scoring: images in, per-image scores and native-resolution anomaly maps out.

:func:`score` runs a model over a manifest with a DataLoader (workers, pinned memory and non-blocking copies
on CUDA, bf16 autocast on CUDA, fp32 on CPU), upsamples every pixel map back to its image's ORIGINAL size on
the device, and appends the results to a :class:`~medad.engine.predictions.PredictionWriter` folder. An
interrupted run resumes: indices already stored are skipped. ``tile=True`` scores high-resolution images window
by window at their native size instead (:mod:`medad.engine.tiling`).

:func:`score_files` is what ``medad score`` runs: any mix of image files, folders, DICOM and NIfTI (via
``medad.data.manifest_from_paths``), then ``scores.csv`` / ``scores.json`` and one heatmap PNG per image,
named by the pseudonymous ``case_id`` (never by a DICOM/NIfTI source name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from medad.engine.carry_over import carry_over, finish_carry_over
from medad.engine.distributed import ScoreShard, barrier
from medad.engine.features import manifest_fingerprint
from medad.engine.host_writes import BackgroundWrites
from medad.engine.inferers import Inferer, PlainInferer, ScoringRun, TransductiveInferer
from medad.engine.predictions import PredictionReader, PredictionWriter, save_manifests
from medad.engine.prompting import check_model_compat, class_words_used, prompt_words
from medad.engine.runtime import autocast, resolve_device
from medad.engine.score_tables import read_score_table, write_score_tables
from medad.engine.skipped import SkipLog
from medad.engine.tiling import TiledInferer, check_tiling, tiling_meta
from medad.errors import RANDOM_WEIGHTS_WARNING, ConfigError, DataError, WeightsError, warn_once

if TYPE_CHECKING:
    from medad.models import AnomalyModel


def predictions_meta(
    model: AnomalyModel,
    manifest: pd.DataFrame,
    compat: str,
    *,
    tile: bool = False,
    tile_overlap: float = 0.25,
    class_words: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The ``meta.json`` of a predictions folder: model card, random-weights flag, data hash, prompt rule.

    A tiled run adds ``"scoring": {"tile": true, "tile_overlap": ...}``; an untiled run has no ``scoring`` key
    (so folders written before tiling existed still resume).
    """
    card = model.card()
    meta = {
        "model": card,
        "random_weights": bool(card.get("random_weights", False)),
        "manifest_hash": manifest_fingerprint(manifest),
        "n_images": len(manifest),
        "compat": compat,
    }
    if class_words is not None:  # the text word of every class, {dataset: {class_name: word}}
        meta["class_words"] = {d: dict(words) for d, words in class_words.items()}
    scoring = tiling_meta(tile, tile_overlap)
    if scoring is not None:
        meta["scoring"] = scoring
    return meta


def score(
    model: AnomalyModel,
    manifest: pd.DataFrame,
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    compat: str | None = None,
    class_words: Mapping[str, str] | None = None,
    chunk_size: int = 64,
    tag: str = "p0",
    progress: bool | Callable[[int], None] = True,
    compile: bool = False,
    indices: Sequence[int] | None = None,
    tile: bool = False,
    tile_overlap: float = 0.25,
    class_word: str | None = None,
    dataset_kinds: Mapping[str, str] | None = None,
    distributed: bool = False,
    shard: str = "strided",
) -> PredictionReader:
    """Score every row of a manifest into a predictions folder, skipping rows already stored there.

    Args:
        model: a medad model: ``model(images, class_names)`` returns ``pixel_scores`` (B,S,S) and
            ``image_scores`` (B,); ``image_size``, ``mean``, ``std`` and ``card()``.
        manifest: the rows to score (manifest index = row position).
        out_dir: the predictions folder (``meta.json`` + ``chunks/``).
        batch_size: images per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (CUDA if available).
        num_workers: DataLoader workers reading and resizing images.
        compat: text class word rule (``clean`` or ``reference``, see ``medad.models.prompt_word``); ``None``
            uses the model's own ``compat``.
        class_words: optional class-name -> word overrides.
        chunk_size: images per predictions chunk file.
        tag: writer tag (one per process when sharding).
        progress: ``True`` shows a tqdm bar; a callable is called with the number of images just scored after
            each batch (no bar; e.g. a protocol run's display); ``False`` reports nothing.
        indices: score only these manifest indices (e.g. one shard per process, each with its own ``tag``);
            default all rows.
        compile: ``torch.compile`` the backbone's forward with static shapes (the model alone ran 1.7x faster
            for ViT-L on an H100 after a one-off compilation of a minute or so; worth it for large archives on
            a GPU). A short final batch is padded to ``batch_size`` so that it needs no second compilation.
        tile: score each image at its native size, window by window (:mod:`medad.engine.tiling`): windows of
            ``model.image_size`` squared, ``batch_size`` windows per forward pass, Gaussian blending; the image
            score is the largest window score. For images much larger than the model input (colonoscopy
            frames, dermoscopy); the cost grows with the number of windows.
        tile_overlap: overlap of neighbouring windows as a fraction of the window side, in [0, 1).
        class_word: one text class word for every image (e.g. ``"skin lesion"`` for a folder of dermoscopy
            images, which would otherwise be ``"object"``), in either mode.
        dataset_kinds: dataset name -> dataset kind where a manifest names its datasets otherwise (protocol
            targets), so ``reference`` mode finds the release's fixed word of each dataset.
        distributed: under ``torchrun``, every rank scores its own shard of the manifest into this one folder
            (:class:`medad.engine.distributed.ScoreShard`: writer tag ``r<rank>``, rank 0's trainable parameters
            broadcast first, ``None``/``cuda`` devices become ``cuda:LOCAL_RANK``, progress on rank 0 only); after a
            barrier every rank checks that each index is stored exactly once. Without torchrun: one process, and
            the same check. ``tag`` and ``indices`` are then set per rank and must not be given.
        shard: how ``distributed`` cuts the manifest: ``strided`` or ``contiguous``
            (:func:`medad.engine.distributed.shard_indices`).

    The words used are recorded per dataset and class in ``meta.json`` under ``class_words``.

    Workers ship uint8 images (4x fewer bytes than float32), normalised on the device with the same float32
    operations as the CPU path (:func:`medad.data.normalize_images`); DICOM / NIfTI / 16-bit inputs are rounded
    to 256 grey levels after windowing. The loop never waits for the disk: maps are resized on the device,
    copied to pinned host memory without blocking, and written by a background thread (at most two batches in
    flight), while the next batch is already on the GPU. Nothing in the loop copies from pageable host memory
    (mean/std, text matrices, the RoPE table and gather indices live on the device), so the host never waits
    for the GPU and queues the next batch while the current one runs. The manifest is saved beside the predictions
    (``manifest.csv``, without source paths) and whole in ``../private/<folder name>.manifest.csv`` for later exports.

    Returns:
        A reader over the finished predictions folder.

    Raises:
        DataError: ``out_dir`` already holds predictions of other images, another model, or another tiling.
        ConfigError: bad ``batch_size``, device or tiling (overlap outside [0, 1), a transductive model, or
            ``tile`` with ``compile``); ``tag`` or ``indices`` with ``distributed``.
        DataError: with ``distributed``, some index is neither stored nor recorded as skipped, or stored twice,
            after scoring (on every rank).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    inferer = select_inferer(model, tile=tile, tile_overlap=tile_overlap, compile=compile)
    sharding = _join_shard(shard, tag, indices, device) if distributed else None
    if sharding is not None:
        device, tag, indices = sharding.device, sharding.tag, sharding.indices(len(manifest))
        progress = progress if sharding.env.is_main else False
        sharding.prepare(model)
    dev = resolve_device(device)
    out = Path(out_dir)
    compat = check_model_compat(model, compat)
    words = prompt_words(manifest, compat, class_words, dataset_kinds, class_word)
    meta = predictions_meta(
        model, manifest, compat, tile=tile, tile_overlap=tile_overlap, class_words=class_words_used(manifest, words)
    )
    finish_carry_over(out)
    _check_same_run(out, meta, manifest)
    if meta["random_weights"]:
        warn_once(RANDOM_WEIGHTS_WARNING.format(name=meta["model"].get("name")))
    writer = PredictionWriter(out, chunk_size=chunk_size, tag=tag, meta=meta)
    if tag == "p0" or not (out / "manifest.csv").exists():
        save_manifests(out, manifest)  # paths only in ../private/
    wanted = range(len(manifest)) if indices is None else indices
    todo = sorted(set(wanted) - writer.done_indices())
    if todo:
        skips = SkipLog(out, tag, manifest, todo)  # an unreadable image is skipped and recorded, not fatal
        run = ScoringRun(manifest, todo, words, skips, dev, batch_size, num_workers, bar=progress is True)
        _run_inferer(inferer, model, run, writer, progress if callable(progress) else None)
    if sharding is not None:
        sharding.finish(out, len(manifest))
    return PredictionReader(out)


def _join_shard(shard: str, tag: str, indices: Sequence[int] | None, device: str | torch.device | None) -> ScoreShard:
    """This rank's share of a ``distributed`` scoring run (refusing a ``tag`` or ``indices`` of the caller's)."""
    for key, given in (("tag", tag != "p0"), ("indices", indices is not None)):
        if given:
            raise ConfigError(f"score(distributed=True) sets {key!r} per rank; do not pass it")
    return ScoreShard.join(device, shard)


def _run_inferer(
    inferer: Inferer, model: AnomalyModel, run: ScoringRun, writer: PredictionWriter, done: Callable[[int], None] | None
) -> None:
    """Run the strategy over ``run.todo``, writing each batch in the background and reporting it to ``done``."""
    model.to(run.device)
    model.eval()
    with writer, BackgroundWrites(writer) as writes, torch.inference_mode(), autocast(run.device):
        for batch in inferer(model, run):
            writes.submit(batch)
            if done is not None:
                done(len(batch.indices))


def select_inferer(model: AnomalyModel, *, tile: bool, tile_overlap: float, compile: bool) -> Inferer:
    """The one place a scoring strategy is chosen: tiled when asked for, else by the model's kind.

    Raises:
        ConfigError: tiling settings the model or options cannot honour (:func:`~medad.engine.tiling.check_tiling`).
    """
    if tile:
        check_tiling(model, tile_overlap, compile)
        return TiledInferer(tile_overlap)
    from medad.models import ModelKind

    if model.kind is ModelKind.TRANSDUCTIVE:  # e.g. dinov3_mutual
        return TransductiveInferer()
    return PlainInferer(compile=compile)


def _check_same_run(out: Path, meta: Mapping[str, Any], manifest: pd.DataFrame | None = None) -> None:
    if not (out / "chunks").is_dir():
        return
    existing = PredictionReader(out)
    if len(existing) == 0:
        return
    old = existing.meta
    same_data = old.get("manifest_hash") == meta["manifest_hash"]
    same_model = old.get("model") == meta["model"] and old.get("compat") == meta["compat"]
    same_model = same_model and old.get("class_words", meta.get("class_words")) == meta.get("class_words")
    same_scoring = old.get("scoring") == meta.get("scoring")
    carry = not same_data and same_model and same_scoring and manifest is not None
    if carry and carry_over(out, manifest, dict(meta)):  # files removed or added: keep what was scored
        return
    if not (same_data and same_model):
        what = "other images" if not same_data else "another model or prompt rule"
        raise DataError(
            f"{out} already holds predictions of {what}; give a new --out folder or delete {out} to re-score"
        )
    if old.get("scoring") != meta.get("scoring"):
        raise DataError(
            f"{out} already holds predictions scored {_tiling_words(old)}, but this run is {_tiling_words(meta)}; "
            f"re-run with the same --tile / --tile-overlap, give a new --out folder or delete {out} to re-score"
        )


def _tiling_words(meta: Mapping[str, Any]) -> str:
    scoring = meta.get("scoring") or {}
    if not scoring.get("tile"):
        return "untiled (resized to the model input)"
    return f"tiled (--tile --tile-overlap {scoring.get('tile_overlap')})"


def load_model(
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    device: str | torch.device | None = None,
    **config: Any,
) -> AnomalyModel:
    """Load a trained checkpoint folder, or build a registered model by name (exactly one of the two).

    ``config`` holds model options given on the command line (``compat``, ``backbone_weights``,
    ``text_weights``; ``None`` values are dropped). With a checkpoint, the weights files say where the card's
    frozen weights live on this machine (their sha256 must still match the card's), and a ``compat`` other
    than the checkpoint's is refused.

    Raises:
        ConfigError: neither or both given, or a compat the checkpoint was not trained in.
        WeightsError: the checkpoint folder is missing or not a medad checkpoint.
    """
    from medad.models import create_model, load_checkpoint
    from medad.models.checkpoint import read_card

    if (checkpoint is None) == (model_name is None):
        raise ConfigError("give exactly one of --checkpoint FOLDER (trained adapters) or --model NAME")
    options = {k: v for k, v in config.items() if v is not None}
    if checkpoint is None:
        return create_model(str(model_name), **options)
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise WeightsError(f"checkpoint folder {folder} does not exist; give a folder written by `medad train`")
    if not (folder / "card.json").is_file():
        raise WeightsError(
            f"{folder} is not a medad checkpoint (no card.json); give a checkpoints/epoch_NNN folder from `medad train`"
        )
    trained = read_card(folder).get("compat")
    if options.get("compat", trained) != trained:
        raise ConfigError(
            f"checkpoint {folder} was trained in compat {trained!r} mode, not {options['compat']!r}: its adapters "
            f"fit that mode only; drop --compat, or train a checkpoint with --compat {options['compat']}"
        )
    return load_checkpoint(folder, device=str(resolve_device(device)), **options)


def inputs_manifest(paths: Sequence[str | Path], kind: str | None = None, split: str = "test") -> pd.DataFrame:
    """The manifest ``medad score`` scores: files and folders as they are, or one dataset root read as ``kind``.

    Raises:
        ConfigError: ``kind`` given with several paths.
        DataError: no images found.
    """
    from medad.data import load_manifest, manifest_from_paths

    if kind is None:
        manifest = manifest_from_paths([str(p) for p in paths]).reset_index(drop=True)
    elif len(paths) == 1:
        manifest = load_manifest(paths[0], kind, split=split).reset_index(drop=True)
    else:
        raise ConfigError(f"--kind {kind} reads one dataset root; got {len(paths)} paths")
    if len(manifest) == 0:
        raise DataError(f"no images found in {', '.join(map(str, paths))}; give image, DICOM or NIfTI files or folders")
    return manifest


def score_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    compat: str | None = None,
    heatmaps: bool = True,
    progress: bool = True,
    compile: bool = False,
    kind: str | None = None,
    split: str = "test",
    tile: bool = False,
    tile_overlap: float = 0.25,
    dicomweb_ca_bundle: str | Path | None = None,
    class_word: str | None = None,
    backbone_weights: str | None = None,
    text_weights: str | None = None,
    distributed: bool = False,
    shard: str = "strided",
) -> pd.DataFrame:
    """Score image files, folders, DICOM and NIfTI files; write tables and heatmaps (what ``medad score`` does).

    Writes into ``out_dir``: ``predictions/`` (the predictions store), ``scores.csv`` and ``scores.json``
    (``case_id``, ``frame``, ``image_score``, ``max_pixel_score``; no source path or name),
    ``heatmaps/<case_id>[_fNNNN].png`` (8-bit grey, 0-255 for scores 0-1, at the native image size; all three
    by :func:`medad.engine.score_tables.write_score_tables`),
    ``meta.json`` and ``private/predictions.manifest.csv`` (the only file with source paths, case id -> source;
    never share it).

    Args:
        paths: files and folders to score.
        out_dir: output folder (re-running with the same inputs resumes).
        checkpoint: a checkpoint folder from ``medad train``.
        model_name: a registered model name instead (random or pretrained weights per its card).
        batch_size: images per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None``.
        num_workers: DataLoader workers.
        compat: text class word rule.
        heatmaps: write heatmap PNGs.
        progress: show a progress bar.
        compile: ``torch.compile`` the backbone (see :func:`score`).
        kind: read ``paths[0]`` as a dataset root in this public layout (``medad datasets check`` kinds, e.g.
            ``isic``), so masks are not scored as images and ``medad eval`` can pair the maps with them.
        split: the dataset split when ``kind`` is given.
        tile: score high-resolution images window by window at their native size (see :func:`score`).
        tile_overlap: overlap of neighbouring windows, a fraction of the window side in [0, 1).
        dicomweb_ca_bundle: CA bundle for DICOMweb URLs among ``paths`` (fetched into ``out_dir/private/``).
        class_word: one text class word for every image (default: each class's word; ``"object"`` for files).
        backbone_weights: a local backbone weights file or hub id (see :func:`load_model`).
        text_weights: a local CLIP weights file, open_clip tag or ``hf-hub:`` id (see :func:`load_model`).
        distributed: under ``torchrun``, every rank scores its shard (see :func:`score`), then rank 0 writes the
            tables and heatmaps, so the outputs are those of a one-process run.
        shard: ``strided`` or ``contiguous`` with ``distributed``.

    Returns:
        The scores table (on every rank; read back from ``scores.csv`` on ranks other than 0).
    """
    from medad.dicomweb import is_dicomweb_url, localise_inputs

    if any(is_dicomweb_url(p) for p in paths):  # study / series URLs -> fetched files in OUT/private/
        if distributed:
            raise ConfigError(
                "DICOMweb URLs are fetched and scored by one process; run `medad score URL ...` without torchrun"
            )
        paths = localise_inputs(paths, out_dir, dicomweb_ca_bundle)
    sharding = ScoreShard.join(device, shard) if distributed else None
    if sharding is not None:
        device = sharding.device
    manifest = inputs_manifest(paths, kind, split)
    weights = weights_options(backbone_weights, text_weights)
    model = load_model(checkpoint, model_name, device, compat=compat, **weights)
    out = Path(out_dir)
    reader = score(
        model,
        manifest,
        out / "predictions",
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        compat=compat,
        progress=progress,
        compile=compile,
        tile=tile,
        tile_overlap=tile_overlap,
        class_word=class_word,
        distributed=distributed,
        shard=shard,
    )
    if sharding is not None and not sharding.env.is_main:  # rank 0 writes the tables (after every shard is in)
        barrier()
        return read_score_table(out)
    table = write_score_tables(out, manifest, reader, heatmaps)
    if sharding is not None:
        barrier()
    return table


def weights_options(backbone_weights: str | None, text_weights: str | None) -> dict[str, Any]:
    """Model options of ``--backbone-weights`` / ``--text-weights``: a local file or a hub id each."""
    from medad.models.weights import is_local_weights

    options: dict[str, Any] = {"text_weights": text_weights}
    if backbone_weights is not None or text_weights is not None:
        options["random_init"] = False  # weights asked for: never the random frozen weights of a demo preset
    if backbone_weights is not None and not is_local_weights(backbone_weights):
        options["backbone"] = backbone_weights  # a timm / Hugging Face hub id names the backbone itself
    else:
        options["backbone_weights"] = backbone_weights
    return options
