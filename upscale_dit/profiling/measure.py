"""``udit profile --run``: run the real generation, shortened, and put its measured time and memory per stage beside
the estimate of the same shortened run.

What is measured (``progress.StageProgress.memory``):

- on a GPU, ``torch.cuda.max_memory_allocated`` with the peak reset at each stage: live tensors, the quantity the
  cost model estimates (the CUDA context and the caching allocator's reserve are not in it);
- on the CPU, the process's peak resident set per stage (reset through ``/proc/self/clear_refs``) minus the
  resident set just before the run (after the libraries were imported). That growth also holds whatever the
  allocator keeps after freeing, library buffers and lazily imported modules, none of which the cost model
  knows: on the tiny model those dominate, so only parameter bytes are a meaningful check there.

Parameter bytes are counted on the components the run actually loaded (``load_components`` is wrapped for the run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .dims import Record

__all__ = ["MeasuredRun", "StageMeasurement", "measure", "shorten", "steps_for_run"]


@dataclass(frozen=True, slots=True)
class StageMeasurement(Record):
    """One stage: seconds, measured bytes (``source`` says what), the estimate, and estimate / measured."""

    key: str
    seconds: float
    source: str
    measured: int
    estimated: int

    _derived: ClassVar[tuple[str, ...]] = ("ratio",)

    @property
    def ratio(self) -> float | None:
        return round(self.estimated / self.measured, 3) if self.measured > 0 else None


@dataclass(frozen=True, slots=True)
class MeasuredRun(Record):
    """A measured run: per stage, the peak over the run, and parameter bytes loaded vs estimated."""

    device: str
    device_name: str
    torch: str
    seconds: float
    baseline: int
    stages: list[StageMeasurement]
    parameter_bytes: dict[str, int]
    parameter_bytes_estimated: dict[str, int]
    buffer_bytes: dict[str, int] = field(default_factory=dict)

    _derived: ClassVar[tuple[str, ...]] = ("peak_measured", "peak_estimated", "peak_ratio")

    @property
    def peak_measured(self) -> int:
        return max((s.measured for s in self.stages), default=0)

    @property
    def peak_estimated(self) -> int:
        return max((s.estimated for s in self.stages), default=0)

    @property
    def peak_ratio(self) -> float | None:
        return round(self.peak_estimated / self.peak_measured, 3) if self.peak_measured > 0 else None


def steps_for_run(steps: int, strength: float) -> int:
    """Scheduled refinement steps whose ``int(scheduled × strength)`` runs exactly ``steps`` of them."""
    scheduled = max(1, math.ceil(steps / strength))
    while int(scheduled * strength) < steps:
        scheduled += 1
    return scheduled


def shorten(run: Any, steps: int) -> dict[str, Any]:
    """Flags (dotted, as ``build_generate_config`` takes them) that make every denoising stage run ``steps`` steps."""
    flags: dict[str, Any] = {"sampling__steps": steps}
    method = run.config.method
    if method.name == "freeswim":
        flags["method__freeswim__steps"] = steps_for_run(steps, method.freeswim.strength)
    elif method.name == "relay":
        relay = method.relay
        flags["method__relay__steps"] = steps_for_run(steps, relay.strength) if relay.from_base else steps
    return flags


@contextlib.contextmanager
def _capture_loaded(into: dict[str, dict[str, int]]) -> Iterator[None]:
    """Count the parameter and buffer bytes of what ``engine.loading.load_components`` returns while active."""
    from ..engine import loading

    original = loading.load_components

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        parts = original(*args, **kwargs)
        for name in ("transformer", "text_encoder", "vae"):
            module = parts[name]
            into["parameters"][name] = sum(p.numel() * p.element_size() for p in module.parameters())
            into["buffers"][name] = sum(b.numel() * b.element_size() for b in module.buffers())
        return parts

    loading.load_components = counting
    try:
        yield
    finally:
        loading.load_components = original


def _preload() -> None:
    """Import what a run imports lazily, so the CPU baseline is taken after it (not counted as the run's)."""
    import av  # noqa: F401
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel  # noqa: F401
    from transformers import T5Tokenizer, UMT5EncoderModel  # noqa: F401

    from ..engine import refine, sampler, text, vae  # noqa: F401
    from ..methods import freeswim  # noqa: F401


def measure(config: Any, estimate: Any) -> MeasuredRun:
    """Run ``config`` (a ``GenerateConfig``, already shortened) and compare it with ``estimate`` (a ``PlanEstimate``
    of the same run)."""
    import time

    import torch

    from .. import progress
    from ..engine.device import resolve_device
    from ..generation import generate

    device = resolve_device(config.runtime.device)
    _preload()
    loaded: dict[str, dict[str, int]] = {"parameters": {}, "buffers": {}}
    with tempfile.TemporaryDirectory(prefix="udit-profile-") as folder:
        out = Path(folder) / "profile.mp4"
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, path=str(out), overwrite=True,
                                                                        save_base=False))
        baseline = 0 if device.type == "cuda" else (progress._status_bytes("VmRSS") or 0)
        started = time.perf_counter()
        with _capture_loaded(loaded):
            result = generate(config, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - started
    stages = []
    for stage in estimate.stages:
        record = result.memory.get(stage.key)
        if record is None:
            continue
        measured = record["peak"] - (baseline if record["source"] != "cuda" else 0)
        stages.append(StageMeasurement(key=stage.key, seconds=round(result.timings.get(stage.key, 0.0), 3),
                                       source=record["source"], measured=measured, estimated=stage.peak))
    load = estimate.stage("load").device_bytes | estimate.stage("load").host_bytes
    return MeasuredRun(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__, seconds=round(seconds, 2), baseline=baseline, stages=stages,
        parameter_bytes=loaded["parameters"], buffer_bytes=loaded["buffers"],
        parameter_bytes_estimated={k.removeprefix("weights."): v for k, v in load.items()},
    )
