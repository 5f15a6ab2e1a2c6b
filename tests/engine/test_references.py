"""Few-shot references: reproducible draws, and the refusals of references that would mislead."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medad.engine.references import (
    ReferenceSet,
    check_references,
    describe_record,
    draw_references,
    reference_manifest,
)
from medad.errors import ConfigError, DataError


def write_pngs(folder: Path, n: int, *, grey: bool = False, seed: int = 0, size: int = 40) -> Path:
    """``n`` random PNGs (colour or greyscale) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        shape = (size, size) if grey else (size, size, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"ref_{k}.png")
    return folder


def _pool(folder: Path) -> pd.DataFrame:
    from medad.data import manifest_from_paths

    return manifest_from_paths([str(folder)])


def test_same_seed_and_draw_give_the_same_rows_anywhere_and_draws_differ(tmp_path):
    a = _pool(write_pngs(tmp_path / "a" / "normals", 12))
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")  # another machine: another root
    b = _pool(tmp_path / "elsewhere" / "b" / "normals").iloc[::-1].reset_index(drop=True)  # and another row order

    def names(refs: ReferenceSet) -> list[str]:
        return sorted(Path(p).name for p in refs.manifest["image_path"])

    first = draw_references(a, 3, seed=7, draw=0, source="a")
    assert names(first) == names(draw_references(b, 3, seed=7, draw=0, source="b"))
    draws = {tuple(names(draw_references(a, 3, seed=7, draw=d, source="a"))) for d in range(4)}
    assert len(draws) > 1
    # a larger shot count keeps the smaller draw's images
    assert set(names(first)) <= set(names(draw_references(a, 5, seed=7, draw=0, source="a")))
    assert first.record()["case_ids"] == first.manifest["case_id"].tolist()
    assert "/" not in str(first.record())


def test_abnormal_rows_and_too_few_images_are_refused_naming_the_source(tmp_path):
    pool = _pool(write_pngs(tmp_path / "normals", 3))
    with pytest.raises(DataError, match=r"pool NORMALS holds 3 image\(s\), fewer than --shots 4; lower --shots"):
        draw_references(pool, 4, seed=0, source="NORMALS")
    labelled = pool.assign(label=pd.array([0, 1, 0], dtype="Int64"))
    with pytest.raises(DataError, match=r"NORMALS holds 1 image\(s\) labelled abnormal \(e.g. .*ref_1.png\)"):
        draw_references(labelled, 1, seed=0, source="NORMALS")
    with pytest.raises(ConfigError, match="--shots 0 must be >= 1"):
        draw_references(pool, 0, seed=0, source="NORMALS")
    with pytest.raises(ConfigError, match="--fewshot-weight"):
        draw_references(pool, 1, seed=0, source="NORMALS", weight=1.5)


def test_a_labelled_layouts_abnormal_split_is_refused(tmp_path):
    root = tmp_path / "mvtec"
    good = write_pngs(root / "bottle" / "train" / "good", 2)
    bad = write_pngs(root / "bottle" / "test" / "broken", 1)
    masks = root / "bottle" / "ground_truth" / "broken"
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(masks / "ref_0_mask.png")
    write_pngs(root / "bottle" / "test" / "good", 1)
    pool = reference_manifest([root])
    assert (pool["label"] == 1).any()
    with pytest.raises(DataError, match=r"labelled abnormal .*broken/ref_0.png"):
        draw_references(pool, 1, seed=0, source=str(root))
    assert len(reference_manifest([good])) == 2
    assert bad.is_dir()


def test_a_reference_that_is_also_a_target_is_refused_by_path_and_by_content(tmp_path):
    refs = draw_references(_pool(write_pngs(tmp_path / "refs", 2)), 2, seed=0, source="refs")
    targets = _pool(tmp_path / "refs")
    with pytest.raises(DataError, match=r"reference .*ref_\d.png is also among the targets"):
        check_references(refs, targets)
    copy = tmp_path / "targets"
    copy.mkdir()
    shutil.copy(tmp_path / "refs" / "ref_1.png", copy / "renamed.png")
    write_pngs(tmp_path / "other", 1, seed=5)
    shutil.copy(tmp_path / "other" / "ref_0.png", copy / "fine.png")
    with pytest.raises(DataError, match=r"ref_1.png is also among the targets .* remove it"):
        check_references(refs, _pool(copy))
    (copy / "renamed.png").unlink()
    check_references(refs, _pool(copy))  # a distinct target passes


def test_references_of_another_channel_count_are_refused_another_size_is_not(tmp_path):
    refs = draw_references(_pool(write_pngs(tmp_path / "refs", 2, size=32)), 2, seed=0, source="refs")
    check_references(refs, _pool(write_pngs(tmp_path / "big", 1, seed=3, size=48)))
    grey = _pool(write_pngs(tmp_path / "grey", 1, grey=True, seed=4))
    with pytest.raises(
        DataError, match=r"refs/ref_\d.png is image, colour but the targets are image, grey"
    ):
        check_references(refs, grey)
    mixed = pd.concat([refs.manifest, grey], ignore_index=True)
    with pytest.raises(DataError, match=r"grey/ref_0.png is image, greyscale but the targets are image, colour"):
        check_references(ReferenceSet(mixed, 3, 0, 0), _pool(tmp_path / "big"))


def test_targets_that_mix_greyscale_and_colour_take_references_of_either(tmp_path):
    """Public downloads (Kaggle's BrainMRI, HeadCT) hold greyscale and RGB copies of one kind of image: the reader
    makes the same RGB input of both, so such a target set takes references of either kind."""
    grey_refs = draw_references(_pool(write_pngs(tmp_path / "grey", 2, grey=True)), 2, seed=0, source="grey")
    mixed = pd.concat(
        [_pool(write_pngs(tmp_path / "rgb", 2, seed=5)), _pool(write_pngs(tmp_path / "g2", 1, grey=True, seed=6))],
        ignore_index=True,
    )
    check_references(grey_refs, mixed)
    with pytest.raises(DataError, match="greyscale but the targets are image, colour"):
        check_references(grey_refs, _pool(tmp_path / "rgb"))


def test_describe_record_names_a_zero_shot_run():
    assert describe_record(None) == "none (zero-shot)"
    record = {"shots": 2, "seed": 0, "draw": 1, "weight": 0.5, "radii": [1], "case_ids": ["case-a", "case-b"]}
    assert describe_record(record).startswith("2-shot draw 1 of seed 0")


def test_references_of_another_source_format_are_refused_and_named_by_case_id(tmp_path):
    import nibabel as nib

    volume = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "patient_smith.nii.gz"))
    refs = draw_references(_pool(tmp_path / "patient_smith.nii.gz"), 2, seed=0, source="volume")
    grey = _pool(write_pngs(tmp_path / "grey", 1, grey=True))
    said = r"reference nifti image of case case-[0-9a-f]+ is nifti, greyscale but the targets are image"
    with pytest.raises(DataError, match=said) as err:
        check_references(refs, grey)
    assert "smith" not in str(err.value)


def test_a_hand_built_reference_set_is_held_to_the_draws_rules(tmp_path):
    pool = _pool(write_pngs(tmp_path / "refs", 2))
    targets = _pool(write_pngs(tmp_path / "targets", 1, seed=8))
    with pytest.raises(DataError, match=r"holds 2 image\(s\) for 3 shots"):
        check_references(ReferenceSet(pool, 3, 0, 0), targets)
    with pytest.raises(DataError, match=r"holds 0 image\(s\) for 0 shots"):
        check_references(ReferenceSet(pool.iloc[:0], 0, 0, 0), targets)
    abnormal = pool.assign(label=pd.array([1, 0], dtype="Int64"))
    with pytest.raises(DataError, match=r"the reference set holds 1 image\(s\) labelled abnormal"):
        check_references(ReferenceSet(abnormal, 2, 0, 0), targets)
