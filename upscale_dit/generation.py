"""`generate`: the whole run behind `udit generate`, callable from Python.

prompt → text embeddings → noise at the generation size → our sampler → streamed VAE decode → mp4 + sidecar.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .config import FrameSize, GenerateConfig, ModelPreset, layer_config, resolve_frames, resolve_size, to_dict
from .errors import ConfigError, OutOfMemoryError, UditError
from .progress import StageProgress
from .video import VideoWriter, check_writable, write_json_atomic

TILING_AUTO_PIXELS = 1280 * 720  # above 720p the untiled causal cache of one frame gets large


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


@dataclass(frozen=True, slots=True)
class ResolvedRun:
    """A config with every `None` filled in from the model preset, plus what was derived from it."""

    config: GenerateConfig
    preset: ModelPreset
    size: FrameSize
    frames: int
    latent_shape: tuple[int, int, int, int, int]


def build_generate_config(
    prompt: str | None = None,
    *,
    preset: Sequence[str | Path] = (),
    set: Sequence[str] = (),  # noqa: A002 - mirrors the --set flag
    **flags: Any,
) -> GenerateConfig:
    """Layer built-in < ``preset`` files < ``set`` items < keyword flags (dotted names, ``None`` = not given).

    Flags use the config's dotted paths with dots as double underscores or plain names:
    ``model="tiny", resolution="2x", sampling__steps=8`` or ``{"sampling.steps": 8}`` via ``set``.
    """
    nested: dict[str, Any] = {}
    if prompt is not None:
        nested["prompt"] = prompt
    for key, value in flags.items():
        if value is None:
            continue
        node, *rest = key.split("__")
        target = nested
        for part in [node, *rest][:-1]:
            target = target.setdefault(part, {})
        target[[node, *rest][-1]] = value
    return layer_config(preset_files=preset, set_options=set, flags=nested)


def resolve_run(config: GenerateConfig) -> tuple[ResolvedRun, Any]:
    """Fill defaults from the model preset and check everything that can fail before weights load."""
    from .engine.loading import resolve_model

    if not config.prompt.strip():
        raise ConfigError("the prompt is empty: say what the video should show")
    output = Path(config.output.path)
    check_writable(output, overwrite=config.output.overwrite)
    source = resolve_model(config.model)
    preset = source.preset
    size = resolve_size(config.resolution, config.aspect, preset)
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
    resolved = dataclasses.replace(
        config, frames=frames, sampling=sampling,
        output=dataclasses.replace(config.output, fps=config.output.fps or preset.fps),
    )
    latent_shape = (
        1, 16, (frames - 1) // preset.vae_scale_temporal + 1,
        size.gen_height // preset.vae_scale_spatial, size.gen_width // preset.vae_scale_spatial,
    )
    return ResolvedRun(resolved, preset, size, frames, latent_shape), source


def generate(config: GenerateConfig | str, *, progress: bool = False, **flags: Any) -> GenerateResult:
    """Generate a video and write ``config.output.path`` (mp4) plus a sidecar ``.json``.

    Args:
        config: a :class:`GenerateConfig`, or a prompt string combined with ``flags``
            (see :func:`build_generate_config`).
        progress: show rich progress bars on stderr.

    Example:
        >>> from upscale_dit import generate
        >>> result = generate("a red circle", model="tiny", output__path=str(tmp / "a.mp4"))  # doctest: +SKIP
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
    output = Path(cfg.output.path)
    started = time.perf_counter()
    with StageProgress(enabled=progress) as bars:
        with bars.stage("load", f"loading {source.description}"):
            parts = load_components(source, dtype=dtype, device=placement.home)
        latents = sample_latents(run, parts, placement=placement, bars=bars)
        vae = parts["vae"]
        n_out = count_decoded_frames(vae, run.latent_shape[2])
        crop = Crop.centre((size.gen_height, size.gen_width), (size.out_height, size.out_width))
        with VideoWriter(output, fps=cfg.output.fps, height=size.out_height, width=size.out_width,
                         crf=cfg.output.crf) as writer:
            with bars.stage("decode_and_write", "decoding + writing" + (" (tiled)" if tiling else "")) as update, \
                    placement.active(vae):
                for chunk in decode_frames(vae, latents, tile=cfg.runtime.vae_tile if tiling else None, crop=crop,
                                           on_progress=update):
                    writer.write(chunk)
            if writer.frames_written != n_out:
                raise UditError(f"internal error: wrote {writer.frames_written} frames, expected {n_out}")
    seconds = time.perf_counter() - started
    sidecar = output.with_suffix(".json")
    record = _sidecar(run, source, device=device, dtype=dtype, tiling=tiling, timings=bars.timings, seconds=seconds)
    write_json_atomic(sidecar, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return GenerateResult(video=output, sidecar=sidecar, frames=n_out, height=size.out_height, width=size.out_width,
                          seconds=seconds, timings=dict(bars.timings))


def sample_latents(run: ResolvedRun, parts: dict[str, Any], *, placement, bars: StageProgress | None = None) -> torch.Tensor:
    """Text encoding, seeded noise and the denoising loop: the latents of ``run`` (float32, on the device)."""
    from .engine.sampler import denoise
    from .engine.scheduling import build_scheduler
    from .engine.text import encode_prompts

    bars = bars or StageProgress(enabled=False)
    cfg, device = run.config, placement.device
    with bars.stage("text_encoding", "encoding prompts"), placement.active(parts["text_encoder"]):
        prompts = [cfg.prompt] + ([cfg.sampling.negative_prompt] if cfg.sampling.guidance > 1.0 else [])
        embeds = encode_prompts(parts["tokenizer"], parts["text_encoder"], prompts,
                                max_length=cfg.sampling.max_sequence_length, device=device)
        embeds = embeds.to(parts["transformer"].dtype)
    cond, uncond = embeds[:1], (embeds[1:] if len(embeds) > 1 else None)
    scheduler = build_scheduler(cfg.sampling.scheduler, shift=cfg.sampling.shift, base_config=parts["scheduler"])
    scheduler.set_timesteps(cfg.sampling.steps, device=device)
    # Noise comes from a CPU generator, so a seed gives the same video on every device.
    generator = torch.Generator("cpu").manual_seed(cfg.sampling.seed)
    noise = torch.randn(run.latent_shape, generator=generator, dtype=torch.float32).to(device)
    with bars.stage("denoise", "denoising", total=cfg.sampling.steps) as update, \
            placement.active(parts["transformer"]):
        return denoise(parts["transformer"], scheduler, noise, timesteps=scheduler.timesteps, cond=cond,
                       uncond=uncond, guidance=cfg.sampling.guidance, on_step=lambda i, n: update(i + 1, n))


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
