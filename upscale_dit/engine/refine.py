"""Video-to-video pieces of the coarse-to-fine pipeline: upsample in pixel space, encode, noise to a strength.

Mirrors what FreeSwim's stage C does through diffusers' video-to-video pipeline, in our own code:
bilinear per-frame upsampling (half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR), VAE encode
taking the posterior mode, Wan's latent standardisation, and flow noising x = (1 - sigma) x0 + sigma eps at
the first kept step of a schedule truncated by ``strength``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .sampler import PassController, denoise
from .scheduling import build_scheduler
from .vae import normalize_latents


def frames_to_video_tensor(frames: np.ndarray, *, device: torch.device) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` → float32 ``[1, 3, T, H, W]`` in [-1, 1]."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return (video.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5) - 1.0


def upsample_video(video: torch.Tensor, height: int, width: int, *, chunk: int = 8) -> torch.Tensor:
    """Bilinear per-frame resize of ``[1, 3, T, H, W]`` to ``(height, width)``, a few frames at a time."""
    if video.shape[-2:] == (height, width):
        return video
    out = video.new_empty((*video.shape[:3], height, width))
    for start in range(0, video.shape[2], chunk):
        frames = video[0, :, start : start + chunk].permute(1, 0, 2, 3)  # [t, 3, H, W]
        resized = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        out[0, :, start : start + chunk] = resized.permute(1, 0, 2, 3)
    return out


@torch.no_grad()
def encode_video(vae, video: torch.Tensor, *, tile: int | None = None) -> torch.Tensor:
    """``[1, 3, T, H, W]`` in [-1, 1] → standardised latents (posterior mode), optionally tiled."""
    if tile is not None:
        vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                          tile_sample_stride_height=tile * 3 // 4, tile_sample_stride_width=tile * 3 // 4)
    try:
        z = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode()
    finally:
        if tile is not None:
            vae.disable_tiling()
    return normalize_latents(vae, z.float())


def truncate_schedule(scheduler, steps: int, strength: float) -> tuple[torch.Tensor, int]:
    """Timesteps to run for ``strength`` (the last ``int(steps*strength)`` of ``steps``) and the first's index."""
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"`strength` must be in (0, 1], got {strength}")
    kept = min(int(steps * strength), steps)
    if kept < 1:
        raise ConfigError(f"strength {strength} with {steps} steps runs no step; raise the strength or the steps")
    start = steps - kept
    order = getattr(scheduler, "order", 1)
    timesteps = scheduler.timesteps[start * order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * order)
    return timesteps, start * order


def noise_latents(scheduler, clean: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor) -> torch.Tensor:
    """Flow noising of clean latents to the schedule's first kept step."""
    timestep = first_timestep.reshape(1).expand(clean.shape[0])
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(clean, noise, timestep)
    return scheduler.scale_noise(clean, timestep, noise)


def refine_video(
    parts: dict[str, Any],
    video: torch.Tensor,
    *,
    schedule: Any,
    height: int,
    width: int,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    generator: torch.Generator,
    placement,
    bars,
    vae_tile: int | None,
    attention: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    controller: PassController | None = None,
    label: str = "refining",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Upsample ``video`` (``[1, 3, T, h, w]`` in [-1, 1]) to ``height`` x ``width``, encode, re-noise to
    ``schedule.strength`` and denoise inside ``attention()`` (the method's attention plan).

    ``schedule`` carries ``steps``, ``strength``, ``shift``, ``scheduler`` and ``guidance``.
    Returns the latents and what the schedule did (steps run, first sigma).
    """
    device = placement.device
    transformer, vae = parts["transformer"], parts["vae"]
    with bars.stage("upsample_encode", "upsampling + encoding"), placement.active(vae):
        upsampled = upsample_video(video.to(device), height, width)
        clean = encode_video(vae, upsampled, tile=vae_tile)
        del upsampled
    scheduler = build_scheduler(schedule.scheduler, shift=schedule.shift, base_config=parts["scheduler"])
    scheduler.set_timesteps(schedule.steps, device=device)
    timesteps, start = truncate_schedule(scheduler, schedule.steps, schedule.strength)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(device)
    latents = noise_latents(scheduler, clean, noise, timesteps[0])
    with bars.stage("refine", label, total=len(timesteps)) as update, placement.active(transformer), attention():
        latents = denoise(transformer, scheduler, latents, timesteps=timesteps, cond=cond,
                          uncond=uncond if schedule.guidance > 1.0 else None, guidance=schedule.guidance,
                          controller=controller, on_step=lambda i, n: update(i + 1, n))
    return latents, {"steps_run": len(timesteps), "first_sigma": round(float(scheduler.sigmas[start]), 6)}
