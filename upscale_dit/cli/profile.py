"""`udit profile`: what a `udit generate` run costs — tokens, FLOPs, time floor and memory per stage — whether it
fits the GPU, the cheapest settings that make it fit, and (``--run``) the same run measured.

Takes the same flags as ``generate`` and goes through the same ``build_generate_config`` → ``resolve_run``
validation, so a request ``generate`` refuses is refused here with the same message and exit code.

``--json`` prints one object (schema ``udit.profile/1``; bytes are ints, FLOPs ints, seconds floats)::

    {
      "schema": "udit.profile/1",
      "request": {"model", "method", "output_size": [w, h], "generated_size": [w, h], "native_size": [w, h],
                  "frames", "steps", "guidance", "device", "dtype", "offload", "vae_tile" (null = untiled),
                  "freeswim": null | {"window": [rows, cols], "mode", "refresh_every", "steps", "cache_device"},
                  "relay": null | {"window": [rows, cols], "pool", "steps", "from_base", "rank"}},
      "device": {"target": "cuda" | "cpu", "memory": bytes | null, "memory_from": "--gpu-mem" | "visible GPU <name>"
                 | "host RAM" | null, "usable": bytes | null},
      "weights": {"transformer" | "text_encoder" | "vae": {"params", "dtype", "bytes"}},
      "stages": [{"key", "label", "kind", "tokens", "steps", "forwards": {call kind: n},
                  "flops": {"attention.dense" | "attention.window" | "attention.cross" | "linear" | "vae_decode"
                            | "vae_encode" | "text_encoder": n},
                  "device_bytes": {term: bytes}, "host_bytes": {term: bytes}, "peak", "total_flops",
                  "time_floor_s": float | null}],
      "peak": {"bytes", "stage"},
      "fits": bool | null,                       (null: no memory to compare with)
      "advice": null | {"fits", "peak", "usable", "changes": [{"flags": [...], "what", "cost", "rank"}],
                        "peak_after", "fits_after", "note", "flags": [...]},
      "vae": {"decode": {"untiled", "tiled", "planned"}, "encode": {...} | null, "video_uint8", "video_fp32"},
      "time": null | {"tflops", "floor_s"},
      "cost": {stage key: the cost model's CostEstimate.to_dict() of that sampling stage},
      "measured": null | {"device", "device_name", "torch", "seconds", "baseline", "peak_measured",
                          "peak_estimated", "peak_ratio", "parameter_bytes", "parameter_bytes_estimated",
                          "buffer_bytes", "stages": [{"key", "seconds", "source", "measured", "estimated", "ratio"}]},
      "train": null | {"height", "width", "tokens", "lora": {...}, "device_bytes": {...}, "flops": {...}, "peak",
                       "total_flops", "gradient_checkpointing", "rank", "targets", "pool", "window"}
    }
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..progress import stderr_console
from .app import app, handles_errors
from .options import (
    AspectOpt, DeviceOpt, DtypeOpt, FramesOpt, FromBaseOpt, GuidanceOpt, JsonOpt, LoraOpt, LoraScaleOpt, MethodOpt,
    ModelOpt, OffloadOpt, PresetOpt, ResolutionOpt, SetOpt, StepsOpt, StrengthOpt, TileOpt, TilingOpt,
    check_method_flags, method_flags,
)

SCHEMA = "udit.profile/1"
PROFILE = "Profile"
DEFAULT_TFLOPS = 400.0
DEFAULT_RUN_STEPS = 2

EXAMPLES = """
[bold]Examples[/]

  udit profile --model wan2.1-t2v-1.3b --res 2160p --method freeswim
  udit profile --res 1080p --time --tflops 550 --gpu-mem 80GiB
  udit profile --res 1080p --method freeswim --json > plan.json
  udit profile --run --model tiny --res 2x --method freeswim --device cpu
  udit profile --run --random-weights --res 1080p --steps 1
  udit profile --train --res 2x
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """``80GiB`` / ``80G`` (binary), ``80GB`` (decimal), ``81920MiB`` → bytes; a bare number is GiB."""
    m = _SIZE.match(text)
    if not m or float(m[1]) <= 0 or (m[3] and not m[2]):
        raise ConfigError(f"--gpu-mem must look like 80GiB, 80GB or 81920MiB, got {text!r}")
    value, unit = float(m[1]), m[2].lower()
    if not unit:
        return int(value * 2**30) if not m[4] else int(value)
    base = 1000 if m[4] and not m[3] else 1024
    return int(value * base ** ("kmgt".index(unit) + 1))


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _flops(n: int | None) -> str:
    if not n:
        return "-"
    for unit, scale in (("EF", 1e18), ("PF", 1e15), ("TF", 1e12), ("GF", 1e9), ("MF", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def _device_memory(target: str, gpu_mem: str | None) -> tuple[int | None, str | None]:
    """(bytes, where the number came from) of the device the run targets."""
    if gpu_mem is not None:
        return parse_memory(gpu_mem), "--gpu-mem"
    if target == "cuda":
        import torch

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            return props.total_memory, f"visible GPU {props.name}"
        return None, None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM"
    except (OSError, ValueError, AttributeError):
        return None, None


def _target(device: str, run: bool) -> tuple[str, Any]:
    """Device the estimate is for: the real one with --run; else cuda unless --device cpu (a CPU machine can plan
    a GPU run)."""
    if run:
        from ..engine.device import resolve_device

        resolved = resolve_device(device)
        return resolved.type, resolved
    return ("cpu" if device == "cpu" else "cuda"), None


@app.command(epilog=EXAMPLES)
@handles_errors
def profile(
    model: ModelOpt = None,
    res: ResolutionOpt = None,
    aspect: AspectOpt = None,
    frames: FramesOpt = None,
    method: MethodOpt = None,
    strength: StrengthOpt = None,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = None,
    from_base: FromBaseOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vae_tiling: TilingOpt = None,
    vae_tile: TileOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    mem: Annotated[bool, typer.Option(
        "--mem", rich_help_panel=PROFILE,
        help="Estimate tokens, FLOPs and memory per stage from the configs alone (the default).")] = True,
    time_floor_: Annotated[bool, typer.Option(
        "--time", rich_help_panel=PROFILE,
        help="Add the time floor: FLOPs at --tflops sustained (a lower bound, not a prediction).")] = False,
    tflops: Annotated[float, typer.Option(
        "--tflops", rich_help_panel=PROFILE, min=0.001,
        help="Sustained throughput for --time, TFLOP/s (H100 bf16: ~400-550 dense, ~160-210 FlexAttention).")
    ] = DEFAULT_TFLOPS,
    gpu_mem: Annotated[str | None, typer.Option(
        "--gpu-mem", rich_help_panel=PROFILE, show_default=False,
        help="Device memory to plan for, e.g. 80GiB. \\[default: the visible GPU's; none without a GPU]")] = None,
    run: Annotated[bool, typer.Option(
        "--run", rich_help_panel=PROFILE,
        help=f"Also run it for real, every denoising stage shortened to --steps steps (default "
             f"{DEFAULT_RUN_STEPS}), and report measured time and peak memory per stage beside the estimate.")
    ] = False,
    random_weights: Annotated[bool, typer.Option(
        "--random-weights", rich_help_panel=PROFILE,
        help="With --run: build the real architecture with random weights (no download; the video is noise).")
    ] = False,
    train: Annotated[bool, typer.Option(
        "--train", rich_help_panel=PROFILE,
        help="Profile one stage-2 `udit train-relay` step instead (LoRA, AdamW state, GCLF attention) at --res "
             "(default: the relay preset's stage-2 size).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Estimate (and with --run, measure) what a generation costs, and what makes it fit the GPU."""
    from ..generation import TILING_AUTO_PIXELS, build_generate_config, resolve_run
    from ..profiling.plan import estimate_plan, settings_from_resolved

    flags = dict(
        model=model, resolution=res, aspect=aspect, frames=frames, sampling__guidance=guidance,
        **method_flags(method=method, strength=strength, lora=lora, lora_scale=lora_scale, from_base=from_base),
    )
    config = build_generate_config(
        "udit profile", preset=preset or (), set=set_ or (), **flags,
        sampling__steps=None if run else steps,
        output__path=str(Path(tempfile.gettempdir()) / "udit-profile.mp4"), output__overwrite=True,
        runtime__device=device, runtime__dtype=dtype, runtime__offload=offload, runtime__vae_tiling=vae_tiling,
        runtime__vae_tile=vae_tile,
        # Estimates need no weights; a measured run builds random ones only when asked.
        runtime__random_weights=True if not run else (random_weights or None),
    )
    check_method_flags(config, strength=strength, lora=lora, lora_scale=lora_scale, from_base=from_base)
    if train:
        _profile_training(config, res=res, json_output=json_output, gpu_mem=gpu_mem, tflops=tflops,
                          show_time=time_floor_)
        return
    resolved, source = resolve_run(config)
    if run:
        from ..profiling.measure import shorten

        run_steps = steps or DEFAULT_RUN_STEPS
        config = build_generate_config(
            "udit profile", preset=preset or (), set=set_ or (), **flags, **shorten(resolved, run_steps),
            output__path=config.output.path, output__overwrite=True,
            runtime__device=device, runtime__dtype=dtype, runtime__offload=offload, runtime__vae_tiling=vae_tiling,
            runtime__vae_tile=vae_tile, runtime__random_weights=random_weights or None,
        )
        resolved, source = resolve_run(config)
    target, torch_device = _target(config.runtime.device, run)
    dtype_name = config.runtime.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if target == "cuda" else "float32"
    settings = settings_from_resolved(resolved, device=target, dtype=dtype_name, folder=source.folder,
                                      tiling_auto_pixels=TILING_AUTO_PIXELS)
    memory, memory_from = _device_memory(target, gpu_mem)
    estimate = estimate_plan(settings, budget=memory)
    measured = None
    if run:
        from ..profiling.measure import measure

        stderr_console.print(f"[dim]running {settings.method} at {settings.width}x{settings.height}x{settings.frames} "
                             f"on {torch_device}, every denoising stage shortened to {steps or DEFAULT_RUN_STEPS} "
                             f"step(s)…[/]")
        measured = measure(config, estimate)
    report = _report(settings, estimate, resolved, memory=memory, memory_from=memory_from,
                     tflops=tflops if time_floor_ else None, measured=measured)
    if json_output:
        typer.echo(json.dumps(report))
    else:
        _print_report(report, Console(), show_time=time_floor_)


# ---- the report (one dict for both --json and the tables) -------------------------------------------------------


def _report(settings, estimate, resolved, *, memory, memory_from, tflops, measured) -> dict[str, Any]:
    from ..profiling.advice import advise, usable_bytes
    from ..profiling.cost import time_floor
    from ..profiling.vae import estimate_vae_memory

    size = resolved.size
    fs = settings.freeswim
    stages = []
    for stage in estimate.stages:
        data = stage.to_dict()
        data["time_floor_s"] = time_floor(stage.total_flops, tflops) if tflops and stage.total_flops else None
        stages.append(data)
    probe = next(iter(estimate.costs.values()))
    weights = {
        name: {"params": getattr(probe.params, name), "bytes": probe.memory.weights[name],
               "dtype": "float32" if name == "vae" else settings.dtype}
        for name in ("transformer", "text_encoder", "vae")
    }
    vae_args = dict(height=settings.height, width=settings.width, frames=settings.frames)
    tiling = settings.vae_tiling or settings.replace(vae_tile=256).vae_tiling

    def vae_modes(direction: str) -> dict[str, int]:
        untiled = estimate_vae_memory(settings.arch.vae, direction=direction, tiling=None, **vae_args).peak
        tiled = estimate_vae_memory(settings.arch.vae, direction=direction, tiling=tiling, **vae_args).peak
        return {"untiled": untiled, f"tiled_{tiling.tile[0]}": tiled}  # diffusers' whole-clip encode/decode

    decode_stage = estimate.stage("decode_and_write")
    planned_decode = sum(v for k, v in decode_stage.device_bytes.items() if k.startswith(("vae_", "video_")))
    advice = None
    fits = None
    if memory is not None:
        usable = usable_bytes(memory)
        fits = estimate.peak <= usable
        advice = advise(settings, memory, estimate=estimate).to_dict()
    from ..profiling.memory import video_bytes

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "request": {
            "model": settings.model, "method": settings.method,
            "output_size": [size.out_width, size.out_height], "generated_size": [settings.width, settings.height],
            "native_size": [settings.native_width, settings.native_height], "frames": settings.frames,
            "steps": settings.steps, "guidance": settings.guidance, "device": settings.device,
            "dtype": settings.dtype, "offload": settings.offload, "vae_tile": settings.vae_tile,
            "freeswim": None if fs is None else {"window": list(fs.window), "mode": fs.mode,
                                                 "refresh_every": fs.refresh_every, "steps": fs.steps,
                                                 "cache_device": fs.cache_device},
            "relay": None if settings.relay is None else {
                "window": list(settings.relay.window), "pool": settings.relay.pool, "steps": settings.relay.steps,
                "from_base": settings.relay.from_base, "rank": settings.relay.rank},
        },
        "device": {"target": settings.device, "memory": memory, "memory_from": memory_from,
                   "usable": usable_bytes(memory) if memory is not None else None},
        "weights": weights,
        "stages": stages,
        "peak": {"bytes": estimate.peak, "stage": estimate.peak_stage},
        "fits": fits,
        "advice": advice,
        "vae": {"decode": {**vae_modes("decode"), "planned": planned_decode},
                "encode": vae_modes("encode") if any(s.key == "upsample_encode" for s in estimate.stages) else None,
                "video_uint8": video_bytes(settings.frames, settings.height, settings.width, "uint8"),
                "video_fp32": video_bytes(settings.frames, settings.height, settings.width, "float32")},
        "time": None if not tflops else {"tflops": tflops,
                                         "floor_s": time_floor(estimate.total_flops, tflops)},
        "cost": {key: cost.to_dict() for key, cost in estimate.costs.items()},
        "measured": measured.to_dict() if measured is not None else None,
        "train": None,
    }
    return report


_TERM_NAMES = {
    "weights.transformer": "transformer weights", "weights.lora": "LoRA weights",
    "weights.text_encoder": "text-encoder weights",
    "weights.vae": "VAE weights", "activations": "activations (peak block phase)",
    "attention_workspace": "attention workspace", "cross_attn_cache": "FreeSwim cross-attention cache",
    "cross_attn_cache_block": "one cache block copied in", "latents": "latents + scheduler state (fp32)",
    "embeddings": "prompt embeddings", "vae_working": "VAE working set", "vae_feature_cache": "VAE causal cache",
    "vae_tiles": "decoded tiles held (row + current)", "vae_outputs": "VAE outputs",
    "vae_working_and_video": "VAE working set + base video", "base_latents": "base latents",
    "base_video": "base video (fp32)", "upsampled_video": "upsampled video (fp32)", "clean_latents": "clean latents",
    "video_uint8": "uint8 canvas",
}


def _print_report(report: dict[str, Any], out: Console, *, show_time: bool) -> None:
    r, dev = report["request"], report["device"]
    w, h = r["output_size"]
    gw, gh = r["generated_size"]
    gen = f" (generated {gw}x{gh})" if (gw, gh) != (w, h) else ""
    out.print(f"[bold]udit profile[/]: {r['model']}, {r['method']}, {w}x{h}{gen}, {r['frames']} frames, "
              f"{r['device']} {r['dtype']}" + (", offload" if r["offload"] else "")
              + (f", VAE tiles {r['vae_tile']} px" if r["vae_tile"] else ", VAE untiled"))
    if r["freeswim"]:
        f = r["freeswim"]
        out.print(f"FreeSwim: window {f['window'][0]}x{f['window'][1]} tokens, {f['mode']} mode, refresh every "
                  f"{f['refresh_every']}, {f['steps']} refinement steps, cache on {f['cache_device']}")

    weights = Table(title="Weights", title_justify="left")
    for col in ("component", "parameters", "dtype", "bytes"):
        weights.add_column(col, justify="left" if col in ("component", "dtype") else "right")
    for name, data in report["weights"].items():
        weights.add_row(name, f"{data['params']:,}", data["dtype"], _gib(data["bytes"]))
    out.print(weights)

    stages = Table(title="Stages (FLOPs: attention per branch, linear; bytes on the device)", title_justify="left")
    columns = ["stage", "tokens", "steps", "calls", "attn dense", "attn window/gclf", "attn cross", "linear",
               "VAE / text"]
    if show_time:
        columns.append("time floor")
    columns.append("peak on device")
    for col in columns:
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        f = s["flops"]
        calls = ", ".join(f"{k} {v}" for k, v in s["forwards"].items()) or "-"
        row = [s["key"], f"{s['tokens']:,}" if s["tokens"] else "-", str(s["steps"] or "-"), calls,
               _flops(f.get("attention.dense")), _flops(f.get("attention.window", 0) + f.get("attention.gclf", 0)),
               _flops(f.get("attention.cross")), _flops(f.get("linear")),
               _flops(f.get("vae_decode", 0) + f.get("vae_encode", 0) + f.get("text_encoder", 0))]
        if show_time:
            row.append(_seconds(s["time_floor_s"]))
        peak_style = "bold" if s["key"] == report["peak"]["stage"] else ""
        row.append(f"[{peak_style}]{_gib(s['peak'])}[/]" if peak_style else _gib(s["peak"]))
        stages.add_row(*row)
    out.print(stages)

    peak_stage = next(s for s in report["stages"] if s["key"] == report["peak"]["stage"])
    terms = Table(title=f"Bytes at the peak ({peak_stage['key']})", title_justify="left")
    terms.add_column("term")
    terms.add_column("where")
    terms.add_column("bytes", justify="right")
    for key, value in sorted(peak_stage["device_bytes"].items(), key=lambda kv: -kv[1]):
        terms.add_row(_TERM_NAMES.get(key, key), "device", _gib(value))
    for key, value in peak_stage["host_bytes"].items():
        terms.add_row(_TERM_NAMES.get(key, key), "host (CPU)", _gib(value))
    out.print(terms)

    vae = report["vae"]
    vt = Table(title="VAE memory (peak, weights excluded): diffusers' whole-clip calls vs udit's planned one",
               title_justify="left")
    vt.add_column("")
    for col in vae["decode"]:
        label = "udit (planned)" if col == "planned" else f"diffusers {col.replace('_', ' ')}"
        vt.add_column(label, justify="right")
    vt.add_row("decode", *[_gib(v) for v in vae["decode"].values()])
    if vae["encode"]:
        vt.add_row("encode", *[_gib(v) for v in vae["encode"].values()], "-")
    out.print(vt)
    out.print(f"decoded video: {_gib(vae['video_uint8'])} uint8, {_gib(vae['video_fp32'])} fp32")
    cache = next((s for s in report["stages"] if "cross_attn_cache" in s["device_bytes"]
                  or "cross_attn_cache" in s["host_bytes"]), None)
    if cache:
        on_device = "cross_attn_cache" in cache["device_bytes"]
        nbytes = cache["device_bytes"].get("cross_attn_cache") or cache["host_bytes"]["cross_attn_cache"]
        out.print(f"FreeSwim cross-attention cache: {nbytes / 1e9:.1f} GB ({_gib(nbytes)}), "
                  + ("in host memory (a CPU run)" if r["device"] == "cpu" else "on the GPU" if on_device
                     else "in pinned CPU memory") + f" (cache_device "
                  f"{r['freeswim']['cache_device']})")
    if report["time"]:
        out.print(f"time floor: {_seconds(report['time']['floor_s'])} at {report['time']['tflops']:g} TFLOP/s "
                  f"({_flops(sum(s['total_flops'] for s in report['stages']))} in all)")

    peak = report["peak"]
    if dev["memory"] is None:
        out.print(f"predicted peak: [bold]{_gib(peak['bytes'])}[/] ({peak['stage']}); no GPU is visible: pass "
                  "--gpu-mem (e.g. 80GiB) to check whether it fits")
    else:
        verdict = "[green]fits[/]" if report["fits"] else "[red]does not fit[/]"
        out.print(f"predicted peak: [bold]{_gib(peak['bytes'])}[/] ({peak['stage']}) vs {_gib(dev['memory'])} "
                  f"({dev['memory_from']}; {_gib(dev['usable'])} usable): {verdict}")
        advice = report["advice"]
        if advice and not advice["fits"]:
            if advice["changes"]:
                out.print("cheapest settings that fit:" if advice["fits_after"] else "closest settings:")
                for change in advice["changes"]:
                    out.print(f"  {' '.join(change['flags'])}  [dim]# {change['what']}; cost: {change['cost']}[/]")
                out.print(f"  → predicted peak {_gib(advice['peak_after'])}"
                          + ("" if advice["fits_after"] else f" (still too much: {advice['note']})"))
            else:
                out.print(f"no setting makes it fit: {advice['note']}")
    if report["measured"]:
        _print_measured(report["measured"], out)


def _print_measured(m: dict[str, Any], out: Console) -> None:
    source = {"cuda": "CUDA max_memory_allocated", "rss": "peak RSS growth over the pre-run baseline",
              "rss_process_peak": "process peak RSS growth (not resettable here)"}
    sources = {s["source"] for s in m["stages"]}
    table = Table(title=f"Measured on {m['device_name']} (torch {m['torch']}): "
                        f"{', '.join(source.get(s, s) for s in sorted(sources))}", title_justify="left")
    for col in ("stage", "seconds", "measured", "estimated", "est / meas"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in m["stages"]:
        table.add_row(s["key"], f"{s['seconds']:.2f}", _gib(s["measured"]), _gib(s["estimated"]),
                      f"{s['ratio']:.3f}" if s["ratio"] else "-")
    table.add_row("[bold]peak[/]", f"{m['seconds']:.2f}", _gib(m["peak_measured"]), _gib(m["peak_estimated"]),
                  f"{m['peak_ratio']:.3f}" if m["peak_ratio"] else "-")
    out.print(table)
    params = ", ".join(f"{k} {v:,} B (est. {m['parameter_bytes_estimated'].get(k, 0):,})"
                       for k, v in m["parameter_bytes"].items())
    out.print(f"parameter bytes loaded: {params}")
    if "cuda" not in sources:
        out.print("[dim]CPU: RSS growth also holds allocator-retained memory and library buffers the model does not "
                  "know; on small models only the parameter bytes are a meaningful check.[/]")


# ---- --train -----------------------------------------------------------------------------------------------------


def _profile_training(config, *, res: str | None, json_output: bool, gpu_mem: str | None, tflops: float,
                      show_time: bool) -> None:
    from ..config import resolve_size
    from ..engine.loading import resolve_model
    from ..profiling.advice import usable_bytes
    from ..profiling.architectures import architecture_for
    from ..profiling.cost import time_floor
    from ..profiling.plan import estimate_training_step
    from ..training import layer_train_config

    source = resolve_model(config.model, random_weights=True)
    preset = source.preset
    train = layer_train_config(flags={"model": config.model})
    size = resolve_size(res or train.stage2.resolution, config.aspect, preset)
    target = "cpu" if config.runtime.device == "cpu" else "cuda"
    dtype = config.runtime.dtype if config.runtime.dtype != "auto" else ("bfloat16" if target == "cuda" else "float32")
    estimate = estimate_training_step(
        architecture_for(preset.name, source.folder), height=size.gen_height, width=size.gen_width,
        window=preset.native_grid, pool=train.gclf.pool, rank=train.lora.rank, targets=tuple(train.lora.targets),
        dtype=dtype, text_len=train.max_sequence_length or preset.max_sequence_length,
        gradient_checkpointing=train.runtime.gradient_checkpointing)
    memory, memory_from = _device_memory(target, gpu_mem)
    data = {**estimate.to_dict(), "rank": train.lora.rank, "targets": list(train.lora.targets),
            "pool": train.gclf.pool, "window": list(preset.native_grid),
            "time_floor_s": time_floor(estimate.total_flops, tflops) if show_time else None}
    fits = None if memory is None else estimate.peak <= usable_bytes(memory)
    if json_output:
        typer.echo(json.dumps({"schema": SCHEMA, "request": {"model": preset.name, "train": True,
                                                             "size": [size.gen_width, size.gen_height],
                                                             "device": target, "dtype": dtype},
                               "device": {"target": target, "memory": memory, "memory_from": memory_from,
                                          "usable": usable_bytes(memory) if memory is not None else None},
                               "fits": fits, "train": data}))
        return
    out = Console()
    out.print(f"[bold]udit profile --train[/]: one stage-2 Relay step of {preset.name} at {size.gen_width}x"
              f"{size.gen_height} (1 frame, {estimate.tokens:,} tokens), LoRA rank {train.lora.rank} on "
              f"{len(train.lora.targets)} linears per block, GCLF pool {train.gclf.pool}, {dtype}")
    table = Table(title="Bytes on the device", title_justify="left")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    for key, value in estimate.device_bytes.items():
        table.add_row(key, _gib(value))
    table.add_row("[bold]peak[/]", _gib(estimate.peak))
    out.print(table)
    out.print(f"LoRA: {estimate.lora.params:,} parameters (fp32); AdamW state {_gib(estimate.lora.optimizer)}")
    out.print(f"FLOPs per step: {_flops(estimate.total_flops)} (forward {_flops(estimate.flops['forward'])})"
              + (f"; time floor {_seconds(data['time_floor_s'])} at {tflops:g} TFLOP/s" if show_time else ""))
    out.print("[dim]training activations are a rough, uncalibrated estimate (see profiling.plan.TrainEstimate)[/]")
    if memory is not None:
        out.print(f"vs {_gib(memory)} ({memory_from}): " + ("[green]fits[/]" if fits else "[red]does not fit[/]"))
