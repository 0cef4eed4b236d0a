"""`generate`: the whole run behind `udit generate`, callable from Python.

prompt → text embeddings → noise at the generation size → our sampler → streamed VAE decode → mp4 + sidecar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .config import FrameSize, GenerateConfig, ModelPreset, layer_config, resolve_frames, resolve_size, to_dict
from .errors import ConfigError, InputVideoError, OutOfMemoryError, UditError
from .progress import StageProgress
from .video import VideoWriter, check_writable, write_json_atomic

TILING_AUTO_PIXELS = 864 * 480  # untiled decode of one 1080p frame chunk alone peaks near 47 GB (measured, H200)


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What a generation produced."""

    video: Path
    sidecar: Path
    frames: int
    height: int
    width: int
    seconds: float
    timings: dict[str, float]
    memory: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # per stage: StageProgress.memory


@dataclass(frozen=True, slots=True)
class ResolvedRun:
    """A config with every `None` filled in from the presets, plus what was derived from it."""

    config: GenerateConfig
    preset: ModelPreset
    size: FrameSize
    frames: int
    latent_shape: tuple[int, int, int, int, int]
    base_shape: tuple[int, int, int, int, int] | None = None  # native-size stage of coarse-to-fine methods
    input_frames: np.ndarray | None = None  # uint8 [T, H, W, 3] of --input

    def needs_negative(self) -> bool:
        method = self.config.method
        guidances = [self.config.sampling.guidance]
        if method.name in ("freeswim", "relay"):
            guidances.append(getattr(method, method.name).guidance)
        return any(g > 1.0 for g in guidances)

    @property
    def has_base_stage(self) -> bool:
        """Coarse-to-fine: a native-size base video is generated first (or given with --input)."""
        method = self.config.method
        return method.name == "freeswim" or (method.name == "relay" and bool(method.relay.from_base))


def build_generate_config(
    prompt: str | None = None,
    *,
    preset: Sequence[str | Path] = (),
    set: Sequence[str] = (),  # noqa: A002 - mirrors the --set flag
    **flags: Any,
) -> GenerateConfig:
    """Layer built-in < ``preset`` files < ``set`` items < keyword flags (dotted names, ``None`` = not given).

    Flags use the config's dotted paths with dots written as double underscores:
    ``model="tiny", resolution="2x", sampling__steps=8`` (or ``set=["sampling.steps=8"]``).
    """
    nested: dict[str, Any] = {}
    if prompt is not None:
        nested["prompt"] = prompt
    for key, value in flags.items():
        if value is None:
            continue
        *parents, leaf = key.split("__")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return layer_config(preset_files=preset, set_options=set, flags=nested)


def _latent_shape(preset: ModelPreset, frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    return (1, preset.latent_channels, (frames - 1) // preset.vae_scale_temporal + 1,
            height // preset.vae_scale_spatial, width // preset.vae_scale_spatial)


def resolve_run(config: GenerateConfig) -> tuple[ResolvedRun, Any]:
    """Fill defaults from the presets and check everything that can fail before weights load."""
    from .engine.loading import resolve_model

    if not config.prompt.strip():
        raise ConfigError("the prompt is empty: say what the video should show")
    method = config.method.name
    output = Path(config.output.path)
    check_writable(output, overwrite=config.output.overwrite)
    if config.output.save_base:
        check_writable(base_path(output), overwrite=config.output.overwrite)
    source = resolve_model(config.model, random_weights=config.runtime.random_weights)
    preset = source.preset
    size = resolve_size(config.resolution, config.aspect, preset)
    method_config = _resolve_method(config, preset, size)
    refines = method == "freeswim" or (method == "relay" and method_config.relay.from_base)
    if config.input is not None and not refines:
        raise ConfigError(f"--input refines an existing video, which `{method}` cannot do; use --method freeswim "
                          "(or --method relay --from-base)")
    if config.output.save_base and not refines:
        raise ConfigError(f"--save-base keeps the native-size base video of a coarse-to-fine method; `{method}` has "
                          "none (use --method freeswim, or relay with --from-base)")
    input_frames, input_fps = None, None
    if config.input is not None:
        input_frames, input_fps = _read_input(config, preset)
        frames = len(input_frames)
    else:
        frames = resolve_frames(config.frames, preset)
    s = config.sampling
    sampling = dataclasses.replace(
        s,
        steps=s.steps if s.steps is not None else preset.steps,
        guidance=s.guidance if s.guidance is not None else preset.guidance,
        shift=s.shift if s.shift is not None else preset.shift,
        scheduler=s.scheduler or preset.scheduler,
        negative_prompt=s.negative_prompt if s.negative_prompt is not None else preset.negative_prompt,
        max_sequence_length=s.max_sequence_length or preset.max_sequence_length,
    )
    fps = config.output.fps or (round(input_fps) if input_fps else preset.fps)
    resolved = dataclasses.replace(config, frames=frames, sampling=sampling, method=method_config,
                                   output=dataclasses.replace(config.output, fps=fps))
    base_shape = None
    if refines and input_frames is None:
        base_shape = _latent_shape(preset, frames, preset.native_height, preset.native_width)
    latent_shape = _latent_shape(preset, frames, size.gen_height, size.gen_width)
    return ResolvedRun(resolved, preset, size, frames, latent_shape, base_shape, input_frames), source


def _resolve_method(config: GenerateConfig, preset: ModelPreset, size: FrameSize):
    """Fill the chosen method's settings from its preset and check what can be checked without weights."""
    method = config.method
    if method.name == "freeswim":
        from .methods.freeswim import resolve_settings

        settings = resolve_settings(method.freeswim, preset)
        _check_window_fits(settings, preset, size)
        if settings.kernel in ("auto", "flex"):
            from .attention import requested_flex_backend

            requested_flex_backend()  # a bad UDIT_FLEX_BACKEND fails here, before any weights load
        return dataclasses.replace(method, freeswim=settings)
    if method.name == "relay":
        from .config import fill_from, method_defaults
        from .methods.relay import check_relay_file

        settings = fill_from(method.relay, method_defaults("relay", preset.name), source="method.relay")
        if not settings.lora:
            raise ConfigError("--method relay needs the stage-2 LoRA: pass --lora FILE (a train-relay run's "
                              "relay.safetensors, or a strip-adapter output)")
        if not Path(settings.lora).is_file():
            raise ConfigError(f"--lora {settings.lora} does not exist or is not a file")
        check_relay_file(settings.lora, base_model=preset.name)
        return dataclasses.replace(method, relay=settings)
    return method


def _check_window_fits(settings, preset: ModelPreset, size: FrameSize) -> None:
    from .methods.freeswim import window_of

    rows, cols = size.gen_height // preset.pixel_multiple, size.gen_width // preset.pixel_multiple
    win_rows, win_cols = window_of(settings, preset)
    if win_rows >= rows and win_cols >= cols:
        raise ConfigError(
            f"the FreeSwim window ({win_rows}x{win_cols} tokens) covers the whole {rows}x{cols}-token grid at "
            f"{size.gen_width}x{size.gen_height}: FreeSwim is for sizes above the model's native "
            f"{preset.native_width}x{preset.native_height}; use a larger --res (e.g. 2x) or --method direct"
        )


def _read_input(config: GenerateConfig, preset: ModelPreset) -> tuple[np.ndarray, float]:
    """Read --input; keep the first 4k+1 frames (or --frames of them), saying so when frames are dropped."""
    from .config.schema import check_frames
    from .progress import stderr_console
    from .video import read_video

    if not Path(config.input).is_file():
        raise InputVideoError(f"--input {config.input} does not exist or is not a file")
    frames, fps = read_video(config.input)
    available = len(frames)
    factor = preset.vae_scale_temporal
    if config.frames is not None:
        check_frames(config.frames, factor)
        if config.frames > available:
            raise InputVideoError(f"--frames {config.frames} asks for more frames than {config.input} has ({available})")
        keep = config.frames
    else:
        keep = 1 + factor * ((available - 1) // factor)
        if keep != available:
            stderr_console.print(f"[yellow]note:[/] {config.input} has {available} frames; using the first {keep} "
                                 f"(the model needs {factor}k+1)")
    return frames[:keep], fps


def base_path(output: Path) -> Path:
    """Where --save-base writes the native-size video: ``clip.base.mp4`` beside ``clip.mp4``."""
    return output.with_name(f"{output.stem}.base{output.suffix}")


def generate(config: GenerateConfig | str, *, progress: bool = False, **flags: Any) -> GenerateResult:
    """Generate a video and write ``config.output.path`` (mp4) plus a sidecar ``.json``.

    Args:
        config: a :class:`GenerateConfig`, or a prompt string combined with ``flags``
            (see :func:`build_generate_config`).
        progress: show rich progress bars on stderr.

    Example:
        >>> from upscale_dit import generate
        >>> result = generate("a red circle", model="tiny", output__path="a.mp4")  # doctest: +SKIP
    """
    if isinstance(config, str):
        config = build_generate_config(config, **flags)
    elif flags:
        raise TypeError("pass either a GenerateConfig or a prompt with keyword flags, not both")
    run, source = resolve_run(config)
    try:
        return _generate(run, source, progress=progress)
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemoryError(_oom_advice(run)) from None


def _oom_advice(run: ResolvedRun) -> str:
    tips = []
    if run.config.runtime.offload == "none":
        tips.append("--offload model")
    if run.config.runtime.vae_tiling != "on":
        tips.append("--vae-tiling on")
    if run.config.method.name == "freeswim" and run.config.method.freeswim.cache_device != "cpu":
        tips.append("--set method.freeswim.cache_device=cpu")
    tips += ["a smaller --res", f"fewer --frames (now {run.frames})"]
    return f"out of GPU memory at {run.size.gen_width}x{run.size.gen_height}x{run.frames}; try {', '.join(tips)}"


def _generate(run: ResolvedRun, source, *, progress: bool) -> GenerateResult:
    from .engine.device import Placement, resolve_device, resolve_dtype
    from .engine.loading import load_components
    from .engine.vae import Crop, count_decoded_frames, decode_frames

    cfg, size = run.config, run.size
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    placement = Placement(device, offload=cfg.runtime.offload == "model")
    tiling = cfg.runtime.vae_tiling == "on" or (
        cfg.runtime.vae_tiling == "auto" and size.gen_height * size.gen_width > TILING_AUTO_PIXELS
    )
    tile = cfg.runtime.vae_tile if tiling else None
    output = Path(cfg.output.path)
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    with StageProgress(enabled=progress) as bars:
        with bars.stage("load", f"loading {source.description}"):
            parts = load_components(source, dtype=dtype, device=placement.home)
        if cfg.runtime.compile:
            from .engine.compile import compile_blocks

            compile_blocks(parts["transformer"])
        cond, uncond = encode_text(run, parts, placement=placement, bars=bars)
        release(parts, "text_encoder", "tokenizer")  # embedded once; its 10.6 GiB (UMT5-XXL) are free for the rest
        # One CPU generator for all noise, so a seed gives the same video on every device.
        generator = torch.Generator("cpu").manual_seed(cfg.sampling.seed)
        stages = dict(cond=cond, uncond=uncond, generator=generator, placement=placement, bars=bars)
        if cfg.method.name == "direct":
            latents = sample_latents(run, parts, **stages)
        elif cfg.method.name == "relay":
            latents, extra = _relay(run, parts, tile=tile, **stages)
        else:
            latents, extra = _coarse_to_fine(run, parts, tile=tile, **stages)
        vae = parts["vae"]
        n_out = count_decoded_frames(vae, run.latent_shape[2])
        crop = Crop.centre((size.gen_height, size.gen_width), (size.out_height, size.out_width))
        with VideoWriter(output, fps=cfg.output.fps, height=size.out_height, width=size.out_width,
                         crf=cfg.output.crf) as writer:
            with bars.stage("decode_and_write", "decoding + writing" + (" (tiled)" if tiling else "")) as update, \
                    placement.active(vae):
                for chunk in decode_frames(vae, latents, tile=tile, crop=crop, on_progress=update):
                    writer.write(chunk)
            if writer.frames_written != n_out:
                raise UditError(f"internal error: wrote {writer.frames_written} frames, expected {n_out}")
    seconds = time.perf_counter() - started
    sidecar = output.with_suffix(".json")
    record = _sidecar(run, source, device=device, dtype=dtype, tiling=tiling, timings=bars.timings, seconds=seconds)
    record["derived"].update(extra)
    record["memory"] = bars.memory
    write_json_atomic(sidecar, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return GenerateResult(video=output, sidecar=sidecar, frames=n_out, height=size.out_height, width=size.out_width,
                          seconds=seconds, timings=dict(bars.timings), memory=dict(bars.memory))


def release(parts: dict[str, Any], *names: str) -> None:
    """Drop components a run no longer needs, so their memory serves the stages that follow."""
    on_cuda = any(getattr(parts.get(n), "device", torch.device("cpu")).type == "cuda" for n in names)
    for name in names:
        parts.pop(name, None)
    if on_cuda:
        torch.cuda.empty_cache()


def encode_text(run: ResolvedRun, parts: dict[str, Any], *, placement, bars: StageProgress | None = None):
    """Prompt (and negative prompt, when any stage guides) → embeddings in the transformer's dtype, once per run."""
    from .engine.text import encode_prompts

    bars = bars or StageProgress(enabled=False)
    cfg = run.config
    prompts = [cfg.prompt] + ([cfg.sampling.negative_prompt] if run.needs_negative() else [])
    with bars.stage("text_encoding", "encoding prompts"), placement.active(parts["text_encoder"]):
        embeds = encode_prompts(parts["tokenizer"], parts["text_encoder"], prompts,
                                max_length=cfg.sampling.max_sequence_length, device=placement.device)
    embeds = embeds.to(parts["transformer"].dtype)
    return embeds[:1], (embeds[1:] if len(embeds) > 1 else None)


def sample_latents(run: ResolvedRun, parts: dict[str, Any], *, cond, uncond, generator: torch.Generator, placement,
                   bars: StageProgress | None = None, latent_shape=None, stage: str = "denoise", sampling=None,
                   attention=contextlib.nullcontext) -> torch.Tensor:
    """Seeded noise and the denoising loop (float32 latents on the device).

    ``sampling`` (steps, guidance, shift, scheduler) defaults to the run's; ``attention()`` is the method's
    attention plan, entered around the loop (stock attention by default).
    """
    from .engine.sampler import denoise
    from .engine.scheduling import build_scheduler

    bars = bars or StageProgress(enabled=False)
    sampling, device = sampling or run.config.sampling, placement.device
    scheduler = build_scheduler(sampling.scheduler, shift=sampling.shift, base_config=parts["scheduler"])
    scheduler.set_timesteps(sampling.steps, device=device)
    noise = torch.randn(latent_shape or run.latent_shape, generator=generator, dtype=torch.float32).to(device)
    label = "denoising" if stage == "denoise" else "base (native size)"
    with bars.stage(stage, label, total=sampling.steps) as update, placement.active(parts["transformer"]), \
            attention():
        return denoise(parts["transformer"], scheduler, noise, timesteps=scheduler.timesteps, cond=cond,
                       uncond=uncond if sampling.guidance > 1.0 else None, guidance=sampling.guidance,
                       on_step=lambda i, n: update(i + 1, n))


def _base_video(run: ResolvedRun, parts, *, cond, uncond, generator, placement, bars) -> torch.Tensor:
    """The video a coarse-to-fine method refines: --input, or a native-size generation (saved with --save-base)."""
    from .engine.refine import frames_to_video_tensor
    from .engine.vae import decode_video, to_uint8_frames

    cfg, preset = run.config, run.preset
    if run.input_frames is not None:
        video = frames_to_video_tensor(run.input_frames, device=placement.device)
    else:
        base = sample_latents(run, parts, cond=cond, uncond=uncond, generator=generator, placement=placement,
                              bars=bars, latent_shape=run.base_shape, stage="base_denoise")
        with bars.stage("base_decode", "decoding base") as update, placement.active(parts["vae"]):
            video = decode_video(parts["vae"], base, on_progress=update)
        if cfg.output.save_base:
            with VideoWriter(base_path(Path(cfg.output.path)), fps=cfg.output.fps, height=preset.native_height,
                             width=preset.native_width, crf=cfg.output.crf) as writer:
                writer.write(to_uint8_frames(video))
    return video


def _coarse_to_fine(run: ResolvedRun, parts, *, cond, uncond, generator, placement, bars, tile):
    """FreeSwim: base video at the native size (or --input), then refinement at the target size."""
    from .methods.freeswim import refine

    video = _base_video(run, parts, cond=cond, uncond=uncond, generator=generator, placement=placement, bars=bars)
    latents, report = refine(parts, video, settings=run.config.method.freeswim, preset=run.preset,
                             height=run.size.gen_height, width=run.size.gen_width, cond=cond, uncond=uncond,
                             generator=generator, placement=placement, bars=bars, vae_tile=tile)
    return latents, {"freeswim": report, **_base_record(run)}


def _relay(run: ResolvedRun, parts, *, cond, uncond, generator, placement, bars, tile):
    """Relay LoRA: base weights + stage-2 LoRA + GCLF attention at the target size, from noise or (from_base)
    from an upsampled native-size base video."""
    from .engine.refine import refine_video
    from .methods.relay import apply_relay, relay_geometry

    settings, size = run.config.method.relay, run.size
    geometry = relay_geometry(run.preset, run.frames, size.gen_height, size.gen_width)
    transformer = parts["transformer"]

    def attention():
        return apply_relay(transformer, settings.lora, geometry=geometry, base_model=run.preset.name,
                           pool=settings.pool, kernel=settings.kernel, scale=settings.scale)

    stages = dict(cond=cond, uncond=uncond, generator=generator, placement=placement, bars=bars)
    if not settings.from_base:
        sampling = dataclasses.replace(run.config.sampling, steps=settings.steps, guidance=settings.guidance,
                                       shift=settings.shift, scheduler=settings.scheduler)
        latents = sample_latents(run, parts, sampling=sampling, attention=attention, **stages)
        return latents, {"relay": {"lora": settings.lora, "steps_run": settings.steps}}
    video = _base_video(run, parts, **stages)
    latents, report = refine_video(parts, video, schedule=settings, height=size.gen_height, width=size.gen_width,
                                   vae_tile=tile, attention=attention, label="refining (relay LoRA)", **stages)
    return latents, {"relay": {"lora": settings.lora, **report}, **_base_record(run)}


def _base_record(run: ResolvedRun) -> dict[str, str]:
    if run.config.output.save_base and run.input_frames is None:
        return {"base_video": str(base_path(Path(run.config.output.path)))}
    return {}


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"udit": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "peft", "av"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sidecar(run: ResolvedRun, source, *, device, dtype, tiling: bool, timings: Mapping[str, float],
             seconds: float) -> dict[str, Any]:
    cfg = run.config
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "prompt": cfg.prompt,
        "negative_prompt": cfg.sampling.negative_prompt,
        "seed": cfg.sampling.seed,
        "config": to_dict(cfg),
        "derived": {
            "model_source": source.description,
            "output_size": [run.size.out_width, run.size.out_height],
            "generated_size": [run.size.gen_width, run.size.gen_height],
            "frames": run.frames,
            "latent_shape": list(run.latent_shape),
            "vae_tiling": tiling,
        },
        "runtime": {"device": str(device), "device_name": device_name, "dtype": str(dtype).removeprefix("torch.")},
        "versions": package_versions(),
        "timings_s": {**timings, "total": round(seconds, 4)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
