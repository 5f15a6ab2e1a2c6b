"""Weights messages that point the right way: a training-free model named by a checkpoint card, --backbone-weights
without --text-weights, a ``timm/...`` hub id, a reference checkpoint in a clean protocol model, and a hub that
does not answer (one short try, then the local-file fix, instead of minutes of retries)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad.errors import WeightsError
from medad.models import check_model_config, create_model, load_checkpoint, save_checkpoint
from medad.models.weights import build_backbone, is_local_weights
from tests.cli import run_medad

REPO = Path(__file__).resolve().parents[2]


def test_a_card_naming_a_training_free_model_is_no_checkpoint(tmp_path: Path) -> None:
    folder = save_checkpoint(create_model("ad_dinov3_tiny", text_disk_cache=False), tmp_path / "ckpt")
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "name": "winclip_tiny"}))
    with pytest.raises(WeightsError) as refused:
        load_checkpoint(folder)
    message = str(refused.value)
    assert "names model 'winclip_tiny', which is training-free" in message and "--model winclip_tiny" in message
    assert "no separate backbone" not in message


def _image_folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    return tmp_path / "images"


def test_backbone_weights_alone_names_the_text_weights_flag(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "dino.safetensors").write_bytes(b"unused: the config is refused before any file is read")
    args = ["score", str(_image_folder(tmp_path)), "--model", "ad_dinov3_tiny", "--out", str(tmp_path / "out"),
            "--backbone-weights", str(tmp_path / "dino.safetensors")]
    code, text = run_medad(monkeypatch, capsys, *args)
    assert code == 2 and "--text-weights FILE|TAG on the command line" in text and "Traceback" not in text, text
    assert "text_weights is None" not in text  # Python's state, not what a CLI user gave


def test_a_timm_hub_id_is_a_hub_id_not_a_file() -> None:
    spec = "timm/vit_large_patch16_dinov3.lvd1689m"
    assert not is_local_weights(spec) and not is_local_weights("hf-hub:timm/vit_large_patch14_clip_336.openai")
    assert is_local_weights("weights/dinov3.pth") and is_local_weights("./dinov3")
    assert check_model_config("ad_dinov3", backbone=spec).backbone == "vit_large_patch16_dinov3.lvd1689m"
    name = check_model_config("ad_dinov3", backbone=spec).backbone
    with pytest.raises(WeightsError) as hub:  # offline in the tests: the hub message, not "file ... does not exist"
        build_backbone(name, img_size=32, overrides={"depth": 1, "embed_dim": 64, "num_heads": 2})
    assert "could not be loaded from the hub" in str(hub.value) and "does not exist" not in str(hub.value)


def test_reference_checkpoint_in_a_clean_protocol_model_gets_protocol_advice(tmp_path: Path, monkeypatch, capsys):
    folder = save_checkpoint(create_model("ad_dinov3_tiny", compat="reference", text_disk_cache=False),
                             tmp_path / "ckpt")  # fmt: skip
    (tmp_path / "lesions").mkdir()
    protocol = tmp_path / "study.yaml"
    protocol.write_text(
        f"name: tiny\nmodels:\n  - name: clean\n    model: ad_dinov3_tiny\n    checkpoint: {folder}\n"
        f"targets:\n  - name: lesions\n    kind: isic\n    root: {tmp_path / 'lesions'}\noutput: {tmp_path / 'runs'}\n",
        encoding="utf-8",
    )
    code, text = run_medad(monkeypatch, capsys, "validate", str(protocol))
    assert code == 2 and "was trained in compat 'reference' mode but model 'clean' has 'clean'" in text, text
    assert "set `compat: reference` for model 'clean'" in text and "--compat" not in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_hub_fails_fast_with_the_local_file_fix(tmp_path: Path) -> None:
    """Without HF_HUB_OFFLINE and with the hub's endpoint a closed port, the missing weights are refused after one
    short try (the libraries' own retries took over a minute), naming the flag for a local file."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
    script = (
        "import time\nimport open_clip, timm  # the builders import them lazily: time the hub only\n"
        "from medad.models.weights import build_backbone, build_text_tower\nstart = time.monotonic()\n"
        "for build in (lambda: build_backbone('vit_small_patch16_dinov3.lvd1689m', overrides={'depth': 1, "
        "'embed_dim': 64, 'num_heads': 2}), lambda: build_text_tower('ViT-B-32', 'openai', overrides={'embed_dim': "
        "32, 'text_cfg': {'width': 32, 'layers': 1}})):\n"
        "    try:\n        build()\n    except Exception as exc:\n        print(type(exc).__name__, exc)\n"
        "print('seconds', time.monotonic() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout + done.stderr
    assert lines[0].startswith("WeightsError the Hugging Face hub http://127.0.0.1:") and "did not answer" in lines[0]
    assert "--backbone-weights /path/to/file.safetensors" in lines[0]
    assert lines[1].startswith("WeightsError the Hugging Face hub") and "--text-weights /path/to/file" in lines[1]
    assert float(lines[2].split()[1]) < 30  # one 3 s probe per tower; the retries it replaces took 45 s and more
