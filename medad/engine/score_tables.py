"""The one writer of ``medad score``'s tables and heatmaps: ``scores.csv``, ``scores.json``, ``heatmaps/*.png``.

Every row is named by the pseudonymous ``case_id`` (plus ``_fNNNN`` for a frame or slice of a multi-frame case),
never by a source path or file name. Heatmaps are 8-bit greyscale PNGs at the native image size, 0-255 for scores
0-1 (the 16-bit heatmaps with a recorded range that ``medad export`` writes are another artefact:
:func:`medad.export.png.write_heatmap_png`). Under torchrun only rank 0 writes; the other ranks read the table
back with :func:`read_score_table`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medad.engine.predictions import PredictionReader, predictions_random_weights
from medad.errors import DataError
from medad.utils.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from medad.utils.marks import RANDOM_WEIGHTS_MARK, mark_random_weights

SCORE_COLUMNS = ("index", "case_id", "frame", "image_score", "max_pixel_score", "heatmap", "random_weights")
"""The columns of ``scores.csv``, in order."""


def output_names(manifest: pd.DataFrame) -> list[str]:
    """File stems for per-image outputs: the ``case_id``, plus ``_fNNNN`` when one case has several frames/slices."""
    counts = manifest["case_id"].value_counts()
    names = []
    for case, frame in zip(manifest["case_id"], manifest["frame"], strict=True):
        if counts[case] > 1 and not pd.isna(frame):
            names.append(f"{case}_f{int(frame):04d}")
        else:
            names.append(str(case))
    if len(set(names)) != len(names):
        raise DataError("two inputs share a case_id; give each file once")
    return names


def heatmap_png(pixel_map: np.ndarray, random_weights: bool = False) -> bytes:
    """Encode a [0,1] score map as an 8-bit greyscale PNG (values clipped); a random-weights model's map gets
    the visible :func:`~medad.utils.marks.mark_random_weights` and a ``Warning`` text chunk."""
    from PIL import Image, PngImagePlugin

    grey = np.round(np.clip(pixel_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    if random_weights:
        grey = mark_random_weights(grey)
        info.add_text("Warning", f"{RANDOM_WEIGHTS_MARK}: the model ran with random weights; this map means nothing")
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_score_tables(
    out_dir: str | Path, manifest: pd.DataFrame, reader: PredictionReader, heatmaps: bool = True
) -> pd.DataFrame:
    """Write ``scores.csv``, ``scores.json``, ``meta.json`` and (``heatmaps``) ``heatmaps/<name>.png`` into
    ``out_dir`` from a finished predictions folder over ``manifest``.

    Returns:
        The scores table (:data:`SCORE_COLUMNS`; ``attrs["skipped"]`` lists the images that could not be read).
    """
    out = Path(out_dir)
    names = output_names(manifest)
    rows: list[dict[str, Any]] = []
    image_score = dict(zip(reader.indices.tolist(), reader.image_scores.tolist(), strict=True))
    for index, pixel_map in reader.iter_maps() if len(reader) else []:
        row = manifest.iloc[index]
        rows.append(
            {
                "index": index,
                "case_id": str(row["case_id"]),
                "frame": None if pd.isna(row["frame"]) else int(row["frame"]),
                "image_score": float(image_score[index]),
                "max_pixel_score": float(pixel_map.max()),
                "heatmap": f"heatmaps/{names[index]}.png" if heatmaps else "",
                "random_weights": predictions_random_weights(reader.meta),
            }
        )
        if heatmaps:
            png = heatmap_png(pixel_map, rows[-1]["random_weights"])
            write_bytes_atomic(out / "heatmaps" / f"{names[index]}.png", png)
    table = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    table["frame"] = table["frame"].astype("Int64")
    table.attrs["skipped"] = reader.skipped
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    write_text_atomic(out / "scores.csv", buffer.getvalue())
    write_json_atomic(out / "scores.json", {"images": rows, "skipped": table.attrs["skipped"]})
    write_json_atomic(out / "meta.json", reader.meta)
    return table


def read_score_table(out_dir: str | Path) -> pd.DataFrame:
    """Read back a ``scores.csv`` written by :func:`write_score_tables` (case ids as text; ``attrs["skipped"]``
    from ``scores.json``)."""
    import json

    table = pd.read_csv(Path(out_dir) / "scores.csv", dtype={"case_id": str}, keep_default_na=False)
    table.attrs["skipped"] = json.loads((Path(out_dir) / "scores.json").read_text(encoding="utf-8"))["skipped"]
    return table
