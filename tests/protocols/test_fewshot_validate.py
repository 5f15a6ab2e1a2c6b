"""``targets[i].references`` validated before any work: one line naming the key and the fix, exit 2; protocols
without references keep their resolved form."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medad.cli import main
from medad.data import write_layout

BASE = """\
name: fewshot
models:
  - {name: winclip, model: winclip_tiny}
targets:
  - name: brain
    kind: bmad_brainmri
    root: data/brain
    options: {split: test}
    references: REFS
"""


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    path = tmp_path / "fewshot.yaml"
    path.write_text(text, encoding="utf-8")
    old, sys.argv = sys.argv, ["medad", "validate", str(path), *extra]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ("{from: {split: train}, shots: [0, 2]}", "references.shots[0]"),
        ("{from: {split: train}, shots: [1], draws: 0}", "references.draws"),
        ("{from: {split: train, target_normals: true}, shots: [1]}", "give exactly one of split, folder"),
        ("{from: {split: train}, shots: [1], drawz: 2}", "unknown key 'drawz'"),
        ("{from: {split: train}, shots: [2, 2]}", "repeat a count"),
        ("{from: {split: train}, shots: [1], weight: 1.5}", "references.weight"),
    ],
)
def test_bad_references_are_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refs: str, expected: str
) -> None:
    code, err = _validate(tmp_path, BASE.replace("REFS", refs), capsys, "--structure-only")
    assert code == 2 and expected in err and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_references_on_training_data_and_models_that_need_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace("REFS", "{from: {split: train}, shots: [1]}").replace(
        "targets:\n", "targets:\n  - {name: other, kind: isic, root: data/isic}\n"
    )
    text = text.replace("  - {name: winclip, model: winclip_tiny}", "  - {name: dino, model: anomalydino_tiny}")
    code, err = _validate(tmp_path, text, capsys, "--structure-only")
    assert code == 2 and "scores only with references" in err and "other" in err
    weighted = BASE.replace("REFS", "{from: {split: train}, shots: [1], weight: 0.5}").replace(
        "  - {name: winclip, model: winclip_tiny}", "  - {name: dino, model: anomalydino_tiny}"
    )
    code, err = _validate(tmp_path, weighted, capsys, "--structure-only")
    assert code == 2 and "targets[0].references.weight" in err and "no zero-shot map" in err
    training = BASE.replace("REFS", "{from: {split: train}, shots: [1]}").replace(
        "  - {name: winclip, model: winclip_tiny}",
        "  - {name: clean, model: ad_dinov3_tiny}\ntraining:\n  epochs: 1\n  lr: 1.0e-3\n  datasets:\n"
        "    - {name: aux, kind: mvtec, root: data/aux, references: {from: {split: train}, shots: [1]}}",
    )
    code, err = _validate(tmp_path, training, capsys, "--structure-only")
    assert code == 2 and "training.datasets[0].references" in err and "targets only" in err


def test_pool_smaller_than_the_shots_is_listed_where_data_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_layout(tmp_path / "data" / "brain", "bmad-brainmri", n_normal=2, n_abnormal=2, size=32)
    code, err = _validate(tmp_path, BASE.replace("REFS", "{from: {split: train}, shots: [1, 4]}"), capsys)
    assert code == 2 and "targets[0].references" in err and "fewer than the 4 shots" in err
    code, err = _validate(tmp_path, BASE.replace("REFS", "{from: {split: train}, shots: [1, 2]}"), capsys)
    assert code == 0, err
    leaking = BASE.replace("REFS", "{from: {folder: data/brain/Brain/test/good/img}, shots: [1]}")
    code, err = _validate(tmp_path, leaking, capsys)
    assert code == 2 and "is also among the targets" in err  # a reference folder holding target images
    missing = BASE.replace("REFS", "{from: {folder: normals}, shots: [1]}")
    code, err = _validate(tmp_path, missing, capsys)
    assert code == 2 and "targets[0].references.from.folder" in err and "reference folder" in err


def test_protocols_without_references_dump_no_references_key() -> None:
    from medad.protocols.schema import DatasetSpec

    plain = DatasetSpec.model_validate({"name": "a", "kind": "isic", "root": "/x"}).model_dump(mode="json")
    assert "references" not in plain
    refs = {"from": {"split": "train"}, "shots": [1]}
    given = DatasetSpec.model_validate({"name": "a", "kind": "isic", "root": "/x", "references": refs})
    assert given.model_dump(mode="json")["references"]["from"]["split"] == "train"
