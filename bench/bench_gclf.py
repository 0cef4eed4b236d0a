"""GPU micro-benchmark (not collected by pytest): GCLF attention calls against dense SDPA.

Training shape (1 frame, 68x120 tokens, forward + backward) and inference shape (21 frames, 68x120 tokens,
forward only), Wan2.1-1.3B heads (12 x 128), bf16, window = native 30x52 grid, pool 2.

    python bench/bench_gclf.py --out $OUT/gclf_bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from upscale_dit.attention.gclf import gclf_attention_flex, gclf_attention_sdpa, pool_tokens
from upscale_dit.attention.geometry import build_token_geometry


def _time(fn, *, backward: bool, repeat: int = 5, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        if backward:
            out.float().square().mean().backward()
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke test)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    heads, dim = (12, 128) if not args.small else (2, 16)
    shapes = {"train_1x68x120": (1, True), "infer_21x68x120": (21, False)}
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__}
    for name, (frames, backward) in shapes.items():
        height, width = (1088, 1920) if not args.small else (192, 320)
        native = (480, 832) if not args.small else (96, 160)
        video_frames = 4 * (frames - 1) + 1
        geometry = build_token_geometry(video_frames, height, width, native_height=native[0], native_width=native[1],
                                        window="native")
        g = torch.Generator(device).manual_seed(0)
        q, k, v = (torch.randn(1, geometry.num_tokens, heads, dim, generator=g, device=device, dtype=dtype)
                   .requires_grad_(backward) for _ in range(3))
        variants = {
            "dense_sdpa": lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                 v.transpose(1, 2)).transpose(1, 2),
            "gclf_flex_natural": lambda: gclf_attention_flex(q, k, v, geometry, pool=2, layout="natural",
                                                             compile=device.type == "cuda"),
            "gclf_flex_tiled": lambda: gclf_attention_flex(q, k, v, geometry, pool=2, layout="tiled",
                                                           compile=device.type == "cuda"),
            "pool_kv_only": lambda: pool_tokens(k, geometry, 2) + 0 * pool_tokens(v, geometry, 2).sum(),
        }
        if frames == 1:
            variants["gclf_sdpa_dense_mask"] = lambda: gclf_attention_sdpa(q, k, v, geometry, pool=2)
        row = {"tokens": geometry.num_tokens, "backward": backward}
        for variant, fn in variants.items():
            try:
                row[variant] = round(_time(fn, backward=backward and device.type == "cuda"), 3)
            except Exception as exc:  # noqa: BLE001 - report and go on
                row[variant] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            print(name, variant, row[variant], flush=True)
        results[name] = row
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
