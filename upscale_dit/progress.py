"""Progress on stderr for every stage (rich); silent when disabled, e.g. from Python or in tests."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr_console = Console(stderr=True)


class _RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slow, as for 4K denoising steps)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("  -- it/s", style="progress.data.speed")
        if speed >= 1:
            return Text(f"{speed:5.2f} it/s", style="progress.data.speed")
        return Text(f"{1 / speed:5.1f} s/it", style="progress.data.speed")


def _cuda():
    """torch.cuda once CUDA is initialised in this process (without importing torch), else ``None``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process: Linux ≥ 4.0, ``/proc/self/clear_refs``."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int:
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class MemoryMeter:
    """Peak memory of a span: CUDA ``max_memory_allocated`` (reset at the start) once CUDA is initialised, else
    the process's peak RSS (reset through ``/proc/self/clear_refs`` where Linux allows; else the process peak)."""

    def __init__(self) -> None:
        self._open: list[dict[str, Any]] = []

    def start(self) -> dict[str, Any]:
        # An enclosing span keeps the peak it has seen so far before the counters are reset.
        for outer in self._open:
            outer["seen"] = max(outer["seen"], self._peak(outer["source"]))
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
            record = {"source": "cuda", "start": cuda.memory_allocated()}
        else:
            reset = _reset_rss_peak()
            record = {"source": "rss" if reset else "rss_process_peak", "start": _status_bytes("VmRSS") or 0}
        record["seen"] = record["start"]
        self._open.append(record)
        return record

    @staticmethod
    def _peak(source: str) -> int:
        if source == "cuda":
            cuda = _cuda()
            if cuda is None:
                return 0
            cuda.synchronize()
            return cuda.max_memory_allocated()
        return _rss_peak()

    def stop(self, record: dict[str, Any]) -> dict[str, Any]:
        """``{"source", "start", "peak"}`` in bytes; a span that initialised CUDA reports its CUDA peak."""
        self._open = [r for r in self._open if r is not record]
        source, start, seen = record["source"], record["start"], record["seen"]
        if source != "cuda" and _cuda() is not None:
            source, start, seen = "cuda", 0, 0  # CUDA came up inside the span: every CUDA byte is the span's
        peak = max(seen, self._peak(source))
        for outer in self._open:
            if outer["source"] == source:
                outer["seen"] = max(outer["seen"], peak)
        return {"source": source, "start": start, "peak": peak}


class StageProgress:
    """One bar per stage; records each stage's wall time and peak memory for the sidecar.

    ``timings``: seconds per stage key. ``memory``: per stage key, ``{"source": "cuda" | "rss" |
    "rss_process_peak", "start": bytes, "peak": bytes}`` — the CUDA allocator's peak of live tensors (reset per
    stage) on a GPU run, the process's resident set on a CPU run.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.timings: dict[str, float] = {}
        self.memory: dict[str, dict[str, Any]] = {}
        self._meter = MemoryMeter()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or stderr_console,
            disable=not enabled,
        )

    def __enter__(self) -> "StageProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    @contextlib.contextmanager
    def stage(self, key: str, description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
        """Time a stage; yields ``update(done, total)`` to advance its bar."""
        task = self._progress.add_task(description, total=total)
        meter = self._meter.start()
        start = time.perf_counter()
        updated = False

        def update(done: int, new_total: int) -> None:
            nonlocal updated
            updated = True
            self._progress.update(task, completed=done, total=new_total)

        try:
            yield update
        finally:
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - start, 4)
            measured = self._meter.stop(meter)
            if key in self.memory:  # a stage key used twice keeps its higher peak
                measured = max(self.memory[key], measured, key=lambda m: m["peak"])
            self.memory[key] = measured
            if total is None and not updated:  # a spinner-only stage: show it as done
                self._progress.update(task, total=1, completed=1)
