"""FreeSwim refinement transformer time vs dense refinement, one process, random weights (issue 6, rows 1-2).

For one refinement at the target size it times each kind of transformer pass FreeSwim makes, and the stock
dense pass, then composes the 35-step totals with CFG:
  dense     : 70 dense passes (batch 1)                          — plain full-attention video-to-video
  cache k   : ceil(35/k) guide passes (batch 2: window + full, cache refresh)
              + (35 - ceil(35/k)) cached cond passes + 35 uncond passes (both batch 1, window attention)
  exact     : 70 dual passes (batch 2, override every pass)      — the reference's no-cache semantics
Each pass is timed with CUDA events (median of --reps after a warm-up that also compiles flex), and the peak
memory of each pass kind is recorded. Weights are random (speed and memory do not depend on them).

--passes picks the pass kinds to time (a cached pass needs a filled cache: without `guide` one guide pass runs
untimed first). Totals are composed only from what was timed.

--layers N builds N blocks instead of the architecture's depth (same width), so a 2160p dense pass (~5 s a
block) fits a short run. Every block does the same work, so times are also reported scaled linearly by
depth / N, labelled "extrapolated": this scales the work outside the blocks too (patch embedding, RoPE, time
embedding, output head; tens of ms at 2160p), a small over-estimate that the window pass feels more than the
dense one. Ratios between passes use the scaled times, i.e. the same ratio as measured. Peaks stay
representative (activations peak inside one block) except for the cross-attention cache, which has N entries.

--compile times every pass a second time with each WanTransformerBlock compiled (diffusers'
compile_repeated_blocks: torch.compile per block, fullgraph=False so the Python controller and cache may break
the graph, dynamic=False as flex is compiled). Dynamo is reset before each pass kind, so each gets its own
compile, timed separately (warm-up minus a steady pass), and its own recompile budget; it prints the graphs
compiled and the largest difference to the eager output (max |compiled - eager| / max |eager|).

GPU (needs diffusers: carry the wheels):
    python3 bench/bench_freeswim_transformer.py --out $OUT/freeswim_transformer.json
    python3 bench/bench_freeswim_transformer.py --height 2160 --width 3840 --layers 4 --passes dense uncond --reps 1
    python3 bench/bench_freeswim_transformer.py --passes uncond --compile
CPU smoke test of the script itself (add --compile --kernel flex to check compilation):
    python bench/bench_freeswim_transformer.py --arch tiny --height 192 --width 320 --frames 9 --native 96x160 --reps 1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from upscale_dit.attention import build_token_geometry, default_kernel_options, freeswim_attention_scale
from upscale_dit.attention.cross_cache import CrossAttnCache
from upscale_dit.attention.dual_path import FreeSwimController, apply_freeswim
from upscale_dit.engine.random_weights import build_transformer
from upscale_dit.engine.sampler import PassController, PassInfo
from upscale_dit.profiling.architectures import architecture_for

PASS_KINDS = ("dense", "guide", "cached_cond", "uncond", "exact")
Measurement = tuple[float, int, torch.Tensor]  # seconds, peak bytes, output


def _timer(device: torch.device) -> Callable[[Callable[[], torch.Tensor]], Measurement]:
    if device.type == "cuda":
        def measure(fn):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000, torch.cuda.max_memory_allocated(), out
    else:
        def measure(fn):
            t = time.perf_counter()
            out = fn()
            return time.perf_counter() - t, 0, out
    return measure


@dataclass(frozen=True)
class Job:
    """One pass kind to time: its result key, printed label, the controller that runs it and its pass info."""

    key: str
    label: str
    controller: PassController
    info: PassInfo


GUIDE, CACHED, UNCOND = PassInfo("cond", 0, 1, 0.9), PassInfo("cond", 1, 1, 0.9), PassInfo("uncond", 1, 1, 0.9)


def _jobs(passes: list[str], cache_devices: list[str], *, geometry, scale: float, kernel: str,
          device: torch.device) -> list[Job]:
    """The selected pass kinds in the order they are timed; FreeSwim ones share a controller per cache device."""
    jobs = [Job("dense", "dense pass", PassController(), GUIDE)] if "dense" in passes else []
    for where in cache_devices:
        suffix = "" if where == cache_devices[0] else f"_{where}"
        wanted = [p for p in ("guide", "cached_cond") if p in passes] + (
            ["uncond"] if "uncond" in passes and not suffix else [])
        if not wanted:
            continue
        storage = device if where == "gpu" else torch.device("cpu")
        ctl = FreeSwimController(geometry=geometry, mode="cache", cache_steps=10**6, scale=scale, kernel=kernel,
                                 cache=CrossAttnCache(storage))
        labels = {"guide": (f"guide pass, cache on {where}", GUIDE),
                  "cached_cond": (f"cached cond pass, cache on {where}", CACHED),
                  "uncond": ("uncond pass (window)", UNCOND)}
        jobs += [Job(p + ("" if p == "uncond" else suffix), labels[p][0], ctl, labels[p][1]) for p in wanted]
    if "exact" in passes:
        ctl = FreeSwimController(geometry=geometry, mode="exact", scale=scale, kernel=kernel,
                                 cache=CrossAttnCache(device))
        jobs.append(Job("exact", "exact pass (window+full)", ctl, GUIDE))
    return jobs


def _compose(seconds: dict[str, float], steps: int, ks: list[int], cache_devices: list[str]) -> dict[str, float]:
    """35-step refinement totals with CFG, from whichever pass times are there."""
    totals = {}
    if "dense" in seconds:
        totals["dense"] = 2 * steps * seconds["dense"]
    if "exact" in seconds:
        totals["exact"] = 2 * steps * seconds["exact"]
    for where in cache_devices:
        suffix = "" if where == cache_devices[0] else f"_{where}"
        guide, cached, uncond = seconds.get("guide" + suffix), seconds.get("cached_cond" + suffix), seconds.get("uncond")
        if None in (guide, cached, uncond):
            continue
        for k in ks:
            guides = math.ceil(steps / k)
            totals[f"cache_k{k}_{where}"] = guides * guide + (steps - guides) * cached + steps * uncond
    return totals


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    reference = b.float().abs().max().clamp_min(1e-30)
    return float((a.float() - b.float()).abs().max() / reference)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="wan2.1-t2v-1.3b")
    ap.add_argument("--height", type=int, default=1088)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--native", default="480x832", help="native HxW of the model")
    ap.add_argument("--steps-run", type=int, default=35, help="refinement steps actually run (50 x 0.7)")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 2])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=512)
    ap.add_argument("--kernel", default="auto")
    ap.add_argument("--cache-device", nargs="+", default=["gpu"], choices=["gpu", "cpu"],
                    help="where the cross-attention cache lives (cpu: pinned memory, prefetched on a side stream); "
                         "several: the cache-mode passes are timed for each")
    ap.add_argument("--passes", nargs="+", choices=PASS_KINDS, default=list(PASS_KINDS),
                    help="pass kinds to time (uncond = the plain window pass)")
    ap.add_argument("--skip-exact", action="store_true", help="do not time the exact-mode pass")
    ap.add_argument("--layers", type=int, help="build this many blocks (default: the architecture's depth); times "
                                               "are also reported scaled linearly to the full depth")
    ap.add_argument("--compile", action="store_true",
                    help="time every pass again with the transformer blocks torch.compiled, and compare outputs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    passes = [p for p in PASS_KINDS if p in args.passes and not (p == "exact" and args.skip_exact)]

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arch = architecture_for(args.arch)
    depth = arch.transformer["num_layers"]
    layers = args.layers or depth
    if not 1 <= layers <= depth:
        ap.error(f"--layers must be in 1..{depth} for {args.arch}")
    depth_scale = depth / layers
    transformer = build_transformer({**arch.transformer, "num_layers": layers}, dtype=dtype, device=device)
    transformer = transformer.eval().requires_grad_(False)
    cfg = transformer.config
    native_h, native_w = (int(v) for v in args.native.split("x"))
    geometry = build_token_geometry(args.frames, args.height, args.width, native_height=native_h, native_width=native_w)
    scale = freeswim_attention_scale(cfg.attention_head_dim, (native_h // 16) * (native_w // 16))
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, cfg.in_channels, geometry.frames, args.height // 8, args.width // 8, generator=g)
    latents = latents.to(device, dtype)
    embeds = torch.randn(1, args.text_len, cfg.text_dim, generator=g).to(device, dtype)
    timestep = torch.tensor([900.0], device=device)
    measure = _timer(device)
    jobs = _jobs(passes, args.cache_device, geometry=geometry, scale=scale, kernel=args.kernel, device=device)
    print(f"{args.arch}: {layers} of {depth} blocks, {args.frames}x{args.height}x{args.width} = "
          f"{geometry.num_tokens:,} tokens, window {geometry.window}, {dtype}, {device}", flush=True)

    def run(job: Job) -> torch.Tensor:
        return job.controller.run_pass(transformer, latents, timestep, embeds, job.info)

    def attention(job: Job):
        if isinstance(job.controller, FreeSwimController):
            return apply_freeswim(transformer, job.controller)
        return contextlib.nullcontext()

    def ready(job: Job) -> None:
        """A cached pass reads the cache: fill it with one untimed guide pass when nothing did yet."""
        ctl = job.controller
        if isinstance(ctl, FreeSwimController) and job.info == CACHED and len(ctl.cache) == 0:
            ctl.run_pass(transformer, latents, timestep, embeds, GUIDE)

    def timed(job: Job) -> tuple[dict[str, Any], torch.Tensor]:
        warmup = measure(lambda: run(job))  # flex compile (and block compile in the compiled round)
        runs = [measure(lambda: run(job)) for _ in range(args.reps)]
        seconds = statistics.median(r[0] for r in runs)
        result = {"seconds": seconds, "warmup_seconds": warmup[0], "peak_bytes": max(r[1] for r in runs)}
        if layers != depth:
            result["seconds_full_depth_extrapolated"] = seconds * depth_scale
        line = f"{job.label:<34} {seconds:8.3f} s"
        if layers != depth:
            line += f"  x{depth_scale:g} -> {seconds * depth_scale:8.2f} s at {depth} blocks (extrapolated)"
        print(f"{line}   peak {result['peak_bytes'] / 2**30:6.1f} GiB", flush=True)
        return result, runs[-1][2]

    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for job in jobs:
            with attention(job):
                ready(job)
                results[job.key], out = timed(job)
            if args.compile:
                outputs[job.key] = out
    kernel = next((j.controller.chosen_kernel for j in jobs if isinstance(j.controller, FreeSwimController)), None)

    compiled: dict[str, dict[str, Any]] = {}
    if args.compile:
        from torch._dynamo.utils import counters

        if "dense" in outputs and "uncond" in outputs:  # how far another attention moves these random weights
            yardstick = _max_rel_diff(outputs["uncond"], outputs["dense"])
            print(f"\nyardstick: window vs dense output, max rel diff {yardstick:.2e} (a compile diff far below "
                  "this is rounding)", flush=True)
        print(f"\ncompiled ({len(transformer.blocks)} x WanTransformerBlock, torch.compile fullgraph=False, "
              "dynamic=False); compile = warm-up - steady pass:", flush=True)
        transformer.compile_repeated_blocks(fullgraph=False, dynamic=False)
        with torch.no_grad():
            for job in jobs:
                with attention(job):
                    ready(job)
                    torch._dynamo.reset()  # this pass kind compiles on its own
                    graphs = counters["stats"]["unique_graphs"]
                    result, out = timed(job)
                result["compile_seconds"] = result["warmup_seconds"] - result["seconds"]
                result["graphs"] = counters["stats"]["unique_graphs"] - graphs
                result["speedup"] = results[job.key]["seconds"] / result["seconds"]
                result["max_rel_diff"] = _max_rel_diff(out, outputs.pop(job.key))
                compiled[job.key] = result
                print(f"{'':<34} compile {result['compile_seconds']:7.1f} s, {result['graphs']} graph(s), "
                      f"eager/compiled {result['speedup']:5.3f}, max rel diff {result['max_rel_diff']:.2e}", flush=True)

    def full_depth(source: dict[str, dict[str, Any]]) -> dict[str, float]:
        return {key: r["seconds"] * depth_scale for key, r in source.items()}

    n = args.steps_run
    seconds = full_depth(results)
    if "dense" in seconds and len(seconds) > 1:
        print("\nper pass / dense pass (same run):")
        for key, s in seconds.items():
            if key != "dense":
                print(f"  {key:<16} {s / seconds['dense']:6.3f}")
    totals = _compose(seconds, n, args.k, args.cache_device)
    compiled_totals = _compose(full_depth(compiled), n, args.k, args.cache_device)
    if totals:
        note = f" (scaled from {layers} blocks)" if layers != depth else ""
        print(f"\n{n}-step refinement with CFG, transformer time{note} (composed from the pass times above):")
        for name, total in totals.items():
            ratio = f"   / dense = {total / totals['dense']:5.3f}" if "dense" in totals else ""
            print(f"  {name:<14} {total:9.1f} s{ratio}")
    for name, total in compiled_totals.items():
        ratio = f"   / eager dense = {total / totals['dense']:5.3f}" if "dense" in totals else ""
        print(f"  {name + ' compiled':<23} {total:9.1f} s{ratio}")
    record = {
        "date": dt.date.today().isoformat(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": {"frames": args.frames, "height": args.height, "width": args.width,
                  "grid": list(geometry.grid), "window": list(geometry.window), "tokens": geometry.num_tokens},
        "layers": layers, "depth": depth,
        "full_depth_note": None if layers == depth else f"seconds x {depth_scale:g}, linear in depth (extrapolated)",
        "kernel": kernel, "flex_options": default_kernel_options(device) if kernel == "flex" else None,
        "cache_devices": args.cache_device, "passes": results, "totals_s": totals,
        "ratios_to_dense": {k: v / totals["dense"] for k, v in totals.items()} if "dense" in totals else {},
        "pass_ratios_to_dense": {k: v / seconds["dense"] for k, v in seconds.items()} if "dense" in seconds else {},
    }
    if args.compile:
        record["compiled"] = {"passes": compiled, "totals_s": compiled_totals,
                              "options": {"fullgraph": False, "dynamic": False, "reset_per_pass": True}}
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
