"""Export an AD-DINOv3 scoring model for deployment outside Python: ONNX or TorchScript, one class word baked in.

The exported graph takes a batch of images already resized to the model's side and normalised with its
mean / std (``images``: float32 ``(batch, 3, S, S)``, any batch size) and returns ``pixel_scores``
``(batch, S, S)`` in [0, 1] and ``image_scores`` ``(batch,)``. The frozen backbone, the trained adapters
and the class's text matrix (the text tower's prompt-ensemble embeddings of the class word, passed through
the text adapters) are constants of the graph, so no text tower runs at deployment. The model card (weights
ids and sha256, adapters sha256, compat, class word, normalisation, medad version, random-weights flag) is
embedded: ONNX ``metadata_props`` (key ``medad_card``, plus a few flat keys), TorchScript extra file
``medad_card.json``; the same card is written beside the file as ``FILE.card.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import medad
from medad.errors import ConfigError, ExportError
from medad.utils.io import canonical_json, sha256_file, write_json_atomic

if TYPE_CHECKING:
    from medad.models import ADDINOv3, AnomalyModel

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts")}
"""The file suffixes of each format (``read_card`` and users tell the format by the suffix)."""
INPUT_NAME = "images"
OUTPUT_NAMES = ("pixel_scores", "image_scores")
CARD_KEY = "medad_card"
TORCHSCRIPT_CARD_FILE = "medad_card.json"
ONNX_OPSET = 18
#: Largest difference between the exported model's and PyTorch's outputs that the export accepts.
TOLERANCE = 1e-4


class ScoringModule(nn.Module):
    """An AD-DINOv3 model with one class word's text matrix baked in: ``images -> (pixel_scores, image_scores)``.

    Args:
        model: an AD-DINOv3 model (``medad.models.ad_dinov3.ADDINOv3``), in eval mode.
        class_word: the prompt word of the class the deployment scores (e.g. ``brain``, ``skin``).
    """

    text: torch.Tensor

    def __init__(self, model: ADDINOv3, class_word: str) -> None:
        super().__init__()
        from medad.models import head

        self.model = model.eval()
        with torch.no_grad():
            t0 = model.text_features([class_word], torch.device("cpu"))
            u_n = model.text_adapters[0](t0[..., 0].float())
            u_a = model.text_adapters[1](t0[..., 1].float())
            self.register_buffer("text", head.combine_text(u_n, u_a, model.compat).detach().clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score a normalised ``(B, 3, S, S)`` batch."""
        features = self.model.backbone(images)
        text = self.text.expand(images.shape[0], -1, -1)
        out = self.model._inference_outputs(features["patch_tokens"].float(), features["cls_tokens"].float(), text)
        return out.pixel_scores, out.image_scores


@dataclasses.dataclass
class ExportResult:
    """Where the model went, its card, and how far its outputs are from PyTorch's on a random check batch."""

    path: Path
    card: dict[str, Any]
    max_abs_diff: float

    def describe(self) -> str:
        """One line for the CLI."""
        from medad.models.base import describe_random_parts

        parts = describe_random_parts(self.card.get("random_parts", []))
        note = f" (RANDOM WEIGHTS: {parts}; for pipeline tests only)" if self.card.get("random_weights") else ""
        return (
            f"exported {self.card['format']} model for class word {self.card['class_word']!r} to {self.path}; "
            f"max |difference| to PyTorch {self.max_abs_diff:.2e}{note}"
        )


def _check(model: AnomalyModel, class_word: str, fmt: str) -> tuple[ADDINOv3, str]:
    """The model as an AD-DINOv3 and the stripped class word; refuse another format, model kind or empty word."""
    from medad.models.ad_dinov3 import ADDINOv3

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not an export format; choose {' or '.join(FORMATS)}")
    if not isinstance(model, ADDINOv3):
        raise ConfigError(
            f"export-model exports AD-DINOv3 models (ad_dinov3, ad_dinov3_tiny or their checkpoints); {model.name!r} "
            "is not one (training-free and transductive baselines have no fixed per-class graph)"
        )
    word = class_word.strip()
    if not word:
        raise ConfigError("--class-word is empty; give the prompt word of the class to score, e.g. --class-word brain")
    return model, word


def _check_suffix(out: Path, fmt: str) -> None:
    """Refuse an ``--out`` whose suffix names another format (an ONNX file named ``.pt`` is read as TorchScript)."""
    wanted = SUFFIXES.get(fmt)
    if wanted is not None and out.suffix.lower() not in wanted:
        other = next((f for f, suffixes in SUFFIXES.items() if out.suffix.lower() in suffixes), None)
        hint = f" (or --format {other} for a {out.suffix} file)" if other else ""
        raise ConfigError(
            f"--out {out.name!r} does not end in {' / '.join(wanted)}, the suffix of --format {fmt}; use --out "
            f"{out.with_suffix(wanted[0]).name!r}{hint}"
        )


@contextlib.contextmanager
def _without_text_tower(model: ADDINOv3) -> Iterator[None]:
    """Detach the text tower while exporting, so none of its weights end up in the exported file."""
    tower = model._modules["text_encoder"]
    model._modules["text_encoder"] = nn.Identity()  # keeps model.train()/eval() working
    try:
        yield
    finally:
        model._modules["text_encoder"] = tower


def model_card(model: AnomalyModel, class_word: str, fmt: str, checkpoint: str | Path | None) -> dict[str, Any]:
    """The deployment card: the model's own card plus the class word, format, I/O contract and medad version."""
    card = model.card()
    size = int(model.image_size)
    deploy = {
        **card,
        "format": fmt,
        "class_word": class_word,
        "medad_version": medad.__version__,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "normalisation": "(x / 255 - mean) / std per RGB channel, x resized to image_size",
        },
        "outputs": {
            OUTPUT_NAMES[0]: {"shape": ["batch", size, size], "range": [0.0, 1.0]},
            OUTPUT_NAMES[1]: {"shape": ["batch"]},
        },
        "weights": {
            "backbone": {k: card.get("backbone", {}).get(k) for k in ("id", "sha256", "licence", "source")},
            "text": {k: card.get("text", {}).get(k) for k in ("id", "sha256", "licence", "source")},
        },
    }
    if checkpoint is not None:
        adapters = Path(checkpoint) / "adapters.safetensors"
        deploy["checkpoint_card"] = json.loads((Path(checkpoint) / "card.json").read_text(encoding="utf-8"))
        deploy["weights"]["adapters"] = {"file": adapters.name, "sha256": sha256_file(adapters)}
    else:
        deploy["weights"]["adapters"] = {"file": None, "sha256": None, "note": "untrained adapters of --model"}
    if deploy.get("random_weights"):
        from medad.models.base import describe_random_parts

        parts = describe_random_parts(card.get("random_parts", []))
        deploy["warning"] = f"RANDOM WEIGHTS ({parts}): the scores test the pipeline only"
    return deploy


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--format onnx needs the onnx and onnxruntime packages; pip install 'medad[deploy]' (or use "
            "--format torchscript)"
        ) from None


def _export_onnx(module: ScoringModule, example: torch.Tensor, out: Path, card: dict[str, Any]) -> None:
    import onnx

    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(out))
    flat = {
        CARD_KEY: canonical_json(card),
        "class_word": card["class_word"],
        "medad_version": card["medad_version"],
        "compat": str(card.get("compat")),
        "random_weights": str(bool(card.get("random_weights"))).lower(),
        "image_size": str(card.get("image_size")),
        "mean": json.dumps(card.get("mean")),
        "std": json.dumps(card.get("std")),
    }
    del proto.metadata_props[:]
    for key, value in flat.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "medad", medad.__version__
    proto.doc_string = f"medad {card.get('name')} anomaly scoring model, class word {card['class_word']!r}"
    onnx.save(proto, str(out))


def _export_torchscript(module: ScoringModule, example: torch.Tensor, out: Path, card: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={TORCHSCRIPT_CARD_FILE: canonical_json(card)})


def run_exported(path: str | Path, fmt: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model on the CPU (onnxruntime / TorchScript) and return (pixel_scores, image_scores)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        pixel, score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.astype(np.float32)})
        return np.asarray(pixel), np.asarray(score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        pixel_t, score_t = loaded(torch.from_numpy(images.astype(np.float32)))
    return pixel_t.numpy(), score_t.numpy()


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card embedded in an exported ONNX or TorchScript file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[CARD_KEY])
    files = {TORCHSCRIPT_CARD_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[TORCHSCRIPT_CARD_FILE])


def export_model(
    out: str | Path,
    class_word: str,
    *,
    fmt: str = "onnx",
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    model: AnomalyModel | None = None,
    check_batch: int = 2,
    seed: int = 0,
) -> ExportResult:
    """Export a scoring model (what ``medad export-model`` runs) and check it against PyTorch on the CPU.

    Args:
        out: the file to write (``.onnx`` / ``.pt``); its parent folder is created.
        class_word: the prompt word baked into the model.
        fmt: ``onnx`` or ``torchscript``.
        checkpoint: a checkpoint folder from ``medad train`` ...
        model_name: ... or a registered model name ...
        model: ... or a model object (library use).
        check_batch: images in the random check batch (a batch size other than the export's 1, so the
            dynamic batch axis is exercised).
        seed: seed of the check batch.

    Returns:
        The file, its card and the largest output difference to PyTorch on the check batch.

    Raises:
        ConfigError: a bad format, class word or model kind.
        ExportError: the file cannot be written, or its outputs differ from PyTorch's by more than 1e-4.
    """
    from medad.engine.scorer import load_model

    _check_suffix(Path(out), fmt)
    if model is None:
        model = load_model(checkpoint, model_name, "cpu")
    model, word = _check(model.float().eval(), class_word, fmt)
    if fmt == "onnx":
        _require_onnx()
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder of --out {out} ({exc.strerror}); choose a writable path") from None
    card = model_card(model, word, fmt, checkpoint)
    module = ScoringModule(model, word).eval()
    size = int(model.image_size)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(1, 3, size, size, generator=generator)
    check = torch.randn(check_batch, 3, size, size, generator=generator)
    with torch.no_grad():
        expected = model(check, [word] * check_batch)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with _without_text_tower(model), torch.no_grad():
            (_export_onnx if fmt == "onnx" else _export_torchscript)(module, example, partial, card)
        pixel, score = run_exported(partial, fmt, check.numpy())
        diff = max(
            float(np.abs(pixel - expected.pixel_scores.numpy()).max()),
            float(np.abs(score - expected.image_scores.numpy()).max()),
        )
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the exported {fmt} model's outputs differ from PyTorch's by {diff:.2e} (> {TOLERANCE:g}); "
                "report this with the model card; try the other --format meanwhile"
            )
        partial.replace(out)
    except OSError as exc:
        raise ExportError(
            f"cannot write {out} ({exc.strerror or type(exc).__name__}); choose a writable --out"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    write_json_atomic(out.with_name(f"{out.name}.card.json"), card)
    return ExportResult(out, card, diff)
