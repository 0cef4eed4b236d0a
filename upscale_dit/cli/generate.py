"""`udit generate`: flags → config → :func:`upscale_dit.generate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..progress import stderr_console
from .app import app, handles_errors
from .options import (
    AspectOpt, DeviceOpt, DtypeOpt, FpsOpt, FramesOpt, FromBaseOpt, GuidanceOpt, JsonOpt, LoraOpt, LoraScaleOpt,
    MethodOpt, ModelOpt, NegativeOpt, OffloadOpt, OutOpt, OverwriteOpt, PresetOpt, ResolutionOpt, SchedulerOpt,
    SeedOpt, SetOpt, ShiftOpt, StepsOpt, StrengthOpt, TileOpt, TilingOpt, CompileOpt, check_method_flags,
    method_flags,
)

EXAMPLES = """
[bold]Examples[/]

  udit generate "a red circle moving left" --model tiny --out demo.mp4
  udit generate "a cat surfing" --res 1080p --frames 81 --out cat.mp4
  udit generate "a cat surfing" --res 2x --set sampling.steps=30 --preset my.yaml
  udit generate "a cat surfing" --res 2160p --method freeswim --save-base --out cat4k.mp4
  udit generate "a cat surfing" --method freeswim --input cat480p.mp4 --res 1080p --out cat1080p.mp4
"""


@app.command(epilog=EXAMPLES)
@handles_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="What the video shows.", show_default=False)],
    model: ModelOpt = None,
    res: ResolutionOpt = None,
    aspect: AspectOpt = None,
    frames: FramesOpt = None,
    method: MethodOpt = None,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = None,
    from_base: FromBaseOpt = None,
    input_video: Annotated[Path | None, typer.Option(
        "--input", "-i", rich_help_panel="Method", show_default=False, exists=True, dir_okay=False,
        help="Refine this video instead of generating a base (freeswim as a video upscaler); its first 4k+1 "
             "frames are used.",
    )] = None,
    strength: StrengthOpt = None,
    save_base: Annotated[bool | None, typer.Option(
        "--save-base/--no-save-base", rich_help_panel="Method", show_default=False,
        help="Also write the native-size base video as OUT.base.mp4, for comparison. \\[default: off]",
    )] = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    shift: ShiftOpt = None,
    scheduler: SchedulerOpt = None,
    seed: SeedOpt = None,
    negative_prompt: NegativeOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = None,
    fps: FpsOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    compile_: CompileOpt = None,
    vae_tiling: TilingOpt = None,
    vae_tile: TileOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Generate a video from a prompt at any resolution."""
    from ..generation import build_generate_config
    from ..generation import generate as run_generate

    config = build_generate_config(
        prompt, preset=preset or (), set=set_ or (),
        model=model, resolution=res, aspect=aspect, frames=frames,
        **method_flags(method=method, strength=strength, lora=lora, lora_scale=lora_scale, from_base=from_base),
        input=str(input_video) if input_video else None, output__save_base=save_base,
        sampling__steps=steps, sampling__guidance=guidance, sampling__shift=shift, sampling__scheduler=scheduler,
        sampling__seed=seed, sampling__negative_prompt=negative_prompt,
        output__path=str(out) if out else None, output__overwrite=overwrite, output__fps=fps,
        runtime__device=device, runtime__dtype=dtype, runtime__offload=offload, runtime__vae_tiling=vae_tiling,
        runtime__vae_tile=vae_tile, runtime__compile=compile_,
    )
    check_method_flags(config, strength=strength, lora=lora, lora_scale=lora_scale, from_base=from_base)
    result = run_generate(config, progress=not json_output)
    summary = {"video": str(result.video), "sidecar": str(result.sidecar), "frames": result.frames,
               "width": result.width, "height": result.height, "seconds": round(result.seconds, 2)}
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        stderr_console.print(f"[green]✓[/] {result.width}x{result.height}, {result.frames} frames in "
                             f"{result.seconds:.1f} s")
        typer.echo(str(result.video))
        typer.echo(str(result.sidecar))

