"""mp4 in and out through PyAV: H.264 yuv420p, written atomically (temporary file, then rename)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import InputVideoError, OutputError


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before the final rename; hidden, in the same folder (same filesystem)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def check_writable(path: Path, *, overwrite: bool) -> None:
    """Refuse before any work: an existing output without ``overwrite``, or a folder we cannot write to."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or choose another --out")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; --out must name an .mp4 file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {folder} is not writable")


@functools.cache
def x264_options() -> dict[str, str]:
    """libx264 options beyond crf: on CPUs with AVX-512, keep x264 to its AVX2 kernels, for reproducible files.

    With its AVX-512 kernels and MB-tree rate control on, x264 reads heap memory it never initialised, so
    the same frames encode differently depending on what the process allocated and freed before (a B-frame
    decoded up to 26/255 apart; see ``tests/test_video.py``). Turning MB-tree off also removes it, but costs
    quality; the AVX2 kernels give the stream the AVX-512 ones give on zeroed memory, as fast (720p, 33 frames: 0.4 s).
    """
    return {"x264-params": "asm=AVX2"} if _cpu_has_avx512() else {}


def _cpu_has_avx512() -> bool:
    """Whether the CPU runs AVX-512 (x86 only): Linux's CPU flags, else what torch detected."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX512"


class VideoWriter:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` chunk by chunk; the file appears only on :meth:`close`.

    Use as a context manager: on an exception the partial file is removed and nothing is left behind.
    """

    def __init__(self, path: str | Path, *, fps: int, height: int, width: int, crf: int = 18) -> None:
        import av

        if height % 2 or width % 2:
            raise OutputError(f"H.264 yuv420p needs even sizes, got {width}x{height}")
        self.path = Path(path)
        self.frames_written = 0
        self._tmp = partial_path(self.path)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), **x264_options()}

    def write(self, frames: Iterable[np.ndarray] | np.ndarray) -> None:
        import av

        for frame in frames:
            if frame.shape != (self._stream.height, self._stream.width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"expected uint8 frames of {(self._stream.height, self._stream.width, 3)}, "
                                 f"got {frame.dtype} {frame.shape}")
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(image):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - already failing; the partial file goes either way
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as uint8 ``[T, H, W, 3]``, and its frame rate."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise InputVideoError(f"cannot read video {path}: {exc}") from None
    if not frames:
        raise InputVideoError(f"video {path} has no frames")
    return np.stack(frames), fps


def write_json_atomic(path: Path, text: str) -> None:
    tmp = partial_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
