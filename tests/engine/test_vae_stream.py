"""Streamed decoding equals diffusers' one-shot decode, untiled and tiled, and crops as asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upscale_dit.engine.tiny import build_tiny_components
from upscale_dit.engine.vae import Crop, decode_frames, denormalize_latents, normalize_latents, to_uint8_frames


@pytest.fixture(scope="module")
def vae():
    return build_tiny_components()["vae"]


def _latents(frames=3, h=12, w=20, seed=0):
    return torch.randn((1, 16, frames, h, w), generator=torch.Generator().manual_seed(seed))


def test_normalisation_round_trip(vae):
    z = _latents()
    assert torch.allclose(normalize_latents(vae, denormalize_latents(vae, z)), z, atol=1e-5)


def test_untiled_stream_equals_decode(vae):
    latents = _latents()
    chunks = list(decode_frames(vae, latents))
    assert [c.shape[0] for c in chunks] == [1, 4, 4]  # one chunk per latent frame, as produced
    ours = np.concatenate(chunks)
    with torch.no_grad():
        reference = to_uint8_frames(vae.decode(denormalize_latents(vae, latents)).sample)
    assert ours.shape == reference.shape == (9, 96, 160, 3)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_tiled_stream_equals_diffusers_tiled_decode(vae):
    latents = _latents(h=20, w=28, seed=1)
    progress = []
    ours = np.concatenate(list(decode_frames(vae, latents, tile=64, on_progress=lambda d, t: progress.append((d, t)))))
    vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48,
                      tile_sample_stride_width=48)
    try:
        with torch.no_grad():
            reference = to_uint8_frames(vae.decode(denormalize_latents(vae, latents)).sample)
    finally:
        vae.disable_tiling()
    assert ours.shape == reference.shape == (9, 160, 224, 3)
    assert np.array_equal(ours, reference)
    assert progress[-1] == (20, 20)  # 4 rows x 5 columns of tiles, reported one by one


def test_centre_crop(vae):
    latents = _latents(frames=1)
    crop = Crop.centre((96, 160), (90, 150))
    (frame,) = list(decode_frames(vae, latents, crop=crop))
    (full,) = list(decode_frames(vae, latents))
    assert frame.shape == (1, 90, 150, 3)
    assert np.array_equal(frame, full[:, 3:93, 5:155])
