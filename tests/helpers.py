"""Small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    """Frames ``[T, H, W, 3]`` and fps of an mp4, read with PyAV independently of udit's reader."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames), fps


def invoke_cli(*args: str):
    """Run the `udit` app in-process as a user would, with a wide terminal so help and tables do not wrap."""
    from typer.testing import CliRunner

    from upscale_dit.cli.app import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "240"})
