"""FreeSwim's dual path against a slow, obviously-correct batch-2 implementation of both semantics.

The slow form runs every pass at batch 2 (element 0 window branch, element 1 full branch), as the reference
code does, with attention written out as explicit softmax(QK^T)V over a dense boolean mask. The fast path
runs one branch wherever the second would duplicate it, reads the cache through the controller, and calls the
registered window kernels. Final latents must agree.
"""

from __future__ import annotations

import pytest
import torch

from upscale_dit.attention import build_token_geometry, freeswim_attention_scale, window_mask
from upscale_dit.attention.dual_path import FreeSwimController, PassPlan, apply_freeswim
from upscale_dit.engine.sampler import PassController, denoise
from upscale_dit.engine.scheduling import build_scheduler
from upscale_dit.engine.tiny import build_tiny_components

STEPS = 4


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components()


@pytest.fixture(scope="module")
def geometry():
    # tiny native 96x160 (6x10 tokens, reference window 7x11) refined at 2x: 12x20 tokens, 3 latent frames
    return build_token_geometry(9, 192, 320, native_height=96, native_width=160)


def _inputs():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 24, 40, generator=g)
    cond, uncond = torch.randn(1, 64, 32, generator=g), torch.randn(1, 64, 32, generator=g)
    return latents, cond, uncond


# ---- the slow form -------------------------------------------------------------------------------------------

def _softmax_attention(q, k, v, scale, mask=None):
    """[B, S, H, D] → explicit softmax(q k^T * scale [+ mask]) v."""
    scores = torch.einsum("bshd,bthd->bhst", q.double(), k.double()) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v.double()).to(q.dtype)


def _rope(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def _qkv(attn, x, ctx, rope=None):
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(ctx)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(ctx).unflatten(2, (attn.heads, -1))
    if rope is not None:
        q, k = _rope(q, *rope), _rope(k, *rope)
    return q, k, v


class SlowState:
    def __init__(self, mode, k, mask, scale):
        self.mode, self.k, self.mask, self.scale = mode, k, mask, scale
        self.pass_name, self.step, self.cache = None, None, {}


class SlowSelf:
    def __init__(self, state):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        assert hidden_states.shape[0] == 2
        q, k, v = _qkv(attn, hidden_states, hidden_states, rotary_emb)
        d = q.shape[-1]
        scale = self.state.scale or d**-0.5
        window = _softmax_attention(q[:1], k[:1], v[:1], scale, self.state.mask)
        full = _softmax_attention(q[1:], k[1:], v[1:], scale)
        return attn.to_out[0](torch.cat([window, full]).flatten(2))


class SlowCross:
    def __init__(self, state, block):
        self.state, self.block = state, block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        s = self.state
        q, k, v = _qkv(attn, hidden_states, encoder_hidden_states)
        own = _softmax_attention(q, k, v, q.shape[-1] ** -0.5).flatten(2)  # each element's own
        from_full = own[1:].expand(2, -1, -1)  # the full branch's, fed to both elements
        if s.mode == "exact":
            heads = from_full
        elif s.pass_name == "uncond":
            heads = own
        elif s.step % s.k == 0:
            s.cache[self.block] = own[1:].clone()
            heads = from_full
        else:
            heads = s.cache[self.block].expand(2, -1, -1)
        return attn.to_out[0](heads)


class SlowController(PassController):
    """Batch 2 on every pass, element 0 kept: the reference's structure."""

    def __init__(self, state):
        self.state = state

    def run_pass(self, transformer, model_input, timestep, embeds, info):
        self.state.pass_name, self.state.step = info.name, info.step_index
        out = transformer(hidden_states=torch.cat([model_input] * 2), timestep=torch.cat([timestep] * 2),
                          encoder_hidden_states=torch.cat([embeds] * 2), return_dict=False)[0]
        return out[:1]


def _slow(tiny, geometry, mode, k, scale):
    transformer = tiny["transformer"]
    state = SlowState(mode, k, window_mask(geometry), scale)
    saved = dict(transformer.attn_processors)
    procs = {}
    for name in saved:
        block = int(name.split(".")[1])
        procs[name] = SlowSelf(state) if ".attn1." in name else SlowCross(state, block)
    transformer.set_attn_processor(procs)
    try:
        return _sample(tiny, SlowController(state))
    finally:
        transformer.set_attn_processor(saved)


def _sample(tiny, controller):
    latents, cond, uncond = _inputs()
    scheduler = build_scheduler("unipc", shift=9.0)
    scheduler.set_timesteps(STEPS)
    return denoise(tiny["transformer"], scheduler, latents, timesteps=scheduler.timesteps, cond=cond, uncond=uncond,
                   guidance=5.0, controller=controller)


def _fast(tiny, geometry, mode, k, scale, kernel="sdpa_mask"):
    controller = FreeSwimController(geometry=geometry, mode=mode, cache_steps=k, scale=scale, kernel=kernel)
    with apply_freeswim(tiny["transformer"], controller):
        return _sample(tiny, controller), controller


# ---- tests ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "k"), [("exact", 1), ("cache", 1), ("cache", 2), ("cache", 3)])
def test_fast_path_matches_slow_batch2_form(tiny, geometry, mode, k):
    scale = freeswim_attention_scale(32, 60)
    fast, controller = _fast(tiny, geometry, mode, k, scale)
    slow = _slow(tiny, geometry, mode, k, scale)
    err = (fast - slow).norm() / slow.norm()
    assert err < 1e-5, f"{mode} k={k}: relative error {err:.2e}"
    dual = [plan.dual for _, _, plan in controller.history]
    if mode == "exact":
        assert all(dual)  # the full branch runs on every pass
    else:  # only conditional guide steps run two branches
        assert dual == [name == "cond" and step % k == 0 for name, step, _ in controller.history]
        assert controller.cache.refreshes == len(range(0, STEPS, k))


def test_flex_kernel_on_tiled_layout_matches_slow_form(tiny, geometry):
    """The processors permute tokens to tile-major order for the block-sparse kernel and back."""
    fast, controller = _fast(tiny, geometry, "cache", 2, None, kernel="flex")
    assert controller.chosen_kernel == "flex"
    slow = _slow(tiny, geometry, "cache", 2, None)
    assert (fast - slow).norm() / slow.norm() < 1e-5


def test_cache_k1_is_not_exact(tiny, geometry):
    """Spec §3: even with k=1, cache mode's plain-window uncond pass differs from exact semantics."""
    exact, _ = _fast(tiny, geometry, "exact", 1, None)
    cached, _ = _fast(tiny, geometry, "cache", 1, None)
    assert (exact - cached).norm() / exact.norm() > 1e-4


def test_override_changes_the_result(tiny, geometry):
    """Without the dual path (window branch with its own cross-attention) the result is clearly different."""

    class WindowOnly(FreeSwimController):
        def plan(self, info):
            return PassPlan(dual=False, cross="own")

    exact, _ = _fast(tiny, geometry, "exact", 1, None)
    controller = WindowOnly(geometry=geometry, kernel="sdpa_mask")
    with apply_freeswim(tiny["transformer"], controller):
        window_only = _sample(tiny, controller)
    # small on a random tiny model, but three orders above the fast-vs-slow agreement (< 1e-6 measured)
    assert (exact - window_only).norm() / exact.norm() > 1e-4


def test_window_covering_grid_runs_one_branch_and_equals_stock_attention(tiny):
    """Window >= grid: the full branch would duplicate the window branch, so one branch runs; with the scale off
    the result is the stock model's."""
    geometry = build_token_geometry(9, 96, 160, native_height=96, native_width=160)
    assert geometry.is_full
    g = torch.Generator().manual_seed(1)
    latents, cond = torch.randn(1, 16, 3, 12, 20, generator=g), torch.randn(1, 64, 32, generator=g)
    scheduler = build_scheduler("unipc", shift=3.0)
    scheduler.set_timesteps(2)

    def sample(controller):
        return denoise(tiny["transformer"], scheduler, latents, timesteps=scheduler.timesteps, cond=cond,
                       uncond=None, guidance=1.0, controller=controller)

    stock = sample(PassController())
    scheduler.set_timesteps(2)
    controller = FreeSwimController(geometry=geometry, mode="exact", kernel="sdpa_mask")
    with apply_freeswim(tiny["transformer"], controller):
        fast = sample(controller)
    assert not any(plan.dual for _, _, plan in controller.history)
    assert (fast - stock).norm() / stock.norm() < 1e-6


def test_apply_remove_restores_bit_identical_outputs_and_refuses_double_apply(tiny, geometry):
    before = _sample(tiny, PassController())
    controller = FreeSwimController(geometry=geometry, kernel="sdpa_mask")
    handle = apply_freeswim(tiny["transformer"], controller)
    with pytest.raises(RuntimeError, match="already applied"):
        apply_freeswim(tiny["transformer"], controller)
    handle.remove()
    after = _sample(tiny, PassController())
    assert torch.equal(before, after)


def test_processors_outside_a_pass_raise(tiny, geometry):
    latents, cond, _ = _inputs()
    controller = FreeSwimController(geometry=geometry, kernel="sdpa_mask")
    with apply_freeswim(tiny["transformer"], controller), pytest.raises(RuntimeError, match="outside a controller pass"):
        tiny["transformer"](hidden_states=latents, timestep=torch.tensor([500]), encoder_hidden_states=cond)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "fast"}, "`mode` must be exact or cache"),
    ({"cache_steps": 0}, "`cache_steps` must be >= 1, got 0"),
])
def test_bad_settings(geometry, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FreeSwimController(geometry=geometry, **kwargs)


def test_compiled_blocks_share_one_graph_per_pass_kind(geometry):
    """Regional compile of the blocks must not specialise on the block: the cache is reached opaquely.

    Dynamo reading each cross-attention processor's block index as a constant compiled one graph per block,
    which runs into the recompile limit at Wan's 30 blocks and silently falls back to eager. Here a 4-block
    transformer must compile no more graphs than a 2-block one for the guide (cache store) and cached passes.
    """
    from torch._dynamo.utils import counters

    from upscale_dit.engine.sampler import PassInfo
    from upscale_dit.engine.tiny import TINY_TRANSFORMER_CONFIG

    from diffusers import WanTransformer3DModel

    latents, cond, _ = _inputs()
    timestep = torch.tensor([500.0])
    guide = PassInfo(name="cond", step_index=0, num_steps=2, sigma=0.5)
    cached = PassInfo(name="cond", step_index=1, num_steps=2, sigma=0.5)

    def graphs_compiled(layers: int) -> int:
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, "num_layers": layers}).eval()
        controller = FreeSwimController(geometry=geometry, mode="cache", cache_steps=2, kernel="sdpa_mask")
        with torch.no_grad(), apply_freeswim(transformer, controller):
            controller.run_pass(transformer, latents, timestep, cond, guide)
            expected = controller.run_pass(transformer, latents, timestep, cond, cached)
            transformer.compile_repeated_blocks(fullgraph=False, dynamic=False, backend="eager")
            torch._dynamo.reset()
            before = counters["stats"]["unique_graphs"]
            controller.run_pass(transformer, latents, timestep, cond, guide)
            out = controller.run_pass(transformer, latents, timestep, cond, cached)
            torch.testing.assert_close(out, expected, rtol=0, atol=0)
        return counters["stats"]["unique_graphs"] - before

    two, four = graphs_compiled(2), graphs_compiled(4)
    assert two == four, f"{two} graphs for 2 blocks but {four} for 4: the compiled blocks specialise per block"
