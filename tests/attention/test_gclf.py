"""GCLF attention: both kernels against an independent float64 softmax; the processor against stock attention."""

from __future__ import annotations

import pytest
import torch

from upscale_dit.attention.gclf import (
    GCLFAttnProcessor,
    apply_gclf,
    gclf_attention,
    gclf_attention_flex,
    gclf_attention_sdpa,
    pool_tokens,
)
from upscale_dit.attention.geometry import TokenGeometry, build_token_geometry
from upscale_dit.engine.tiny import build_tiny_components

REL_TOL = 1e-5  # fp32 kernels vs the fp64 oracle, ||out - ref|| / ||ref||

# (frames, rows, cols, window_rows, window_cols, pool): 2x native, odd sizes, window larger than the grid,
# grids not divisible by the pool, several frames, sequence lengths across FlexAttention's 128-token blocks.
CASES = [
    (1, 12, 20, 6, 10, 2),
    (2, 5, 7, 3, 4, 2),
    (1, 4, 6, 6, 10, 2),
    (3, 9, 9, 5, 5, 3),
    (1, 24, 40, 12, 20, 4),
    (2, 7, 11, 7, 11, 1),
]


def _oracle(q, k, v, geometry: TokenGeometry, pool: int):
    """Written out from the definition with loops: which fine keys each query sees, pooled cell means, one softmax."""
    q, k, v = q.double(), k.double(), v.double()
    f_n, rows, cols = geometry.grid
    wr, wc = min(geometry.window_rows, rows), min(geometry.window_cols, cols)
    allowed = torch.zeros(geometry.num_tokens, geometry.num_tokens, dtype=torch.bool)
    for r in range(rows):
        r0 = min(max(r - (wr - 1) // 2, 0), rows - wr)
        for c in range(cols):
            c0 = min(max(c - (wc - 1) // 2, 0), cols - wc)
            for f in range(f_n):
                for f2 in range(f_n):
                    for r2 in range(r0, r0 + wr):
                        for c2 in range(c0, c0 + wc):
                            allowed[f * rows * cols + r * cols + c, f2 * rows * cols + r2 * cols + c2] = True
    pooled_k, pooled_v = [], []
    grid_k = k.reshape(k.shape[0], f_n, rows, cols, *k.shape[2:])
    grid_v = v.reshape(v.shape[0], f_n, rows, cols, *v.shape[2:])
    for f in range(f_n):
        for r in range(0, rows, pool):
            for c in range(0, cols, pool):
                pooled_k.append(grid_k[:, f, r : r + pool, c : c + pool].mean(dim=(1, 2)))
                pooled_v.append(grid_v[:, f, r : r + pool, c : c + pool].mean(dim=(1, 2)))
    keys = torch.cat([k, torch.stack(pooled_k, 1)], 1)
    values = torch.cat([v, torch.stack(pooled_v, 1)], 1)
    mask = torch.cat([allowed, torch.ones(geometry.num_tokens, len(pooled_k), dtype=torch.bool)], 1)
    scores = torch.einsum("bshd,bthd->bhst", q, keys) / q.shape[-1] ** 0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("bhst,bthd->bshd", weights, values)


def _qkv(geometry: TokenGeometry, batch: int = 2, heads: int = 2, dim: int = 8, dtype=torch.float32):
    g = torch.Generator().manual_seed(geometry.num_tokens)
    return [torch.randn(batch, geometry.num_tokens, heads, dim, generator=g, dtype=dtype) for _ in range(3)]


def _rel(out, ref):
    return float((out.double() - ref).norm() / ref.norm())


_ORACLE: dict[tuple, torch.Tensor] = {}  # one oracle per case, shared by the kernels


@pytest.mark.parametrize("case", CASES, ids=lambda c: "F{}x{}x{}-w{}x{}-d{}".format(*c))
@pytest.mark.parametrize("kernel", ["sdpa", "flex", "flex-tiled"])
def test_kernels_match_float64_oracle(case, kernel):
    f, rows, cols, wr, wc, pool = case
    geometry = TokenGeometry(frames=f, rows=rows, cols=cols, window_rows=wr, window_cols=wc)
    q, k, v = _qkv(geometry)
    if case not in _ORACLE:
        _ORACLE[case] = _oracle(q, k, v, geometry, pool)
    ref = _ORACLE[case]
    if kernel == "sdpa":
        out = gclf_attention_sdpa(q, k, v, geometry, pool=pool)
    else:
        out = gclf_attention_flex(q, k, v, geometry, pool=pool, layout="tiled" if kernel == "flex-tiled" else "natural")
    assert out.shape == q.shape and out.dtype == torch.float32
    assert _rel(out, ref) < REL_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward on the CPU")
def test_gradients_of_both_kernels_agree_on_cuda():
    """Stage-2 training backpropagates through the kernel: compiled flex and SDPA must give the same gradients."""
    geometry = TokenGeometry(frames=2, rows=24, cols=40, window_rows=12, window_cols=20)
    grads = []
    for fn in (gclf_attention_sdpa, gclf_attention_flex):
        q, k, v = (x.cuda().requires_grad_(True) for x in _qkv(geometry, dim=64))
        fn(q, k, v, geometry, pool=2).square().sum().backward()
        grads.append(torch.cat([x.grad.flatten() for x in (q, k, v)]).double())
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-4


def test_pooling_averages_partial_border_cells_over_existing_tokens():
    geometry = TokenGeometry(frames=1, rows=3, cols=3, window_rows=3, window_cols=3)
    x = torch.arange(9.0).reshape(1, 9, 1, 1)
    pooled = pool_tokens(x, geometry, 2).flatten().tolist()
    assert pooled == [2.0, 3.5, 6.5, 8.0]


def test_auto_kernel_and_bad_inputs():
    geometry = TokenGeometry(frames=1, rows=4, cols=6, window_rows=2, window_cols=3)
    q, k, v = _qkv(geometry)
    assert torch.equal(gclf_attention(q, k, v, geometry), gclf_attention_sdpa(q, k, v, geometry))
    with pytest.raises(ValueError, match="does not match"):
        gclf_attention_sdpa(q[:, :5], k[:, :5], v[:, :5], geometry)
    with pytest.raises(Exception, match="kernel must be one of"):
        gclf_attention(q, k, v, geometry, kernel="magic")


@pytest.fixture(scope="module")
def transformer():
    return build_tiny_components()["transformer"]


def _forward(transformer, latents):
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, 64, 32, generator=g)
    return transformer(hidden_states=latents, timestep=torch.tensor([700.0]), encoder_hidden_states=text,
                       return_dict=False)[0]


def test_full_window_and_pool_1_reproduce_stock_attention(transformer):
    """With the window covering the grid and d = 1 every key appears twice with equal logits: plain softmax."""
    latents = torch.randn(1, 16, 2, 12, 20, generator=torch.Generator().manual_seed(0))
    geometry = TokenGeometry(frames=2, rows=6, cols=10, window_rows=6, window_cols=10)
    stock = _forward(transformer, latents)
    with apply_gclf(transformer, geometry, pool=1):
        gclf = _forward(transformer, latents)
    assert torch.allclose(gclf, stock, rtol=1e-4, atol=1e-5)


def test_apply_remove_round_trip_and_double_apply(transformer):
    latents = torch.randn(1, 16, 1, 24, 40, generator=torch.Generator().manual_seed(0))
    geometry = build_token_geometry(1, 192, 320, native_height=96, native_width=160, window="native")
    stock = _forward(transformer, latents)
    handle = apply_gclf(transformer, geometry)
    processors = transformer.attn_processors
    assert all(isinstance(p, GCLFAttnProcessor) == (".attn1." in n) for n, p in processors.items())
    with pytest.raises(RuntimeError, match=r"attention plan \(gclf\) is already applied"):
        apply_gclf(transformer, geometry)
    changed = _forward(transformer, latents)
    handle.remove()
    assert not torch.allclose(changed, stock)
    assert torch.equal(_forward(transformer, latents), stock)
