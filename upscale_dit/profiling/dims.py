"""Typed views of the config dicts the cost model reads, plus the units every estimate shares.

The cost model never loads weights: it reads the same dicts diffusers and transformers store in
``transformer/config.json`` (``WanTransformer3DModel``), ``vae/config.json`` (``AutoencoderKLWan``) and
``text_encoder/config.json`` (``UMT5EncoderModel``). Missing keys take the class defaults of diffusers 0.42.1 /
transformers 5.x, so the kwargs a test passes to build a tiny model describe that model here too. Keys that start
with ``_`` (``_class_name``, ``_diffusers_version``) and keys this model does not use are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = [
    "DTYPE_BYTES",
    "TextEncoderDims",
    "TokenCounts",
    "TokenGrid",
    "TransformerDims",
    "VaeDims",
    "dtype_bytes",
    "dtype_name",
    "token_counts",
]

# One table from dtype names to bytes per element; torch dtypes are looked up by their name.
DTYPE_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
_DTYPE_ALIASES = {"fp64": "float64", "fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def dtype_name(dtype: Any) -> str:
    """Canonical name of ``dtype``: a name (``"bf16"``, ``"torch.float32"``) or a torch dtype."""
    if isinstance(dtype, str) or type(dtype).__name__ == "dtype":
        name = str(dtype).removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        if name in DTYPE_BYTES:
            return name
    raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}")


def dtype_bytes(dtype: Any) -> int:
    """Bytes per element of ``dtype`` (a name or a torch dtype)."""
    return DTYPE_BYTES[dtype_name(dtype)]


class Record:
    """Mixin for the frozen result dataclasses: ``to_dict()`` gives plain JSON-ready data, derived values included."""

    __slots__ = ()
    _derived: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]
        for name in self._derived:
            out[name] = _plain(getattr(self, name))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _read(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (the parsed config.json), got {type(config).__name__}")
    return {key: config.get(key, default) for key, default in defaults.items()}


# Defaults of WanTransformer3DModel.__init__ in diffusers 0.42.1.
_TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}


@dataclass(frozen=True, slots=True)
class TransformerDims:
    """The numbers of a ``WanTransformer3DModel`` config that parameters, FLOPs and bytes depend on."""

    patch: tuple[int, int, int]
    heads: int
    head_dim: int
    in_channels: int
    out_channels: int
    text_dim: int
    freq_dim: int
    ffn_dim: int
    layers: int
    cross_attn_norm: bool
    image_dim: int | None
    added_kv_proj_dim: int | None
    pos_embed_seq_len: int | None
    rope_max_seq_len: int

    @property
    def dim(self) -> int:
        """Hidden width: heads × head_dim (1536 for 1.3B, 5120 for 14B)."""
        return self.heads * self.head_dim

    @property
    def patch_volume(self) -> int:
        return self.patch[0] * self.patch[1] * self.patch[2]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TransformerDims:
        c = _read(config, _TRANSFORMER_DEFAULTS)
        patch = tuple(int(p) for p in c["patch_size"])
        if len(patch) != 3:
            raise ValueError(f"`patch_size` must have 3 entries (t, h, w), got {c['patch_size']!r}")
        return cls(
            patch=patch,  # type: ignore[arg-type]
            heads=int(c["num_attention_heads"]),
            head_dim=int(c["attention_head_dim"]),
            in_channels=int(c["in_channels"]),
            # diffusers: `out_channels = out_channels or in_channels`
            out_channels=int(c["out_channels"] or c["in_channels"]),
            text_dim=int(c["text_dim"]),
            freq_dim=int(c["freq_dim"]),
            ffn_dim=int(c["ffn_dim"]),
            layers=int(c["num_layers"]),
            cross_attn_norm=bool(c["cross_attn_norm"]),
            image_dim=c["image_dim"],
            added_kv_proj_dim=c["added_kv_proj_dim"],
            pos_embed_seq_len=c["pos_embed_seq_len"],
            rope_max_seq_len=int(c["rope_max_seq_len"]),
        )


# Defaults of AutoencoderKLWan.__init__ in diffusers 0.42.1 (= the Wan2.1 VAE).
_VAE_DEFAULTS: dict[str, Any] = {
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": (1, 2, 4, 4),
    "num_res_blocks": 2,
    "attn_scales": (),
    "temperal_downsample": (False, True, True),
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}


@dataclass(frozen=True, slots=True)
class VaeDims:
    """The numbers of an ``AutoencoderKLWan`` config (Wan2.1, and the residual Wan2.2 variant)."""

    base_dim: int
    decoder_base_dim: int
    z_dim: int
    dim_mult: tuple[int, ...]
    num_res_blocks: int
    attn_scales: tuple[float, ...]
    temperal_downsample: tuple[bool, ...]
    is_residual: bool
    in_channels: int
    out_channels: int
    patch_size: int | None
    scale_factor_temporal: int
    scale_factor_spatial: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VaeDims:
        c = _read(config, _VAE_DEFAULTS)
        return cls(
            base_dim=int(c["base_dim"]),
            decoder_base_dim=int(c["decoder_base_dim"] or c["base_dim"]),
            z_dim=int(c["z_dim"]),
            dim_mult=tuple(int(m) for m in c["dim_mult"]),
            num_res_blocks=int(c["num_res_blocks"]),
            attn_scales=tuple(float(s) for s in c["attn_scales"]),
            temperal_downsample=tuple(bool(t) for t in c["temperal_downsample"]),
            is_residual=bool(c["is_residual"]),
            in_channels=int(c["in_channels"]),
            out_channels=int(c["out_channels"]),
            patch_size=c["patch_size"],
            scale_factor_temporal=int(c["scale_factor_temporal"] or 4),
            scale_factor_spatial=int(c["scale_factor_spatial"] or 8),
        )


# Defaults of transformers' UMT5Config.
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 250112,
    "d_model": 512,
    "d_kv": 64,
    "d_ff": 1024,
    "num_layers": 8,
    "num_heads": 6,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
}


@dataclass(frozen=True, slots=True)
class TextEncoderDims:
    """The numbers of a ``UMT5EncoderModel`` config (google/umt5-xxl for Wan2.1)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    layers: int
    heads: int
    buckets: int
    gated: bool

    @property
    def inner_dim(self) -> int:
        return self.heads * self.d_kv

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TextEncoderDims:
        c = _read(config, _TEXT_DEFAULTS)
        return cls(
            vocab_size=int(c["vocab_size"]),
            d_model=int(c["d_model"]),
            d_kv=int(c["d_kv"]),
            d_ff=int(c["d_ff"]),
            layers=int(c["num_layers"]),
            heads=int(c["num_heads"]),
            buckets=int(c["relative_attention_num_buckets"]),
            gated=str(c["feed_forward_proj"]).startswith("gated-"),
        )


@dataclass(frozen=True, slots=True)
class TokenGrid(Record):
    """The transformer's token grid in (frames, rows, cols), flattened frame-major then row-major."""

    frames: int
    rows: int
    cols: int

    _derived: ClassVar[tuple[str, ...]] = ("num_tokens",)

    @property
    def num_tokens(self) -> int:
        return self.frames * self.rows * self.cols


@dataclass(frozen=True, slots=True)
class TokenCounts(Record):
    """Sizes at each stage of one generation: pixels, VAE latent, transformer tokens, text tokens."""

    pixel_frames: int
    pixel_height: int
    pixel_width: int
    latent_channels: int
    latent_frames: int
    latent_height: int
    latent_width: int
    grid: TokenGrid
    text_tokens: int

    _derived: ClassVar[tuple[str, ...]] = ("transformer_tokens", "latent_elements")

    @property
    def transformer_tokens(self) -> int:
        return self.grid.num_tokens

    @property
    def latent_elements(self) -> int:
        return self.latent_channels * self.latent_frames * self.latent_height * self.latent_width


def token_counts(
    transformer: TransformerDims, vae: VaeDims, *, height: int, width: int, frames: int, text_len: int = 512
) -> TokenCounts:
    """Token counts for a ``height × width × frames`` video: validates the sizes the Wan pipeline accepts."""
    spatial = vae.scale_factor_spatial
    temporal = vae.scale_factor_temporal
    pt, ph, pw = transformer.patch
    for name, value, step in (("height", height, spatial * ph), ("width", width, spatial * pw)):
        if value <= 0 or value % step:
            fix = max(step, round(value / step) * step)
            raise ValueError(
                f"`{name}` must be a positive multiple of {step} (VAE factor {spatial} × patch {step // spatial}), "
                f"got {value} (use {fix})"
            )
    if frames < 1 or (frames - 1) % temporal:
        fix = (max(frames - 1, 0) // temporal) * temporal + 1
        raise ValueError(f"`frames` must be of the form {temporal}k+1, got {frames} (use {fix})")
    # The causal VAE keeps the first frame alone, then compresses each group of `temporal` frames into one latent frame.
    latent_frames = (frames - 1) // temporal + 1
    if latent_frames % pt:
        raise ValueError(f"latent frames ({latent_frames}) must be divisible by the temporal patch size {pt}")
    lh, lw = height // spatial, width // spatial
    return TokenCounts(
        pixel_frames=frames,
        pixel_height=height,
        pixel_width=width,
        latent_channels=vae.z_dim,
        latent_frames=latent_frames,
        latent_height=lh,
        latent_width=lw,
        grid=TokenGrid(latent_frames // pt, lh // ph, lw // pw),
        text_tokens=text_len,
    )
