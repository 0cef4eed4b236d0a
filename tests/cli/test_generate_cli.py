"""`udit generate` end to end on the tiny model: what a user runs, what lands on disk."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import invoke_cli, read_mp4

invoke = invoke_cli


def test_writes_mp4_of_exact_size_and_frames_with_sidecar(tmp_path):
    out = tmp_path / "clip.mp4"
    # 200x120 is not a multiple of 16: generated at 208x128 and centre-cropped on export.
    result = invoke("generate", "a red circle", "--model", "tiny", "--res", "200x120", "--frames", "13",
                    "--steps", "2", "--seed", "7", "--out", str(out), "--fps", "12")
    assert result.exit_code == 0, result.output
    frames, fps = read_mp4(out)
    assert frames.shape == (13, 120, 200, 3)
    assert fps == 12
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["prompt"] == "a red circle"
    assert sidecar["seed"] == 7
    cfg = sidecar["config"]
    assert cfg["model"] == "tiny" and cfg["frames"] == 13 and cfg["resolution"] == "200x120"
    assert cfg["sampling"] == {"steps": 2, "guidance": 5.0, "shift": 3.0, "scheduler": "unipc", "seed": 7,
                               "negative_prompt": "", "max_sequence_length": 64}
    assert sidecar["derived"]["generated_size"] == [208, 128]
    assert sidecar["derived"]["output_size"] == [200, 120]
    assert set(sidecar["timings_s"]) >= {"load", "text_encoding", "denoise", "decode_and_write", "total"}
    assert sidecar["versions"]["udit"] and sidecar["versions"]["torch"]
    assert str(out) in result.stdout
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]


def test_named_resolution_writes_exact_1080p_geometry_scaled(tmp_path):
    """`--res 480p` → 854x480 exactly (generated at 864x480): the p-names keep 16:9 and crop to the true size."""
    out = tmp_path / "p.mp4"
    result = invoke("generate", "x", "--model", "tiny", "--res", "480p", "--frames", "1", "--steps", "1",
                    "--guidance", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    frames, _ = read_mp4(out)
    assert frames.shape == (1, 480, 854, 3)


def test_existing_output_refused_then_overwritten(tmp_path):
    out = tmp_path / "a.mp4"
    out.write_bytes(b"keep me")
    result = invoke("generate", "x", "--model", "tiny", "--steps", "1", "--out", str(out))
    assert result.exit_code == 2
    assert "already exists; pass --overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    result = invoke("generate", "x", "--model", "tiny", "--steps", "1", "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_mp4(out)[0].shape == (9, 96, 160, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "wan-nope"], "unknown model preset `wan-nope`"),
        (["--model", "tiny", "--method", "freesw"], "`method.name` must be one of direct, freeswim, relay; got 'freesw'"),
        (["--model", "tiny", "--frames", "10"], "`frames` must be of the form 4k+1 (the VAE compresses time by 4), got 10: use 9 or 13"),
        (["--model", "tiny", "--res", "8x8"], "resolution 8x8 is too small"),
        (["--model", "tiny", "--res", "20000x100"], "too large"),
        (["--model", "tiny", "--res", "201x120"], "odd side"),
        (["--model", "tiny", "--res", "huge"], "`resolution` 'huge' is not understood"),
        (["--model", "tiny", "--res", "2x", "--aspect", "9:16"], "`aspect` applies only to named resolutions"),
        (["--model", "tiny", "--steps", "0"], "`sampling.steps` must be at least 1, got 0"),
        (["--model", "tiny", "--set", "sampling.stepz=3"], "unknown key `sampling.stepz` (did you mean `sampling.steps`?)"),
        (["--model", "tiny", "--set", "sampling.steps=many"], "--set sampling.steps=many: `sampling.steps` must be an integer"),
        (["--model", "tiny", "--dtype", "int8"], "`runtime.dtype` must be one of"),
        (["--model", "tiny", "--out", "clip.gif"], "`output.path` must end in .mp4"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, message):
    out_args = [] if "--out" in args else ["--out", str(tmp_path / "o.mp4")]
    result = invoke("generate", "a prompt", *args, *out_args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 or len(result.stderr) < 400
    assert os.listdir(tmp_path) == []


def test_bad_flex_backend_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("UDIT_FLEX_BACKEND", "cudnn")
    result = invoke("generate", "x", "--model", "tiny", "--res", "2x", "--frames", "5", "--method", "freeswim",
                    "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2, result.output
    assert "UDIT_FLEX_BACKEND='cudnn' is not a flex backend; use auto, triton or flash" in result.stderr
    assert "Traceback" not in result.output and "base (native size)" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_unwritable_output_folder(tmp_path):
    result = invoke("generate", "x", "--model", "tiny", "--out", str(tmp_path / "missing" / "o.mp4"))
    assert result.exit_code == 2
    assert "folder" in result.stderr and "does not exist" in result.stderr


def test_empty_prompt_refused(tmp_path):
    result = invoke("generate", "  ", "--model", "tiny", "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert "prompt is empty" in result.stderr


def test_malformed_preset_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  steps: 3\n  guidance: [1, 2\n")
    result = invoke("generate", "x", "--model", "tiny", "--preset", str(bad), "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert f"{bad} is not valid YAML at line" in result.stderr


def test_unknown_key_in_preset_names_file_and_key(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("runtime:\n  offlaod: model\n")
    result = invoke("generate", "x", "--model", "tiny", "--preset", str(bad), "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert f"{bad}: unknown key `runtime.offlaod` (did you mean `runtime.offload`?)" in result.stderr


def test_missing_weights_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = invoke("generate", "x", "--model", "wan2.1-t2v-1.3b", "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 1
    assert ("model Wan-AI/Wan2.1-T2V-1.3B-Diffusers (preset `wan2.1-t2v-1.3b`) is not in the local Hugging Face "
            "cache; download it with `hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers`") in result.stderr
    assert "--model toy" in result.stderr  # the trained toy ships with the package
    assert not (tmp_path / "o.mp4").exists()


def test_version_and_help():
    assert invoke("--version").stdout.strip().startswith("udit ")
    help_text = invoke("generate", "--help").stdout
    for flag in ("--model", "--res", "--frames", "--steps", "--guidance", "--shift", "--seed", "--negative-prompt",
                 "--method", "--out", "--overwrite", "--preset", "--set", "--offload", "--vae-tiling"):
        assert flag in help_text
    assert "[default: native]" in help_text and "4k+1" in help_text


def test_presets_command_lists_models():
    result = invoke("presets")
    assert result.exit_code == 0
    for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny", "1920x1080", "1920x1088"):
        assert name in result.stdout
