"""The mp4 writer: the same frames give the same file, whatever the process did before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Writes 9 frames of a moving blocky texture (64x64, enough for x264's B-frames and MB-tree) to argv[1].
ENCODE = """
import sys
import numpy as np
from upscale_dit.video import VideoWriter

rng = np.random.default_rng(0)
texture = np.kron(rng.integers(0, 256, size=(10, 10, 3)), np.ones((8, 8, 1))).astype(np.float32)
x = np.arange(64)[None, None, :, None]
frames = np.stack([np.roll(texture, (k, 3 * k), axis=(0, 1))[:64, :64] for k in range(9)])
frames[..., :1] += 40 * np.sin((x + 5 * np.arange(9)[:, None, None, None]) / 9.0)
with VideoWriter(sys.argv[1], fps=16, height=64, width=64) as writer:
    writer.write(frames.clip(0, 255).astype(np.uint8))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc perturb tunable")
def test_same_frames_same_file_whatever_the_heap_held(tmp_path):
    """glibc fills fresh heap memory with a chosen byte: the file must not depend on it.

    libx264's AVX-512 MB-tree kernels read uninitialised heap memory, so two identical FreeSwim runs wrote
    different files; on CPUs without AVX-512 this passes either way.
    """
    files = []
    for byte in (17, 170):
        out = tmp_path / f"perturb{byte}.mp4"
        env = {**os.environ, "GLIBC_TUNABLES": f"glibc.malloc.perturb={byte}",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", ENCODE, str(out)], env=env, check=True, timeout=120)
        files.append(out.read_bytes())
    assert files[0] == files[1]
