"""VAE helpers: latent normalisation, and decoding that streams uint8 frames instead of one float video.

Wan's VAE decodes causally, one latent frame at a time, carrying a per-layer cache of the previous frames.
* Untiled: we run that loop ourselves and hand each chunk of frames (1, then 4 per latent frame) to the
  writer as soon as it exists, so no float video is ever assembled.
* Tiled (large sizes): the causal cache of a whole frame grows with its area (tens of GB at 4K), so, as
  diffusers does, each spatial tile runs over all frames while the others wait. We decode one row of
  tiles at a time, blend it with the row above exactly as ``AutoencoderKLWan.tiled_decode`` does, and
  write finished rows into a uint8 canvas: the only full-size buffer is uint8 (1.9 GiB for 4K, 81 frames).
Both paths equal ``vae.decode`` (tests compare them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

ProgressFn = Callable[[int, int], None]  # (done, total)


def _stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def normalize_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE space → the standardised space the transformer works in."""
    mean, std = _stats(vae, z)
    return (z - mean) / std


def denormalize_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The transformer's standardised latents → VAE space."""
    mean, std = _stats(vae, latents)
    return latents * std + mean


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``[1, 3, T, H, W]`` in [-1, 1] → ``[T, H, W, 3]`` uint8, rounding as diffusers' video processor does."""
    frames = ((video[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


@dataclass(frozen=True, slots=True)
class Crop:
    """Centre crop from the generated size to the requested one (Wan needs multiples of 16)."""

    top: int = 0
    left: int = 0
    height: int | None = None
    width: int | None = None

    @classmethod
    def centre(cls, gen_hw: tuple[int, int], out_hw: tuple[int, int]) -> "Crop":
        (gh, gw), (oh, ow) = gen_hw, out_hw
        return cls(top=(gh - oh) // 2, left=(gw - ow) // 2, height=oh, width=ow)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        h = frames.shape[1] if self.height is None else self.height
        w = frames.shape[2] if self.width is None else self.width
        return frames[:, self.top : self.top + h, self.left : self.left + w]


def count_decoded_frames(vae, latent_frames: int) -> int:
    return 1 + (latent_frames - 1) * int(vae.config.scale_factor_temporal)


@torch.no_grad()
def decode_frames(
    vae,
    latents: torch.Tensor,
    *,
    tile: int | None = None,
    crop: Crop = Crop(),
    on_progress: ProgressFn | None = None,
) -> Iterator[np.ndarray]:
    """Decode normalised latents ``[1, C, F, h, w]`` to uint8 frames ``[T, H, W, 3]``, yielded in chunks.

    Args:
        tile: tile size in pixels (stride 3/4 of it, as diffusers' default 256/192); ``None`` decodes whole frames.
        crop: centre crop applied to every chunk.
        on_progress: called with (done, total) after each latent frame (untiled) or tile (tiled).
    """
    if latents.shape[0] != 1:
        raise ValueError(f"decode_frames takes one video at a time, got {latents.shape=}")
    if vae.config.patch_size is not None:
        raise NotImplementedError("VAEs with patch_size (Wan2.2) are not supported yet")
    z = denormalize_latents(vae, latents.to(vae.device, vae.dtype))
    factor = vae.spatial_compression_ratio
    if tile is None or (z.shape[-2] * factor <= tile and z.shape[-1] * factor <= tile):
        yield from _decode_whole(vae, z, crop, on_progress)
    else:
        yield from _decode_tiled(vae, z, tile, crop, on_progress)


def _new_cache(vae) -> list:
    vae.clear_cache()  # sets vae._conv_num; we keep our own cache list so tiles never share state
    return [None] * vae._conv_num


def _decode_chunk(vae, z_frame: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
    x = vae.post_quant_conv(z_frame)
    out = vae.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=first)
    return out.clamp(-1.0, 1.0)


def _float_chunks(vae, z, on_progress) -> Iterator[torch.Tensor]:
    cache = _new_cache(vae)
    frames = z.shape[2]
    for k in range(frames):
        chunk = _decode_chunk(vae, z[:, :, k : k + 1], cache, first=k == 0)
        if on_progress:
            on_progress(k + 1, frames)
        yield chunk


def _decode_whole(vae, z, crop: Crop, on_progress) -> Iterator[np.ndarray]:
    for chunk in _float_chunks(vae, z, on_progress):
        yield crop.apply(to_uint8_frames(chunk))


@torch.no_grad()
def decode_video(vae, latents: torch.Tensor, *, on_progress: ProgressFn | None = None) -> torch.Tensor:
    """Decode to one float video ``[1, 3, T, H, W]`` in [-1, 1]: for native-size base videos that get refined."""
    z = denormalize_latents(vae, latents.to(vae.device, vae.dtype))
    return torch.cat(list(_float_chunks(vae, z, on_progress)), dim=2)


def _blend_rows(above: torch.Tensor, tile: torch.Tensor, extent: int) -> None:
    """Linear ramp from the tile above into ``tile`` over ``extent`` rows (in place, as diffusers' blend_v)."""
    extent = min(above.shape[-2], tile.shape[-2], extent)
    for y in range(extent):
        tile[..., y, :] = above[..., -extent + y, :] * (1 - y / extent) + tile[..., y, :] * (y / extent)


def _blend_cols(left: torch.Tensor, tile: torch.Tensor, extent: int) -> None:
    extent = min(left.shape[-1], tile.shape[-1], extent)
    for x in range(extent):
        tile[..., x] = left[..., -extent + x] * (1 - x / extent) + tile[..., x] * (x / extent)


def _decode_tiled(vae, z, tile: int, crop: Crop, on_progress) -> Iterator[np.ndarray]:
    factor = vae.spatial_compression_ratio
    stride = tile * 3 // 4
    tile_lat, stride_lat, blend = tile // factor, stride // factor, tile - stride
    _, _, frames, height, width = z.shape
    rows, cols = range(0, height, stride_lat), range(0, width, stride_lat)
    out_h, out_w = height * factor, width * factor
    t_out = count_decoded_frames(vae, frames)
    canvas = np.empty((t_out, out_h, out_w, 3), dtype=np.uint8)
    total, done = len(rows) * len(cols), 0
    above: list[torch.Tensor] = []
    for i in rows:
        row: list[torch.Tensor] = []
        for col, j in enumerate(cols):
            cache = _new_cache(vae)
            parts = [
                _decode_chunk(vae, z[:, :, k : k + 1, i : i + tile_lat, j : j + tile_lat], cache, first=k == 0)
                for k in range(frames)
            ]
            piece = torch.cat(parts, dim=2)
            del parts, cache
            if above:
                _blend_rows(above[col], piece, blend)
            if row:
                _blend_cols(row[-1], piece, blend)
            row.append(piece)
            done += 1
            if on_progress:
                on_progress(done, total)
        band = torch.cat([p[..., :stride, :stride] for p in row], dim=-1)[..., :out_w]
        y0 = i * factor
        canvas[:, y0 : y0 + band.shape[-2]] = to_uint8_frames(band)
        above = [p[..., -blend:, :] for p in row]  # only the overlap is needed by the next row
    yield crop.apply(canvas)
