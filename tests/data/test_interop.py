"""meta.json and AA-CLIP jsonl: reading, writing, round trips; per-file sha256; `medad datasets export`."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medad.cli import app, main
from medad.data import (
    add_sha256,
    check_dataset,
    detect_kind,
    load_all_splits,
    load_manifest,
    manifest_from_paths,
    write_jsonl,
    write_layout,
    write_meta_json,
)
from medad.data.jsonl import make_jsonl
from medad.data.metajson import read_meta_json
from medad.errors import DataError

runner = CliRunner()
SAME = ["image_path", "mask_path", "label", "class_name", "defect_type"]


def _key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[*SAME, "split"]].sort_values("image_path").reset_index(drop=True)


# layout -> (kind, splits the layout holds)
ROUND_TRIP = {"mvtec": ("mvtec", ["train", "test"]), "kvasir": ("kvasir", ["test"]), "visa": ("visa", ["test"])}


@pytest.mark.parametrize("layout", sorted(ROUND_TRIP))
def test_meta_json_and_jsonl_round_trip(tmp_path: Path, layout: str) -> None:
    kind, splits = ROUND_TRIP[layout]
    root = write_layout(tmp_path / layout, layout, n_normal=2, n_abnormal=2, size=32)
    manifest = load_all_splits(root, kind)
    assert sorted(set(manifest["split"])) == sorted(splits)

    meta = write_meta_json(manifest, root / "meta.json", root=root)
    data = json.loads(meta.read_text())
    assert {"train", "test"} <= set(data)
    items = [item for split in data.values() for group in split.values() for item in group]
    assert len(items) == len(manifest) and not any(item["img_path"].startswith("/") for item in items)
    assert {tuple(sorted(item)) for item in items} == {("anomaly", "cls_name", "img_path", "mask_path", "specie_name")}
    back = pd.concat([read_meta_json(root, dataset=kind, split=s) for s in splits], ignore_index=True)
    assert _key(back).equals(_key(manifest))

    lines = write_jsonl(manifest, tmp_path / "out" / "all.jsonl", root=root)
    first = json.loads(lines.read_text().splitlines()[0])
    assert list(first)[:4] == ["image_path", "label", "class_name", "mask_path"]
    assert _key(make_jsonl(lines, split=None, root=root)).equals(_key(manifest))
    test_only = make_jsonl(lines, split="test", root=root)
    assert _key(test_only).equals(_key(manifest[manifest["split"] == "test"]))


def test_any_meta_json_reads_as_kind_meta_json(tmp_path: Path) -> None:
    """A meta.json of a set without a native reader is detected as ``meta_json``; VisA's stays ``visa``."""
    root = write_layout(tmp_path / "kvasir", "kvasir", n_normal=0, n_abnormal=3, size=32)
    manifest = load_manifest(root, "kvasir")
    shared = tmp_path / "shared"
    write_meta_json(manifest, shared / "meta.json", root=shared)
    assert detect_kind(shared) == "meta_json"
    back = load_manifest(shared, dataset="polyps")
    assert set(back["dataset"]) == {"polyps"} and set(back["variant"]) == {"meta-json"}
    assert _key(back).equals(_key(manifest))
    visa = write_layout(tmp_path / "visa", "visa", n_normal=1, n_abnormal=1, size=32)
    visa_meta = tmp_path / "visa-meta"
    write_meta_json(load_manifest(visa, "visa"), visa_meta / "meta.json", root=visa_meta)
    assert detect_kind(visa_meta) == "visa"


def test_paths_outside_root_are_absolute_and_read_back(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "tn3k", "tn3k", n_abnormal=2, size=32)
    manifest = load_manifest(root, "tn3k")
    meta = write_meta_json(manifest, tmp_path / "elsewhere" / "meta.json", root=tmp_path / "elsewhere")
    item = json.loads(meta.read_text())["test"]["thyroid_nodule"][0]
    assert Path(item["img_path"]).is_absolute() and Path(item["mask_path"]).is_absolute()
    assert _key(read_meta_json(meta, dataset="tn3k")).equals(_key(manifest))  # a .json file is accepted too
    jsonl = write_jsonl(manifest, tmp_path / "abs.jsonl")
    assert all(Path(json.loads(line)["image_path"]).is_absolute() for line in jsonl.read_text().splitlines())
    assert _key(load_manifest(jsonl, "auto")).equals(_key(manifest))


def test_unknown_labels_and_frames_are_refused(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    unlabelled = manifest_from_paths([root / "bottle" / "test" / "good"])
    with pytest.raises(
        DataError, match=r"2 manifest row\(s\) have an unknown label \(<NA>\), e\.g\. case-.*meta\.json"
    ):
        write_meta_json(unlabelled, tmp_path / "meta.json")
    with pytest.raises(DataError, match=r"unknown label.*jsonl needs"):
        write_jsonl(unlabelled, tmp_path / "x.jsonl")
    assert not (tmp_path / "meta.json").exists() and not (tmp_path / "x.jsonl").exists()
    frames = load_manifest(root, "mvtec")
    frames.loc[0, "source_format"] = "dicom"
    with pytest.raises(DataError, match=r"1 manifest row\(s\) are DICOM frames or NIfTI slices"):
        write_meta_json(frames, tmp_path / "meta.json")


def test_aa_clip_lines_and_the_root_option(tmp_path: Path) -> None:
    data = write_layout(tmp_path / "data", "folder", n_normal=1, n_abnormal=1, size=32)
    lines = [
        {"image_path": "images/img000.png", "label": 1, "class_name": "Kvasir", "mask_path": "masks/img000.png"},
        {"image_path": "normals/normal000.png", "label": 0, "class_name": "Kvasir", "mask_path": ""},
        {"image_path": "normals/normal000.png", "label": True, "class_name": "Kvasir"},
    ]
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    (meta_dir / "full-shot.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert detect_kind(meta_dir) == "jsonl"
    manifest = load_manifest(meta_dir, "auto", root=data)  # root= reaches make_jsonl, not load_manifest
    assert manifest["label"].tolist() == [1, 0, 1] and set(manifest["split"]) == {"test"}
    assert manifest["defect_type"].tolist() == ["", "good", ""]
    assert manifest["mask_path"].tolist()[:2] == [str((data / "masks" / "img000.png").resolve()), ""]
    with pytest.raises(DataError, match=r"meta/images/img000\.png: \(line 1 of full-shot\.jsonl\) does not exist"):
        load_manifest(meta_dir, "jsonl")  # relative to the jsonl's folder by default: nothing there
    with pytest.raises(DataError, match=r"option\(s\) \['root'\] do not apply to dataset kind 'mvtec'"):
        load_manifest(data, "mvtec", root=data)
    (meta_dir / "5-shot.jsonl").write_text("")
    with pytest.raises(DataError, match=r"holds several \.jsonl files \['5-shot\.jsonl', 'full-shot\.jsonl'\]"):
        make_jsonl(meta_dir)


def test_broken_jsonl_lines_name_file_and_line(tmp_path: Path) -> None:
    data = write_layout(tmp_path / "data", "folder", n_normal=1, n_abnormal=1, size=32)
    good = {"image_path": "images/img000.png", "label": 1, "class_name": "x", "mask_path": "masks/img000.png"}
    text = [
        json.dumps(good),
        '{"image_path": "images/img000.png", "label": 1,',
        json.dumps({"image_path": "images/img000.png", "class_name": "x"}),
        json.dumps({**good, "label": 2}),
        json.dumps({**good, "image_path": "images/gone.png"}),
        json.dumps({**good, "mask_path": "masks/gone.png"}),
        "[1, 2]",
    ]
    path = data / "bad.jsonl"
    path.write_text("\n".join(text))
    with pytest.raises(DataError, match=r"6 problem\(s\)") as info:
        make_jsonl(path)
    message = str(info.value)
    assert f"{path}:2: is not valid JSON" in message
    assert f"{path}:3: lacks key(s) ['label']" in message
    assert f"{path}:4: has label 2; use 0 (normal) or 1 (anomalous)" in message
    assert "images/gone.png: (line 5 of bad.jsonl) does not exist" in message
    assert "masks/gone.png: (line 6 of bad.jsonl, mask) does not exist" in message
    assert f"{path}:7: is a JSON list, not an object" in message
    kept = make_jsonl(path, strict=False)
    assert len(kept) == 1 and len(kept.attrs["problems"]) == 6


def test_add_sha256_and_check(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    manifest = add_sha256(load_manifest(root, "mvtec"))
    for row in manifest.to_dict("records"):
        assert row["sha256"] == hashlib.sha256(Path(row["image_path"]).read_bytes()).hexdigest()
        expected = hashlib.sha256(Path(row["mask_path"]).read_bytes()).hexdigest() if row["mask_path"] else ""
        assert row["mask_sha256"] == expected
    assert (manifest["mask_sha256"] == "").sum() == (manifest["label"] == 0).sum()
    report = check_dataset(root, "mvtec", sha256=True)
    assert len(report["files"]) == len(manifest)
    assert {f["image_path"]: f["sha256"] for f in report["files"]} == dict(
        zip(manifest["image_path"], manifest["sha256"], strict=True)
    )
    assert "files" not in check_dataset(root, "mvtec")
    result = runner.invoke(app, ["datasets", "check", str(root), "--json", "--sha256"])
    assert result.exit_code == 0 and len(json.loads(result.output)["files"]) == len(manifest)
    text = runner.invoke(app, ["datasets", "check", str(root), "--sha256"]).output
    first = manifest.iloc[0]
    assert f"{first['sha256']}  {first['image_path']}" in text  # sha256sum format


def test_load_all_splits_skips_absent_splits_only(tmp_path: Path) -> None:
    kvasir = write_layout(tmp_path / "kv", "kvasir", n_abnormal=2, size=32)
    assert load_all_splits(kvasir)["split"].tolist() == ["test", "test"]
    mvtec = write_layout(tmp_path / "mv", "mvtec", size=32)
    (mvtec / "grid" / "train" / "good" / "000.png").rename(mvtec / "grid" / "train" / "good" / "000.txt")
    with pytest.raises(DataError, match=r"000\.txt: is not an image file"):
        load_all_splits(mvtec, "mvtec")


def test_cli_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_layout(tmp_path / "mv", "mvtec", size=32)
    out = root / "meta.json"
    args = ["datasets", "export", str(root), "--split", "all", "--format", "meta-json", "--out", str(out)]
    result = runner.invoke(app, [*args, "--sha256"])
    assert result.exit_code == 0, result.output
    assert "wrote 14 images (train 4, test 10) as meta-json" in result.output
    data = json.loads(out.read_text())
    item = data["test"]["bottle"][0]
    assert not item["img_path"].startswith("/") and len(item["sha256"]) == 64
    assert item["sha256"] == hashlib.sha256((root / item["img_path"]).read_bytes()).hexdigest()
    assert detect_kind(root) == "mvtec", "a meta.json in an MVTec root must not turn it into VisA"
    assert _key(read_meta_json(root, dataset="mvtec", split="train")).equals(
        _key(load_manifest(root, "mvtec", split="train"))
    )

    jsonl = tmp_path / "mv.jsonl"
    result = runner.invoke(
        app, ["datasets", "export", str(root), "--format", "jsonl", "--out", str(jsonl), "--absolute"]
    )
    assert result.exit_code == 0 and Path(json.loads(jsonl.read_text().splitlines()[0])["image_path"]).is_absolute()
    result = runner.invoke(app, ["datasets", "check", str(jsonl), "--data-root", str(root), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["total"] == 10

    def run(*cli: str) -> int:
        monkeypatch.setattr(sys, "argv", ["medad", *cli])
        with pytest.raises(SystemExit) as info:
            main()
        return int(info.value.code or 0)

    unlabelled = write_layout(tmp_path / "plain", "folder", size=32)
    for sub in ("masks", "normals"):
        for file in (unlabelled / sub).iterdir():
            file.unlink()
        (unlabelled / sub).rmdir()
    assert run("datasets", "export", str(unlabelled), "--kind", "folder", "--out", str(tmp_path / "u.json")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 manifest row(s) have an unknown label") and "Traceback" not in err
    assert not (tmp_path / "u.json").exists()
    assert run("datasets", "export", str(root), "--format", "xml", "--out", str(tmp_path / "x")) == 2
    assert "unknown export format 'xml'; use one of meta-json, jsonl" in capsys.readouterr().err
