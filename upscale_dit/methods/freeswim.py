"""FreeSwim's refinement stage: upsample → encode → re-noise → denoise with the FreeSwim attention plan.

The base stage (native-size text-to-video) is the engine's ordinary sampler; this module adds what happens
after it (or to an input video): spec freeswim.md §1 stage B and C.
"""

from __future__ import annotations

import re

import torch

from ..attention import (
    TokenGeometry,
    build_token_geometry,
    flash_attention_4_hint,
    flex_backend,
    freeswim_attention_scale,
)
from ..attention.cross_cache import CrossAttnCache
from ..attention.dual_path import FreeSwimController, apply_freeswim
from ..config import FreeSwimConfig, ModelPreset, fill_from, method_defaults
from ..engine.refine import refine_video
from ..errors import ConfigError
from ..profiling import cross_attn_cache_bytes
from ..progress import stderr_console

_WINDOW = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$", re.IGNORECASE)


def resolve_settings(settings: FreeSwimConfig, preset: ModelPreset) -> FreeSwimConfig:
    """Fill unset FreeSwim fields from ``presets/methods/freeswim.yaml`` (defaults, then the model's entry)."""
    defaults = method_defaults("freeswim", preset.name)
    defaults.setdefault("scale_tokens", preset.native_grid[0] * preset.native_grid[1])
    filled = fill_from(settings, defaults, source="method.freeswim")
    window_of(filled, preset)  # validate the window spelling now, before any weights load
    return filled


def window_of(settings: FreeSwimConfig, preset: ModelPreset) -> tuple[int, int]:
    """The window in tokens: the model preset's reference window, its native grid, or explicit ROWSxCOLS."""
    spec = settings.window
    if spec == "reference":
        return preset.window_rows, preset.window_cols
    if spec == "native":
        return preset.native_grid
    m = _WINDOW.match(str(spec))
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise ConfigError(f"`method.freeswim.window` must be reference, native or ROWSxCOLS (e.g. 31x53), got {spec!r}")
    return int(m[1]), int(m[2])


def build_geometry(settings: FreeSwimConfig, preset: ModelPreset, *, frames: int, height: int,
                   width: int) -> TokenGeometry:
    geometry = build_token_geometry(
        frames, height, width, native_height=preset.native_height, native_width=preset.native_width,
        vae_scale_spatial=preset.vae_scale_spatial, vae_scale_temporal=preset.vae_scale_temporal,
        patch_size=preset.patch_size, window=window_of(settings, preset), inward=settings.inward,
    )
    return geometry


def choose_cache_storage(choice: str, *, nbytes: int, device: torch.device) -> torch.device:
    """Where the cross-attention cache lives.

    `auto` prefers pinned CPU memory: its copies run on a side stream, prefetched one block ahead, and cost no
    measurable time (H200, 1080p: a cached pass took 4.459 s from CPU memory and 4.468 s from the GPU, see
    bench/RESULTS.md) while freeing the cache's GPU memory (14.7 GiB at 1080p for Wan2.1-1.3B). Only when the host
    lacks the room (more than half of its available memory) does the cache stay on the GPU.
    """
    if device.type != "cuda" or choice == "cpu":
        return torch.device("cpu")
    if choice == "gpu":
        return device
    return torch.device("cpu") if nbytes <= host_available_bytes() // 2 else device


def host_available_bytes() -> int:
    """Memory the host can still give (Linux MemAvailable; elsewhere, assume plenty)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def refine(
    parts: dict,
    video: torch.Tensor,
    *,
    settings: FreeSwimConfig,
    preset: ModelPreset,
    height: int,
    width: int,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    generator: torch.Generator,
    placement,
    bars,
    vae_tile: int | None,
) -> tuple[torch.Tensor, dict]:
    """Refine ``video`` (``[1, 3, T, h, w]`` in [-1, 1], any size) to latents at ``height`` x ``width``
    with the FreeSwim attention plan. Returns the latents and a report for the sidecar."""
    transformer = parts["transformer"]
    geometry = build_geometry(settings, preset, frames=video.shape[2], height=height, width=width)
    head_dim = transformer.config.attention_head_dim
    scale = freeswim_attention_scale(head_dim, settings.scale_tokens) if settings.scale else None
    cache_bytes = cross_attn_cache_bytes(dict(transformer.config), geometry.num_tokens, transformer.dtype)
    storage = choose_cache_storage(settings.cache_device, nbytes=cache_bytes, device=placement.device)
    controller = FreeSwimController(geometry=geometry, mode=settings.mode, cache_steps=settings.cache_steps,
                                    scale=scale, kernel=settings.kernel, cache=CrossAttnCache(storage))
    if settings.kernel in ("auto", "flex") and (hint := flash_attention_4_hint(placement.device)):
        stderr_console.print(f"[yellow]note:[/] {hint}")
    latents, report = refine_video(
        parts, video, schedule=settings, height=height, width=width, cond=cond, uncond=uncond, generator=generator,
        placement=placement, bars=bars, vae_tile=vae_tile, controller=controller,
        attention=lambda: apply_freeswim(transformer, controller),
        label=f"refining (freeswim {settings.mode}, k={settings.cache_steps})",
    )
    report.update(
        cache_storage=str(storage), cache_bytes=cache_bytes, cache_refreshes=controller.cache.refreshes,
        dual_passes=sum(plan.dual for _, _, plan in controller.history), window=list(geometry.window), scale=scale,
        kernel=controller.chosen_kernel or "dense (window covers the grid)",
    )
    if controller.chosen_kernel == "flex":  # which flex ran: FlashAttention-4, Triton, or eager off CUDA
        report["flex_backend"] = flex_backend(placement.device) or "eager"
    controller.cache.reset()
    return latents, report
