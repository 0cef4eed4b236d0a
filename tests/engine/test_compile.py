"""`--compile`: the transformer's blocks are compiled, once for all blocks, and the video does not change."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from tests.helpers import invoke_cli, read_mp4
from upscale_dit.engine import compile as compile_module
from upscale_dit.engine.compile import compile_blocks


@pytest.fixture
def eager_backend(monkeypatch):
    """Dynamo traces and splits the graphs for real; the `eager` backend runs them without a C++ toolchain."""
    torch._dynamo.reset()
    calls = []

    def recording(transformer, **kwargs):
        calls.append(transformer)
        return functools.partial(compile_blocks, backend="eager")(transformer, **kwargs)

    monkeypatch.setattr(compile_module, "compile_blocks", recording)
    yield calls
    torch._dynamo.reset()


def _generate(tmp_path, monkeypatch, name, *flags) -> tuple[np.ndarray, dict]:
    """Run the CLI; return the frames handed to the mp4 writer (compared before lossy encoding) and the sidecar."""
    from upscale_dit import video

    written, write = [], video.VideoWriter.write
    monkeypatch.setattr(video.VideoWriter, "write", lambda self, frames: (written.append(np.array(frames)),
                                                                            write(self, frames))[1])
    out = tmp_path / f"{name}.mp4"
    result = invoke_cli("generate", "a red circle", "--model", "tiny", "--res", "2x", "--frames", "9",
                        "--method", "freeswim", "--steps", "2", "--seed", "3", "--out", str(out), *flags)
    assert result.exit_code == 0, result.output
    assert read_mp4(out)[0].shape == (9, 192, 320, 3)
    return np.concatenate(written), json.loads(out.with_suffix(".json").read_text())


def test_compile_flag_compiles_the_blocks_and_keeps_the_video(tmp_path, monkeypatch, eager_backend):
    from torch._dynamo.utils import counters

    plain, plain_record = _generate(tmp_path, monkeypatch, "plain")
    assert not eager_backend and plain_record["config"]["runtime"]["compile"] is False
    graphs = counters["stats"]["unique_graphs"]
    compiled, record = _generate(tmp_path, monkeypatch, "compiled", "--compile")
    assert len(eager_backend) == 1 and all(block._compiled_call_impl is not None
                                           for block in eager_backend[0].blocks)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo really traced the blocks
    assert record["config"]["runtime"]["compile"] is True
    # the base (dense) and every FreeSwim pass kind (guide + cache store, cached, uncond) ran compiled
    assert (compiled == plain).all()


def test_compile_blocks_refuses_a_model_without_repeated_blocks():
    with pytest.raises(ValueError, match="Linear declares no repeated blocks to compile"):
        compile_blocks(torch.nn.Linear(2, 2))
