"""Benchmark FreeSwim window attention (flex, natural vs tiled layout) against dense SDPA on one GPU.

Real shape by default: Wan2.1-1.3B at 1088x1920x81 frames (21x68x120 = 171,360 tokens), 12 heads x
128, bf16, batch 1, the reference 31x53 inward window. All numbers come from one process, so the
window/dense ratios compare like with like.

Measured:
  * dense SDPA (no mask; default backend, plus flash and cuDNN where they run);
  * flex window attention per variant (layout, sparse block size, Triton kernel options), and flex
    with no mask at all (its dense ceiling on this card);
  * block-mask build time (first call on an empty geometry cache) and exact / block densities;
  * useful TFLOP/s = 4 * allowed pairs * head_dim * heads / time (masked-out work not counted);
  * correctness: a sample of query rows at the real shape against an fp32 dense computation, and a
    small grid against the `sdpa_mask` kernel in fp32.

Usage (GPU machine; needs torch with CUDA, not diffusers; ~1 minute on an H200):
    python3 bench/bench_window_kernel.py --out $OUT/window_kernel.json
    python3 bench/bench_window_kernel.py --skip-flex-dense --variants natural,tiled,tiled-kv128 --reps 5
    python3 bench/bench_window_kernel.py --variants tiled-flash,tiled-flash-kv64 --flex-dense-backends FLASH,TRITON
        # FlashAttention-4 as flex's backend (needs flash-attn-4: bench/flash4_wheels.sh, gpu_flash4_install.sh)
    python3 bench/bench_window_kernel.py --device cpu --frames 9 --height 256 --width 384 \
        --native 128x192 --heads 2 --head-dim 32    # CPU smoke test of the script itself
Results and their commands: bench/RESULTS.md, section "Window-attention kernel (issue 3)".
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import statistics
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def import_attention() -> types.ModuleType:
    """Import ``upscale_dit.attention`` without running ``upscale_dit/__init__.py``.

    The package root may import the engine (and with it diffusers), which the GPU image lacks; the
    attention subpackage needs only torch.
    """
    if "upscale_dit" not in sys.modules:
        package = types.ModuleType("upscale_dit")
        package.__path__ = [str(ROOT / "upscale_dit")]
        sys.modules["upscale_dit"] = package
    return importlib.import_module("upscale_dit.attention")


A = import_attention()

# name -> (layout, sparse block (q, kv), Triton kernel options, mask).
# Block size None and options None are the library's defaults (FLEX_BLOCK_SIZE, default_kernel_options);
# {} means no options. mask "window" is the library's kernel; the others build the block mask here:
# "signed" is the library's eager-form predicate compiled (to price the unsigned form), "cheap" and
# "all-full" are diagnostics with wrong results on purpose (large error column) that price the
# per-element mask of partial blocks.
VARIANTS: dict[str, tuple[str, tuple[int, int] | None, dict[str, Any] | None, str]] = {
    "natural": ("natural", None, None, "window"),
    "tiled": ("tiled", None, None, "window"),
    "tiled-kv128": ("tiled", (128, 128), None, "window"),
    "tiled-no-tma": ("tiled", None, {}, "window"),
    "tiled-signed-mask": ("tiled", None, None, "signed"),
    "tiled-safe": ("tiled", None, {"USE_TMA": True, "ROWS_GUARANTEED_SAFE": True}, "window"),
    "tiled-m128n128w8s2": ("tiled", (128, 128), {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}, "window"),
    "tiled-tma-s4": ("tiled", None, {"USE_TMA": True, "num_stages": 4}, "window"),
    "diag-cheap": ("tiled", None, None, "cheap"),
    "diag-all-full": ("tiled", None, None, "all-full"),
    # 3x1 tiles: 22.45% of the (128, 64) blocks visited and 5.2% partial, vs 22.67% and 5.8% for 3x2.
    "tiled3x1": ("tiled3x1", None, None, "window"),
    # FlashAttention-4 (CuTe DSL) as flex's backend: needs the flash-attn-4 package; Hopper tiles are 128 x n,
    # with the sparse key block equal to the kernel's tile_n.
    # "window" there is the library's FLASH form (signed, constant window lengths); "signed" reads the
    # lengths from tables like the Triton forms (the first FLASH measurement).
    "tiled-flash": ("tiled", None, {"BACKEND": "FLASH"}, "window"),
    "tiled-flash-signed": ("tiled", (128, 128), {"BACKEND": "FLASH"}, "signed"),
    "tiled-flash-kv64": ("tiled", (128, 64), {"BACKEND": "FLASH"}, "window"),
    "tiled3x1-flash": ("tiled3x1", None, {"BACKEND": "FLASH"}, "window"),
    "tiled3x1-flash-kv64": ("tiled3x1", (128, 64), {"BACKEND": "FLASH"}, "window"),
    # (a mask_mod is needed: without one FLASH drops the block lists and computes dense attention)
    "diag-flash-cheap": ("tiled", (128, 128), {"BACKEND": "FLASH"}, "cheap"),
}
DEFAULT_VARIANTS = "natural,tiled,tiled-kv128,tiled-no-tma,tiled-signed-mask,diag-all-full"


def parse_layout(name: str) -> Any:
    """``natural``, ``tiled`` (the library's default tile) or ``tiledRxC`` (a ``TokenLayout`` with that tile)."""
    if name in ("natural", "tiled"):
        return A.resolve_layout(name)
    rows, cols = name.removeprefix("tiled").split("x")
    return A.TokenLayout.tiled(int(rows), int(cols))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_time_ms(fn: Callable[[], Any], *, warmup: int, reps: int) -> dict[str, float]:
    """Median / min / max of ``reps`` timed calls (CUDA events; host clock on CPU) after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def sample_queries(g: Any, n: int, device: torch.device) -> torch.Tensor:
    """Natural indices of n queries: the four corners and edge midpoints of frames 0 and F-1, plus random ones."""
    hw, h, w = g.tokens_per_frame, g.rows, g.cols
    fixed = [(f, r, c) for f in (0, g.frames - 1) for r in (0, h // 2, h - 1) for c in (0, w // 2, w - 1)]
    idx = [f * hw + r * w + c for f, r, c in fixed]
    gen = torch.Generator().manual_seed(0)
    idx += torch.randint(0, g.num_tokens, (n - len(idx),), generator=gen).tolist()
    return torch.tensor(idx, device=device)


def reference_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Any, rows: torch.Tensor, scale: float) -> torch.Tensor:
    """fp32 dense window attention for the natural-order query indices ``rows``; returns [n, H, D]."""
    hw = g.tokens_per_frame
    keys = torch.arange(g.num_tokens, device=q.device)
    r_lo, r_hi = g.row_bounds(q.device)
    c_lo, c_hi = g.col_bounds(q.device)
    kr, kc = (keys % hw) // g.cols, keys % g.cols
    qr, qc = (rows % hw) // g.cols, rows % g.cols
    mask = (kr >= r_lo[qr, None]) & (kr <= r_hi[qr, None]) & (kc >= c_lo[qc, None]) & (kc <= c_hi[qc, None])
    qs = q[0, rows].float().transpose(0, 1)  # [H, n, D]
    out = []
    for h in range(q.shape[2]):  # one head at a time keeps the [n, S] scores small
        scores = (qs[h] @ k[0, :, h].float().T) * scale
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        out.append(probs @ v[0, :, h].float())
    return torch.stack(out, dim=1)  # [n, H, D]


def custom_mask_runner(
    g: Any, structure: Any, layout: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
    mask: str, options: dict[str, Any] | None,
) -> Callable:
    """Flex over the library's block lists with another mask_mod (see VARIANTS)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    def lists(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = selected.sum(1, dtype=torch.int32)[None, None].contiguous()
        order = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices.to(torch.int32)
        return counts, order[None, None].contiguous()

    def cheap_mask(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return kv_idx >= 0

    partial = structure.visited & ~structure.full
    if mask == "all-full":
        kv_num, kv_idx = lists(torch.zeros_like(partial))
        full_num, full_idx = lists(structure.visited)
        mask_mod = None
    else:
        kv_num, kv_idx = lists(partial)
        full_num, full_idx = lists(structure.full)
        signed = A.kernels.flex._window_mask_mod(g, A.resolve_layout(layout), q.device, "signed")
        mask_mod = {"signed": signed, "cheap": cheap_mask}[mask]
    block_mask = BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=structure.block_size, mask_mod=mask_mod,
        seq_lengths=(g.num_tokens, g.num_tokens),
    )
    compiled = A.kernels.flex._compiled_flex()
    args = tuple(x.transpose(1, 2) for x in (q, k, v))
    options = A.default_kernel_options(q.device) if options is None else options
    return lambda: compiled(*args, block_mask=block_mask, scale=scale, kernel_options=options).transpose(1, 2)


def configure_dynamo() -> None:
    """Each kernel-options dict is a new guard on the compiled flex; allow enough recompiles."""
    import torch._dynamo

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))


def small_grid_check(device: torch.device) -> dict[str, float]:
    """flex (bf16 and fp32, both layouts) vs sdpa_mask in fp32 on a grid small enough for a dense mask."""
    g = A.TokenGeometry(frames=21, rows=16, cols=24, window_rows=9, window_cols=13)
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(2, g.num_tokens, 4, 128, device=device, generator=gen) for _ in range(3))
    ref = A.window_attention(q, k, v, g, kernel="sdpa_mask", scale=0.0925)
    out: dict[str, float] = {}
    for layout in ("natural", "tiled"):
        for dtype in (torch.float32, torch.bfloat16) if layout == "tiled" else (torch.bfloat16,):
            qq, kk, vv = (A.to_layout(x.to(dtype), g, layout) for x in (q, k, v))
            res = A.window_attention(qq, kk, vv, g, kernel="flex", layout=layout, scale=0.0925)
            out[f"{layout}_{str(dtype).removeprefix('torch.')}"] = rel_err(A.from_layout(res, g, layout), ref)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: $OUT/window_kernel.json)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list from {list(VARIANTS)}")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=1088)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--native", default="480x832", help="native HxW in pixels (window source)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--check-rows", type=int, default=256, help="query rows checked at the real shape")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke test only")
    parser.add_argument("--skip-flex-dense", action="store_true", help="skip flex without a mask (its ceiling)")
    parser.add_argument("--flex-dense-backends", default="TRITON", help="comma list of flex backends (TRITON, FLASH)")
    args = parser.parse_args()
    out_path = args.out or Path(os.environ.get("OUT", ROOT / "bench")) / "window_kernel.json"

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (--device cpu runs a smoke test on a small --height/--width)")
    device = torch.device(args.device)
    configure_dynamo()
    native_h, native_w = (int(x) for x in args.native.split("x"))
    g = A.build_token_geometry(args.frames, args.height, args.width, native_height=native_h, native_width=native_w)
    heads, dim, s = args.heads, args.head_dim, g.num_tokens
    scale = A.freeswim_attention_scale(dim, (native_h // 16) * (native_w // 16))
    useful_flop = A.attention_flops(g, num_heads=heads, head_dim=dim)
    dense_flop = 4 * s * s * dim * heads
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "geometry": repr(g),
        "tokens": s, "heads": heads, "head_dim": dim, "dtype": "bfloat16", "scale": scale,
        "exact_density": A.mask_density(g),
        "useful_tflop": useful_flop / 1e12, "dense_tflop": dense_flop / 1e12,
        "dense": {}, "variants": {}, "block_masks": {},
    }
    print(f"# {result['gpu']} torch {result['torch']} {g!r} S={s} heads={heads}x{dim} bf16", flush=True)

    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, s, heads, dim, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(3))

    # ---- dense SDPA baselines (no mask)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    backends = {"default": None}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends.update({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION})
    except ImportError:  # pragma: no cover
        pass
    for name, backend in backends.items():
        def run(backend: Any = backend) -> torch.Tensor:
            if backend is None:
                return F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
        try:
            timing = cuda_time_ms(run, warmup=args.warmup, reps=args.reps)
            timing["tflops"] = dense_flop / timing["median_ms"] / 1e9
            result["dense"][name] = timing
            print(f"dense sdpa {name:8s} {timing['median_ms']:8.1f} ms  {timing['tflops']:6.0f} TFLOP/s", flush=True)
        except Exception as error:  # noqa: BLE001 - report and go on
            result["dense"][name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            print(f"dense sdpa {name}: {result['dense'][name]['error']}", flush=True)
    dense_ms = result["dense"]["default"]["median_ms"]
    dense_tflops = result["dense"]["default"]["tflops"]

    # ---- layout permutation cost (applied once per transformer forward in the engine)
    x = torch.randn(1, s, heads * dim, device=device, dtype=torch.bfloat16)
    A.token_permutation(g, "tiled", device)
    result["permute_ms"] = cuda_time_ms(lambda: A.to_layout(x, g, "tiled"), warmup=2, reps=10)["median_ms"]
    del x

    # ---- correctness reference rows (natural indices) at the real shape
    rows = sample_queries(g, args.check_rows, device)
    ref_rows = reference_rows(q, k, v, g, rows, scale)
    permuted: dict[Any, tuple[torch.Tensor, ...]] = {}

    # ---- flex variants
    for name in [n for n in args.variants.split(",") if n]:
        layout_name, block, options, mask = VARIANTS[name]
        layout = parse_layout(layout_name)
        options = A.default_kernel_options(device) if options is None else options
        flash = options.get("BACKEND") == "FLASH"
        block = block or (A.FLASH_BLOCK_SIZE if flash else A.FLEX_BLOCK_SIZE)
        entry: dict[str, Any] = {"layout": layout.name, "block_size": list(block), "mask": mask, "kernel_options": options}
        try:
            g.cache.clear()
            sync()
            t0 = time.perf_counter()
            A.window_block_mask(g, layout, block, device, mask_form="flash" if flash else None)
            sync()
            entry["block_mask_build_ms"] = (time.perf_counter() - t0) * 1e3
            structure = A.block_structure(g, layout, block, device)
            entry["block_density"] = structure.density
            entry["full_block_fraction"] = structure.full_fraction
            if layout not in permuted:
                permuted.clear()  # one layout's copies at a time (3 x 0.5 GiB at 1080p)
                permuted[layout] = tuple(A.to_layout(t, g, layout) for t in (q, k, v))
            qq, kk, vv = permuted[layout]

            def run(qq: torch.Tensor = qq, kk: torch.Tensor = kk, vv: torch.Tensor = vv) -> torch.Tensor:
                return A.flex_window_attention(
                    qq, kk, vv, g, scale=scale, layout=layout, block_size=block, kernel_options=options
                )

            if mask != "window":
                run = custom_mask_runner(g, structure, layout, qq, kk, vv, scale, mask, options)

            sync()
            t0 = time.perf_counter()
            res = run()
            sync()
            entry["first_call_s"] = time.perf_counter() - t0
            positions = A.inverse_permutation(g, layout, device)[rows]
            entry["rel_err_rows_vs_fp32"] = rel_err(res[0, positions], ref_rows)
            entry["finite"] = bool(torch.isfinite(res).all())
            del res
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            timing = cuda_time_ms(run, warmup=args.warmup, reps=args.reps)
            entry.update(timing)
            if device.type == "cuda":
                entry["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            entry["useful_tflops"] = useful_flop / timing["median_ms"] / 1e9
            entry["time_vs_dense"] = timing["median_ms"] / dense_ms
            entry["useful_tflops_vs_dense"] = entry["useful_tflops"] / dense_tflops
            entry["visited_tflops"] = dense_flop * structure.density / timing["median_ms"] / 1e9
            print(
                f"flex {name:20s} {timing['median_ms']:8.1f} ms  useful {entry['useful_tflops']:5.0f} TFLOP/s "
                f"({entry['useful_tflops_vs_dense']:.2f} of dense)  blocks {structure.density:.3f} "
                f"full {structure.full_fraction:.3f}  build {entry['block_mask_build_ms']:.0f} ms  "
                f"err {entry['rel_err_rows_vs_fp32']:.1e}",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - one failing variant must not lose the others
            entry["error"] = f"{type(error).__name__}: {error}"[:2000]
            entry["traceback"] = traceback.format_exc()[-3000:]
            print(f"flex {name}: FAILED {entry['error'][:300]}", flush=True)
        result["variants"][name] = entry
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))  # keep partial results if a later step dies

    # ---- flex with no mask: the kernel's own dense throughput on this card
    if not args.skip_flex_dense and device.type == "cuda":
        from torch.nn.attention.flex_attention import flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        for backend in args.flex_dense_backends.split(","):
            key = "flex_dense" if backend == "TRITON" else f"flex_dense_{backend.lower()}"
            options = {} if backend == "TRITON" else {"BACKEND": backend}
            try:
                timing = cuda_time_ms(
                    lambda: compiled(qt, kt, vt, scale=scale, kernel_options=options),
                    warmup=args.warmup, reps=max(2, args.reps // 2),
                )
                timing["tflops"] = dense_flop / timing["median_ms"] / 1e9
                result[key] = timing
                print(f"flex dense {backend:7s} (no mask) {timing['median_ms']:8.1f} ms  {timing['tflops']:6.0f} TFLOP/s", flush=True)
            except Exception as error:  # noqa: BLE001
                result[key] = {"error": f"{type(error).__name__}: {error}"[:300]}
                print(f"flex dense {backend}: FAILED {result[key]['error']}", flush=True)

    # ---- small grid, full comparison with the sdpa_mask kernel
    try:
        if device.type != "cuda":
            raise RuntimeError("skipped on cpu")
        result["small_grid_rel_err"] = small_grid_check(device)
        print("small grid flex vs sdpa_mask fp32:", {k: f"{v:.1e}" for k, v in result["small_grid_rel_err"].items()})
    except Exception as error:  # noqa: BLE001
        result["small_grid_rel_err"] = {"error": f"{type(error).__name__}: {error}"[:300]}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))

    print("\n| variant | ms | x dense time | useful TFLOP/s | / dense TFLOP/s | block density | rel err |")
    print("|---|---|---|---|---|---|---|")
    print(f"| dense SDPA | {dense_ms:.1f} | 1.00 | {dense_tflops:.0f} (dense) | 1.00 | 1.000 | - |")
    for name, e in result["variants"].items():
        if "error" in e:
            print(f"| {name} | failed | | | | | |")
            continue
        print(
            f"| flex {name} | {e['median_ms']:.1f} | {e['time_vs_dense']:.2f} | {e['useful_tflops']:.0f} | "
            f"{e['useful_tflops_vs_dense']:.2f} | {e['block_density']:.3f} | {e['rel_err_rows_vs_fp32']:.1e} |"
        )
    print(f"exact density {result['exact_density']:.4f}; JSON: {out_path}")


if __name__ == "__main__":
    main()
