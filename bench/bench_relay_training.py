"""GPU benchmark (not collected by pytest): stage-2 Relay training steps on the random-weight Wan2.1-1.3B.

Runs the real trainer (`RelayTrainer.begin_stage(2)` + `train_step`: merge of a stage-1 file, fresh rank-32 LoRA
on the 300 target linears, GCLF self-attention, HFATO loss, AdamW, gradient checkpointing, bf16 base) on one
cached random 1-frame sample at 1088x1920 (68x120 = 8160 tokens, 512 text tokens), for each attention variant.

    python bench/bench_relay_training.py --out $OUT/relay_bench.json

Model FLOPs per step = 3 x forward matmul FLOPs (upscale_dit.profiling.forward_flops, GCLF keys per query); MFU is
that over the card's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from upscale_dit.adapters import encode_stage, model_signature, RelayAdapterInfo, write_safetensors_atomic
from upscale_dit.config import get_model_preset
from upscale_dit.config.loader import nest
from upscale_dit.engine.device import cast_keeping_fp32
from upscale_dit.profiling.attention import gclf_keys
from upscale_dit.profiling.dims import TokenGrid
from upscale_dit.profiling.flops import Branch, forward_flops
from upscale_dit.training import layer_train_config
from upscale_dit.training.cache import Sample, save_tensor
from upscale_dit.training.checkpoint import RunFolder
from upscale_dit.training.lora import adapter_state, add_stage_adapter, remove_adapters
from upscale_dit.training.run import _build_plans
from upscale_dit.training.trainer import RelayTrainer

T2V_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1088)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="flex,sdpa,full")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from diffusers import WanTransformer3DModel

    device, dtype = torch.device("cuda"), torch.bfloat16
    preset = get_model_preset("wan2.1-t2v-1.3b")
    with torch.device(device):
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(**T2V_1_3B)
    cast_keeping_fp32(transformer, dtype)
    transformer.eval().requires_grad_(False)
    root = Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(0)
    latent = root / "latent.safetensors"
    text = root / "text.safetensors"
    save_tensor(latent, torch.randn(1, 16, 1, args.height // 8, args.width // 8, generator=g))
    save_tensor(text, torch.randn(1, 512, 4096, generator=g).to(dtype))
    samples = [Sample(name="random", latents={(args.width, args.height): latent}, text=text)]
    card = torch.cuda.get_device_name(device)
    results = {"device": card, "torch": torch.__version__, "size": f"{args.width}x{args.height}", "variants": {}}
    for variant in args.variants.split(","):
        flags = {"model": "wan2.1-t2v-1.3b", "output": str(root / variant), "stage2.resolution":
                 f"{args.width}x{args.height}", "stage1.steps": 1, "stage2.steps": 10**6,
                 "gclf.kernel": "flex" if variant == "full" else variant, "checkpoint.every": 10**6}
        config = layer_train_config(flags=nest(flags))
        plans = _build_plans(config, preset)
        run = RunFolder(config.output)
        run.create({})
        add_stage_adapter(transformer, 1, config.lora, seed=0)
        info = RelayAdapterInfo(base_model=preset.name, base_arch=model_signature(transformer.config),
                                native_size=(preset.native_width, preset.native_height),
                                stage_sizes={1: (832, 480)}, steps={1: 1}, rank=32, alpha=32.0,
                                targets=config.lora.targets, stages=(1,))
        write_safetensors_atomic(run.stage_file(1), *encode_stage(adapter_state(transformer, 1), info, 1, "diffusers"))
        remove_adapters(transformer)
        trainer = RelayTrainer(transformer, samples, plans, config, device=device, dtype=dtype, run=run)
        trainer.begin_stage(2)
        if variant == "full":
            trainer._remove_gclf()  # stock dense attention at the same size: the baseline GCLF improves on
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for i in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            started = time.perf_counter()
            record = trainer.train_step()
            torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - started)
            losses.append(record["loss"])
        geometry = plans[2].geometry
        grid = TokenGrid(geometry.frames, geometry.rows, geometry.cols)
        keys = geometry.num_tokens if variant == "full" else gclf_keys(grid, geometry.window, config.gclf.pool)
        fwd = forward_flops(T2V_1_3B, num_tokens=geometry.num_tokens, text_tokens=512,
                            branches=[Branch(keys_per_query=keys)]).total
        step = statistics.median(times)
        peak = next((v for k, v in PEAK_BF16.items() if k in card), 989e12)
        results["variants"][variant] = {
            "s_per_step": round(step, 4), "it_s": round(1 / step, 3),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "forward_tflop": round(fwd / 1e12, 3), "model_tflop_per_step": round(3 * fwd / 1e12, 3),
            "mfu": round(3 * fwd / step / peak, 4), "keys_per_query": keys, "tokens": geometry.num_tokens,
            "losses_finite": all(map(lambda x: x == x and abs(x) < 1e6, losses)),
        }
        print(variant, results["variants"][variant], flush=True)
        trainer.finish()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
