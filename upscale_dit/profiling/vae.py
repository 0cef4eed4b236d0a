"""Wan VAE: parameters, encode/decode working memory and FLOPs from one walk over its layers.

``_walk`` mirrors ``AutoencoderKLWan`` (diffusers 0.42.1) layer by layer and records every convolution with the
spatial scale and frames-per-chunk it runs at. Parameters are exact (checked against the meta-device count,
126,892,531 for Wan2.1). Memory is an *estimate* of eager PyTorch's live tensors on cuDNN, derived term by term
below and checked against measured peaks (H200, fp32, 480p–1080p, tiled and untiled, encode and decode: within
3 %, ``tests/profiling/test_memory.py``); ``working_factor`` is the knob for recalibrating on other stacks.

Why chunks: Wan's causal VAE decodes one latent frame at a time (4 pixel frames after the two ×2 temporal
upsamplings, 1 for the first) and encodes 4 pixel frames at a time, carrying 1–2 frames of each causal conv's input
in a feature cache. So peak memory scales with one chunk (not the clip) × spatial size × channels, plus the cache,
plus whatever output the caller holds. With tiling the spatial size is one tile's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .dims import Record, VaeDims, dtype_bytes

__all__ = ["VaeMemory", "VaeTiling", "count_vae_params", "estimate_vae_memory", "vae_flops"]


@dataclass(frozen=True, slots=True)
class _Conv:
    """One convolution: channels, kernel (t, h, w), spatial scale (pixels per position) and frames per chunk."""

    cin: int
    cout: int
    kernel: tuple[int, int, int]
    scale_in: int
    scale_out: int
    t_in: int
    t_out: int
    cache_frames: int = 0  # frames of its input the causal feature cache keeps between chunks
    held: int = 0  # input-sized tensors callers keep alive meanwhile (block input, enclosing stage input)
    upsampled: bool = False  # 2-D conv after nearest ×2: the pre-upsample tensor (¼ of the input) is alive too

    @property
    def params(self) -> int:
        return self.cin * self.cout * math.prod(self.kernel) + self.cout


@dataclass(frozen=True, slots=True)
class _Walk:
    encoder: list[_Conv]
    decoder: list[_Conv]
    norms: int  # RMS-norm gammas (the only parameters outside convolutions)
    attn_encoder: list[tuple[int, int]]  # (channels, scale) of each single-head spatial attention
    attn_decoder: list[tuple[int, int]]


class _Builder:
    """Tracks (channels, scale, frames per chunk) while walking; appends convs and norm sizes.

    ``held`` is how many input-sized tensors callers keep alive around a residual block's convs: the block's own
    input (its caller's loop variable), plus, in the decoder, the up block's input held by the decoder's loop, plus
    Wan2.2's residual blocks' ``x.clone()`` for the shortcut.
    """

    def __init__(self, channels: int, scale: int, frames: int, held: int) -> None:
        self.c, self.s, self.t = channels, scale, frames
        self.held = held
        self.convs: list[_Conv] = []
        self.attn: list[tuple[int, int]] = []
        self.norms = 0

    def causal(self, cout: int, k: int = 3, held: int = 0) -> None:
        # WanCausalConv3d with a temporal kernel of k: its feature cache keeps the last 2 frames of its input.
        self.convs.append(_Conv(self.c, cout, (k, k, k), self.s, self.s, self.t, self.t, 2 if k > 1 else 0, held))
        self.c = cout

    def res(self, cout: int) -> None:
        # WanResidualBlock: RMS(in) -> SiLU -> causal 3³ conv -> RMS(out) -> SiLU -> causal 3³ conv, + shortcut
        # (a 1³ causal conv, called without cache, when channels change).
        cin = self.c
        self.norms += cin + cout
        self.causal(cout, held=self.held)
        self.causal(cout, held=self.held)
        if cin != cout:
            self.convs.append(_Conv(cin, cout, (1, 1, 1), self.s, self.s, self.t, self.t, held=self.held))

    def attention(self) -> None:
        # WanAttentionBlock: RMS, 1×1 conv to qkv, single-head attention per frame, 1×1 projection.
        c = self.c
        self.norms += c
        self.convs.append(_Conv(c, 3 * c, (1, 1, 1), self.s, self.s, self.t, self.t))
        self.convs.append(_Conv(c, c, (1, 1, 1), self.s, self.s, self.t, self.t))
        self.attn.append((c, self.s))

    def mid(self) -> None:
        self.res(self.c)
        self.attention()
        self.res(self.c)

    def down(self, temporal: bool) -> None:
        # WanResample downsample2d/3d: zero-pad, Conv2d 3×3 stride 2; 3d adds a (3,1,1) stride-2 time conv whose
        # cache keeps 1 frame. Frames per chunk halve.
        c, s = self.c, self.s
        self.convs.append(_Conv(c, c, (1, 3, 3), s, 2 * s, self.t, self.t))
        self.s = 2 * s
        if temporal:
            t_out = max(1, self.t // 2)
            self.convs.append(_Conv(c, c, (3, 1, 1), self.s, self.s, self.t, t_out, cache_frames=1))
            self.t = t_out

    def up(self, temporal: bool, cout: int) -> None:
        # WanResample upsample3d: a (3,1,1) causal time conv dim -> 2·dim, reshaped to 2× frames; then (2d and 3d)
        # nearest ×2 and Conv2d 3×3 dim -> cout on the upsampled tensor.
        c = self.c
        if temporal:
            self.convs.append(_Conv(c, 2 * c, (3, 1, 1), self.s, self.s, self.t, self.t, cache_frames=2))
            self.t *= 2
        self.s //= 2
        self.convs.append(_Conv(c, cout, (1, 3, 3), self.s, self.s, self.t, self.t, upsampled=True))
        self.c = cout


def _walk(v: VaeDims) -> _Walk:
    out_scale = v.patch_size or 1  # Wan2.2 patchifies 2×2 before the encoder and unpatchifies after the decoder
    n_stages = len(v.dim_mult)
    # Encoder: chunks of `scale_factor_temporal` frames (the first chunk is 1 frame; steady state is the peak).
    enc = _Builder(v.in_channels, out_scale, v.scale_factor_temporal, held=3 if v.is_residual else 1)
    dims = [v.base_dim * m for m in (1, *v.dim_mult)]
    enc.causal(dims[0])  # conv_in
    scale = 1.0
    for i, cout in enumerate(dims[1:]):
        last = i == n_stages - 1
        for _ in range(v.num_res_blocks):
            enc.res(cout)
            if not v.is_residual and scale in v.attn_scales:
                enc.attention()
        if not last:
            enc.down(temporal=v.temperal_downsample[i])
            scale /= 2
    enc.mid()
    enc.norms += enc.c
    enc.causal(2 * v.z_dim)  # norm_out + SiLU + conv_out (mean and log-variance)
    enc.causal(2 * v.z_dim, k=1)  # quant_conv

    # Decoder: one latent frame per chunk, 2× frames after each temporal upsampling.
    dec = _Builder(v.z_dim, out_scale * 2 ** (n_stages - 1), 1, held=3 if v.is_residual else 2)
    dec.causal(v.z_dim, k=1)  # post_quant_conv
    ddims = [v.decoder_base_dim * m for m in (v.dim_mult[-1], *reversed(v.dim_mult))]
    dec.causal(ddims[0])  # conv_in
    dec.mid()
    temporal_up = tuple(reversed(v.temperal_downsample))
    for i, cout in enumerate(ddims[1:]):
        for _ in range(v.num_res_blocks + 1):
            dec.res(cout)
        if i != n_stages - 1:
            # Wan2.1's upsamplers halve the channels (so the next block starts at dims[i] // 2); Wan2.2's keep them.
            dec.up(temporal=temporal_up[i], cout=cout if v.is_residual else cout // 2)
    dec.norms += dec.c
    dec.causal(v.out_channels)  # norm_out + SiLU + conv_out
    return _Walk(enc.convs, dec.convs, enc.norms + dec.norms, enc.attn, dec.attn)


def count_vae_params(config: Mapping[str, Any]) -> int:
    """Parameters of ``AutoencoderKLWan(**config)``: every conv's weight and bias, plus RMS-norm gammas."""
    walk = _walk(VaeDims.from_config(config))
    return sum(c.params for c in walk.encoder + walk.decoder) + walk.norms


@dataclass(frozen=True, slots=True)
class VaeTiling:
    """diffusers' ``enable_tiling`` settings in pixels (its defaults: 256-pixel tiles every 192 pixels)."""

    tile: tuple[int, int] = (256, 256)
    stride: tuple[int, int] = (192, 192)


@dataclass(frozen=True, slots=True)
class VaeMemory(Record):
    """Estimated bytes of one VAE encode or decode: the terms and the peak they combine into.

    ``peak`` excludes the weights and ``input`` (the clip being encoded or the latents being decoded, which the
    caller holds) is reported beside it.
    """

    working: int
    feature_cache: int
    outputs: int
    input: int
    peak: int


def _tile_sides(height: int, width: int, tiling: VaeTiling | None) -> tuple[list[int], list[int]]:
    """Heights and widths of the tiles diffusers decodes (one full-frame "tile" when tiling is off or not needed):
    a tile starts every ``stride`` pixels, is ``tile`` long, and is clipped at the edge."""
    if tiling is None or (height <= tiling.tile[0] and width <= tiling.tile[1]):
        return [height], [width]
    rows = [min(tiling.tile[0], height - start) for start in range(0, height, tiling.stride[0])]
    cols = [min(tiling.tile[1], width - start) for start in range(0, width, tiling.stride[1])]
    return rows, cols


def _live(conv: _Conv, area_px: int) -> int:
    """Elements alive while ``conv`` runs on one chunk over ``area_px`` pixels (eager PyTorch on cuDNN).

    Measured on an H200 (torch 2.11, cuDNN 9.19, fp32): a cached 3³ causal conv allocates 5.0× its input
    (cat with the cache and the padded copy, 1.5× each for 4 frames, the output, and a cuDNN workspace the size of
    padded input + output), a residual block 6.5× (plus the SiLU'd copy and the new cache slice).
    """
    a_in, a_out = area_px // conv.scale_in**2, area_px // conv.scale_out**2
    x = conv.cin * conv.t_in * a_in
    out = conv.cout * conv.t_out * a_out
    held = conv.held * x
    if conv.upsampled:
        # WanResample: the caller's pre-upsample tensor and WanResample's permuted copy (x/4 each), the nearest ×2
        # tensor x, the output, and the cuDNN workspace (x + out).
        return x // 2 + 2 * x + 2 * out
    # The conv's input is a fresh copy (SiLU'd in residual blocks, permuted in resamplers), its cache slice clone,
    # the copy padded to t + k - 1 frames (cat with the cache, then F.pad: two such copies during the pad), the
    # output and the workspace (padded + output): max(2·padded, padded + out + padded + out) = 2·padded + 2·out.
    clone = conv.cin * min(2, conv.t_in) * a_in if conv.cache_frames else 0
    padded = conv.cin * (conv.t_in + conv.kernel[0] - 1) * a_in
    return held + x + clone + 2 * padded + 2 * out


def estimate_vae_memory(
    config: Mapping[str, Any],
    *,
    direction: Literal["decode", "encode"],
    height: int,
    width: int,
    frames: int,
    dtype: Any = "float32",
    tiling: VaeTiling | None = None,
    stream: bool = False,
    working_factor: float = 1.0,
) -> VaeMemory:
    """Estimated bytes of encoding or decoding a ``frames × height × width`` clip with diffusers' ``AutoencoderKLWan``.

    Terms:
    - working: the largest live set of one conv on one chunk (``_live``), over the full frame or one tile, times
      ``working_factor`` (the calibration knob; 1.0 fits the H200 measurements in ``tests/profiling``).
    - feature_cache: Σ over causal convs of cached frames × input channels × area, for the full frame or one tile
      (diffusers resets it per tile, since it decodes tiles outer and frames inner).
    - outputs: decoded output held at the worst moment (see peak); for encode, the latents.

    Peak, by mode (decode):
    - untiled: cache + max(working + the clip decoded so far, 2 clips) — ``torch.cat`` grows the clip one chunk at
      a time (old + new), then ``clamp`` copies it, all before the cache is cleared;
    - tiled: max(all tiles + working + cache, all tiles + 3 clips) — every decoded tile (overlaps make them more than
      a clip) stays alive; the cache is cleared before blending, which then builds the rows, their concatenation
      and its clamped copy;
    - ``stream=True``: decoded output leaves the device as soon as it exists — per chunk untiled, per finished tile
      (all its frames) when tiled — so the peak is cache + working + that one piece. Tiles stay the outer loop: a
      frames-outer tiled stream would keep every tile's cache alive (Σ over tiles, ≈ 136 GB at 4K).
    Encode: cache + working + latents; the input clip is the caller's.
    """
    v = VaeDims.from_config(config)
    walk = _walk(v)
    width_b = dtype_bytes(dtype)
    latent_frames = (frames - 1) // v.scale_factor_temporal + 1
    lh, lw = height // v.scale_factor_spatial, width // v.scale_factor_spatial
    channels_px = v.out_channels // (v.patch_size or 1) ** 2
    clip = channels_px * frames * height * width
    latents = v.z_dim * latent_frames * lh * lw

    convs = walk.decoder if direction == "decode" else walk.encoder
    rows, cols = _tile_sides(height, width, tiling)
    tiled = len(rows) * len(cols) > 1
    area, tile_area_sum = max(rows) * max(cols), sum(rows) * sum(cols)
    working = round(max(_live(c, area) for c in convs) * working_factor)
    cache = sum(c.cache_frames * c.cin * area // c.scale_in**2 for c in convs)

    if direction == "encode":
        outputs = 2 * 2 * latents  # mean and log-variance, grown by torch.cat
        peak = cache + working + outputs
        inputs = clip
    elif stream:
        outputs = channels_px * (frames * area if tiled else v.scale_factor_temporal * height * width)
        peak = cache + working + outputs
        inputs = latents
    elif tiled:
        tiles = channels_px * frames * tile_area_sum
        outputs = tiles + 3 * clip
        peak = max(tiles + working + cache, outputs)
        inputs = latents
    else:
        outputs = 2 * clip
        peak = cache + max(working + clip, outputs)
        inputs = latents
    return VaeMemory(
        working=working * width_b,
        feature_cache=cache * width_b,
        outputs=outputs * width_b,
        input=inputs * width_b,
        peak=peak * width_b,
    )


def vae_flops(
    config: Mapping[str, Any],
    *,
    direction: Literal["decode", "encode"],
    height: int,
    width: int,
    frames: int,
    tiling: VaeTiling | None = None,
) -> int:
    """Matmul FLOPs of one encode or decode: 2 · c_in · kernel volume per output element of every conv, plus the
    mid-block attention (QKᵀ and PV: 4 · n² · c per frame of n positions). Tiling recomputes the overlaps.
    Norms, activations and resampling copies are not counted (elementwise)."""
    v = VaeDims.from_config(config)
    walk = _walk(v)
    latent_frames = (frames - 1) // v.scale_factor_temporal + 1
    rows, cols = _tile_sides(height, width, tiling)
    convs = walk.decoder if direction == "decode" else walk.encoder
    attn = walk.attn_decoder if direction == "decode" else walk.attn_encoder
    total = 0
    for rh, rw in ((r, c) for r in rows for c in cols):
        for c in convs:
            # A stage that sees t frames per steady chunk sees 1 + t·(latent_frames - 1) frames in all.
            out_frames = 1 + c.t_out * (latent_frames - 1)
            total += 2 * c.cin * math.prod(c.kernel) * c.cout * out_frames * (rh // c.scale_out) * (rw // c.scale_out)
        for channels, scale in attn:
            n = (rh // scale) * (rw // scale)
            total += 4 * n * n * channels * latent_frames
    return total
