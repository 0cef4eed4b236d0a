"""Shared steps of every Wan attention processor: project, normalise, split heads, rotate; and dense attention.

Processors built on these read as a straight sequence and hold no attention math of their own. They take
every weight from the ``attn`` module (diffusers' ``WanAttention``), so no model code is copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved pairs: ``[B, S, H, D]`` with ``cos``/``sin`` ``[1, S, 1, D]`` (repeated per pair)."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2).type_as(x)


def check_text_only(attn) -> None:
    """Our processors implement text-to-video Wan; image-conditioned attention (I2V) is refused, not ignored."""
    if getattr(attn, "add_k_proj", None) is not None:
        raise NotImplementedError("udit's attention processors support Wan text-to-video models only (no I2V)")


def project_queries(attn, hidden_states: torch.Tensor, rotary_emb=None) -> torch.Tensor:
    """Queries ``[B, S, H, D]`` (normalised, rotated when ``rotary_emb`` is given)."""
    query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
    return rotate(query, *rotary_emb) if rotary_emb is not None else query


def project_keys_values(attn, context: torch.Tensor, rotary_emb=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[B, L, H, D]`` of ``context`` (the hidden states themselves for self-attention)."""
    key = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
    value = attn.to_v(context).unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        key = rotate(key, *rotary_emb)
    return key, value


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Full softmax attention on ``[B, S, H, D]`` tensors (PyTorch SDPA: flash / memory-efficient on GPU)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


def project_out(attn, heads: torch.Tensor) -> torch.Tensor:
    """Merge heads ``[B, S, H, D]`` → ``[B, S, H*D]`` and apply the output projection (and its dropout)."""
    hidden = heads.flatten(2, 3)
    return attn.to_out[1](attn.to_out[0](hidden))
