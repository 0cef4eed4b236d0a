"""FreeSwim refinement transformer time vs dense refinement, one process, random weights (issue 6, rows 1-2).

For one refinement at the target size it times each kind of transformer pass FreeSwim makes, and the stock
dense pass, then composes the 35-step totals with CFG:
  dense     : 70 dense passes (batch 1)                          — plain full-attention video-to-video
  cache k   : ceil(35/k) guide passes (batch 2: window + full, cache refresh)
              + (35 - ceil(35/k)) cached cond passes + 35 uncond passes (both batch 1, window attention)
  exact     : 70 dual passes (batch 2, override every pass)      — the reference's no-cache semantics
Each pass is timed with CUDA events (median of --reps after a warm-up that also compiles flex), and the peak
memory of each pass kind is recorded. Weights are random (speed and memory do not depend on them).

GPU (needs diffusers: carry the wheels):
    python3 bench/bench_freeswim_transformer.py --out $OUT/freeswim_transformer.json
CPU smoke test of the script itself:
    python bench/bench_freeswim_transformer.py --arch tiny --height 192 --width 320 --frames 9 --native 96x160 --reps 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import time
from pathlib import Path

import torch

from upscale_dit.attention import build_token_geometry, freeswim_attention_scale
from upscale_dit.attention.cross_cache import CrossAttnCache
from upscale_dit.attention.dual_path import FreeSwimController, apply_freeswim
from upscale_dit.engine.random_weights import build_transformer
from upscale_dit.engine.sampler import PassController, PassInfo
from upscale_dit.profiling.architectures import architecture_for


def _timer(device: torch.device):
    if device.type == "cuda":
        def measure(fn):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000, torch.cuda.max_memory_allocated()
    else:
        def measure(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t, 0
    return measure


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
    ap.add_argument("--skip-exact", action="store_true", help="do not time the exact-mode pass")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arch = architecture_for(args.arch)
    transformer = build_transformer(arch.transformer, dtype=dtype, device=device).eval().requires_grad_(False)
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

    def timed(label, fn):
        fn()  # warm-up (and flex compile)
        runs = [measure(fn) for _ in range(args.reps)]
        seconds = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"{label:<28} {seconds:8.3f} s   peak {peak / 2**30:6.1f} GiB", flush=True)
        return {"seconds": seconds, "peak_bytes": peak}

    results: dict[str, dict] = {}
    plain = PassController()
    with torch.no_grad():
        results["dense"] = timed("dense pass", lambda: plain.run_pass(transformer, latents, timestep, embeds,
                                                                       PassInfo("cond", 0, 1, 0.9)))
        plans = [("cache", where) for where in args.cache_device] + ([] if args.skip_exact else [("exact", "gpu")])
        for mode, where in plans:
            storage = device if where == "gpu" else torch.device("cpu")
            ctl = FreeSwimController(geometry=geometry, mode=mode, cache_steps=10**6, scale=scale, kernel=args.kernel,
                                     cache=CrossAttnCache(storage))
            suffix = "" if where == args.cache_device[0] else f"_{where}"
            with apply_freeswim(transformer, ctl):
                if mode == "cache":
                    results["guide" + suffix] = timed(f"guide pass, cache on {where}", lambda: ctl.run_pass(
                        transformer, latents, timestep, embeds, PassInfo("cond", 0, 1, 0.9)))
                    results["cached_cond" + suffix] = timed(f"cached cond pass, cache on {where}", lambda: ctl.run_pass(
                        transformer, latents, timestep, embeds, PassInfo("cond", 1, 1, 0.9)))
                    if not suffix:
                        results["uncond"] = timed("uncond pass (window)", lambda: ctl.run_pass(
                            transformer, latents, timestep, embeds, PassInfo("uncond", 1, 1, 0.9)))
                else:
                    results["exact"] = timed("exact pass (window+full)", lambda: ctl.run_pass(
                        transformer, latents, timestep, embeds, PassInfo("cond", 0, 1, 0.9)))
            kernel = ctl.chosen_kernel

    n = args.steps_run
    dense_total = 2 * n * results["dense"]["seconds"]
    totals = {"dense": dense_total}
    if "exact" in results:
        totals["exact"] = 2 * n * results["exact"]["seconds"]
    for where in args.cache_device:
        suffix = "" if where == args.cache_device[0] else f"_{where}"
        for k in args.k:
            guides = math.ceil(n / k)
            totals[f"cache_k{k}_{where}"] = (guides * results["guide" + suffix]["seconds"]
                                            + (n - guides) * results["cached_cond" + suffix]["seconds"]
                                            + n * results["uncond"]["seconds"])
    print(f"\n{n}-step refinement with CFG, transformer time (composed from the pass times above):")
    for name, total in totals.items():
        print(f"  {name:<10} {total:9.1f} s   / dense = {total / dense_total:5.3f}")
    record = {
        "date": dt.date.today().isoformat(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": {"frames": args.frames, "height": args.height, "width": args.width,
                  "grid": list(geometry.grid), "window": list(geometry.window), "tokens": geometry.num_tokens},
        "kernel": kernel, "cache_devices": args.cache_device, "passes": results, "totals_s": totals,
        "ratios_to_dense": {k: v / dense_total for k, v in totals.items()},
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
