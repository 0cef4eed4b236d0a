"""Parameter counts from config formulas, with the meta-device count behind one function to check them.

The transformer is described once, as an inventory of its linear layers and other parameter tensors with their
diffusers module names. Parameter counts, the parameters diffusers keeps in fp32, LoRA sizes (matched by module
name as peft matches ``target_modules``) and the linear FLOPs in ``flops.py`` all read that one inventory, so they
cannot drift apart. Checked exactly against ``sum(p.numel())`` of the real classes built on the meta device:
1,418,996,800 (T2V-1.3B), 14,288,491,584 (T2V-14B), 5,680,910,336 (UMT5-XXL), 126,892,531 (Wan2.1 VAE).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .dims import Record, TextEncoderDims, TransformerDims, dtype_bytes, dtype_name

__all__ = [
    "LinearLayer",
    "ParamCounts",
    "ParamGroup",
    "count_params_on_meta",
    "count_text_encoder_params",
    "count_transformer_params",
    "lora_param_count",
    "text_encoder_weight_bytes",
    "transformer_linears",
    "transformer_weight_bytes",
]

# Which token stream a layer runs on: video tokens N, text tokens S, image tokens (I2V), or once per sample.
Stream = Literal["video", "text", "image", "sample"]

# diffusers' WanTransformer3DModel._keep_in_fp32_modules: from_pretrained keeps any parameter whose name contains one
# of these in fp32 whatever torch_dtype says (diffusers applies it for bf16 too, unlike transformers).
_TRANSFORMER_FP32_PATTERNS = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")


@dataclass(frozen=True, slots=True)
class LinearLayer:
    """One ``nn.Linear`` of the transformer; ``repeat`` is the number of blocks that hold it (1 outside blocks)."""

    name: str
    in_features: int
    out_features: int
    stream: Stream
    repeat: int = 1
    bias: bool = True

    @property
    def params(self) -> int:
        return self.repeat * (self.in_features * self.out_features + (self.out_features if self.bias else 0))


@dataclass(frozen=True, slots=True)
class ParamGroup:
    """A parameter tensor that is not a linear layer (norm scale, modulation table, patch-embedding conv)."""

    name: str
    numel: int
    repeat: int = 1

    @property
    def params(self) -> int:
        return self.repeat * self.numel


def transformer_linears(dims: TransformerDims) -> list[LinearLayer]:
    """Every linear layer of ``WanTransformer3DModel``, named as diffusers names them (``blocks.*`` = each block)."""
    d, f, n = dims.dim, dims.ffn_dim, dims.layers
    layers = [
        # Condition embedder: sinusoidal timestep (freq_dim) -> MLP -> 6·dim modulation; text_dim -> dim projection.
        LinearLayer("condition_embedder.time_embedder.linear_1", dims.freq_dim, d, "sample"),
        LinearLayer("condition_embedder.time_embedder.linear_2", d, d, "sample"),
        LinearLayer("condition_embedder.time_proj", d, 6 * d, "sample"),
        LinearLayer("condition_embedder.text_embedder.linear_1", dims.text_dim, d, "text"),
        LinearLayer("condition_embedder.text_embedder.linear_2", d, d, "text"),
    ]
    if dims.image_dim is not None:
        # WanImageEmbedding: FeedForward(image_dim -> image_dim (mult=1, GELU) -> dim) on the CLIP image tokens.
        layers += [
            LinearLayer("condition_embedder.image_embedder.ff.net.0.proj", dims.image_dim, dims.image_dim, "image"),
            LinearLayer("condition_embedder.image_embedder.ff.net.2", dims.image_dim, d, "image"),
        ]
    # Self-attention: q, k, v, out on video tokens. The text was projected to `dim` above, so cross-attention's
    # k and v are dim -> dim too, but they run on the S text tokens.
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        layers.append(LinearLayer(f"blocks.*.attn1.{proj}", d, d, "video", n))
    layers += [
        LinearLayer("blocks.*.attn2.to_q", d, d, "video", n),
        LinearLayer("blocks.*.attn2.to_k", d, d, "text", n),
        LinearLayer("blocks.*.attn2.to_v", d, d, "text", n),
        LinearLayer("blocks.*.attn2.to_out.0", d, d, "video", n),
    ]
    if dims.added_kv_proj_dim is not None:
        for proj in ("add_k_proj", "add_v_proj"):
            layers.append(LinearLayer(f"blocks.*.attn2.{proj}", dims.added_kv_proj_dim, d, "image", n))
    layers += [
        # FeedForward(dim, inner_dim=ffn_dim, "gelu-approximate"): GELU's proj dim -> ffn, then ffn -> dim.
        LinearLayer("blocks.*.ffn.net.0.proj", d, f, "video", n),
        LinearLayer("blocks.*.ffn.net.2", f, d, "video", n),
        # Unpatchify head: dim -> out_channels · prod(patch).
        LinearLayer("proj_out", d, dims.out_channels * dims.patch_volume, "video"),
    ]
    return layers


def _transformer_other_params(dims: TransformerDims) -> list[ParamGroup]:
    d, n = dims.dim, dims.layers
    groups = [
        # Conv3d(in_channels, dim, kernel = stride = patch): one weight per (in channel, patch position, out), + bias.
        ParamGroup("patch_embedding", dims.in_channels * dims.patch_volume * d + d),
        # WanAttention always builds RMSNorm(dim) norm_q and norm_k (elementwise affine, no bias), in both attentions.
        ParamGroup("blocks.*.attn1.norm_q+norm_k", 2 * d, n),
        ParamGroup("blocks.*.attn2.norm_q+norm_k", 2 * d, n),
        # Per-block modulation table (1, 6, dim) and the output one (1, 2, dim).
        ParamGroup("blocks.*.scale_shift_table", 6 * d, n),
        ParamGroup("scale_shift_table", 2 * d),
        # norm1 / norm3 are FP32LayerNorm without affine parameters; rope holds buffers only.
    ]
    if dims.cross_attn_norm:
        groups.append(ParamGroup("blocks.*.norm2", 2 * d, n))  # FP32LayerNorm with weight and bias
    if dims.added_kv_proj_dim is not None:
        groups.append(ParamGroup("blocks.*.attn2.norm_added_k", d, n))
    if dims.image_dim is not None:
        groups.append(ParamGroup("condition_embedder.image_embedder.norm1", 2 * dims.image_dim))
        groups.append(ParamGroup("condition_embedder.image_embedder.norm2", 2 * d))
        if dims.pos_embed_seq_len is not None:
            pos = dims.pos_embed_seq_len * dims.image_dim
            groups.append(ParamGroup("condition_embedder.image_embedder.pos_embed", pos))
    return groups


def _transformer_groups(dims: TransformerDims) -> Iterable[tuple[str, int]]:
    for layer in transformer_linears(dims):
        yield layer.name, layer.params
    for group in _transformer_other_params(dims):
        yield group.name, group.params


def count_transformer_params(config: Mapping[str, Any]) -> int:
    """Parameters of ``WanTransformer3DModel(**config)``: the inventory summed (1,418,996,800 for T2V-1.3B)."""
    return sum(p for _, p in _transformer_groups(TransformerDims.from_config(config)))


def transformer_weight_bytes(config: Mapping[str, Any], dtype: Any = "bfloat16") -> int:
    """Weight bytes as ``from_pretrained(torch_dtype=dtype)`` loads them: the ``_keep_in_fp32_modules`` stay fp32.

    Left out: rope's non-persistent cos/sin buffers (2 · rope_max_seq_len · head_dim values, 1 MiB in fp32).
    """
    width = dtype_bytes(dtype)
    total = 0
    for name, params in _transformer_groups(TransformerDims.from_config(config)):
        keep_fp32 = any(pattern in name for pattern in _TRANSFORMER_FP32_PATTERNS)
        total += params * (max(width, 4) if keep_fp32 else width)
    return total


def count_text_encoder_params(config: Mapping[str, Any]) -> int:
    """Parameters of ``UMT5EncoderModel(UMT5Config(**config))`` (5,680,910,336 for umt5-xxl)."""
    return sum(p for _, p in _text_encoder_groups(TextEncoderDims.from_config(config)))


def _text_encoder_groups(t: TextEncoderDims) -> Iterable[tuple[str, int]]:
    # Token embedding (shared, tied to encoder.embed_tokens, so counted once); UMT5 has no lm_head in the encoder.
    yield "shared", t.vocab_size * t.d_model
    n = t.layers
    # Self-attention q, k, v: d_model -> heads·d_kv; o: heads·d_kv -> d_model; no biases anywhere in T5.
    yield "block.*.SelfAttention.q+k+v+o", n * 4 * t.d_model * t.inner_dim
    # UMT5 (unlike T5) gives every layer its own relative-position bias table (buckets × heads).
    yield "block.*.SelfAttention.relative_attention_bias", n * t.buckets * t.heads
    # Gated GELU: wi_0 and wi_1 (d_model -> d_ff) and wo (d_ff -> d_model); plain ReLU has one wi.
    yield "block.*.DenseReluDense.wi", n * (2 if t.gated else 1) * t.d_model * t.d_ff
    yield "block.*.DenseReluDense.wo", n * t.d_ff * t.d_model
    # T5LayerNorm is a scale only: one before attention and one before the FFN, plus the final norm.
    yield "block.*.layer_norm", n * 2 * t.d_model
    yield "final_layer_norm", t.d_model


def text_encoder_weight_bytes(config: Mapping[str, Any], dtype: Any = "bfloat16") -> int:
    """Weight bytes of the text encoder; transformers keeps ``wo`` in fp32 only when loading in float16."""
    width = dtype_bytes(dtype)
    wo_width = 4 if dtype_name(dtype) == "float16" else width
    groups = _text_encoder_groups(TextEncoderDims.from_config(config))
    return sum(p * (wo_width if name.endswith(".wo") else width) for name, p in groups)


def lora_param_count(config: Mapping[str, Any], rank: int, target_modules: Iterable[str]) -> int:
    """Trainable parameters of a LoRA of ``rank`` on the transformer's linear layers named by ``target_modules``.

    A target matches a module as peft matches a string list: the full name, or a suffix after a dot (``"to_q"``
    matches ``blocks.3.attn1.to_q`` and ``blocks.3.attn2.to_q``). Each matched Linear(in, out) gets A (r × in) and
    B (out × r): r·(in + out) parameters, no bias. ViBe's r = 32 on q, k, v, o (both attentions) and both FFN linears
    gives 43,745,280 on Wan2.1-1.3B.
    """
    if rank <= 0:
        raise ValueError(f"`rank` must be positive, got {rank}")
    targets = list(target_modules)
    linears = transformer_linears(TransformerDims.from_config(config))
    total, used = 0, set()
    for layer in linears:
        hits = {t for t in targets if layer.name == t or layer.name.endswith("." + t)}
        if hits:
            used |= hits
            total += layer.repeat * rank * (layer.in_features + layer.out_features)
    missing = [t for t in targets if t not in used]
    if missing:
        known = [layer.name for layer in linears]
        raise ValueError(f"`target_modules` {missing} match no linear layer of the transformer; known: {known}")
    return total


@dataclass(frozen=True, slots=True)
class ParamCounts(Record):
    """Parameter counts by component."""

    transformer: int
    text_encoder: int
    vae: int
    lora: int = 0

    _derived: ClassVar[tuple[str, ...]] = ("total",)

    @property
    def total(self) -> int:
        return self.transformer + self.text_encoder + self.vae + self.lora


def count_params_on_meta(component: Literal["transformer", "text_encoder", "vae"], config: Mapping[str, Any]) -> int:
    """Count parameters by building the real class on the meta device (no weights, no memory; imports the library).

    This is the reference the formulas are tested against; it needs diffusers (transformer, VAE) or transformers
    (text encoder) and takes well under a second even for 14B.
    """
    import torch  # imported here: the cost model must not need torch

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        if component == "transformer":
            from diffusers import WanTransformer3DModel

            model = WanTransformer3DModel.from_config(cfg)
        elif component == "vae":
            from diffusers import AutoencoderKLWan

            model = AutoencoderKLWan.from_config(cfg)
        elif component == "text_encoder":
            from transformers import UMT5Config, UMT5EncoderModel

            model = UMT5EncoderModel(UMT5Config(**cfg))
        else:
            raise ValueError(f"`component` must be 'transformer', 'text_encoder' or 'vae', got {component!r}")
    return sum(p.numel() for p in model.parameters())
