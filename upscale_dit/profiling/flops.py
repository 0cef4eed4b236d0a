"""Matmul FLOPs of one transformer call and of the text encoder.

Convention (as ``torch.utils.flop_counter`` and torchtitan count): a matmul (m × k)·(k × n) is 2·m·k·n FLOPs;
bias adds, norms, activations, RoPE, modulation and softmax are elementwise and not counted. One transformer call
is a list of *branches* (batch elements that run the blocks). Per branch and block, with N video tokens, S text
tokens, D = heads · head_dim and ffn width Fd:

- self-attention q, k, v, out: 4 linears D → D on N tokens = 8·N·D²;
- self-attention core: 4 · N · keys · D (``attention.attention_flops``), keys = N for dense attention;
- cross-attention: q and out on N tokens (4·N·D²), k and v on the S projected text tokens (4·S·D²), core 4·N·S·D;
  I2V adds k, v on the image tokens and a second core;
- FFN: D → Fd → D on N tokens = 4·N·D·Fd.

Outside the blocks (negligible, but counted so the total matches a FLOP counter exactly): the patch-embedding conv
(2·N·C_in·prod(patch)·D), the head (2·N·D·C_out·prod(patch)), the timestep MLP (once per sample) and the text
projection (2·S·(text_dim·D + D²)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .attention import attention_flops
from .dims import Record, TextEncoderDims, TransformerDims
from .params import transformer_linears

__all__ = ["Branch", "ForwardFlops", "forward_flops", "text_encoder_flops"]

CrossAttention = Literal["own", "cached", "reused"]


@dataclass(frozen=True, slots=True)
class Branch:
    """One batch element of a transformer call.

    Attributes:
        keys_per_query: keys each self-attention query sees (N for dense attention; see ``attention.py``).
        cross: ``"own"`` computes its text cross-attention; ``"cached"`` reads a cached pre-projection output and only
            runs the output projection (FreeSwim reuse steps); ``"reused"`` takes the whole cross-attention output
            of another branch in the same call (FreeSwim's override), costing nothing.
    """

    keys_per_query: float
    cross: CrossAttention = "own"


@dataclass(frozen=True, slots=True)
class ForwardFlops(Record):
    """Matmul FLOPs of one transformer call by part, summed over blocks and branches."""

    self_attn_linear: int
    self_attn_core: int
    cross_attn_linear: int
    cross_attn_core: int
    ffn: int
    embed_and_head: int

    _derived: ClassVar[tuple[str, ...]] = ("linear", "attention", "total")

    @property
    def linear(self) -> int:
        return self.self_attn_linear + self.cross_attn_linear + self.ffn + self.embed_and_head

    @property
    def attention(self) -> int:
        return self.self_attn_core + self.cross_attn_core

    @property
    def total(self) -> int:
        return self.linear + self.attention


def forward_flops(
    config: Mapping[str, Any] | TransformerDims,
    *,
    num_tokens: int,
    text_tokens: int,
    branches: Sequence[Branch],
    image_tokens: int | None = None,
) -> ForwardFlops:
    """FLOPs of one ``WanTransformer3DModel`` call whose batch elements are ``branches`` (one dense branch is a plain
    forward). ``image_tokens`` (I2V CLIP tokens) defaults to 257 when the config has image cross-attention, else 0."""
    dims = config if isinstance(config, TransformerDims) else TransformerDims.from_config(config)
    if not branches:
        raise ValueError("`branches` must name at least one batch element")
    n, s, d, layers = num_tokens, text_tokens, dims.dim, dims.layers
    s_img = (257 if dims.added_kv_proj_dim is not None else 0) if image_tokens is None else image_tokens
    by_stream = {"video": n, "text": s, "image": s_img, "sample": 1}
    inventory = transformer_linears(dims)

    def linears(prefix: str) -> int:
        return sum(2 * by_stream[lin.stream] * lin.in_features * lin.out_features * lin.repeat
                   for lin in inventory if lin.name.startswith(prefix))

    # Per branch: self-attention projections, FFN, and the patch embedding (a Conv3d with kernel = stride = patch,
    # i.e. one (C_in · prod(patch)) × D matmul per token) with the head.
    self_proj, ffn_one = linears("blocks.*.attn1."), linears("blocks.*.ffn.")
    embed_one = 2 * n * dims.in_channels * dims.patch_volume * d + linears("proj_out")
    cross_own = linears("blocks.*.attn2.")  # q, out on video; k, v on text (and image)
    cross_core_own = layers * (attention_flops(n, s, dims.heads, dims.head_dim)
                               + attention_flops(n, s_img, dims.heads, dims.head_dim))
    # The condition embedder (timestep MLP, text projection, image MLP) runs once per call: the text and the
    # timestep are shared by all branches of a call.
    embed = linears("condition_embedder.")
    self_linear = self_core = cross_linear = cross_core = ffn = 0
    for branch in branches:
        self_linear += self_proj
        self_core += layers * attention_flops(n, branch.keys_per_query, dims.heads, dims.head_dim)
        ffn += ffn_one
        embed += embed_one
        if branch.cross == "own":
            cross_linear += cross_own
            cross_core += cross_core_own
        elif branch.cross == "cached":
            cross_linear += linears("blocks.*.attn2.to_out.0")
        elif branch.cross != "reused":
            raise ValueError(f"`cross` must be 'own', 'cached' or 'reused', got {branch.cross!r}")
    return ForwardFlops(self_linear, self_core, cross_linear, cross_core, ffn, embed)


def text_encoder_flops(config: Mapping[str, Any], tokens: int) -> int:
    """FLOPs of one UMT5 encoder pass over ``tokens`` tokens (per prompt).

    Per layer: q, k, v, o (4 · 2·S·d_model·inner), attention 4·S²·inner, and the FFN (3 matmuls d_model ↔ d_ff when
    gated, 2 otherwise, each 2·S·d_model·d_ff). The embedding lookup and the position bias are not matmuls.
    """
    t = TextEncoderDims.from_config(config)
    per_layer = 4 * 2 * tokens * t.d_model * t.inner_dim
    per_layer += 4 * tokens * tokens * t.inner_dim
    per_layer += (3 if t.gated else 2) * 2 * tokens * t.d_model * t.d_ff
    return t.layers * per_layer
