"""The refinement stage's pieces: our video-to-video loop equals diffusers' WanVideoToVideoPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upscale_dit.engine.refine import (
    encode_video,
    frames_to_video_tensor,
    noise_latents,
    truncate_schedule,
    upsample_video,
)
from upscale_dit.engine.sampler import denoise
from upscale_dit.engine.scheduling import build_scheduler
from upscale_dit.engine.text import encode_prompts
from upscale_dit.engine.tiny import build_tiny_components
from upscale_dit.errors import ConfigError


def test_refine_loop_matches_wan_video_to_video_pipeline():
    from diffusers import WanVideoToVideoPipeline

    parts = build_tiny_components()
    frames = np.random.default_rng(0).integers(0, 256, size=(9, 96, 160, 3), dtype=np.uint8)
    reference = WanVideoToVideoPipeline(**parts)(
        video=list(frames.astype(np.float32) / 255), prompt="a red circle", negative_prompt="blurry", height=96,
        width=160, num_inference_steps=10, strength=0.7, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(3), output_type="latent", max_sequence_length=64).frames
    cpu = torch.device("cpu")
    cond, uncond = (encode_prompts(parts["tokenizer"], parts["text_encoder"], [p], max_length=64, device=cpu)
                    for p in ("a red circle", "blurry"))
    scheduler = build_scheduler("unipc", shift=3.0, base_config=dict(parts["scheduler"].config))
    scheduler.set_timesteps(10)
    clean = encode_video(parts["vae"], frames_to_video_tensor(frames, device=cpu))
    timesteps, start = truncate_schedule(scheduler, 10, 0.7)
    assert (len(timesteps), start) == (7, 3)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    latents = noise_latents(scheduler, clean, noise, timesteps[0])
    ours = denoise(parts["transformer"], scheduler, latents, timesteps=timesteps, cond=cond, uncond=uncond,
                   guidance=5.0)
    # inputs are normalised as u/127.5-1 here and (u/255)*2-1 there: last-bit differences only
    assert (ours - reference).norm() / reference.norm() < 1e-5


def _bilinear_half_pixel(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Independent bilinear resize with half-pixel centres and edge clamping (OpenCV INTER_LINEAR upsampling)."""
    h, w = image.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def test_upsample_is_plain_bilinear():
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 6, 10, 3), dtype=np.uint8)
    video = frames_to_video_tensor(frames, device=torch.device("cpu"))
    up = upsample_video(video, 15, 24, chunk=2)
    assert up.shape == (1, 3, 3, 15, 24)
    for t in range(3):
        expected = _bilinear_half_pixel(video[0, :, t].permute(1, 2, 0).double().numpy(), 15, 24)
        np.testing.assert_allclose(up[0, :, t].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_strength_must_run_a_step():
    scheduler = build_scheduler("unipc", shift=9.0)
    scheduler.set_timesteps(4)
    with pytest.raises(ConfigError, match="runs no step"):
        truncate_schedule(scheduler, 4, 0.1)
