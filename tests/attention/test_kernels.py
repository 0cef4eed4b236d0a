"""Every registered kernel against an fp64 dense reference computed here, plus registry behaviour.

Registering a kernel enrols it in the sweep below with no new test code.
"""

from __future__ import annotations

import math

import pytest
import torch

from upscale_dit.attention import (
    KernelUnavailableError,
    TokenGeometry,
    TokenLayout,
    build_token_geometry,
    choose_kernel,
    flex_window_attention,
    from_layout,
    kernel_rejections,
    layout_window_mask,
    list_kernels,
    register_kernel,
    to_layout,
    window_attention,
    window_block_mask,
)

# Relative Frobenius error ‖out − ref‖ / ‖ref‖ against the fp64 reference.
FP32_RTOL = 1e-5
BF16_RTOL = 2e-2

SEED = 1234


def geom(frames: int, rows: int, cols: int, wr: int, wc: int, inward: bool = True) -> TokenGeometry:
    return TokenGeometry(frames=frames, rows=rows, cols=cols, window_rows=wr, window_cols=wc, inward=inward)


def reference_mask(g: TokenGeometry) -> torch.Tensor:
    """The natural-order mask from the window rule, with plain integers (independent of the package)."""

    def allowed(n: int, k: int) -> torch.Tensor:
        out = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            if k >= n:
                lo, hi = 0, n - 1
            elif g.inward:
                lo = min(max(i - (k - 1) // 2, 0), n - k)
                hi = lo + k - 1
            else:
                lo, hi = max(0, i - (k - 1) // 2), min(n - 1, i + k // 2)
            out[i, lo : hi + 1] = True
        return out

    rows, cols = allowed(g.rows, g.window_rows), allowed(g.cols, g.window_cols)
    mask = torch.zeros(g.num_tokens, g.num_tokens, dtype=torch.bool)
    hw = g.rows * g.cols
    for q in range(g.num_tokens):
        rq, cq = (q % hw) // g.cols, q % g.cols
        per_frame = (rows[rq][:, None] & cols[cq][None, :]).reshape(-1)
        mask[q] = per_frame.repeat(g.frames)
    return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(QKᵀ·scale + mask) V in fp64; tensors [B, S, H, D], natural order."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all()
    return float((out.double() - ref).norm() / ref.norm())


CASES = {
    "odd-window": (geom(2, 9, 13, 5, 7), 2, 3, 16),
    "even-window": (geom(3, 8, 10, 4, 6), 1, 2, 8),
    "grid-smaller-than-window": (geom(2, 4, 9, 7, 5), 1, 2, 16),
    "window-equals-grid": (geom(2, 5, 6, 5, 6), 2, 2, 8),
    "no-inward": (geom(2, 9, 13, 5, 7, inward=False), 1, 2, 16),
    "single-frame": (geom(1, 12, 20, 5, 9), 1, 1, 32),
}


@pytest.fixture(scope="module")
def inputs() -> dict[str, tuple[TokenGeometry, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per case: geometry, q, k, v (fp32) and fp64 references for scale=None and a FreeSwim-like scale."""
    out = {}
    gen = torch.Generator().manual_seed(SEED)
    for name, (g, batch, heads, dim) in CASES.items():
        q, k, v = (torch.randn(batch, g.num_tokens, heads, dim, generator=gen) for _ in range(3))
        mask = reference_mask(g)
        ref_default = reference_attention(q, k, v, mask, 1 / math.sqrt(dim))
        ref_scaled = reference_attention(q, k, v, mask, 1.0943 / math.sqrt(dim))
        out[name] = (g, q, k, v, ref_default, ref_scaled)
    return out


@pytest.mark.parametrize("kernel", list_kernels())
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", ["natural", "tiled"])
def test_kernel_matches_fp64_reference_fp32(inputs: dict, kernel: str, case: str, layout: str) -> None:
    g, q, k, v, ref_default, ref_scaled = inputs[case]
    qq, kk, vv = (to_layout(x, g, layout) for x in (q, k, v))
    out = from_layout(window_attention(qq, kk, vv, g, kernel=kernel, layout=layout), g, layout)
    assert out.shape == q.shape and out.dtype == torch.float32
    assert rel_err(out, ref_default) < FP32_RTOL
    scale = 1.0943 / math.sqrt(q.shape[-1])
    out = from_layout(window_attention(qq, kk, vv, g, scale=scale, kernel=kernel, layout=layout), g, layout)
    assert rel_err(out, ref_scaled) < FP32_RTOL


@pytest.mark.parametrize("kernel", list_kernels())
@pytest.mark.parametrize("case", ["odd-window", "no-inward"])
def test_kernel_matches_fp64_reference_bf16(inputs: dict, kernel: str, case: str) -> None:
    g, q, k, v, ref_default, _ = inputs[case]
    out = window_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, kernel=kernel)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref_default) < BF16_RTOL


@pytest.mark.parametrize("kernel", list_kernels())
def test_window_equal_to_grid_is_full_attention(inputs: dict, kernel: str) -> None:
    g, q, k, v, ref_default, _ = inputs["window-equals-grid"]
    full = reference_attention(q, k, v, torch.ones(g.num_tokens, g.num_tokens, dtype=torch.bool), 1 / math.sqrt(q.shape[-1]))
    assert torch.allclose(full, ref_default)
    assert rel_err(window_attention(q, k, v, g, kernel=kernel), full) < FP32_RTOL


# --------------------------------------------------------------------------- flex internals


def expand_block_mask(block_mask, s: int) -> torch.Tensor:  # noqa: ANN001
    """The [S, S] mask a block-sparse kernel computes: full blocks all True, partial ones mask_mod, rest False."""
    bq, bk = block_mask.BLOCK_SIZE
    nq = block_mask.kv_num_blocks.shape[-1]
    nk = -(-s // bk)
    dense = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    q_idx = torch.arange(nq * bq).clamp(max=s - 1)
    kv_idx = torch.arange(nk * bk).clamp(max=s - 1)
    for i in range(nq):
        rows = slice(i * bq, (i + 1) * bq)
        partial = block_mask.kv_indices[0, 0, i, : block_mask.kv_num_blocks[0, 0, i]].tolist()
        full = block_mask.full_kv_indices[0, 0, i, : block_mask.full_kv_num_blocks[0, 0, i]].tolist()
        assert not set(partial) & set(full)
        for j in full:
            dense[rows, j * bk : (j + 1) * bk] = True
        for j in partial:
            cols = slice(j * bk, (j + 1) * bk)
            dense[rows, cols] = block_mask.mask_mod(0, 0, q_idx[rows, None], kv_idx[None, cols])
    return dense[:s, :s]


@pytest.mark.parametrize("g", [geom(2, 9, 13, 5, 7), geom(3, 8, 10, 4, 6, inward=False), geom(2, 11, 7, 3, 9)], ids=repr)
@pytest.mark.parametrize("layout", ["natural", TokenLayout.tiled(), TokenLayout.tiled(2, 3)], ids=str)
@pytest.mark.parametrize("block", [16, (32, 16), 128])
def test_flex_block_mask_computes_exactly_the_window(g: TokenGeometry, layout, block) -> None:  # noqa: ANN001
    """Eager flex only applies mask_mod, so the block lists are checked here: what a block-sparse
    kernel computes from them must be exactly the window mask, with no needless partial blocks."""
    block_mask = window_block_mask(g, layout, block)
    expected = layout_window_mask(g, layout)
    assert torch.equal(expand_block_mask(block_mask, g.num_tokens), expected)
    assert torch.equal(layout_window_mask(g, layout), reference_mask(g)[perm_of(g, layout)][:, perm_of(g, layout)])


@pytest.mark.parametrize("g", [geom(2, 9, 13, 5, 7), geom(3, 8, 10, 4, 6, inward=False), geom(2, 4, 13, 9, 7)], ids=repr)
@pytest.mark.parametrize("block", [(32, 16), 128])
def test_flash_mask_form_computes_exactly_the_window(g: TokenGeometry, block) -> None:  # noqa: ANN001
    """The FlashAttention-4 form (signed compares, window lengths as constants where they are) gives the
    same mask as the others: inward windows (constant lengths), clipped ones (per-query tables) and a grid
    smaller than the window on one axis."""
    layout = TokenLayout.tiled()
    block_mask = window_block_mask(g, layout, block, mask_form="flash")
    assert torch.equal(expand_block_mask(block_mask, g.num_tokens), layout_window_mask(g, layout))
    assert ("block_mask", layout, tuple(block) if isinstance(block, tuple) else (block, block), "cpu", "flash") in g.cache.keys()


def test_flash_form_keeps_inward_window_lengths_as_constants() -> None:
    from upscale_dit.attention.kernels.flex import _constant_or_table

    index = torch.tensor([0, 2, 1])
    assert _constant_or_table(torch.tensor([7, 7, 7]), index) == 7
    table = _constant_or_table(torch.tensor([4, 5, 6]), index)
    assert isinstance(table, torch.Tensor) and table.dtype == torch.int32 and table.tolist() == [4, 6, 5]


def fake_cuda(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], flash_installed: bool) -> torch.device:
    from upscale_dit.attention.kernels import flex

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(flex, "_flash_attention_4_installed", lambda: flash_installed)
    return torch.device("cuda")


@pytest.mark.parametrize(
    ("capability", "installed", "env", "backend", "options"),
    [
        ((9, 0), True, None, "FLASH", {"BACKEND": "FLASH"}),  # Hopper with flash-attn-4: FlashAttention-4
        ((9, 0), False, None, "TRITON", {"USE_TMA": True}),  # not installed: Triton
        ((10, 0), True, None, "TRITON", {"USE_TMA": True}),  # measured on Hopper only
        ((8, 0), True, "auto", "TRITON", {}),  # no TMA before Hopper
        ((9, 0), True, "triton", "TRITON", {"USE_TMA": True}),  # the override
        ((10, 0), True, "FLASH", "FLASH", {"BACKEND": "FLASH"}),  # the override, any case
    ],
)
def test_flex_backend_choice(monkeypatch: pytest.MonkeyPatch, capability, installed, env, backend, options) -> None:  # noqa: ANN001
    from upscale_dit.attention import default_kernel_options, flex_backend

    if env is None:
        monkeypatch.delenv("UDIT_FLEX_BACKEND", raising=False)
    else:
        monkeypatch.setenv("UDIT_FLEX_BACKEND", env)
    device = fake_cuda(monkeypatch, capability, installed)
    assert flex_backend(device) == backend
    assert default_kernel_options(device) == options
    assert flex_backend("cpu") is None and default_kernel_options("cpu") == {}  # eager off CUDA


def test_flash_attention_4_hint_only_where_it_would_help(monkeypatch: pytest.MonkeyPatch) -> None:
    from upscale_dit.attention import flash_attention_4_hint

    monkeypatch.delenv("UDIT_FLEX_BACKEND", raising=False)
    assert flash_attention_4_hint("cpu") is None
    hint = flash_attention_4_hint(fake_cuda(monkeypatch, (9, 0), False))
    assert hint is not None and "pip install 'upscale-dit[flash4]'" in hint
    assert flash_attention_4_hint(fake_cuda(monkeypatch, (9, 0), True)) is None  # already installed
    assert flash_attention_4_hint(fake_cuda(monkeypatch, (8, 0), False)) is None  # not measured off Hopper
    monkeypatch.setenv("UDIT_FLEX_BACKEND", "triton")
    assert flash_attention_4_hint(fake_cuda(monkeypatch, (9, 0), False)) is None  # Triton chosen on purpose


def test_flex_backend_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from upscale_dit.attention import flex_backend

    device = fake_cuda(monkeypatch, (9, 0), False)
    monkeypatch.setenv("UDIT_FLEX_BACKEND", "flash")
    with pytest.raises(KernelUnavailableError, match=r"UDIT_FLEX_BACKEND=flash needs FlashAttention-4: pip install 'upscale-dit\[flash4\]'"):
        flex_backend(device)
    monkeypatch.setenv("UDIT_FLEX_BACKEND", "cudnn")
    with pytest.raises(KernelUnavailableError, match="UDIT_FLEX_BACKEND='cudnn' is not a flex backend; use auto, triton or flash"):
        flex_backend("cpu")


def perm_of(g: TokenGeometry, layout) -> torch.Tensor:  # noqa: ANN001
    return to_layout(torch.arange(g.num_tokens), g, layout, dim=0)


def test_flex_small_blocks_and_cache(inputs: dict) -> None:
    g, q, k, v, ref_default, _ = inputs["odd-window"]
    g.cache.clear()
    for block in (16, (32, 8)):
        qq, kk, vv = (to_layout(x, g, "tiled") for x in (q, k, v))
        out = flex_window_attention(qq, kk, vv, g, layout="tiled", block_size=block)
        assert rel_err(from_layout(out, g, "tiled"), ref_default) < FP32_RTOL
    first = window_block_mask(g, "tiled", 16)
    assert window_block_mask(g, "tiled", 16) is first  # cached on the geometry, keyed by layout/block/device
    assert ("block_mask", TokenLayout.tiled(), (16, 16), "cpu", "signed") in g.cache.keys()  # the eager form


@pytest.mark.slow
def test_compiled_flex_on_cpu_uses_the_block_lists() -> None:
    """The compiled kernel skips empty blocks, trusts full ones and runs the unsigned mask_mod that
    CUDA uses (eager flex does none of these). Both geometries share one compiled graph."""
    gen = torch.Generator().manual_seed(SEED)
    for g in (geom(2, 12, 20, 5, 7), geom(2, 12, 20, 4, 9, inward=False)):
        q, k, v = (torch.randn(1, g.num_tokens, 2, 16, generator=gen) for _ in range(3))
        ref = reference_attention(q, k, v, reference_mask(g), 0.25)
        qq, kk, vv = (to_layout(x, g, "tiled") for x in (q, k, v))
        out = flex_window_attention(qq, kk, vv, g, scale=0.25, layout="tiled", block_size=(32, 16), compile=True)
        assert rel_err(from_layout(out, g, "tiled"), ref) < FP32_RTOL
        assert any(key[-1] == "unsigned" for key in g.cache.keys() if key[0] == "block_mask")


# --------------------------------------------------------------------------- registry and checks


def test_registry_lists_kernels_and_auto_prefers_sdpa_mask_on_cpu() -> None:
    assert set(list_kernels()) >= {"sdpa_mask", "flex"}
    g = geom(2, 4, 5, 3, 3)
    q = torch.zeros(1, g.num_tokens, 1, 8)
    assert choose_kernel(q, g) == "sdpa_mask"
    assert choose_kernel(q, g, "flex") == "flex"
    reasons = kernel_rejections(q, g)
    assert reasons["sdpa_mask"] is None and "not picked automatically on cpu" in reasons["flex"]


def test_named_kernel_that_cannot_run_raises_and_auto_lists_every_reason() -> None:
    g = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832)
    q = torch.zeros(1, 1, 1, 8).expand(1, g.num_tokens, 12, 8)  # no memory behind it
    with pytest.raises(KernelUnavailableError, match="'sdpa_mask' cannot run: its dense mask would need 27.3 GiB"):
        choose_kernel(q, g, "sdpa_mask")
    with pytest.raises(KernelUnavailableError, match="'flex' cannot run: on the CPU it runs eagerly") as info:
        window_attention(q, q, q, g, kernel="flex")
    assert info.value.exit_code == 2
    with pytest.raises(KernelUnavailableError) as info:
        choose_kernel(q, g)
    message = str(info.value)
    assert "- flex: not picked automatically on cpu" in message and "- sdpa_mask: its dense mask" in message
    with pytest.raises(ValueError, match="unknown window-attention kernel 'natten'.*'flex', 'sdpa_mask'"):
        choose_kernel(q, g, "natten")


def test_register_kernel_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="'sdpa_mask' is already taken"):
        register_kernel("sdpa_mask")(lambda *a, **k: None)


@pytest.mark.parametrize(
    ("shapes", "needle"),
    [
        (((1, 40, 2), (1, 40, 2), (1, 40, 2)), "q.shape="),
        (((1, 40, 2, 8), (1, 40, 2, 4), (1, 40, 2, 8)), "k.shape="),
        (((1, 41, 2, 8), (1, 41, 2, 8), (1, 41, 2, 8)), "sequence length 41 does not match"),
    ],
)
def test_inputs_are_checked_with_values(shapes: tuple, needle: str) -> None:
    g = geom(2, 4, 5, 3, 3)
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        window_attention(q, k, v, g)
    x = torch.zeros(1, 40, 2, 8)
    with pytest.raises(ValueError, match="q.dtype=torch.float32, k.dtype=torch.float64"):
        window_attention(x, x.double(), x, g)
