"""Protocol validation: shipped protocols, missing resources, and one clear message per bad YAML (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medad.cli import main
from medad.errors import ConfigError
from medad.protocols.loading import load_protocol
from medad.protocols.overrides import apply_override
from medad.protocols.resolve import config_hash, resolve_protocol
from medad.protocols.yamlio import load_yaml_text

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "protocols").glob("*.yaml"))

BASE = """\
name: tiny
models:
  - name: clean
    model: ad_dinov3_tiny
training:
  datasets:
    - name: industrial
      kind: mvtec
      root: data/industrial
  epochs: 2
  lr: 1.0e-3
targets:
  - name: lesions
    kind: isic
    root: data/lesions
"""


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["medad", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("protocol", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_protocol_passes_structure_validation(protocol: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["validate", str(protocol), "--structure-only"], capsys)
    assert code == 0, err
    assert "valid" in out


def test_shipped_protocols_include_demo_paper_and_comparison() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"demo", "compare-clean-vs-reference"} <= names
    for compat in ("clean", "reference"):
        assert {f"paper-visa-to-mvtec-{compat}", f"paper-mvtec-to-all-{compat}"} <= names


def test_real_data_protocol_lists_every_missing_root_and_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDAD_DATA", str(tmp_path / "datasets"))
    monkeypatch.delenv("MEDAD_WEIGHTS", raising=False)
    (tmp_path / "datasets" / "VisA_20220922").mkdir(parents=True)
    code, _, err = cli(["validate", str(REPO / "protocols" / "paper-mvtec-to-all-clean.yaml")], capsys)
    assert code == 2
    assert "VisA_20220922" not in err  # that root exists
    for folder in ("mvtec_anomaly_detection", "BTech_Dataset_transformed", "MPDD", "ISIC2016", "CVC-ColonDB"):
        assert f"{tmp_path}/datasets/{folder} does not exist" in err
    assert err.count("docs/datasets.md") == 7
    assert "MEDAD_WEIGHTS" in err and "docs/models.md" in err
    assert "9 missing" in err


def test_valid_protocol_with_existing_roots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "industrial").mkdir(parents=True)
    (tmp_path / "data" / "lesions").mkdir(parents=True)
    code, out, err = cli(["validate", str(write(tmp_path, BASE))], capsys)
    assert code == 0, err
    assert "data roots and weights" in out


BAD = {
    "typo in a key": (
        BASE.replace("  epochs: 2", "  epoch: 2"),
        ":10:",
        ["unknown key 'epoch'", "did you mean 'epochs'"],
    ),
    "wrong type": (BASE.replace("  lr: 1.0e-3", "  lr: fast"), ":11:", ["training.lr", "'fast'"]),
    "missing required field": (BASE.replace("    kind: isic\n", ""), ":13:", ["targets[0]", "'kind'"]),
    "unknown dataset kind": (
        BASE.replace("kind: isic", "kind: isik"),
        ":14:",
        ["unknown dataset kind 'isik'", "'isic'"],
    ),
    "unknown model": (
        BASE.replace("model: ad_dinov3_tiny", "model: ad_dino_tiny"),
        ":4:",
        ["unknown model", "ad_dinov3_tiny"],
    ),
    "duplicate names": (
        BASE + "  - name: lesions\n    kind: isic\n    root: data/other\n",
        ":16:",
        ["target name 'lesions' is used twice", ":13"],
    ),
    "negative epochs": (BASE.replace("epochs: 2", "epochs: -3"), ":10:", ["training.epochs", "greater than 0"]),
    "empty target list": (BASE[: BASE.index("targets:")] + "targets: []\n", ":12:", ["targets", "at least 1"]),
    "duplicate key": (BASE.replace("  lr: 1.0e-3", "  lr: 1.0e-3\n  lr: 1.0e-2"), ":12:", ["'lr' appears twice"]),
    "unsafe tag": (BASE.replace("lr: 1.0e-3", "lr: !!python/object/apply:os.system [echo]"), ":11", ["YAML"]),
    "unknown comparison model": (
        BASE + "statistics:\n  comparisons: [[clean, refrence]]\n",
        ":17:",
        ["no model named 'refrence'"],
    ),
    "root and synthetic": (
        BASE.replace("    root: data/lesions\n", "    root: data/lesions\n    synthetic: x\n"),
        ":13:",
        ["exactly one of `root:`"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yaml_gives_one_clear_message_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, line, fragments = BAD[case]
    path = write(tmp_path, text)
    code, out, err = cli(["validate", str(path), "--structure-only"], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {path}{line}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_leakage_guard_same_root_is_an_error_unless_intended(tmp_path: Path) -> None:
    text = BASE.replace("data/lesions", "./data/../data/industrial").replace("kind: isic", "kind: mvtec")
    with pytest.raises(ConfigError, match=r"same data as target 'lesions'.*intended_overlap"):
        load_protocol(write(tmp_path, text))
    assert load_protocol(write(tmp_path, text + "intended_overlap: true\n")).protocol.intended_overlap


def test_set_overrides_change_values_hash_and_error_location(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    base = load_protocol(path)
    changed = load_protocol(path, ["training.epochs=5", "models.clean.compat=reference"])
    assert changed.protocol.training is not None and changed.protocol.training.epochs == 5
    assert changed.protocol.models[0].compat == "reference"
    assert config_hash(resolve_protocol(base)) != config_hash(resolve_protocol(changed))
    assert config_hash(resolve_protocol(base)) == config_hash(resolve_protocol(load_protocol(path)))
    with pytest.raises(ConfigError, match=r"^--set training.epochs=-1: training.epochs"):
        load_protocol(path, ["training.epochs=-1"])
    with pytest.raises(ConfigError, match="no item 'dirty'"):
        apply_override(load_yaml_text(BASE).data, "models.dirty.compat=clean")


def test_paths_resolve_against_the_yaml_folder_and_env_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAD_DATA", "/datasets")
    path = write(tmp_path, BASE.replace("root: data/lesions", "root: ${MEDAD_DATA}/ISIC2016"))
    resolved = resolve_protocol(load_protocol(path))
    assert resolved.training is not None
    assert resolved.training.datasets[0].root == str(tmp_path / "data" / "industrial")
    assert resolved.targets[0].root == "/datasets/ISIC2016"
    assert resolved.output == str(tmp_path / "runs")


def test_a_key_only_a_set_override_made_is_blamed_on_that_override(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"^--set foo.bar.baz=1: unknown key 'foo'"):
        load_protocol(path, ["foo.bar.baz=1"])  # before: "study.yaml:1: unknown key 'foo'"
    with pytest.raises(ConfigError, match=r"^--set training.extra.x=1: unknown key 'extra' in training"):
        load_protocol(path, ["training.epochs=3", "training.extra.x=1"])
    with pytest.raises(ConfigError, match=r"study.yaml:\d+: training is missing the required key .lr."):
        load_protocol(write(tmp_path, BASE.replace("  lr: 1.0e-3\n", "")), ["training.epochs=3"])


def test_two_models_that_would_give_identical_results_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = REPO / "protocols" / "demo.yaml"
    with pytest.raises(ConfigError) as info:  # docs example of old: the clean model silently became the reference
        load_protocol(demo, ["models.clean.compat=reference"])
    message = str(info.value)
    assert message.startswith("models 'clean' (--set models.clean.compat=reference) and 'reference' (")
    assert "same model" in message and "class_words apply to clean models only" in message
    assert "warning" not in capsys.readouterr().err  # the error says it; no warning before it
    two = BASE.replace(
        "    model: ad_dinov3_tiny\n", "    model: ad_dinov3_tiny\n  - name: again\n    model: ad_dinov3_tiny\n", 1
    )
    with pytest.raises(ConfigError, match=r"models 'clean' \(.*study.yaml:3\) and 'again' .* same model"):
        load_protocol(write(tmp_path, two))
    assert len(load_protocol(write(tmp_path, two), ["models.again.image_score=max"]).protocol.models) == 2


def test_class_words_of_a_reference_model_are_said_to_be_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medad import errors

    monkeypatch.setattr(errors, "_WARNED", set())
    load_protocol(write(tmp_path, BASE), ["models.clean.compat=reference", "models.clean.class_words={isic: {a: b}}"])
    err = capsys.readouterr().err
    assert "warning: --set models.clean.compat=reference, --set models.clean.class_words" in err
    assert "class_words are not used" in err


def test_paths_are_resolved_once_and_the_checks_check_what_was_resolved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.imports import imported_modules

    users = sorted(
        p.stem for p in (REPO / "medad" / "protocols").glob("*.py") if "medad.protocols.paths.resolve_path" in
        imported_modules(p)
    )  # fmt: skip
    assert users == ["resolve"]  # before: the resource check and the leakage guard resolved the paths again
    (tmp_path / "data" / "industrial").mkdir(parents=True)
    (tmp_path / "data" / "lesions").mkdir(parents=True)
    monkeypatch.delenv("MEDAD_UNSET_JOBS", raising=False)
    text = BASE + "executor:\n  kind: local\n  folder: ${MEDAD_UNSET_JOBS}/jobs\n"
    code, _, err = cli(["validate", str(write(tmp_path, text))], capsys)  # before: valid, and `run` failed later
    assert code == 2
    assert "executor.folder: '${MEDAD_UNSET_JOBS}/jobs' uses ${MEDAD_UNSET_JOBS}, which is not set" in err
    lp = load_protocol(write(tmp_path, BASE))
    assert lp.resolved is lp.resolved  # one resolution, shared by the checks and the runner


CLIP_WEIGHTS = """\
name: clipweights
models:
  - name: win
    model: winclip_tiny
    weights:
      clip: {id: openai, file: weights/ViT-L-14-336px.pt, licence: MIT (OpenAI CLIP)}
targets:
  - name: lesions
    kind: isic
    root: data/lesions
"""


def test_every_weights_role_is_listed_and_hashed_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CLIP checkpoint (``weights.clip``) is listed when missing and its sha256 checked, as DINOv3's are."""
    from medad.protocols.resources import check_weight_hashes

    (tmp_path / "data" / "lesions").mkdir(parents=True)
    path = write(tmp_path, CLIP_WEIGHTS)
    code, _, err = cli(["validate", str(path)], capsys)
    assert code == 2
    assert f"models[0].weights.clip.file: clip weights file {tmp_path}/weights/ViT-L-14-336px.pt does not exist" in err
    assert "docs/models.md" in err
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ViT-L-14-336px.pt").write_bytes(b"clip")
    code, _, err = cli(["validate", str(path)], capsys)
    assert code == 0, err
    lp = load_protocol(write(tmp_path, CLIP_WEIGHTS.replace("licence:", f"sha256: '{'0' * 64}', licence:")))
    resolved = resolve_protocol(lp)
    assert resolved.models[0].weights.clip.file == str(tmp_path / "weights" / "ViT-L-14-336px.pt")
    assert resolved.models[0].create_kwargs()["clip_weights"] == resolved.models[0].weights.clip.file
    with pytest.raises(ConfigError, match=r"weights\.clip\.sha256.*ViT-L-14-336px\.pt has sha256 [0-9a-f]{64}, not 0+"):
        check_weight_hashes(lp, resolved)


@pytest.mark.parametrize("stem", ["_study", "a" * 70])
def test_a_file_name_that_cannot_name_the_run_is_one_clear_error(
    stem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{stem}.yaml"
    path.write_text(BASE.replace("name: tiny\n", ""), encoding="utf-8")
    code, _, err = cli(["validate", str(path), "--structure-only"], capsys)  # before: a pydantic traceback at run
    assert code == 2 and "Traceback" not in err
    assert "has no `name:` and its file name gives no valid one" in err and "add e.g. `name: my-study`" in err
