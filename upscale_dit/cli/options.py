"""Option types shared by commands, defined once so a flag has the same name, type and help everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MODEL = "Model"
SAMPLING = "Sampling"
OUTPUT = "Output"
MEMORY = "Device and memory"
CONFIG = "Config layering"

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", rich_help_panel=MODEL, show_default=False,
    help="Model preset (wan2.1-t2v-1.3b, wan2.1-t2v-14b, tiny, toy; `udit presets` lists them), a local diffusers "
         "folder, or a Hugging Face id in the local cache. \\[default: wan2.1-t2v-1.3b]")]
ResolutionOpt = Annotated[str | None, typer.Option(
    "--res", "-r", rich_help_panel=MODEL, show_default=False,
    help="Output size: 480p, 720p, 1080p, 1440p, 2160p (16:9), 2x/3x/4x of the model's native size, native, "
         "or WxH (e.g. 1920x1080). Sizes that are not multiples of 16 are generated at the next multiple and "
         "centre-cropped. \\[default: native]")]
AspectOpt = Annotated[str | None, typer.Option(
    "--aspect", rich_help_panel=MODEL, show_default=False,
    help="Aspect W:H for named resolutions, e.g. 9:16 for portrait. \\[default: 16:9]")]
FramesOpt = Annotated[int | None, typer.Option(
    "--frames", "-f", rich_help_panel=MODEL, show_default=False,
    help="Number of frames; must be 4k+1 (Wan's VAE compresses time by 4): 17, 33, 49, 81... Other values are "
         "refused with the nearest valid ones. \\[default: the model's, 81 for Wan]")]
StepsOpt = Annotated[int | None, typer.Option(
    "--steps", rich_help_panel=SAMPLING, show_default=False,
    help="Denoising steps (for freeswim: of the native-size base stage; the refinement's are "
         "method.freeswim.steps). \\[default: the model's, 50]")]
GuidanceOpt = Annotated[float | None, typer.Option(
    "--guidance", "-g", rich_help_panel=SAMPLING, show_default=False,
    help="Classifier-free guidance scale; 1 turns the negative pass off. \\[default: the model's, 5.0]")]
ShiftOpt = Annotated[float | None, typer.Option(
    "--shift", rich_help_panel=SAMPLING, show_default=False,
    help="Flow shift of the noise schedule; higher spends more steps at high noise (Wan: 3 at 480p, 5 at 720p). "
         "[default: the model's]")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", rich_help_panel=SAMPLING, show_default=False,
    help="unipc (UniPC flow, Wan's default) or euler (flow-matching Euler). \\[default: the model's, unipc]")]
SeedOpt = Annotated[int | None, typer.Option(
    "--seed", "-s", rich_help_panel=SAMPLING, show_default=False,
    help="Seed of the initial noise; the same seed and settings give the same video. \\[default: 0]")]
NegativeOpt = Annotated[str | None, typer.Option(
    "--negative-prompt", "-n", rich_help_panel=SAMPLING, show_default=False,
    help="What the video should not show. \\[default: the model's, empty]")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", rich_help_panel=OUTPUT, show_default=False,
    help="Output .mp4 (H.264, yuv420p); a .json sidecar with the resolved config, versions and timings is written "
         "beside it. \\[default: udit.mp4]")]
OverwriteOpt = Annotated[bool | None, typer.Option(
    "--overwrite/--no-overwrite", rich_help_panel=OUTPUT, show_default=False,
    help="Replace an existing output. \\[default: refuse]")]
FpsOpt = Annotated[int | None, typer.Option(
    "--fps", rich_help_panel=OUTPUT, show_default=False, help="Frame rate of the mp4. \\[default: the model's, 16]")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", rich_help_panel=MEMORY, show_default=False,
    help="auto (CUDA when available), cpu, cuda or cuda:N. \\[default: auto]")]
DtypeOpt = Annotated[str | None, typer.Option(
    "--dtype", rich_help_panel=MEMORY, show_default=False,
    help="Transformer and text-encoder precision: auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float16, "
         "float32. The VAE always runs in float32. \\[default: auto]")]
OffloadOpt = Annotated[str | None, typer.Option(
    "--offload", rich_help_panel=MEMORY, show_default=False,
    help="none, or model: keep each component on the CPU and move it to the GPU only while it runs (less GPU "
         "memory, some transfer time). \\[default: none]")]
CompileOpt = Annotated[bool | None, typer.Option(
    "--compile/--no-compile", rich_help_panel=MEMORY, show_default=False,
    help="torch.compile the transformer's repeated blocks: 5-14% faster passes at 1080p on an H200, after ~10 s "
         "of compiling per pass kind (needs a C++ compiler on the CPU). \\[default: off]")]
TilingOpt = Annotated[str | None, typer.Option(
    "--vae-tiling", rich_help_panel=MEMORY, show_default=False,
    help="auto (on above 864x480), on, off: decode in overlapping spatial tiles to bound VAE memory. "
         "[default: auto]")]
TileOpt = Annotated[int | None, typer.Option(
    "--vae-tile", rich_help_panel=MEMORY, show_default=False,
    help="VAE tile size in pixels (stride 3/4 of it). \\[default: 256]")]
PresetOpt = Annotated[list[Path] | None, typer.Option(
    "--preset", rich_help_panel=CONFIG, show_default=False,
    help="YAML file of settings (same keys as the sidecar's `config`); repeatable, later files win. "
         "Layering: built-in < --preset < --set < flags.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", rich_help_panel=CONFIG, show_default=False,
    help="Override one setting by its dotted key, e.g. --set sampling.steps=30; repeatable.")]
JsonOpt = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Print the result as one JSON object.")]

METHOD = "Method"

MethodOpt = Annotated[str | None, typer.Option(
    "--method", rich_help_panel=METHOD, show_default=False,
    help="direct: plain generation at the target size with stock attention (the baseline). "
         "freeswim: generate at the model's native size, upsample, then refine at the target size with "
         "inward sliding-window attention and a full-attention branch that overrides cross-attention "
         "(training-free). relay: the stage-2 Relay LoRA (--lora, from `udit train-relay`) with GCLF "
         "attention, generated directly at the target size. \\[default: direct]")]
LoraOpt = Annotated[Path | None, typer.Option(
    "--lora", rich_help_panel=METHOD, show_default=False, exists=True, dir_okay=False,
    help="Relay LoRA for --method relay: a train-relay run's relay.safetensors, its stage2.safetensors, or a "
         "strip-adapter output (diffusers or comfy format). Only the stage-2 LoRA is ever applied.")]
LoraScaleOpt = Annotated[float | None, typer.Option(
    "--lora-scale", rich_help_panel=METHOD, show_default=False,
    help="Strength of the Relay LoRA. \\[default: 1.0]")]
FromBaseOpt = Annotated[bool | None, typer.Option(
    "--from-base/--no-from-base", rich_help_panel=METHOD, show_default=False,
    help="Relay: start from an upsampled native-size base video re-noised to --strength (SDEdit) instead of "
         "from noise. \\[default: off]")]
StrengthOpt = Annotated[float | None, typer.Option(
    "--strength", rich_help_panel=METHOD, show_default=False,
    help="How much of the refinement schedule runs, (0, 1]: higher changes more. \\[default: 0.7]")]


def method_flags(*, method, strength, lora, lora_scale, from_base) -> dict:
    """The method flags as dotted config keys (``None`` = not given); shared by generate and profile."""
    return dict(
        method__name=method, method__freeswim__strength=strength, method__relay__strength=strength,
        method__relay__lora=str(lora) if lora else None, method__relay__scale=lora_scale,
        method__relay__from_base=from_base,
    )


def check_method_flags(config, **given) -> None:
    """Method-specific flags given to a method that has no use for them are refused, never ignored."""
    from ..errors import ConfigError

    method = config.method.name
    relay_only = ("lora", "lora_scale", "from_base")
    for flag, value in given.items():
        if value is None:
            continue
        name = "--" + flag.replace("_", "-")
        if flag in relay_only and method != "relay":
            raise ConfigError(f"{name} is for --method relay; this run uses `{method}`")
        if flag == "strength" and not (method == "freeswim" or (method == "relay" and config.method.relay.from_base)):
            raise ConfigError(f"--strength sets how much a refinement re-noises; `{method}` without a base stage has "
                              "none (use --method freeswim, or relay with --from-base)")
