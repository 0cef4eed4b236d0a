"""`udit train-relay` and `udit strip-adapter`: flags → config → :func:`upscale_dit.training.train_relay`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..progress import stderr_console
from .app import app, handles_errors
from .options import DeviceOpt, JsonOpt, ModelOpt, PresetOpt, SetOpt

DATA, STAGES, LORA, OPTIM, FLOW, RUN, MACHINE = ("Data", "Stages", "LoRA", "Optimizer", "Noise levels and loss",
                                                 "Run folder", "Device and memory")


def _opt(*names: str, panel: str, help: str, **kwargs: Any) -> Any:  # noqa: A002 - typer's own keyword
    return typer.Option(*names, rich_help_panel=panel, show_default=False, help=help, **kwargs)


TRAIN_EXAMPLES = """
[bold]Examples[/]

  udit train-relay --images ./hires --out runs/cat
  udit train-relay --images ./hires --caption "a photo" --stage2-res 1664x960 --stage2-steps 2000
  udit train-relay --out runs/cat --resume
  udit train-relay --images ./imgs --model tiny --stage1-steps 4 --stage2-steps 4 --out /tmp/demo
"""


@app.command("train-relay", epilog=TRAIN_EXAMPLES)
@handles_errors
def train_relay_command(
    images: Annotated[Path | None, _opt("--images", "-i", panel=DATA, help=(
        "Folder of jpg/png/webp images (recursive) with same-stem .txt captions, or a folder holding metadata.csv "
        "(columns image or video, and prompt or caption)."))] = None,
    caption: Annotated[str | None, _opt("--caption", panel=DATA, help=(
        "Caption for images that have none. \\[default: uncaptioned images are an error]"))] = None,
    allow_upscale: Annotated[bool | None, _opt("--allow-upscale/--no-allow-upscale", panel=DATA, help=(
        "Upscale images smaller than the stage sizes instead of skipping them. \\[default: skip]"))] = None,
    model: ModelOpt = None,
    stage1_res: Annotated[str | None, _opt("--stage1-res", panel=STAGES, help=(
        "Stage-1 size (modality alignment, stock attention, velocity loss): native, 2x, or WxH, multiples of 16. "
        "\\[default: native]"))] = None,
    stage1_steps: Annotated[int | None, _opt("--stage1-steps", panel=STAGES, help="Stage-1 steps. \\[default: 1000]")] = None,
    stage2_res: Annotated[str | None, _opt("--stage2-res", panel=STAGES, help=(
        "Stage-2 size (spatial extrapolation, GCLF attention, high-frequency-aware loss). \\[default: 2x]"))] = None,
    stage2_steps: Annotated[int | None, _opt("--stage2-steps", panel=STAGES, help="Stage-2 steps. \\[default: 1000]")] = None,
    rank: Annotated[int | None, _opt("--rank", panel=LORA, help="LoRA rank. \\[default: 32]")] = None,
    alpha: Annotated[float | None, _opt("--alpha", panel=LORA, help="LoRA alpha (scale alpha/rank). \\[default: 32]")] = None,
    lr: Annotated[float | None, _opt("--lr", panel=OPTIM, help="AdamW learning rate. \\[default: 1e-4]")] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", panel=OPTIM, help="AdamW weight decay. \\[default: 0.01]")] = None,
    beta1: Annotated[float | None, _opt("--beta1", panel=OPTIM, help="AdamW beta1. \\[default: 0.9]")] = None,
    beta2: Annotated[float | None, _opt("--beta2", panel=OPTIM, help="AdamW beta2. \\[default: 0.999]")] = None,
    eps: Annotated[float | None, _opt("--eps", panel=OPTIM, help="AdamW epsilon. \\[default: 1e-8]")] = None,
    warmup_factor: Annotated[float | None, _opt("--warmup-factor", panel=OPTIM, help=(
        "Learning-rate factor for the first --warmup-steps of each stage (ConstantLR). \\[default: 1/3]"))] = None,
    warmup_steps: Annotated[int | None, _opt("--warmup-steps", panel=OPTIM, help="Steps at the reduced rate. \\[default: 5]")] = None,
    max_grad_norm: Annotated[float | None, _opt("--max-grad-norm", panel=OPTIM, help=(
        "Clip the gradient norm. \\[default: no clipping]"))] = None,
    shift: Annotated[float | None, _opt("--shift", panel=FLOW, help=(
        "Flow shift of the training noise table (higher = more high-noise draws). \\[default: 5]"))] = None,
    timesteps: Annotated[int | None, _opt("--timesteps", panel=FLOW, help="Entries of the noise table. \\[default: 1000]")] = None,
    weighting: Annotated[str | None, _opt("--weighting", panel=FLOW, help=(
        "Loss weight over noise levels: bell (DiffSynth, mean 1) or none. \\[default: bell]"))] = None,
    pool: Annotated[int | None, _opt("--pool", panel=STAGES, help=(
        "Stage-2 GCLF pooling factor of the coarse keys. \\[default: 2]"))] = None,
    kernel: Annotated[str | None, _opt("--kernel", panel=MACHINE, help=(
        "GCLF attention kernel: auto (flex on CUDA, sdpa on CPU), sdpa or flex. \\[default: auto]"))] = None,
    out: Annotated[Path | None, _opt("--out", "-o", panel=RUN, help=(
        "Run folder (config, log, cache, checkpoints, adapters). \\[default: relay-run]"))] = None,
    resume: Annotated[bool, _opt("--resume", panel=RUN, help=(
        "Continue the run in --out from its latest checkpoint, with its recorded settings."))] = False,
    checkpoint_every: Annotated[int | None, _opt("--checkpoint-every", panel=RUN, help=(
        "Checkpoint every N steps (and at each stage's end). \\[default: 250]"))] = None,
    keep_checkpoints: Annotated[int | None, _opt("--keep-checkpoints", panel=RUN, help=(
        "Latest checkpoints kept. \\[default: 2]"))] = None,
    device: DeviceOpt = None,
    dtype: Annotated[str | None, _opt("--dtype", panel=MACHINE, help=(
        "Base-model precision: auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float32; LoRA weights stay "
        "float32. \\[default: auto]"))] = None,
    gradient_checkpointing: Annotated[bool | None, _opt("--gradient-checkpointing/--no-gradient-checkpointing",
                                                        panel=MACHINE, help="Recompute activations in backward. \\[default: on]")] = None,
    seed: Annotated[int | None, _opt("--seed", "-s", panel=MACHINE, help=(
        "Seed of LoRA init, data order, noise levels and noise. \\[default: 0]"))] = None,
    max_sequence_length: Annotated[int | None, _opt("--max-sequence-length", panel=MACHINE, help=(
        "Text tokens. \\[default: the model's, 512]"))] = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Train a Relay LoRA (ViBe) from images: stage 1 at the native size, stage 2 at high resolution."""
    from ..config.loader import nest
    from ..training import layer_train_config, train_relay
    from ..training.checkpoint import RunFolder

    flags = nest({
        "model": model, "output": str(out) if out else None, "max_sequence_length": max_sequence_length,
        "data.images": str(images) if images else None, "data.caption": caption, "data.allow_upscale": allow_upscale,
        "stage1.resolution": stage1_res, "stage1.steps": stage1_steps,
        "stage2.resolution": stage2_res, "stage2.steps": stage2_steps, "lora.rank": rank, "lora.alpha": alpha,
        "optim.lr": lr, "optim.weight_decay": weight_decay, "optim.beta1": beta1, "optim.beta2": beta2,
        "optim.eps": eps, "optim.warmup_factor": warmup_factor, "optim.warmup_steps": warmup_steps,
        "optim.max_grad_norm": max_grad_norm, "flow.shift": shift, "flow.num_train_timesteps": timesteps,
        "flow.weighting": weighting, "gclf.pool": pool, "gclf.kernel": kernel,
        "checkpoint.every": checkpoint_every, "checkpoint.keep": keep_checkpoints, "runtime.device": device,
        "runtime.dtype": dtype, "runtime.gradient_checkpointing": gradient_checkpointing, "runtime.seed": seed,
    })
    layers = dict(preset_files=preset or (), set_options=set_ or (), flags=flags)
    config = layer_train_config(**layers)
    if resume:  # the run's recorded settings are the base layer; options on top must not change what is trained
        config = layer_train_config(base=RunFolder(config.output).recorded_config(), **layers)
    result = train_relay(config, resume=resume, progress=not json_output)
    summary = {"run": str(result.run), "relay": str(result.relay) if result.relay else None,
               "stage_files": {str(k): str(v) for k, v in result.stage_files.items()},
               "images": result.images, "unreadable": [p for p, _ in result.unreadable],
               "too_small": list(result.too_small), "final_loss": result.final_loss,
               "seconds": round(result.seconds, 2)}
    if json_output:
        typer.echo(json.dumps(summary))
        return
    for path, reason in result.unreadable:
        stderr_console.print(f"[yellow]skipped unreadable[/] {path}: {reason}", highlight=False)
    if result.too_small:
        stderr_console.print(f"[yellow]skipped {len(result.too_small)} image(s) smaller than the stage-2 size[/] "
                             f"(--allow-upscale keeps them); listed in {result.run / 'data.json'}", highlight=False)
    stderr_console.print(f"[green]✓[/] Relay LoRA trained on {result.images} image(s) in {result.seconds:.1f} s")
    typer.echo(str(result.relay))


STRIP_EXAMPLES = """
[bold]Examples[/]

  udit strip-adapter runs/cat --out cat-relay.safetensors
  udit strip-adapter runs/cat/relay.safetensors --out cat-comfy.safetensors --format comfy
"""


@app.command("strip-adapter", epilog=STRIP_EXAMPLES)
@handles_errors
def strip_adapter_command(
    source: Annotated[Path, typer.Argument(help="A train-relay run folder or its relay.safetensors.",
                                           show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False,
                                      help="Output .safetensors holding only the stage-2 LoRA.")],
    format: Annotated[str, typer.Option("--format", "-f", show_default=False, help=(  # noqa: A002
        "diffusers (keys `transformer.blocks.N.attn1.to_q.lora_A.weight`, loads with pipe.load_lora_weights) or "
        "comfy (`diffusion_model.blocks.N.self_attn.q.lora_A.weight` + alpha, for ComfyUI). \\[default: diffusers]"))] = "diffusers",
    overwrite: Annotated[bool, typer.Option("--overwrite", show_default=False,
                                            help="Replace an existing --out. \\[default: refuse]")] = False,
) -> None:
    """Keep only the stage-2 LoRA of a Relay run (what generation uses), in diffusers or ComfyUI keys."""
    from ..adapters import strip_adapter

    path = strip_adapter(source, out, fmt=format, overwrite=overwrite)
    stderr_console.print(f"[green]✓[/] stage-2 LoRA written ({format} keys)")
    typer.echo(str(path))
