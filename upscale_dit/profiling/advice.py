"""The cheapest settings that make a run fit its device: advice that ``udit profile`` prints and tests re-check.

Knobs, from cheapest to dearest (each is a flag of ``udit generate``):

1. VAE tiling on, then smaller tiles (``--vae-tiling on --vae-tile N``): bounds the decode/encode working set and
   feature cache to one tile; costs a little recomputation on the overlaps.
2. FreeSwim cache in pinned CPU memory (``--set method.freeswim.cache_device=cpu``): removes the cache from the GPU;
   costs one host-to-device copy per block on cached passes.
3. Model offload (``--offload model``): only the running component is on the GPU (the 10.6 GiB text encoder leaves
   before denoising); costs moving each component between CPU and GPU once per stage.
4. Fewer frames (``--frames N``): changes the video, so only when nothing else is enough.

Every combination of 1–3 is estimated and the one of least cost that fits is chosen; if none fits, all of them
are kept and the frame count is lowered to the largest 4k+1 that fits. ``usable`` memory is the device's memory
less a reserve for the CUDA context and the allocator's fragmentation (``reserve_bytes``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .dims import Record
from .plan import PlanEstimate, RunSettings, estimate_plan

__all__ = ["Advice", "Change", "advise", "reserve_bytes", "usable_bytes"]

_GIB = 2**30
TILE_CHOICES = (256, 192, 128)


def reserve_bytes(total: int) -> int:
    """Memory a run cannot use for its tensors: CUDA context (~0.5 GiB) and allocator slack, 5 % but ≥ 1 GiB."""
    return max(_GIB, total // 20)


def usable_bytes(total: int) -> int:
    return total - reserve_bytes(total)


@dataclass(frozen=True, slots=True)
class Change(Record):
    """One setting to change: the flag(s) to pass, what it costs, and its rank (lower is cheaper)."""

    flags: list[str]
    what: str
    cost: str
    rank: int


@dataclass(frozen=True, slots=True)
class Advice(Record):
    """Whether the run fits ``usable`` bytes as asked, and if not, the cheapest changes and the peak they give."""

    fits: bool
    peak: int
    usable: int
    changes: list[Change] = field(default_factory=list)
    peak_after: int | None = None
    fits_after: bool | None = None
    note: str = ""

    _derived: ClassVar[tuple[str, ...]] = ("flags",)

    @property
    def flags(self) -> list[str]:
        return [flag for change in self.changes for flag in change.flags]


def _tiling_changes(settings: RunSettings) -> list[tuple[Change, Callable[[RunSettings], RunSettings]]]:
    options = []
    current = settings.vae_tile
    for tile in TILE_CHOICES:
        if current is not None and tile >= current:
            continue
        flags = ["--vae-tiling", "on", "--vae-tile", str(tile)] if current is None else ["--vae-tile", str(tile)]
        what = f"VAE in {tile}-pixel tiles" if current is None else f"smaller VAE tiles ({tile} px)"
        rank = 1 + TILE_CHOICES.index(tile)
        options.append((Change(flags, what, "slightly slower VAE (overlaps decoded twice)", rank),
                        lambda s, t=tile: s.replace(vae_tile=t)))
    return options


def _knobs(settings: RunSettings) -> list[list[tuple[Change, Callable[[RunSettings], RunSettings]]]]:
    """Groups of mutually exclusive options (at most one per group); an empty choice is always allowed."""
    groups = []
    tiling = _tiling_changes(settings)
    if tiling:
        groups.append(tiling)
    fs = settings.freeswim
    if settings.method == "freeswim" and fs is not None and fs.mode == "cache" and fs.cache_device == "gpu":
        groups.append([(Change(["--set", "method.freeswim.cache_device=cpu"], "FreeSwim cross-attention cache in "
                               "pinned CPU memory", "a host-to-device copy per block on cached passes", 4),
                        lambda s: s.replace(freeswim=_with(s.freeswim, cache_device="cpu")))])
    if settings.device == "cuda" and not settings.offload:
        groups.append([(Change(["--offload", "model"], "model offload: only the running component on the GPU",
                               "components move between CPU and GPU once per stage", 5),
                        lambda s: s.replace(offload=True))])
    return groups


def _with(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def advise(settings: RunSettings, total: int, *, estimate: PlanEstimate | None = None) -> Advice:
    """The cheapest changes that make ``settings`` fit a device of ``total`` bytes (or ``fits=True`` as is)."""
    usable = usable_bytes(total)
    estimate = estimate or estimate_plan(settings, budget=total)
    if estimate.peak <= usable:
        return Advice(fits=True, peak=estimate.peak, usable=usable)
    best: tuple[int, list[Change], RunSettings, int] | None = None
    groups = _knobs(settings)
    for choice in itertools.product(*[[None, *group] for group in groups]):
        picked = [c for c in choice if c is not None]
        if not picked:
            continue
        candidate = settings
        for _, apply in picked:
            candidate = apply(candidate)
        peak = estimate_plan(candidate, budget=total).peak
        cost = sum(change.rank for change, _ in picked)
        if peak <= usable and (best is None or (cost, peak) < (best[0], best[3])):
            best = (cost, [change for change, _ in picked], candidate, peak)
    if best is not None:
        return Advice(fits=False, peak=estimate.peak, usable=usable, changes=best[1], peak_after=best[3],
                      fits_after=True)
    # Nothing but shorter videos: every knob on (the cheapest tile), then the most frames that fit ...
    knobs = [group[-1] for group in groups]
    candidate = _apply(settings, knobs)
    frames = _max_frames(candidate, total, usable)
    if frames is None:
        peak = estimate_plan(candidate.replace(frames=1), budget=total).peak
        return Advice(fits=False, peak=estimate.peak, usable=usable, changes=[c for c, _ in knobs], peak_after=peak,
                      fits_after=False, note="does not fit even with one frame: use a smaller --res or a larger GPU")
    # ... and of those knobs only the ones that the shorter video still needs (the costliest dropped first).
    for knob in sorted(knobs, key=lambda k: -k[0].rank):
        rest = [k for k in knobs if k is not knob]
        if estimate_plan(_apply(settings, rest).replace(frames=frames), budget=total).peak <= usable:
            knobs = rest
    changes = [change for change, _ in knobs]
    changes.append(Change(["--frames", str(frames)], f"{frames} frames instead of {settings.frames}",
                          "a shorter video", 10))
    peak = estimate_plan(_apply(settings, knobs).replace(frames=frames), budget=total).peak
    return Advice(fits=False, peak=estimate.peak, usable=usable, changes=changes, peak_after=peak, fits_after=True)


def _apply(settings: RunSettings, knobs) -> RunSettings:
    for _, apply in knobs:
        settings = apply(settings)
    return settings


def _max_frames(settings: RunSettings, total: int, usable: int) -> int | None:
    """Largest 4k+1 frame count below the current one whose estimate fits (the peak grows with frames)."""
    factor = settings.temporal_factor
    hi = (settings.frames - 1) // factor  # k of the current count
    lo, found = 0, None
    while lo <= hi:
        mid = (lo + hi) // 2
        frames = 1 + factor * mid
        if estimate_plan(settings.replace(frames=frames), budget=total).peak <= usable:
            found, lo = frames, mid + 1
        else:
            hi = mid - 1
    return found
