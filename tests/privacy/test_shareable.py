"""The pieces behind the private/ folder: manifests saved twice, the resolved protocol and provenance redacted."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medad.data import manifest_from_paths
from medad.engine.predictions import PredictionWriter, find_private_manifest, save_manifests
from medad.engine.scorer import predictions_meta
from medad.export.manifest import find_run_manifest, manifest_for_run
from medad.protocols.provenance import shareable
from medad.protocols.yamlio import shareable_protocol


class _Card:
    def card(self) -> dict:
        return {"name": "m", "random_weights": True}


def _predictions(folder, manifest) -> None:
    meta = predictions_meta(_Card(), manifest, "clean")
    with PredictionWriter(folder, meta=meta) as writer:
        writer.add(list(range(len(manifest))), [0.5] * len(manifest), [np.zeros((4, 4))] * len(manifest))
    save_manifests(folder, manifest)


def test_side_by_side_predictions_keep_their_own_private_manifest(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "src" / f"DOE_{name}").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "src" / f"DOE_{name}" / f"JANE_{name}.png")
    manifests = {n: manifest_from_paths([str(tmp_path / "src" / f"DOE_{n}")]) for n in ("a", "b")}
    for name, manifest in manifests.items():
        _predictions(tmp_path / "out" / f"pred_{name}", manifest)
    for name, manifest in manifests.items():
        folder = tmp_path / "out" / f"pred_{name}"
        shared = (folder / "manifest.csv").read_text()
        assert "DOE" not in shared and "JANE" not in shared and manifest["case_id"][0] in shared
        private = find_private_manifest(folder)
        assert private == tmp_path / "out" / "private" / f"pred_{name}.manifest.csv"
        assert find_run_manifest(folder) == private
        assert manifest_for_run(folder)["image_path"].tolist() == manifest["image_path"].tolist()
    # a private manifest of other images is never taken for this folder
    other = tmp_path / "out" / "private" / "pred_a.manifest.csv"
    other.write_text((tmp_path / "out" / "private" / "pred_b.manifest.csv").read_text())
    assert find_private_manifest(tmp_path / "out" / "pred_a") is None


def test_shareable_protocol_and_provenance_show_placeholders_only():
    resolved = {
        "name": "study",
        "output": "/home/doe/runs",
        "targets": [{"name": "isic", "root": "/data/DOE^JANE/isic", "options": {"jsonl": "/data/DOE/x.jsonl"}}],
        "training": {"datasets": [{"name": "mvtec", "root": "/data/mvtec", "options": {}}]},
        "models": [
            {
                "name": "ad",
                "checkpoint": "/home/doe/ckpt",
                "weights": {"backbone": {"id": "hub/x", "file": "/w/DOE.pth", "sha256": "ab"}, "text": None},
            }
        ],
        "executor": {"folder": "/home/doe/slurm"},
    }
    text = repr(shareable_protocol(resolved))
    assert "/" not in text.replace("hub/x", "") and "DOE" not in text and "doe" not in text
    assert "<root of isic>" in text and "<output folder>" in text and "<checkpoint of ad>" in text
    assert resolved["targets"][0]["root"] == "/data/DOE^JANE/isic"  # the private copy is untouched
    record = {
        "protocol": {"name": "study", "file": "/home/DOE/study.yaml", "overrides": ["targets.0.root=/d/DOE"]},
        "command": ["medad", "run", "/home/DOE/study.yaml", "--out", "/home/DOE/runs"],
        "data": {"isic": {"root": "/data/DOE^JANE/isic", "n_images": 3}},
        "weights": {"ad": {"protocol": resolved["models"][0]["weights"], "card": {"name": "ad"}}},
    }
    redacted = shareable(record)
    assert "DOE" not in repr(redacted) and redacted["protocol"]["file"] == "study.yaml"
    assert redacted["command"] == ["medad", "run", "<path>", "--out", "<path>"]
    assert redacted["data"]["isic"] == {"root": "<root of isic>", "n_images": 3}
