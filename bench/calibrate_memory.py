"""Measure real peaks on a CUDA GPU and print them next to the cost model's estimates (not a pytest test).

Random-weight real-size Wan2.1 components, no gradients. For each case the measured number is
``torch.cuda.max_memory_allocated() - memory_allocated()`` around the call (live tensors the call creates, the
inputs and weights excluded), compared with the matching estimate:

- transformer forward: ``ActivationBytes.peak`` (persistent RoPE tables + the worst block phase);
- VAE decode / encode: ``VaeMemory.peak`` (the caller's input excluded, as here).

Run from the repository root: ``python bench/calibrate_memory.py [--quick]`` (diffusers on the path);
the anchors in ``test_memory.py`` quote its output (GPU, torch version and date are printed first). A full run takes
about a minute on an H200.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from upscale_dit.profiling import VaeTiling, estimate_vae_memory, transformer_activation_bytes

from upscale_dit.profiling.architectures import T2V_1_3B, T2V_14B, WAN21_VAE


def _peak(fn, *args, **kwargs) -> tuple[int, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with torch.no_grad():
        out = fn(*args, **kwargs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del out
    return torch.cuda.max_memory_allocated() - before, seconds


def _transformer(config: dict, cases: list[tuple[int, int, int, int]]) -> list[dict]:
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    # to_empty leaves the non-persistent RoPE tables uninitialised: rebuild them (float64, as diffusers does).
    model.rope = WanRotaryPosEmbed(config["attention_head_dim"], tuple(config["patch_size"]), 1024).cuda()
    model.eval()
    rows = []
    for height, width, frames, batch in cases:
        lat = (frames - 1) // 4 + 1
        x = torch.randn(batch, 16, lat, height // 8, width // 8, device="cuda", dtype=torch.bfloat16)
        text = torch.randn(batch, 512, 4096, device="cuda", dtype=torch.bfloat16)
        t = torch.full((batch,), 500, device="cuda")
        measured, seconds = _peak(model, x, t, text, return_dict=False)
        n = lat * (height // 16) * (width // 16)
        est = transformer_activation_bytes(config, num_tokens=n, batch=batch)
        rows.append({"case": f"transformer L{config['num_layers']} {height}x{width}x{frames} b{batch}",
                     "tokens": n, "measured": measured, "estimate": est.peak, "phases": est.to_dict(),
                     "ratio": round(est.peak / measured, 3), "seconds": round(seconds, 2)})
        print(json.dumps(rows[-1]), flush=True)
        del x, text
    del model
    torch.cuda.empty_cache()
    return rows


def _vae(cases: list[tuple[str, int, int, int, bool]]) -> list[dict]:
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_config(WAN21_VAE).cuda().eval()
    rows = []
    for direction, height, width, frames, tiled in cases:
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        lat = (frames - 1) // 4 + 1
        if direction == "decode":
            z = torch.randn(1, 16, lat, height // 8, width // 8, device="cuda")
            measured, seconds = _peak(vae.decode, z, return_dict=False)
        else:
            z = torch.rand(1, 3, frames, height, width, device="cuda") * 2 - 1
            measured, seconds = _peak(vae.encode, z, return_dict=False)
        est = estimate_vae_memory(WAN21_VAE, direction=direction, height=height, width=width, frames=frames,
                                  tiling=VaeTiling() if tiled else None)
        expected = est.peak
        rows.append({"case": f"vae {direction} {height}x{width}x{frames} {'tiled' if tiled else 'untiled'}",
                     "measured": measured, "estimate": expected, "terms": est.to_dict(),
                     "ratio": round(expected / measured, 3), "seconds": round(seconds, 2)})
        print(json.dumps(rows[-1]), flush=True)
        del z
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d")}), flush=True)
    small = [(480, 832, 81, 1), (480, 832, 81, 2)]
    _transformer(T2V_1_3B, small if args.quick else [*small, (1088, 1920, 81, 1)])
    if not args.quick:
        _transformer(T2V_14B, [(480, 832, 81, 1)])
    vae_cases = [("decode", 480, 832, 33, False), ("decode", 480, 832, 33, True),
                 ("encode", 480, 832, 33, False), ("encode", 480, 832, 33, True)]
    if not args.quick:
        vae_cases += [("decode", 1088, 1920, 9, False), ("decode", 1088, 1920, 33, True)]
    _vae(vae_cases)


if __name__ == "__main__":
    main()
