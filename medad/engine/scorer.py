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

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from medad.engine.carry_over import carry_over, finish_carry_over
from medad.engine.distributed import ScoreShard, barrier
from medad.engine.features import inputs_fingerprint, manifest_fingerprint
from medad.engine.fewshot import FewShotInferer, fewshot_weight
from medad.engine.host_writes import BackgroundWrites
from medad.engine.inferers import Inferer, PlainInferer, ScoringRun, TransductiveInferer
from medad.engine.predictions import PredictionReader, PredictionWriter, save_manifests
from medad.engine.prompting import check_model_compat, class_words_used, prompt_words
from medad.engine.references import ReferenceSet, check_references, describe_record, draw_references, reference_manifest
from medad.engine.request import DEFAULT_SEED, SETTINGS_FIELDS, TILE_WITH_REFERENCES, ScoreRequest, ScoreSettings
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
    seed: int | None = None,
    references: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta.json`` of a predictions folder: model card, random-weights flag, data hash, prompt rule.

    ``weights_sha256`` fingerprints the model's trainable weights (:func:`weights_fingerprint`; the card's sha256
    cover the frozen ones) and ``seed`` (when known) is the seed the model was built under, so a resumed run
    refuses to mix two models in one table. A tiled run adds ``"scoring": {"tile": true, "tile_overlap": ...}``;
    an untiled run has no ``scoring`` key (so folders written before tiling existed still resume). A few-shot run
    adds ``references`` (:meth:`~medad.engine.references.ReferenceSet.record`: shots, seed, draw, the weight used,
    radii and the references' case ids); a zero-shot run has none.
    """
    card = model.card()
    meta = {
        "model": card,
        "random_weights": bool(card.get("random_weights", False)),
        "manifest_hash": manifest_fingerprint(manifest),
        "inputs_hash": inputs_fingerprint(manifest),
        "n_images": len(manifest),
        "compat": compat,
        "weights_sha256": weights_fingerprint(model),
    }
    if seed is not None:
        meta["seed"] = seed
    if class_words is not None:  # the text word of every class, {dataset: {class_name: word}}
        meta["class_words"] = {d: dict(words) for d, words in class_words.items()}
    scoring = tiling_meta(tile, tile_overlap)
    if scoring is not None:
        meta["scoring"] = scoring
    if references is not None:
        meta["references"] = dict(references)
    return meta


def weights_fingerprint(model: AnomalyModel) -> str:
    """The sha256 of a model's trainable weights (names, dtypes, shapes, bytes; empty for a training-free model).

    The card names the frozen weights (file sha256, or ``random`` with their seed) but not the adapters, which an
    untrained model draws at random when it is built: this fingerprint tells two such draws apart.
    """
    from medad.models import TrainableAnomalyModel

    digest = hashlib.sha256()
    state = model.trainable_state_dict() if isinstance(model, TrainableAnomalyModel) else {}
    for name, tensor in sorted(state.items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def score(
    model: AnomalyModel,
    manifest: pd.DataFrame,
    out_dir: str | Path,
    settings: ScoreSettings | None = None,
    *,
    tag: str = "p0",
    progress: bool | Callable[[int], None] = True,
    indices: Sequence[int] | None = None,
    **options: Any,
) -> PredictionReader:
    """Score every row of a manifest into a predictions folder, skipping rows already stored there.

    Args:
        model: a medad model: ``model(images, class_names)`` returns ``pixel_scores`` (B,S,S) and
            ``image_scores`` (B,); ``image_size``, ``mean``, ``std`` and ``card()``.
        manifest: the rows to score (manifest index = row position).
        out_dir: the predictions folder (``meta.json`` + ``chunks/``).
        settings: how to score (:class:`~medad.engine.request.ScoreSettings`); or give its fields as keyword
            arguments (``options``), not both:

            - ``batch_size``: images per forward pass.
            - ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (CUDA if available).
            - ``num_workers``: DataLoader workers reading and resizing images.
            - ``compat``: text class word rule (``clean`` or ``reference``, see ``medad.models.prompt_word``);
              ``None`` uses the model's own ``compat``.
            - ``class_words``: optional class-name -> word overrides.
            - ``class_word``: one text class word for every image (e.g. ``"skin lesion"`` for a folder of
              dermoscopy images, which would otherwise be ``"object"``), in either mode.
            - ``dataset_kinds``: dataset name -> dataset kind where a manifest names its datasets otherwise
              (protocol targets), so ``reference`` mode finds the release's fixed word of each dataset.
            - ``chunk_size``: images per predictions chunk file.
            - ``compile``: ``torch.compile`` the backbone's forward with static shapes (the model alone ran 1.7x
              faster for ViT-L on an H100 after a one-off compilation of a minute or so; worth it for large
              archives on a GPU). A short final batch is padded to ``batch_size`` so that it needs no second
              compilation.
            - ``tile``: score each image at its native size, window by window (:mod:`medad.engine.tiling`):
              windows of ``model.image_size`` squared, ``batch_size`` windows per forward pass, Gaussian blending;
              the image score is the largest window score. For images much larger than the model input
              (colonoscopy frames, dermoscopy); the cost grows with the number of windows.
            - ``tile_overlap``: overlap of neighbouring windows as a fraction of the window side, in [0, 1).
            - ``seed``: the seed ``model`` was built under, recorded in ``meta.json`` (default: none recorded;
              :func:`score_files` and protocols build under one and record it).
            - ``distributed``: under ``torchrun``, every rank scores its own shard of the manifest into this one
              folder (:class:`medad.engine.distributed.ScoreShard`: writer tag ``r<rank>``, rank 0's trainable
              parameters broadcast first, ``None``/``cuda`` devices become ``cuda:LOCAL_RANK``, progress on rank 0
              only); after a barrier every rank checks that each index is stored exactly once. Without torchrun:
              one process, and the same check. ``tag`` and ``indices`` are then set per rank and must not be given.
            - ``shard``: how ``distributed`` cuts the manifest: ``strided`` or ``contiguous``
              (:func:`medad.engine.distributed.shard_indices`).
            - ``references``: a :class:`~medad.engine.references.ReferenceSet` (``draw_references``) to score
              few-shot (:class:`~medad.engine.fewshot.FewShotInferer`): checked against the targets first
              (:func:`~medad.engine.references.check_references`), recorded in ``meta.json`` under
              ``references`` (with the weight and radii this model uses), its manifest with paths saved in
              ``../private/<folder name>.references.csv``. Required by a model with ``needs_references``.
        tag: writer tag (one per process when sharding).
        progress: ``True`` shows the progress bar (:func:`medad.utils.progress.track`, the style ``medad run``
            shows); a callable is called with the number of images just scored after each batch (no bar; e.g. a
            protocol run's display); ``False`` reports nothing.
        indices: score only these manifest indices (e.g. one shard per process, each with its own ``tag``);
            default all rows.

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
        DataError: ``out_dir`` already holds predictions of other images, another model (other weights or seed),
            another tiling or other references; bad references (:func:`~medad.engine.references.check_references`).
        ConfigError: bad ``batch_size``, device or tiling (overlap outside [0, 1), a transductive model, or
            ``tile`` with ``compile``); ``tag`` or ``indices`` with ``distributed``; both ``settings`` and options.
        DataError: with ``distributed``, some index is neither stored nor recorded as skipped, or stored twice,
            after scoring (on every rank).
    """
    s = _settings(settings, options)
    s.check()
    compat = check_model_compat(model, s.compat)
    words = prompt_words(manifest, compat, s.class_words, s.dataset_kinds, s.class_word)
    refs = _checked_references(model, s.references, manifest)
    inferer = select_inferer(
        model,
        tile=s.tile,
        tile_overlap=s.tile_overlap,
        compile=s.compile,
        references=refs,
        reference_words=_reference_words(refs, compat, s),
    )
    device: str | torch.device | None = s.device
    sharding = _join_shard(s.shard, tag, indices, device) if s.distributed else None
    if sharding is not None:
        device, tag, indices = sharding.device, sharding.tag, sharding.indices(len(manifest))
        progress = progress if sharding.env.is_main else False
        sharding.prepare(model)
    dev = resolve_device(device)
    out = Path(out_dir)
    used = class_words_used(manifest, words)
    record = None if refs is None else refs.record()
    meta = predictions_meta(
        model, manifest, compat, tile=s.tile, tile_overlap=s.tile_overlap, class_words=used, seed=s.seed,
        references=record,
    )
    finish_carry_over(out)
    _check_same_run(out, meta, manifest)
    if meta["random_weights"]:
        from medad.models.base import describe_random_parts

        parts = describe_random_parts(meta["model"].get("random_parts", []))
        warn_once(RANDOM_WEIGHTS_WARNING.format(name=meta["model"].get("name"), parts=parts))
    writer = PredictionWriter(out, chunk_size=s.chunk_size, tag=tag, meta=meta)
    if tag == "p0" or not (out / "manifest.csv").exists():
        save_manifests(out, manifest)  # paths only in ../private/
        if refs is not None:
            save_reference_manifest(out, refs)
    wanted = range(len(manifest)) if indices is None else indices
    todo = sorted(set(wanted) - writer.done_indices())
    if todo:
        skips = SkipLog(out, tag, manifest, todo)  # an unreadable image is skipped and recorded, not fatal
        run = ScoringRun(manifest, todo, words, skips, dev, s.batch_size, s.num_workers, bar=progress is True)
        _run_inferer(inferer, model, run, writer, progress if callable(progress) else None)
    if sharding is not None:
        sharding.finish(out, len(manifest))
    return PredictionReader(out)


def _checked_references(model: AnomalyModel, refs: ReferenceSet | None, manifest: pd.DataFrame) -> ReferenceSet | None:
    """The run's references with the weight and radii this model uses filled in, checked against the targets.

    Raises:
        ConfigError: a model that needs references (``needs_references``) without them.
        DataError: a reference that is also a target, or of another image kind (:func:`check_references`).
    """
    if refs is None:
        if model.needs_references:
            raise ConfigError(
                f"model {model.name!r} scores only against normal reference images; add --reference NORMALS "
                "--shots K (references= in the library)"
            )
        return None
    check_references(refs, manifest)
    radii = refs.radii if model.fewshot_radii is None else tuple(model.fewshot_radii)  # a model's own form wins
    return dataclasses.replace(refs, weight=fewshot_weight(model, refs), radii=radii)


def _reference_words(refs: ReferenceSet | None, compat: str, s: ScoreSettings) -> list[str]:
    """The text class word of each reference row, by the same rule as the targets'."""
    if refs is None:
        return []
    return prompt_words(refs.manifest, compat, s.class_words, s.dataset_kinds, s.class_word)


def save_reference_manifest(folder: Path, refs: ReferenceSet) -> Path:
    """The drawn references with their paths, in ``../private/<folder name>.references.csv`` (never shared)."""
    from medad.utils.io import write_text_atomic
    from medad.utils.privacy import private_dir

    path = private_dir(folder.parent) / f"{folder.name}.references.csv"
    write_text_atomic(path, refs.manifest.to_csv(index=False, lineterminator="\n"))
    return path


def _settings(settings: ScoreSettings | None, options: Mapping[str, Any]) -> ScoreSettings:
    """``settings``, or one built from keyword options (refusing both, and unknown keys)."""
    if settings is not None and options:
        raise ConfigError(f"score() got settings and keyword options ({', '.join(sorted(options))}); give one")
    if settings is not None:
        return settings
    unknown = sorted(set(options) - SETTINGS_FIELDS)
    if unknown:
        raise ConfigError(f"score() got unknown option(s) {', '.join(unknown)}; see medad.engine.ScoreSettings")
    return ScoreSettings(**{"seed": None, **options})


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


def select_inferer(
    model: AnomalyModel,
    *,
    tile: bool,
    tile_overlap: float,
    compile: bool,
    references: ReferenceSet | None = None,
    reference_words: Sequence[str] = (),
) -> Inferer:
    """The one place a scoring strategy is chosen: tiled when asked for, few-shot with references, else by the
    model's kind.

    Raises:
        ConfigError: tiling settings the model or options cannot honour (:func:`~medad.engine.tiling.check_tiling`),
            or tiling with references.
    """
    from medad.models import ModelKind

    transductive = model.kind is ModelKind.TRANSDUCTIVE  # e.g. dinov3_mutual
    if references is not None:
        if tile:
            raise ConfigError(TILE_WITH_REFERENCES)
        return FewShotInferer(references, reference_words, transductive=transductive, compile=compile)
    if tile:
        check_tiling(model, tile_overlap, compile)
        return TiledInferer(tile_overlap)
    if transductive:
        return TransductiveInferer()
    return PlainInferer(compile=compile)


def _check_same_run(out: Path, meta: Mapping[str, Any], manifest: pd.DataFrame | None = None) -> None:
    if not (out / "chunks").is_dir():
        return
    existing = PredictionReader(out)
    if len(existing) == 0:
        return
    old = existing.meta
    _check_same_references(out, old, meta)
    same_data = old.get("manifest_hash") == meta["manifest_hash"]
    same_model = old.get("model") == meta["model"] and old.get("compat") == meta["compat"]
    same_model = same_model and old.get("class_words", meta.get("class_words")) == meta.get("class_words")
    same_scoring = old.get("scoring") == meta.get("scoring")
    if same_model:
        _check_same_weights(out, old, meta)  # before any carry-over: never mix two draws of one model
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


def _check_same_references(out: Path, old: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Refuse to add to predictions scored with other references (or zero-shot ones to few-shot ones)."""
    if old.get("references") == meta.get("references"):
        return
    raise DataError(
        f"{out} already holds predictions scored with references {describe_record(old.get('references'))}, but "
        f"this run uses {describe_record(meta.get('references'))}; re-run with the same --reference, --shots, "
        "--reference-seed, --reference-draw and --fewshot-weight to resume, or give a new --out folder"
    )


def _check_same_weights(out: Path, old: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Refuse to add to predictions of a model with other trainable weights (e.g. a random head drawn under
    another seed): one table would mix two models. Folders written before the fingerprint was recorded pass."""
    if old.get("weights_sha256", meta["weights_sha256"]) == meta["weights_sha256"]:
        return
    before, now = old.get("seed"), meta.get("seed")
    if before is not None and before != now:
        raise DataError(
            f"{out} already holds predictions of a model built under seed {before}, but this run's model is built "
            f"under seed {now}, so its untrained weights differ; re-run with --seed {before} (seed={before}) to "
            f"resume, or give a new --out folder"
        )
    raise DataError(
        f"{out} already holds predictions of a model with other trainable weights (weights_sha256 in its "
        "meta.json differs); resume with the same checkpoint and seed, or give a new --out folder"
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
    *,
    seed: int = DEFAULT_SEED,
    **config: Any,
) -> AnomalyModel:
    """Load a trained checkpoint folder, or build a registered model by name (exactly one of the two).

    The model is built under ``seed`` (the global random state is left as it was), so an untrained head is the
    same draw on every run: the same command gives the same scores. ``config`` holds model options given on the
    command line (``compat``, ``backbone_weights``, ``text_weights``; ``None`` values are dropped). With a
    checkpoint, the weights files say where the card's frozen weights live on this machine (their sha256 must
    still match the card's), and a ``compat`` other than the checkpoint's is refused.

    Raises:
        ConfigError: neither or both given, or a compat the checkpoint was not trained in.
        WeightsError: the checkpoint folder is missing or not a medad checkpoint.
    """
    from medad.models import create_model, load_checkpoint
    from medad.models.checkpoint import read_card
    from medad.models.weights import seeded

    if (checkpoint is None) == (model_name is None):
        raise ConfigError("give exactly one of --checkpoint FOLDER (trained adapters) or --model NAME")
    options = {k: v for k, v in config.items() if v is not None}
    if checkpoint is None:
        return seeded(lambda: create_model(str(model_name), **options), seed)
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
    dev = str(resolve_device(device))
    return seeded(lambda: load_checkpoint(folder, device=dev, **options), seed)


def inputs_manifest(
    paths: Sequence[str | Path],
    kind: str | None = None,
    split: str = "test",
    reader_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The manifest ``medad score`` scores: files and folders as they are, or one dataset root read as ``kind``
    (with ``reader_options`` for its reader).

    Raises:
        ConfigError: ``kind`` given with several paths.
        DataError: no images found.
    """
    from medad.data import load_manifest, manifest_from_paths

    if kind is None:
        manifest = manifest_from_paths([str(p) for p in paths]).reset_index(drop=True)
    elif len(paths) == 1:
        manifest = load_manifest(paths[0], kind, split=split, **(reader_options or {})).reset_index(drop=True)
    else:
        raise ConfigError(f"--kind {kind} reads one dataset root; got {len(paths)} paths")
    if len(manifest) == 0:
        raise DataError(f"no images found in {', '.join(map(str, paths))}; give image, DICOM or NIfTI files or folders")
    return manifest


def score_files(
    paths: Sequence[str | Path] | ScoreRequest, out_dir: str | Path | None = None, **options: Any
) -> pd.DataFrame:
    """Score image files, folders, DICOM and NIfTI files; write tables and heatmaps (what ``medad score`` does).

    Give a :class:`~medad.engine.request.ScoreRequest` (what ``medad score`` passes), or ``paths``, ``out_dir`` and
    its fields as keyword arguments (``checkpoint=``, ``model_name=``, ``seed=``, ``batch_size=``, ``device=``,
    ``tile=``, ...; :meth:`ScoreRequest.build` sorts them), e.g.
    ``score_files(["scans/"], "out", model_name="ad_dinov3_tiny", seed=0)``; few-shot with
    ``references=["normals/"], shots=4`` (``reference_seed=``, ``reference_draw=``, ``fewshot_weight=``; or
    ``references=`` a drawn :class:`~medad.engine.references.ReferenceSet`), see ``docs/fewshot.md``.

    Writes into ``out_dir``: ``predictions/`` (the predictions store), ``scores.csv`` and ``scores.json``
    (``case_id``, ``frame``, ``image_score``, ``max_pixel_score``; no source path or name),
    ``heatmaps/<case_id>[_fNNNN].png`` (8-bit grey, 0-255 for scores 0-1, at the native image size; all three
    by :func:`medad.engine.score_tables.write_score_tables`),
    ``meta.json`` and ``private/predictions.manifest.csv`` (the only file with source paths, case id -> source;
    never share it). The model is built under the request's seed (default 0), so the same request gives the same
    bytes; a re-run resumes, and refuses a model built under another seed.

    With ``distributed``, under ``torchrun`` every rank scores its shard (see :func:`score`), then rank 0 writes
    the tables and heatmaps, so the outputs are those of a one-process run.

    Returns:
        The scores table (on every rank; read back from ``scores.csv`` on ranks other than 0).
    """
    if isinstance(paths, ScoreRequest):
        if out_dir is not None or options:
            raise ConfigError("score_files(request) takes no further arguments; set them on the ScoreRequest")
        request = paths
    else:
        if out_dir is None:
            raise ConfigError("score_files(paths, out_dir, ...) needs out_dir, the output folder")
        request = ScoreRequest.build(paths, out_dir, **{"seed": DEFAULT_SEED, **options})
    return _score_request(request)


def _score_request(request: ScoreRequest) -> pd.DataFrame:
    """Run a :class:`ScoreRequest`: fetch URLs, read the inputs, build the model under its seed, score, tabulate."""
    seed = DEFAULT_SEED if request.settings.seed is None else request.settings.seed
    s = request.settings.replace(seed=seed)  # the seed the model is built under is the one recorded
    s.check()
    paths = _local_inputs(request)
    sharding = ScoreShard.join(s.device, s.shard) if s.distributed else None
    device = sharding.device if sharding is not None else s.device
    manifest = inputs_manifest(paths, request.kind, request.split, request.reader_options)
    s = _request_references(request, s)  # drawn before any model is built
    weights = weights_options(request.backbone_weights, request.text_weights)
    model = load_model(request.checkpoint, request.model_name, device, seed=seed, compat=s.compat, **weights)
    out = request.out_dir
    reader = score(model, manifest, out / "predictions", s, progress=request.progress)
    if sharding is not None and not sharding.env.is_main:  # rank 0 writes the tables (after every shard is in)
        barrier()
        return read_score_table(out)
    table = write_score_tables(out, manifest, reader, request.heatmaps)
    if sharding is not None:
        barrier()
    return table


def _request_references(request: ScoreRequest, s: ScoreSettings) -> ScoreSettings:
    """The settings with the request's references drawn (``--reference``).

    Raises:
        ConfigError: reference options that do not go together, or a model that needs references without them.
        DataError: a reference pool with abnormal images or too few (:func:`draw_references`).
    """
    request.check_references()
    refs = s.references
    if request.reference_paths:
        pool = reference_manifest(request.reference_paths)
        source = ", ".join(str(p) for p in request.reference_paths)
        refs = draw_references(
            pool,
            int(request.shots or 0),
            seed=request.reference_seed,
            draw=request.reference_draw,
            source=source,
            weight=request.fewshot_weight,
        )
    if refs is None:
        return s
    return s.replace(references=refs)  # checked against the targets by score()


def _local_inputs(request: ScoreRequest) -> list[str | Path]:
    """The request's paths, with PACS study URLs (DICOMweb or DIMSE) fetched into ``OUT/private/``."""
    from medad.dimse.remote import Connection, is_remote_url, localise_inputs

    paths = list(request.paths)
    if not any(is_remote_url(p) for p in paths):
        return paths
    if request.settings.distributed:
        raise ConfigError(
            "PACS study URLs are fetched and scored by one process; run `medad score URL ...` without torchrun"
        )
    return localise_inputs(paths, request.out_dir, Connection(request.dicomweb_ca_bundle, request.dimse))


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
