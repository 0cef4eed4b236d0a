"""`udit train-relay` and `udit strip-adapter` end to end on the tiny model, as a user runs them."""

from __future__ import annotations

import json


from tests.helpers import invoke_cli
from tests.training.helpers import TINY_STAGE2, make_images
from upscale_dit.adapters import read_safetensors

invoke = invoke_cli


def test_train_then_strip_in_both_formats(tmp_path):
    images = tmp_path / "hires"
    make_images(images, 3)
    (images / "broken.png").write_bytes(b"not a png")
    (images / "broken.txt").write_text("x")
    make_images(images / "small", 1, size=(200, 120))
    run = tmp_path / "run"
    result = invoke("train-relay", "--images", str(images), "--model", "tiny", "--stage1-steps", "2",
                    "--stage2-steps", "2", "--stage2-res", TINY_STAGE2, "--out", str(run), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "relay.safetensors")
    assert "trained on 3 image(s)" in result.stderr
    assert f"skipped unreadable {images / 'broken.png'}" in result.stderr
    assert "skipped 1 image(s) smaller than the stage-2 size" in result.stderr
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.jsonl", "data.json", "cache", "checkpoints",
                                               "stage1.safetensors", "stage2.safetensors", "relay.safetensors"}
    assert not [p for p in run.rglob("*") if ".partial" in p.name]

    for fmt in ("diffusers", "comfy"):
        out = tmp_path / f"{fmt}.safetensors"
        result = invoke("strip-adapter", str(run), "--out", str(out), "--format", fmt)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(out)
        assert read_safetensors(out)[1]["udit.key_format"] == fmt
    result = invoke("strip-adapter", str(run), "--out", str(tmp_path / "comfy.safetensors"))
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.stderr

    result = invoke("train-relay", "--images", str(images), "--model", "tiny", "--out", str(run))
    assert result.exit_code == 2 and "pass --resume" in result.stderr
    result = invoke("train-relay", "--out", str(run), "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["relay"] == str(run / "relay.safetensors")


def test_bad_data_fails_before_loading_with_one_line(tmp_path):
    make_images(tmp_path / "nocaps", 1, captions=False)
    cases = [
        (tmp_path / "empty", "found no images in"),
        (tmp_path / "nocaps", "have no caption"),
        (tmp_path / "missing", "is not a folder"),
    ]
    (tmp_path / "empty").mkdir()
    for folder, message in cases:
        result = invoke("train-relay", "--images", str(folder), "--model", "tiny", "--out", str(tmp_path / "r"))
        assert result.exit_code == 2, result.output
        assert message in result.stderr and result.stderr.startswith("Error:")
        assert not (tmp_path / "r").exists()


def test_help_shows_every_default(tmp_path):
    result = invoke("train-relay", "--help")
    assert result.exit_code == 0
    for text in ("--stage2-steps", "[default: 1000]", "[default: 2x]", "[default: 32]", "[default: 1e-4]",
                 "--resume", "--allow-upscale"):
        assert text in result.stdout, text
    flat = " ".join(invoke("strip-adapter", "--help").stdout.replace("│", " ").split())
    assert "[default: diffusers]" in flat and "[default: refuse]" in flat
