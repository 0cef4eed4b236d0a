"""`udit generate --method freeswim` end to end on the tiny model, and its bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import invoke_cli, read_mp4
from upscale_dit.video import VideoWriter

invoke = invoke_cli


def test_freeswim_at_2x_writes_exact_size_and_keeps_base(tmp_path):
    out = tmp_path / "fs.mp4"
    result = invoke("generate", "a red circle", "--model", "tiny", "--method", "freeswim", "--res", "2x",
                    "--save-base", "--set", "method.freeswim.mode=exact", "--out", str(out))
    assert result.exit_code == 0, result.output
    frames, _ = read_mp4(out)
    assert frames.shape == (9, 192, 320, 3)
    base, _ = read_mp4(tmp_path / "fs.base.mp4")
    assert base.shape == (9, 96, 160, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    fs = sidecar["config"]["method"]["freeswim"]
    assert fs == {"strength": 0.7, "steps": 4, "shift": 9.0, "guidance": 5.0, "scheduler": "unipc", "mode": "exact",
                  "cache_steps": 2, "window": "reference", "inward": True, "scale": True, "scale_tokens": 60,
                  "cache_device": "auto", "kernel": "auto"}
    report = sidecar["derived"]["freeswim"]
    assert report["steps_run"] == 2 and report["window"] == [7, 11] and report["kernel"] == "sdpa_mask"
    assert report["dual_passes"] == 4  # exact: cond + uncond, both steps
    assert set(sidecar["timings_s"]) >= {"base_denoise", "base_decode", "upsample_encode", "refine"}


def test_freeswim_refines_an_input_video(tmp_path):
    clip = tmp_path / "in.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(clip, fps=8, height=96, width=160) as writer:
        writer.write(rng.integers(0, 256, size=(11, 96, 160, 3), dtype=np.uint8))
    out = tmp_path / "up.mp4"
    result = invoke("generate", "noise", "--model", "tiny", "--method", "freeswim", "--input", str(clip),
                    "--res", "3x", "--strength", "0.5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "has 11 frames; using the first 9" in result.stderr
    frames, fps = read_mp4(out)
    assert frames.shape == (9, 288, 480, 3)
    assert fps == 8  # the input's frame rate
    assert json.loads(out.with_suffix(".json").read_text())["config"]["input"] == str(clip)


@pytest.mark.parametrize(("args", "message"), [
    (["--res", "native"], "the FreeSwim window (7x11 tokens) covers the whole 6x10-token grid"),
    (["--res", "2x", "--strength", "0"], "`method.freeswim.strength` must be in (0, 1], got 0.0"),
    (["--res", "2x", "--strength", "1.5"], "`method.freeswim.strength` must be in (0, 1], got 1.5"),
    (["--res", "2x", "--set", "method.freeswim.cache_steps=0"], "`method.freeswim.cache_steps` must be at least 1"),
    (["--res", "2x", "--set", "method.freeswim.mode=fast"], "`method.freeswim.mode` must be one of exact, cache"),
    (["--res", "2x", "--set", "method.freeswim.window=big"], "`method.freeswim.window` must be reference, native or ROWSxCOLS"),
])
def test_bad_freeswim_settings(tmp_path, args, message):
    result = invoke("generate", "x", "--model", "tiny", "--method", "freeswim", *args, "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_input_needs_a_refining_method(tmp_path):
    clip = tmp_path / "in.mp4"
    with VideoWriter(clip, fps=8, height=96, width=160) as writer:
        writer.write(np.zeros((9, 96, 160, 3), dtype=np.uint8) + 90)
    result = invoke("generate", "x", "--model", "tiny", "--input", str(clip), "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 2
    assert "--input refines an existing video, which `direct` cannot do" in result.stderr
