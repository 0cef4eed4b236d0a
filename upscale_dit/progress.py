"""Progress on stderr for every stage (rich); silent when disabled, e.g. from Python or in tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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


class StageProgress:
    """One bar per stage; records each stage's wall time for the sidecar."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.timings: dict[str, float] = {}
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
            if total is None and not updated:  # a spinner-only stage: show it as done
                self._progress.update(task, total=1, completed=1)
