"""The typed protocol schema (pydantic v2, unknown keys forbidden).

A protocol YAML describes one study: which models (and how they are trained or which checkpoint they load),
which target datasets they score, which metrics and statistics are computed, and what is exported. Every key
is listed in ``docs/protocols.md``. Nothing in a protocol is ever evaluated as code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from medad.stats.defaults import CI_LEVEL, CI_METHOD, CI_RESAMPLES, CI_SEED
from medad.utils.config import StrictModel as _Strict

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Scalar = str | int | float | bool | None
OptionValue = Scalar | list[Scalar]
Options = dict[str, OptionValue]
CIMethod = Literal["percentile", "bca"]


class SyntheticSource(_Strict):
    """A synthetic dataset that the run writes itself (``medad.data.write_layout``).

    Attributes:
        layout: the public layout to imitate (``mvtec``, ``visa``, ``isic2016``, ``mvtec_style``, ...).
        n_normal: normal images per class (the medical layouts have none).
        n_abnormal: abnormal images per class.
        size: image side in pixels.
        seed: random seed (same seed, same bytes).
        classes: category names for the industrial layouts (empty: the layout's defaults).
    """

    layout: Name
    n_normal: Annotated[int, Field(ge=0)] = 2
    n_abnormal: Annotated[int, Field(ge=0)] = 3
    size: Annotated[int, Field(ge=16)] = 64
    seed: int = 0
    classes: list[Name] | None = None


class ReferencePool(_Strict):
    """Where a target's few-shot references are drawn from (exactly one key).

    Attributes:
        split: a split of the target's own layout (read like the target, with this ``split``), e.g. ``train``
            (BMAD's ``train/good``, MVTec's ``train/good``).
        folder: a folder of normal images (read in its layout, every split; as ``medad score --reference``);
            ``${VAR}`` allowed, relative to the protocol file's folder.
        target_normals: the target's own normal images (label 0); every drawn image is removed from the scored
            targets, for every model and shot count (sets without a normal training split, e.g. HeadCT).
    """

    split: Name | None = None
    folder: str | None = None
    target_normals: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ReferencePool:
        given = [k for k in ("split", "folder") if getattr(self, k) is not None] + (
            ["target_normals"] if self.target_normals else []
        )
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of split, folder or target_normals (got {', '.join(given) or 'none'}), e.g. "
                "{split: train}"
            )
        return self

    def describe(self) -> str:
        """The pool in words (messages, reports)."""
        if self.split is not None:
            return f"split {self.split}"
        return "a reference folder" if self.folder is not None else "the target's normal images"


class ReferencesSpec(_Strict):
    """A target's few-shot references (``targets[i].references``): every model is also scored with ``shots`` normal
    images drawn from ``from``, ``draws`` times per shot count (the 0-shot run is the plain one).

    Attributes:
        source: where the references come from (the YAML key ``from``).
        shots: the shot counts, each >= 1 (e.g. ``[1, 2, 4]``).
        draws: independent draws per shot count (a larger shot count keeps a smaller one's images).
        seed: the draws' seed.
        weight: the few-shot map's weight in the fused map (empty: each model's ``fewshot_weight``).
    """

    model_config = ConfigDict(populate_by_name=True)

    source: ReferencePool = Field(alias="from")
    shots: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    draws: Annotated[int, Field(ge=1)] = 1
    seed: int = 0
    weight: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump ``source`` under its YAML key ``from`` (the resolved protocol reads back as written)."""
        data: dict[str, Any] = handler(self)
        return {"from": data.pop("source"), **data}


class DatasetSpec(_Strict):
    """One dataset: where it lies (a root folder or a synthetic source) and how to read it.

    Attributes:
        name: unique label used in results, reports and ``class_words``.
        kind: dataset kind known to ``medad.data`` (``mvtec``, ``visa``, ``isic``, ... or ``auto``).
        root: folder in its public layout; ``${VAR}`` environment variables allowed; a relative path is
            relative to the protocol file's folder.
        synthetic: name of a ``synthetic:`` source instead of a root.
        options: extra keyword arguments of ``medad.data.load_manifest`` (e.g. ``split``).
        references: targets only: few-shot references (``docs/protocols.md``, *Few-shot studies*).
    """

    name: Name
    kind: Name
    root: str | None = None
    synthetic: Name | None = None
    options: Options = Field(default_factory=dict)
    references: ReferencesSpec | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave unset ``references`` out, so a protocol without them keeps its resolved form and config hash."""
        data: dict[str, Any] = handler(self)
        if self.references is None:
            data.pop("references", None)
        return data


class WeightSource(_Strict):
    """A frozen weight source: a hub id, a local file, or both (the file wins).

    Attributes:
        id: ``backbone``: a timm DINOv3 name with its pretrained tag (e.g.
            ``vit_large_patch16_dinov3.lvd1689m``); ``text``: an open_clip pretrained tag (``openai``) or
            ``hf-hub:<repo>``.
        file: local weights file; ``${VAR}`` allowed; relative to the protocol file's folder.
        sha256: expected sha256 of the file (checked before the run starts).
        licence: licence of the weights, recorded in provenance.
    """

    id: str | None = None
    file: str | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    licence: str | None = None


class WeightsSpec(_Strict):
    """The frozen weights of a model by role (empty: the model's defaults). Every role is checked the same way
    (file present, sha256), whatever backbone it names.

    Attributes:
        backbone: the DINOv3 backbone weights.
        text: the CLIP text-tower weights.
        clip: a whole CLIP checkpoint, read by a CLIP-family model for its vision tower (``clip_weights``; ``id``:
            an open_clip tag such as ``openai`` or ``hf-hub:<repo>``).
    """

    backbone: WeightSource | None = None
    text: WeightSource | None = None
    clip: WeightSource | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave an unset ``clip`` out, so a protocol without one keeps its resolved form and config hash."""
        data: dict[str, Any] = handler(self)
        if self.clip is None:
            data.pop("clip", None)
        return data


class TrainingSpec(_Strict):
    """How models without a ``checkpoint`` are trained (method §5).

    Attributes:
        datasets: auxiliary (industrial) training datasets.
        epochs: fixed number of epochs (no checkpoint selection on target data).
        lr: AdamW learning rate.
        batch_size: images per optimiser step (effective batch).
        micro_batch_size: images per forward pass (gradient accumulation); empty: equal to ``batch_size``.
        weight_decay: AdamW weight decay.
        warmup: fraction of the steps with linear warm-up.
        seeds: one trained model per seed.
        cache_features: cache the frozen backbone's features so epochs after the first skip it.
        epoch_sweep: opt-in: also score every epoch's adapters on the targets and report the best epoch by target
            pixel AUROC, labelled "selected on the test data (optimistic), as the released code does", beside the
            fixed-epoch headline (``medad.protocols.epoch_sweep``); never the default, never the headline.
        score_epoch: score with this epoch's checkpoint instead of the last one (training keeps every epoch's),
            e.g. 1 for Crane+ on medical sets as its release does; at most ``epochs``; said in the provenance and
            the report.
    """

    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]
    epochs: Annotated[int, Field(gt=0)]
    lr: Annotated[float, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)] = 8
    micro_batch_size: Annotated[int, Field(gt=0)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.03
    seeds: Annotated[list[int], Field(min_length=1)] = Field(default_factory=lambda: [0])
    cache_features: bool = True
    epoch_sweep: bool = False
    score_epoch: Annotated[int, Field(gt=0)] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave an unset ``score_epoch`` out, so a protocol without one keeps its resolved form and config hash."""
        return _without_unset(handler(self), score_epoch=None)


class ModelTraining(_Strict):
    """A model's own training recipe (``models[i].training``): the keys of :class:`TrainingSpec`, each optional;
    a key given here replaces the protocol's ``training:`` value for this model only (resolution merges them, so a
    resolved model's section holds every key).

    Attributes: as :class:`TrainingSpec`.
    """

    datasets: Annotated[list[DatasetSpec], Field(min_length=1)] | None = None
    epochs: Annotated[int, Field(gt=0)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] | None = None
    micro_batch_size: Annotated[int, Field(gt=0)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    warmup: Annotated[float, Field(ge=0, lt=1)] | None = None
    seeds: Annotated[list[int], Field(min_length=1)] | None = None
    cache_features: bool | None = None
    epoch_sweep: bool | None = None
    score_epoch: Annotated[int, Field(gt=0)] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave an unset ``score_epoch`` out, as :class:`TrainingSpec` does."""
        return _without_unset(handler(self), score_epoch=None)


def _without_unset(data: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """``data`` without the keys whose value is the given default (keys added after configs were hashed)."""
    return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}


RELEASE_OPTIONS: dict[str, str] = {
    "release_prompts": "clip-prompts",
    "release_weights": "adaclip",
    "release_text_adapter": "aa-clip-text",
    "release_image_adapter": "aa-clip-image",
}
"""Model options naming a file of a release's trained checkpoint, with that checkpoint's weights family (a path
relative to the protocol's folder, resolved like the weight files)."""


class ModelSpec(_Strict):
    """One model of the study.

    Attributes:
        name: unique label used in results and comparisons (e.g. ``clean``, ``reference``).
        model: registry name for ``medad.models.create_model`` (e.g. ``ad_dinov3_tiny``).
        compat: ``clean`` (quirks fixed) or ``reference`` (the released code's behaviour).
        image_score: image-level score policy: ``global``, ``max`` or ``blend``.
        options: extra keyword arguments of ``create_model``.
        weights: frozen weights by role (``backbone``, ``text``).
        class_words: per dataset (target / training name or dataset kind), class name -> text class word
            (``clean`` models; e.g. ``{isic: {skin_lesion: "skin lesion"}}``).
        checkpoint: a trained checkpoint folder to load instead of training.
        training: this model's own training recipe: keys of the protocol's ``training:`` that it replaces for
            this model (e.g. the release's epochs and learning rate, ``score_epoch``, its own ``datasets``).
        allow_not_zero_shot: score targets this model's training data includes (its own ``training.datasets`` or
            the data a converted release checkpoint was trained on): marked "not zero-shot (trained on ...)"
            in the results instead of refused.
    """

    name: Name
    model: Name
    compat: Literal["clean", "reference"] = "clean"
    image_score: Literal["global", "max", "blend"] = "blend"
    options: Options = Field(default_factory=dict)
    weights: WeightsSpec = Field(default_factory=WeightsSpec)
    class_words: dict[str, dict[str, str]] = Field(default_factory=dict)
    checkpoint: str | None = None
    training: ModelTraining | None = None
    allow_not_zero_shot: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the unset keys added later out, so a protocol without them keeps its resolved form and hash."""
        return _without_unset(handler(self), training=None, allow_not_zero_shot=False)

    def create_kwargs(self) -> dict[str, Any]:
        """``create_model`` keyword arguments of this spec: options, compat, image score and the frozen weight
        sources (what the train and score stages build, and what ``medad validate`` checks)."""
        kwargs: dict[str, Any] = dict(self.options)
        kwargs["compat"] = self.compat
        kwargs["image_score"] = self.image_score
        backbone, text = self.weights.backbone, self.weights.text
        if backbone is not None:
            if backbone.id is not None:
                kwargs["backbone"] = backbone.id
            if backbone.file is not None:
                kwargs["backbone_weights"] = backbone.file
        if text is not None:
            kwargs["text_weights"] = text.file or text.id
        if self.weights.clip is not None:
            kwargs["clip_weights"] = self.weights.clip.file or self.weights.clip.id
        return kwargs


class ScoringSpec(_Strict):
    """Batched scoring settings.

    Attributes:
        batch_size: images per forward pass (windows per forward pass with ``tile``).
        chunk_size: images per predictions chunk on disk (the unit of resuming).
        tile: score every image at its native size, window by window (``medad.engine.tiling``).
        tile_overlap: with ``tile``: overlap of neighbouring windows, a fraction of the window side.
    """

    batch_size: Annotated[int, Field(gt=0)] = 8
    chunk_size: Annotated[int, Field(gt=0)] = 16
    tile: bool = False
    tile_overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25


class StatisticsSpec(_Strict):
    """Confidence intervals and paired comparisons.

    Attributes:
        ci: bootstrap interval method: ``percentile`` or ``bca``.
        confidence: interval level.
        resamples: bootstrap resamples (0 turns intervals off).
        unit: resampling unit: ``image`` or ``group`` (patient / video / sequence).
        seed: bootstrap seed.
        comparisons: pairs of model names compared with paired tests on the same images.
        correction: multiple-comparison correction: ``holm`` or ``bh``.
    """

    ci: CIMethod = cast(CIMethod, CI_METHOD)
    confidence: Annotated[float, Field(gt=0, lt=1)] = CI_LEVEL
    resamples: Annotated[int, Field(ge=0)] = CI_RESAMPLES
    unit: Literal["image", "group"] = "image"
    seed: int = CI_SEED
    comparisons: list[Annotated[list[Name], Field(min_length=2, max_length=2)]] = Field(default_factory=list)
    correction: Literal["holm", "bh"] = "holm"


class ExportSpec(_Strict):
    """One export of the predictions (``medad.export.export_predictions``): every target image, per model.

    Attributes:
        formats: any of ``png``, ``nifti``, ``dicom-seg``, ``pmap``.
        threshold: how maps become masks: ``fixed:<value>`` or another spec of
            ``medad.export.resolve_threshold``.
        models: model names to export (empty: all).
        deidentify: apply the DICOM PS3.15 Basic profile to DICOM exports.
    """

    formats: Annotated[list[Name], Field(min_length=1)]
    threshold: str = "fixed:0.5"
    models: list[Name] = Field(default_factory=list)
    deidentify: bool = False


class ExecutorSpec(_Strict):
    """Where the independent training and scoring jobs run (``medad.protocols.executor``, submitit).

    Without an ``executor:`` key they run one after the other inside ``medad run``. With one, every train job
    (model x seed) is submitted at once, then every score job (model run); each writes into the same
    content-hashed stage folder as an in-process run, and the runner collects the results when they finish.

    Attributes:
        kind: ``local`` (submitit's LocalExecutor: subprocesses on this machine) or ``slurm``.
        folder: where submitit keeps job pickles and logs (default ``<output>/_submitit``).
        timeout_min: wall-clock limit of one job.
        gpus_per_node: GPUs per job; with ``device: auto`` jobs use CUDA when > 0, the CPU otherwise.
        cpus_per_task: CPU cores per job.
        mem_gb: memory per job.
        job_name: SLURM job name.
        partition: SLURM partition (``slurm`` only; ``local`` ignores the SLURM keys, so
            ``--set executor.kind=local`` tries a cluster protocol on one machine).
        account: SLURM account.
        qos: SLURM quality of service.
        constraint: SLURM node constraint.
        array_parallelism: most jobs of the job array running at once.
        setup: shell lines run before each job (e.g. ``module load cuda``, ``source venv/bin/activate``).
        slurm_additional_parameters: further ``#SBATCH`` options, e.g. ``{reservation: x}``.
    """

    kind: Literal["local", "slurm"]
    folder: str | None = None
    timeout_min: Annotated[int, Field(gt=0)] = 240
    gpus_per_node: Annotated[int, Field(ge=0)] = 0
    cpus_per_task: Annotated[int, Field(gt=0)] | None = None
    mem_gb: Annotated[float, Field(gt=0)] | None = None
    job_name: Name = "medad"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: Annotated[int, Field(gt=0)] | None = None
    setup: list[str] = Field(default_factory=list)
    slurm_additional_parameters: dict[str, Scalar] = Field(default_factory=dict)


class Protocol(_Strict):
    """A whole study.

    Attributes:
        name: protocol name (the run folder's parent); defaults to the file's stem.
        description: free text for the report.
        output: folder under which run folders are made (relative to the protocol file's folder).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        intended_overlap: allow training data that overlaps a target (stated in the report).
        synthetic: named synthetic sources the run writes into its data folder.
        models: the models compared.
        training: training settings for models without a checkpoint.
        targets: the datasets scored and evaluated.
        scoring: batched scoring settings.
        metrics: metric names (empty: the evaluation defaults).
        evaluation_resolution: ``native`` (maps against masks at each image's size) or ``model`` (both resized
            to the model's input size, as the released code evaluates).
        evaluation_volume_score: a volume's score from its slices' image scores: ``max``, ``topk_mean`` or
            ``topk_mean:K`` (``medad.evaluation.volumes``).
        statistics: intervals and paired comparisons.
        exports: prediction exports.
        executor: run the train and score jobs through submitit (``local`` or ``slurm``); absent: in-process.
    """

    name: Name | None = None
    description: str = ""
    output: str = "runs"
    device: Annotated[str, StringConstraints(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")] = "auto"
    intended_overlap: bool = False
    synthetic: dict[Name, SyntheticSource] = Field(default_factory=dict)
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    training: TrainingSpec | None = None
    targets: Annotated[list[DatasetSpec], Field(min_length=1)]
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    metrics: list[Name] = Field(default_factory=list)
    evaluation_resolution: Literal["native", "model"] = "native"
    evaluation_volume_score: Annotated[str, StringConstraints(pattern=r"^(max|topk_mean(:[1-9][0-9]*)?)$")] = "max"
    statistics: StatisticsSpec = Field(default_factory=StatisticsSpec)
    exports: list[ExportSpec] = Field(default_factory=list)
    executor: ExecutorSpec | None = None
