"""The Python API does what the CLI does; failures leave nothing behind."""

from __future__ import annotations

import json

import pytest
import torch

import upscale_dit
from tests.helpers import invoke_cli, read_mp4
from upscale_dit import GenerateResult, OutOfMemoryError, generate


def test_generate_from_python(tmp_path):
    out = tmp_path / "api.mp4"
    result = generate("a blue square", model="tiny", resolution="2x", frames=5, sampling__steps=2,
                      output__path=str(out))
    assert isinstance(result, GenerateResult)
    assert (result.video, result.frames, result.height, result.width) == (out, 5, 192, 320)
    assert read_mp4(out)[0].shape == (5, 192, 320, 3)
    assert json.loads(result.sidecar.read_text())["config"]["resolution"] == "2x"


def test_same_seed_same_video_different_seed_different(tmp_path):
    def frames(seed, name):
        generate("x", model="tiny", frames=1, sampling__steps=2, sampling__seed=seed,
                 output__path=str(tmp_path / name), runtime__vae_tiling="off")
        return read_mp4(tmp_path / name)[0]

    a, b, c = frames(1, "a.mp4"), frames(1, "b.mp4"), frames(2, "c.mp4")
    assert (a == b).all()
    assert not (a == c).all()


def test_config_object_and_flags_are_exclusive():
    config = upscale_dit.build_generate_config("x", model="tiny")
    with pytest.raises(TypeError, match="not both"):
        generate(config, model="tiny")


def test_cuda_oom_is_caught_with_advice(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        (tmp_path / ".o.partial-1.mp4").unlink(missing_ok=True)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(upscale_dit.generation, "_generate", explode)
    result = invoke_cli("generate", "x", "--model", "tiny", "--res", "1080p", "--out", str(tmp_path / "o.mp4"))
    assert result.exit_code == 3
    assert ("out of GPU memory at 1920x1088x9; try --offload model, --vae-tiling on, a smaller --res, "
            "fewer --frames (now 9)") in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    import upscale_dit.engine.vae as vae_module

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(vae_module, "decode_frames", broken)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        generate("x", model="tiny", sampling__steps=1, output__path=str(tmp_path / "o.mp4"))
    assert list(tmp_path.iterdir()) == []
