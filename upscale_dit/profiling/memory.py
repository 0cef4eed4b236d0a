"""Bytes: transformer activations at peak, attention workspaces, the FreeSwim cross-attention cache, LoRA training
state, decoded video, and the human-readable formatting helpers.

All sizes are ints in bytes. Activation estimates follow diffusers 0.42.1's eager ``WanTransformerBlock.forward``
tensor by tensor (derivation in ``transformer_activation_bytes``); they estimate live tensors
(``torch.cuda.max_memory_allocated``), not the caching allocator's reserve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .dims import Record, TransformerDims, dtype_bytes
from .params import lora_param_count

__all__ = [
    "ActivationBytes",
    "AttentionKernel",
    "LoraTrainingBytes",
    "attention_workspace_bytes",
    "block_mask_bytes",
    "cross_attn_cache_bytes",
    "dense_mask_bytes",
    "format_gib",
    "gib",
    "lora_training_bytes",
    "transformer_activation_bytes",
    "video_bytes",
]

AttentionKernel = Literal["flash", "dense_mask", "flex"]

# Bytes of fp32: the block's upcasts (norms, gates, residual adds), softmax statistics, master weights.
_FP32 = 4


@dataclass(frozen=True, slots=True)
class ActivationBytes(Record):
    """Live activation bytes during one block forward (inference), per phase; ``peak`` is what adds to the weights."""

    persistent: int
    attention: int
    residual: int
    ffn: int

    _derived: ClassVar[tuple[str, ...]] = ("peak",)

    @property
    def peak(self) -> int:
        return self.persistent + max(self.attention, self.residual, self.ffn)


def transformer_activation_bytes(
    config: Mapping[str, Any],
    *,
    num_tokens: int,
    text_tokens: int = 512,
    batch: int = 1,
    dtype: Any = "bfloat16",
    rope_dtype: Any = "float32",
    ffn_chunk_tokens: int | None = None,
) -> ActivationBytes:
    """Peak live activations of one ``WanTransformerBlock`` forward without gradients.

    Derivation, per token, with a = activation bytes, r = RoPE-table bytes, D = hidden width, Fd = FFN width.
    Throughout the block the caller's loop keeps the block input x alive besides the block's own tensors:

    - attention (inside ``attn1``): x and the modulated ``norm_hidden_states`` (2a·D), q, k, v and RoPE's output
      (4a·D) while ``apply_rotary_emb`` holds three temporaries of D/2 values promoted to the table dtype
      (x1·cos, x2·sin, their difference: 1.5·r·D); or after SDPA, q, k, v, its output and ``to_out``'s (5a·D).
      Flash and memory-efficient SDPA keep no N × N scores.
    - ffn: x, the running hidden state, ``attn2``'s output (still bound) and ``norm_hidden_states`` (4a·D), plus
      ``GELU(proj)``'s input and output (2a·Fd) before ``net.2`` projects back.
    - residual: after the FFN, ``(h.float() + ff.float() * gate).type_as(h)`` adds the FFN output (a·D) and three
      fp32 temporaries (12·D) to those four: (5a + 12)·D. The earlier residual after ``attn1`` is smaller.
    - persistent: RoPE cos and sin (1 × N × head_dim each, fp32 — ``get_1d_rotary_pos_embed`` returns ``.float()``
      tables — shared by the batch) and the projected text context (batch × S × D).

    Measured on an H200 (torch 2.11, random bf16 weights, ``bench/calibrate_memory.py``): 1.3B at
    480×832 and 1088×1920 (FFN phase) and 14B at 480×832 (residual phase) within 2 % of this estimate.
    ``ffn_chunk_tokens`` bounds the FFN intermediate to that many tokens (diffusers' feed-forward chunking; the
    chunk outputs and their concatenation add a·D). Not modelled: allocator fragmentation and reserve.
    """
    dims = TransformerDims.from_config(config)
    a, r, d = dtype_bytes(dtype), dtype_bytes(rope_dtype), dims.dim
    rows = batch * num_tokens
    attention = rows * (2 * a * d + max(4 * a * d + 1.5 * r * d, 5 * a * d))
    residual = rows * (5 * a + 3 * _FP32) * d
    if ffn_chunk_tokens is None:
        ffn = rows * (4 * a * d + 2 * a * dims.ffn_dim)
    else:
        chunk_rows = min(rows, batch * ffn_chunk_tokens)
        ffn = rows * 5 * a * d + chunk_rows * 2 * a * dims.ffn_dim
    persistent = 2 * num_tokens * dims.head_dim * r + batch * text_tokens * d * a
    return ActivationBytes(persistent=persistent, attention=int(attention), residual=residual, ffn=ffn)


def dense_mask_bytes(num_tokens: int, dtype: Any = "bfloat16") -> int:
    """Bytes of an N × N boolean mask (shared by batch and heads) plus the additive float mask SDPA converts it to
    in the query dtype before calling the memory-efficient kernel: N²·(1 + a). 29 GB + 59 GB at 1080p (N = 171,360)."""
    return num_tokens * num_tokens * (1 + dtype_bytes(dtype))


def block_mask_bytes(num_tokens: int, block_size: int = 128) -> int:
    """Bytes of a FlexAttention ``BlockMask`` from ``create_block_mask``: four int32 index tensors of
    (query blocks × key blocks) — kv_indices, full_kv_indices and their transposes q_indices, full_q_indices (kept
    for the backward pass) — plus four int32 count vectors. At 4K (680,400 tokens) each index tensor is 108 MiB.
    Built with ``_compile=False`` it first materialises the N × N boolean mask (``dense_mask_bytes``)."""
    blocks = math.ceil(num_tokens / block_size)
    return 4 * blocks * blocks * 4 + 4 * blocks * 4


def attention_workspace_bytes(
    kernel: AttentionKernel,
    *,
    num_tokens: int,
    heads: int,
    batch: int = 1,
    dtype: Any = "bfloat16",
    block_size: int = 128,
) -> int:
    """Memory an attention kernel needs beyond q, k, v and its output.

    flash: the per-row log-sum-exp (batch × heads × N fp32) flash and memory-efficient SDPA keep; nothing N × N.
    flex: that plus the ``BlockMask`` (built once per resolution and shared by layers).
    dense_mask: that plus the materialised boolean and additive masks (the CPU/test oracle; infeasible at 1080p).
    """
    lse = batch * heads * num_tokens * _FP32
    if kernel == "flash":
        return lse
    if kernel == "flex":
        return lse + block_mask_bytes(num_tokens, block_size)
    if kernel == "dense_mask":
        return lse + dense_mask_bytes(num_tokens, dtype)
    raise ValueError(f"`kernel` must be 'flash', 'flex' or 'dense_mask', got {kernel!r}")


def cross_attn_cache_bytes(config: Mapping[str, Any], num_tokens: int, dtype: Any = "bfloat16") -> int:
    """FreeSwim's cache: one pre-``to_out`` cross-attention output (1, N, heads, head_dim) per block, for the cond
    pass: N · D · bytes · blocks. 15.8 GB for 1.3B and 70.2 GB for 14B at 1088×1920, 81 frames (N = 171,360)."""
    dims = TransformerDims.from_config(config)
    return num_tokens * dims.dim * dtype_bytes(dtype) * dims.layers


@dataclass(frozen=True, slots=True)
class LoraTrainingBytes(Record):
    """Bytes a LoRA adds when training it with AdamW (activations not included)."""

    params: int
    weights: int
    grads: int
    optimizer: int
    master_weights: int

    _derived: ClassVar[tuple[str, ...]] = ("total",)

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.master_weights


def lora_training_bytes(
    config: Mapping[str, Any],
    *,
    rank: int,
    target_modules: Iterable[str],
    param_dtype: Any = "bfloat16",
    state_dtype: Any | None = None,
    master_weights: bool = False,
) -> LoraTrainingBytes:
    """LoRA weights, gradients and AdamW state (exp_avg and exp_avg_sq; torch allocates them like the parameter,
    so ``state_dtype`` defaults to ``param_dtype``), plus an optional fp32 master copy for mixed precision."""
    count = lora_param_count(config, rank, target_modules)
    p = dtype_bytes(param_dtype)
    s = p if state_dtype is None else dtype_bytes(state_dtype)
    return LoraTrainingBytes(
        params=count,
        weights=count * p,
        grads=count * p,
        optimizer=2 * count * s,
        master_weights=count * _FP32 if master_weights else 0,
    )


def video_bytes(frames: int, height: int, width: int, dtype: Any = "uint8", channels: int = 3) -> int:
    """Bytes of a decoded clip: frames × height × width × channels × element size (uint8 for encoding, fp32 from
    the VAE). 4K, 81 frames: 1.9 GiB uint8, 7.5 GiB fp32."""
    return frames * height * width * channels * dtype_bytes(dtype)


def gib(num_bytes: int) -> float:
    """Bytes in GiB (2³⁰)."""
    return num_bytes / 2**30


def format_gib(num_bytes: int, digits: int = 2) -> str:
    """``15_794_733_056`` -> ``'14.71 GiB'``."""
    return f"{gib(num_bytes):.{digits}f} GiB"
