"""Byte estimates against measured GPU peaks, the spec's tables, and their own invariants."""

import pytest

from upscale_dit.profiling import (
    VaeTiling,
    attention_workspace_bytes,
    block_mask_bytes,
    cross_attn_cache_bytes,
    dense_mask_bytes,
    estimate_vae_memory,
    format_gib,
    gib,
    lora_training_bytes,
    transformer_activation_bytes,
    transformer_weight_bytes,
    video_bytes,
)

from .configs import T2V_1_3B, T2V_14B, VIBE_TARGETS, WAN21_VAE, WAN22_VAE

# Measured with bench/calibrate_memory.py on one NVIDIA H200, torch 2.11.0+cu130, cuDNN 9.19, 2026-11-28:
# torch.cuda.max_memory_allocated() minus what was allocated before the call (weights and inputs excluded).
# The estimates are allowed 5 % either way.
MEASURED_TRANSFORMER = [  # (config, tokens, batch, bytes)
    (T2V_1_3B, 32_760, 1, 1_646_838_784),  # 480×832, 81 frames
    (T2V_1_3B, 32_760, 2, 3_191_449_600),
    (T2V_1_3B, 171_360, 1, 8_424_317_952),  # 1088×1920, 81 frames
    (T2V_14B, 32_760, 1, 3_730_855_936),
]
MEASURED_VAE = [  # (direction, height, width, frames, tiled, bytes); Wan2.1 VAE in fp32, diffusers' default tiles
    ("decode", 480, 832, 33, False, 9_166_851_072),
    ("decode", 480, 832, 33, True, 1_694_639_104),
    ("encode", 480, 832, 33, False, 6_867_686_400),
    ("encode", 480, 832, 33, True, 1_143_374_848),
    ("decode", 1088, 1920, 9, False, 47_293_291_008),
    ("decode", 1088, 1920, 33, True, 3_885_842_432),
    ("decode", 480, 832, 17, False, 9_088_576_512),
]
RATIO = (0.95, 1.05)


@pytest.mark.parametrize(("config", "tokens", "batch", "measured"), MEASURED_TRANSFORMER)
def test_transformer_activations_match_measured(config, tokens, batch, measured):
    est = transformer_activation_bytes(config, num_tokens=tokens, batch=batch)
    assert RATIO[0] <= est.peak / measured <= RATIO[1]


def test_dense_forward_anchor_h100():
    # specs/freeswim.md "Measured anchor": stock dense 1.3B forward at 1088×1920, 81 frames: 10.5 GiB peak (H100).
    est = transformer_weight_bytes(T2V_1_3B) + transformer_activation_bytes(T2V_1_3B, num_tokens=171_360).peak
    assert gib(est) == pytest.approx(10.5, rel=0.05)


@pytest.mark.parametrize(("direction", "height", "width", "frames", "tiled", "measured"), MEASURED_VAE)
def test_vae_memory_matches_measured(direction, height, width, frames, tiled, measured):
    est = estimate_vae_memory(WAN21_VAE, direction=direction, height=height, width=width, frames=frames,
                              tiling=VaeTiling() if tiled else None)
    assert RATIO[0] <= est.peak / measured <= RATIO[1]


def test_activation_phases():
    base = transformer_activation_bytes(T2V_1_3B, num_tokens=10_000)
    # 1.3B (Fd/D = 5.8) peaks in the FFN; 14B (Fd/D = 2.7) in the fp32 residual after it.
    assert base.peak == base.persistent + base.ffn
    big = transformer_activation_bytes(T2V_14B, num_tokens=10_000)
    assert big.peak == big.persistent + big.residual
    # Per token at bf16: FFN = 4·2·D + 2·2·Fd bytes.
    assert base.ffn == 10_000 * (8 * 1536 + 4 * 8960)
    double = transformer_activation_bytes(T2V_1_3B, num_tokens=10_000, batch=2)
    assert double.ffn == 2 * base.ffn and double.persistent < 2 * base.persistent  # RoPE tables are shared
    chunked = transformer_activation_bytes(T2V_1_3B, num_tokens=10_000, ffn_chunk_tokens=1_000)
    assert chunked.ffn < base.ffn / 2
    fp32 = transformer_activation_bytes(T2V_1_3B, num_tokens=10_000, dtype="float32")
    assert fp32.ffn == 2 * base.ffn


@pytest.mark.parametrize(
    ("config", "tokens", "expected_gb"),
    [
        (T2V_1_3B, 171_360, 15.8), (T2V_1_3B, 302_400, 27.9), (T2V_1_3B, 680_400, 62.7),
        (T2V_14B, 171_360, 70.2), (T2V_14B, 302_400, 123.9), (T2V_14B, 680_400, 278.7),
    ],
)
def test_cross_attn_cache_table(config, tokens, expected_gb):
    # specs/freeswim.md §4: L · dim · 2 bytes · blocks at 1088×1920, 1440×2560, 2160×3840 (81 frames).
    assert cross_attn_cache_bytes(config, tokens) / 1e9 == pytest.approx(expected_gb, abs=0.05)


def test_attention_workspaces():
    n = 680_400  # 4K, 81 frames
    # ecosystem.md §3a: a BlockMask index tensor at 4K is ≈ 108 MiB; create_block_mask keeps four of them.
    assert (block_mask_bytes(n) - 4 * 5316 * 4) / 4 / 2**20 == pytest.approx(108, abs=0.5)
    assert dense_mask_bytes(171_360) == 171_360**2 * 3
    lse = 12 * 171_360 * 4
    assert attention_workspace_bytes("flash", num_tokens=171_360, heads=12) == lse
    assert attention_workspace_bytes("flex", num_tokens=171_360, heads=12) == lse + block_mask_bytes(171_360)
    assert attention_workspace_bytes("dense_mask", num_tokens=171_360, heads=12) == lse + dense_mask_bytes(171_360)
    with pytest.raises(ValueError, match="`kernel`"):
        attention_workspace_bytes("sdpa", num_tokens=10, heads=1)  # type: ignore[arg-type]


def test_video_bytes():
    # ecosystem.md §4f: 4K, 81 frames: 7.5 GiB fp32, 1.9 GiB uint8; 2K: 3.3 / 0.8 GiB.
    assert gib(video_bytes(81, 2160, 3840, "float32")) == pytest.approx(7.5, abs=0.05)
    assert gib(video_bytes(81, 2160, 3840)) == pytest.approx(1.9, abs=0.05)
    assert gib(video_bytes(81, 1440, 2560, "float32")) == pytest.approx(3.3, abs=0.05)
    assert gib(video_bytes(81, 1440, 2560, "uint8")) == pytest.approx(0.8, abs=0.05)
    assert format_gib(2**30 * 3 // 2) == "1.50 GiB"


def test_lora_training_bytes():
    est = lora_training_bytes(T2V_1_3B, rank=32, target_modules=VIBE_TARGETS)
    assert est.params == 43_745_280
    assert est.weights == est.grads == 2 * est.params
    assert est.optimizer == 2 * 2 * est.params  # exp_avg and exp_avg_sq, allocated like the bf16 parameter
    assert est.total == 8 * est.params
    mixed = lora_training_bytes(T2V_1_3B, rank=32, target_modules=VIBE_TARGETS, state_dtype="float32",
                                master_weights=True)
    assert mixed.total == est.total + 4 * est.params + 4 * est.params


def test_vae_memory_modes():
    size = dict(height=2160, width=3840, frames=81)
    untiled = estimate_vae_memory(WAN21_VAE, direction="decode", **size)
    tiled = estimate_vae_memory(WAN21_VAE, direction="decode", tiling=VaeTiling(), **size)
    streamed = estimate_vae_memory(WAN21_VAE, direction="decode", tiling=VaeTiling(), stream=True, **size)
    assert tiled.peak < untiled.peak / 3
    # diffusers' tiled decode holds every tile plus three clip-sized copies: output dominates at 4K.
    assert tiled.peak == tiled.outputs > 4 * video_bytes(81, 2160, 3840, "float32")
    # Streaming tiles off the device as they finish leaves the tile's working set, cache and its frames.
    assert streamed.peak == streamed.working + streamed.feature_cache + streamed.outputs < tiled.peak / 10
    assert streamed.outputs == video_bytes(81, 256, 256, "float32")
    # Tiles: the working set and cache no longer depend on the frame size.
    small = estimate_vae_memory(WAN21_VAE, direction="decode", tiling=VaeTiling(), height=1088, width=1920,
                                frames=81)
    assert small.working == tiled.working and small.feature_cache == tiled.feature_cache
    doubled = estimate_vae_memory(WAN21_VAE, direction="decode", working_factor=2.0, **size)
    assert doubled.working == 2 * untiled.working
    half = estimate_vae_memory(WAN21_VAE, direction="encode", dtype="bfloat16", **size)
    full = estimate_vae_memory(WAN21_VAE, direction="encode", **size)
    assert half.peak * 2 == full.peak
    # The residual Wan2.2 VAE walks too.
    assert estimate_vae_memory(WAN22_VAE, direction="decode", height=704, width=1280, frames=81).peak > 0
