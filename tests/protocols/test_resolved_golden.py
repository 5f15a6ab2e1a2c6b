"""The resolved protocol and its config hash are pinned: byte-identical to what the code before the typed
resolution (issue 16) produced, for every shipped protocol and the protocols the tests build.

``golden/resolved_protocols.json`` was generated once from that code. Run folders are named by the config hash,
and resuming a run or reusing its stages depends on it, so any change here is a break of every existing run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medad.protocols.loading import load_protocol
from medad.protocols.resolve import config_hash, resolve_protocol, resolved_yaml
from medad.utils.io import hash_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).with_name("golden") / "resolved_protocols.json").read_text(encoding="utf-8"))
ENV = {"MEDAD_DATA": "/golden/data", "MEDAD_WEIGHTS": "/golden/weights", "MEDAD_GOLDEN": "/golden/extra"}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_resolved_protocol_and_config_hash_are_unchanged(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    entry = GOLDEN[case]
    kind, name = case.split("/")
    if kind == "shipped":
        path = REPO / "protocols" / f"{name}.yaml"
    else:
        path = tmp_path / f"{name}.yaml"
        path.write_text(entry["text"], encoding="utf-8")
    base = str(path.resolve().parent)
    resolved = resolve_protocol(load_protocol(path, entry["overrides"]))
    private = resolved_yaml(resolved, shareable=False)
    shareable = resolved_yaml(resolved, shareable=True)
    assert private.replace(base, "{base}").replace(str(REPO), "{repo}") == entry["private"]
    assert shareable.replace(base, "{base}").replace(str(REPO), "{repo}") == entry["shareable"]
    if entry["config_hash"] is not None:
        assert config_hash(resolved) == entry["config_hash"]
    if "placeholder_hash" in entry:  # hashed paths relative to the protocol's folder: pin the hashed content
        dump = resolved.dump()
        located = json.loads(json.dumps(dump).replace(base, "{base}"))
        assert config_hash(resolved) == hash_config({k: v for k, v in dump.items() if k not in ("output", "executor")})
        assert (
            hash_config({k: v for k, v in located.items() if k not in ("output", "executor")})
            == entry["placeholder_hash"]
        )
