"""Best and worst cases per model and dataset, and the inputs needed to draw their heatmaps.

Cases are chosen from ``per_image.csv`` only (ties broken by manifest index), so the choice does not depend on
whether heatmaps can be drawn: abnormal images by their per-image pixel quality (Dice at the evaluation's
threshold; image score where no abnormal image has a Dice), normal images by image score. Drawing needs the
predictions folder of the model (for the pixel map) and the dataset's manifest (for :func:`medad.data.read_image`
/ :func:`medad.data.read_mask`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from medad.engine.predictions import PredictionReader, find_private_manifest, predictions_random_weights
from medad.errors import ConfigError, DataError
from medad.reports.plots import CaseView

#: Case groups: key -> heading. "best" are the abnormal images best localised (highest Dice); "missed" the
#: abnormal images worst localised (lowest Dice); "false_alarms" the normal images scored highest.
CASE_GROUPS = {
    "best": "Best: abnormal images with the highest Dice above 0 (pixel quality at the threshold)",
    "missed": "Worst: abnormal images with the lowest Dice (missed or poorly localised lesions)",
    "false_alarms": "Worst: normal images with the highest image scores (false alarms)",
}

PredictionsArg: TypeAlias = str | Path | Sequence[str | Path] | Mapping[Any, str | Path] | None
ManifestArg: TypeAlias = pd.DataFrame | str | Path | Mapping[str, pd.DataFrame | str | Path] | None


def select_cases(per_image: pd.DataFrame, model: str, dataset: str, k: int) -> dict[str, pd.DataFrame]:
    """Pick up to ``k`` cases per group for one model and dataset.

    Args:
        per_image: the evaluation's per-image table.
        model: model name.
        dataset: dataset name.
        k: cases per group.

    Returns:
        Group key (see :data:`CASE_GROUPS`) -> rows in display order (best: Dice descending, missed: Dice
        ascending, equal Dice broken by image score the same way; false alarms: image score descending).
        An abnormal image with Dice 0 (the prediction misses the lesion) is never among the best, only among
        the missed. Abnormal images without a Dice (no mask and no predicted pixel) are not ranked among those
        with one;
        when no abnormal image has a Dice, abnormal images are ranked by image score instead. An image appears in
        at most one abnormal group.
    """
    part = per_image[
        (per_image["model"] == model) & (per_image["dataset"] == dataset) & per_image["image_score"].notna()
    ]
    abnormal = part[(part["label"] == 1).fillna(False)]
    normal = part[(part["label"] == 0).fillna(False)]
    key = "dice" if "dice" in abnormal and abnormal["dice"].notna().any() else "image_score"
    abnormal = abnormal[abnormal[key].notna()]
    order = [key, "image_score", "index"] if key == "dice" else [key, "index"]  # equal Dice: image score decides
    localised = abnormal[abnormal["dice"] > 0] if key == "dice" else abnormal  # Dice 0 found nothing: never "best"
    best = localised.sort_values(order, ascending=[False] * (len(order) - 1) + [True], kind="stable").head(k)
    rest = abnormal[~abnormal["index"].isin(best["index"])]
    missed = rest.sort_values(order, ascending=True, kind="stable").head(k)
    alarms = normal.sort_values(["image_score", "index"], ascending=[False, True], kind="stable").head(k)
    return {"best": best, "missed": missed, "false_alarms": alarms}


def _model_name(meta: Mapping[str, Any], folder: Path) -> str:
    """The model name a predictions folder's ``meta.json`` records (``model``, ``card`` or ``model_card``: a name
    or a card with one), else the folder's own name."""
    for key in ("model", "card", "model_card"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            return value["name"]
    return folder.resolve().name


def has_random_weights(meta: Any) -> bool:
    """True if any ``random_weights`` key in a (nested) meta/card mapping is true."""
    if isinstance(meta, Mapping):
        if meta.get("random_weights") is True:
            return True
        return any(has_random_weights(v) for v in meta.values())
    if isinstance(meta, (list, tuple)):
        return any(has_random_weights(v) for v in meta)
    return False


@dataclass
class PredictionSource:
    """A predictions folder, the model it belongs to and, optionally, the only dataset it covers."""

    model: str
    dataset: str | None
    reader: PredictionReader

    @property
    def random_weights(self) -> bool:
        """Whether the folder's ``meta.json`` says the model ran with random weights."""
        return predictions_random_weights(self.reader.meta)


def resolve_predictions(predictions: PredictionsArg, models: Sequence[str]) -> list[PredictionSource]:
    """Open prediction folders given as a path, a list of paths, or a mapping.

    Mapping keys are a model name or a ``(model, dataset)`` tuple. Unkeyed folders take their model from
    ``meta.json`` (``model`` or ``card.name``), or, when the evaluation has a single model, that model.
    """
    if predictions is None:
        return []
    if isinstance(predictions, (str, Path)):
        predictions = [predictions]
    sources: list[PredictionSource] = []
    if isinstance(predictions, Mapping):
        for key, folder in predictions.items():
            model, dataset = key if isinstance(key, tuple) else (key, None)
            sources.append(PredictionSource(str(model), dataset, PredictionReader(folder)))
        return sources
    for folder in predictions:
        reader = PredictionReader(folder)
        meta = reader.meta
        model = models[0] if len(models) == 1 else _model_name(meta, Path(folder))
        dataset = meta.get("dataset") if isinstance(meta.get("dataset"), str) else None
        sources.append(PredictionSource(model, dataset, reader))
    return sources


def named_predictions(values: Sequence[str]) -> dict[str, Path]:
    """Name predictions folders given as ``[MODEL=]DIR`` (``medad eval``'s arguments), for ``evaluate``.

    An unnamed folder takes the model name recorded in its ``meta.json`` (its folder's name when none is).

    Raises:
        ConfigError: two folders get the same model name.
    """
    folders: dict[str, Path] = {}
    for item in values:
        name, _, folder = item.rpartition("=")
        path = Path(folder)
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        folders[name or _model_name(meta, path)] = path
    if len(folders) != len(values):
        raise ConfigError("two predictions folders got the same model name; name them MODEL=DIR")
    return folders


def parse_keyed_paths(values: Sequence[str], option: str) -> list[Path] | dict[str, Path] | None:
    """Parse repeated command-line values ``PATH`` or ``NAME=PATH`` into a list or a name -> path mapping.

    Raises:
        ConfigError: some values are keyed and others are not.
    """
    if not values:
        return None
    split = [v.split("=", 1) if "=" in v and "/" not in v.split("=", 1)[0] else [v] for v in values]
    if all(len(parts) == 2 for parts in split):
        return {name: Path(path) for name, path in split}
    if any(len(parts) == 2 for parts in split):
        raise ConfigError(f"{option}: give every value as NAME=PATH or every value as PATH, not a mix")
    return [Path(parts[0]) for parts in split]


def _read_manifest_file(path: Path) -> pd.DataFrame:
    """Read a manifest file; the shareable ``predictions/manifest.csv`` (image paths blanked) is replaced by the
    private manifest with paths saved beside its predictions folder."""
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; pass a manifest .csv or .json file")
    frame = _read_manifest_table(path)
    if "image_path" in frame.columns and not (frame["image_path"].astype(str).str.strip() != "").any():
        private = find_private_manifest(path.parent)
        if private is None:
            raise DataError(
                f"manifest {path} is the shareable copy (its image paths are blanked), so no image can be drawn; "
                "pass the private manifest saved by `medad score` (OUT/private/predictions.manifest.csv), or leave "
                "--manifest out to let medad report find it"
            )
        frame = _read_manifest_table(private)
    return frame


def _read_manifest_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif path.suffix.lower() == ".json":
        frame = pd.read_json(path, orient="records", dtype=False)
    else:
        raise DataError(f"manifest {path} must be a .csv or .json (records) file")
    for column in ("label", "frame", "slice_axis"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype("Int64")
    return frame.reset_index(drop=True)


def _only_dataset(frame: pd.DataFrame) -> str | None:
    """The one dataset a manifest covers (its ``dataset`` column), else ``None``."""
    names = set(frame["dataset"].astype(str)) if "dataset" in frame.columns else set()
    return names.pop() if len(names) == 1 else None


def resolve_manifests(manifest: ManifestArg) -> dict[str | None, pd.DataFrame]:
    """Normalise the manifest argument to ``dataset -> DataFrame`` (key ``None``: any dataset).

    Unkeyed files (``--manifest FILE``, repeated or not) are keyed by the one dataset each covers; a single one
    covering several datasets is used for all.

    Raises:
        ConfigError: several unkeyed manifests that cannot be told apart by their dataset.
    """
    if manifest is None:
        return {}
    if isinstance(manifest, Mapping):
        return {k: v if isinstance(v, pd.DataFrame) else _read_manifest_file(Path(v)) for k, v in manifest.items()}
    given = manifest if isinstance(manifest, (list, tuple)) else [manifest]
    frames = [m if isinstance(m, pd.DataFrame) else _read_manifest_file(Path(m)) for m in given]
    if len(frames) == 1:
        return {None: frames[0]}
    keys = [_only_dataset(frame) for frame in frames]
    if None in keys or len(set(keys)) != len(keys):
        raise ConfigError("--manifest: several manifests given without names; give each as DATASET=FILE")
    return dict(zip(keys, frames, strict=True))


def private_manifests(sources: Sequence[PredictionSource]) -> dict[str | None, pd.DataFrame]:
    """The manifests with source paths that ``medad score`` saved beside each predictions folder (the private
    copy whose content hash matches the folder's), keyed by the dataset they cover; empty when none is found."""
    found: dict[str | None, pd.DataFrame] = {}
    for source in sources:
        path = find_private_manifest(source.reader.folder)
        if path is not None:
            frame = _read_manifest_table(path)
            found.setdefault(source.dataset or _only_dataset(frame), frame)
    return found


def _readers() -> tuple[Callable[[pd.Series], np.ndarray], Callable[[pd.Series], np.ndarray]] | None:
    """``(read_image, read_mask)`` from :mod:`medad.data`, imported on first use; ``None`` if unavailable."""
    try:
        data = importlib.import_module("medad.data")
    except ImportError:
        return None
    read_image, read_mask = getattr(data, "read_image", None), getattr(data, "read_mask", None)
    return (read_image, read_mask) if callable(read_image) and callable(read_mask) else None


class CaseLoader:
    """Builds :class:`CaseView` objects for selected cases from predictions folders and manifests."""

    def __init__(self, sources: Sequence[PredictionSource], manifests: Mapping[str | None, pd.DataFrame]) -> None:
        self.sources = list(sources)
        self.manifests = dict(manifests)
        self.readers = _readers()

    def _source(self, model: str, dataset: str) -> PredictionSource | None:
        exact = [s for s in self.sources if s.model == model and s.dataset == dataset]
        loose = [s for s in self.sources if s.model == model and s.dataset is None]
        return next(iter(exact or loose), None)

    def _manifest(self, dataset: str) -> pd.DataFrame | None:
        if dataset in self.manifests:
            return self.manifests[dataset]
        return self.manifests.get(None)

    def unavailable_reason(self, model: str, dataset: str) -> str | None:
        """Why heatmaps cannot be drawn for this model and dataset, or ``None`` if they can."""
        if self.readers is None:
            return "medad.data.read_image/read_mask are not available in this installation"
        if self._source(model, dataset) is None:
            return (
                "no predictions folder was given for this model and the evaluation recorded none (pass "
                "--predictions MODEL=OUT/predictions, the folder `medad eval` was given)"
            )
        if self._manifest(dataset) is None:
            return (
                "no manifest with image paths was given or found beside the predictions for this dataset (pass "
                "--manifest [DATASET=]OUT/private/predictions.manifest.csv, saved by `medad score`)"
            )
        return None

    def check(self, per_image: pd.DataFrame) -> None:
        """Check that each given manifest is the one evaluated: every evaluated index exists with its case id.

        Raises:
            DataError: an index is out of range or a ``case_id`` differs from ``per_image.csv``.
        """
        for dataset, part in per_image.groupby("dataset", sort=True):
            manifest = self._manifest(str(dataset))
            if manifest is None or part.empty:
                continue
            indices = part["index"].to_numpy()
            if indices.min() < 0 or indices.max() >= len(manifest):
                raise DataError(
                    f"manifest for dataset {dataset!r} has {len(manifest)} rows but the evaluation refers to index "
                    f"{int(indices.max())}; pass the evaluated manifest"
                )
            if "case_id" not in manifest.columns:
                continue
            expected = manifest["case_id"].astype(str).to_numpy()[indices]
            wrong = np.flatnonzero(expected != part["case_id"].astype(str).to_numpy())
            if wrong.size:
                first = part.iloc[int(wrong[0])]
                raise DataError(
                    f"manifest row {int(first['index'])} of dataset {dataset!r} is case {expected[wrong[0]]} but the "
                    f"evaluation has {first['case_id']} ({wrong.size} rows differ); pass the evaluated manifest"
                )

    def load(self, model: str, dataset: str, rows: pd.DataFrame, caption: Callable[[pd.Series], str]) -> list[CaseView]:
        """Load image, heatmap and mask of each selected row (manifest index = ``row['index']``).

        Call :meth:`check` first: rows are taken from the manifest by position.

        Raises:
            DataError: the predictions folder has no map for a selected index.
        """
        source, manifest = self._source(model, dataset), self._manifest(dataset)
        if self.readers is None or source is None or manifest is None:
            return []
        read_image, read_mask = self.readers
        views = []
        for _, row in rows.iterrows():
            index = int(row["index"])
            entry = manifest.iloc[index]
            try:
                heatmap = source.reader.get_map(index)
            except KeyError as exc:
                raise DataError(
                    f"predictions of model {model!r} have no map for index {index} of dataset {dataset!r}; pass the "
                    f"predictions folder that was evaluated"
                ) from exc
            image = np.asarray(read_image(entry), dtype=np.float32)
            mask = np.asarray(read_mask(entry), dtype=bool)
            views.append(CaseView(caption(row), image, heatmap, mask))
        return views
