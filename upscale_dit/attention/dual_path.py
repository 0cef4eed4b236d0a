"""FreeSwim's dual path as diffusers attention processors plus a per-pass controller.

Each transformer call runs either one branch (batch 1: the window branch) or two (batch 2: element 0 window
branch, element 1 full branch on the same latent). Self-attention: window attention for the window branch,
dense attention for the full branch, both with the FreeSwim scale. Cross-attention either is the branch's
own, or is *overridden*: computed from the full branch's queries only and fed to every element, possibly
stored in, or read from, the cross-attention cache.

What runs on each pass is decided on the host by :class:`FreeSwimController` from integers (pass name, step
index), never inside the model. Two semantics (spec §3):
* ``exact``: every pass is dual with override (the reference's no-cache code);
* ``cache``: conditional passes at steps ``i % k == 0`` are dual with override and refresh the cache; other
  conditional passes are single-branch and read the cache; unconditional passes are plain window passes.
Where the full branch would duplicate the window branch (the window covers the grid) one branch runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..engine.sampler import PassController, PassInfo
from .cross_cache import CrossAttnCache
from .geometry import TokenGeometry
from .kernels import choose_kernel, window_attention
from .layout import from_layout, to_layout
from .plan import AttentionPlanHandle, install_plan
from .projections import check_text_only, dense_attention, project_keys_values, project_out, project_queries

CrossMode = Literal["own", "override", "cached"]
DualMode = Literal["exact", "cache"]


@dataclass(frozen=True, slots=True)
class PassPlan:
    """What one transformer call computes."""

    dual: bool  # batch 2: window branch + full branch
    cross: CrossMode
    store: bool = False  # write the overridden cross-attention into the cache


class FreeSwimController(PassController):
    """Decides, per pass, which branches run and where cross-attention comes from; runs the pass accordingly."""

    def __init__(self, *, geometry: TokenGeometry, mode: DualMode = "cache", cache_steps: int = 2,
                 scale: float | None = None, kernel: str = "auto", cache: CrossAttnCache | None = None) -> None:
        if mode not in ("exact", "cache"):
            raise ValueError(f"`mode` must be exact or cache, got {mode!r}")
        if cache_steps < 1:
            raise ValueError(f"`cache_steps` must be >= 1, got {cache_steps}")
        self.geometry = geometry
        self.mode = mode
        self.cache_steps = cache_steps
        self.scale = scale
        self.kernel = kernel
        self.cache = cache if cache is not None else CrossAttnCache()
        self.current: PassPlan | None = None
        self.chosen_kernel: str | None = None  # resolved from `kernel` on first use, recorded in the sidecar
        self.history: list[tuple[str, int, PassPlan]] = []

    def begin_generation(self) -> None:
        self.cache.reset()
        self.history.clear()

    def plan(self, info: PassInfo) -> PassPlan:
        if self.geometry.is_full:  # the full branch would be an exact copy of the window branch
            return PassPlan(dual=False, cross="own")
        if self.mode == "exact":
            return PassPlan(dual=True, cross="override")
        if info.name == "cond":
            if info.step_index % self.cache_steps == 0:
                return PassPlan(dual=True, cross="override", store=True)
            return PassPlan(dual=False, cross="cached")
        return PassPlan(dual=False, cross="own")

    @torch.compiler.disable
    def run_pass(self, transformer, model_input: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                 info: PassInfo) -> torch.Tensor:
        plan = self.plan(info)
        self.history.append((info.name, info.step_index, plan))
        if plan.store:
            self.cache.reset()  # free the stale set before the refresh allocates a new one
            self.cache.refreshes += 1
        if plan.dual:
            model_input, timestep, embeds = (torch.cat([x, x]) for x in (model_input, timestep, embeds))
        self.current = plan
        try:
            out = super().run_pass(transformer, model_input, timestep, embeds, info)
        finally:
            self.current = None
        return out[:1] if plan.dual else out

    def require_plan(self) -> PassPlan:
        if self.current is None:
            raise RuntimeError("FreeSwim processors ran outside a controller pass; call the transformer through "
                               "FreeSwimController.run_pass (the sampler's denoise does)")
        return self.current


class FreeSwimSelfAttnProcessor:
    """Self-attention: window branch (element 0) through a window kernel, full branch (element 1) dense."""

    def __init__(self, controller: FreeSwimController) -> None:
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        check_text_only(attn)
        ctl = self.controller
        plan = ctl.require_plan()
        q = project_queries(attn, hidden_states, rotary_emb)
        k, v = project_keys_values(attn, hidden_states, rotary_emb)
        if ctl.geometry.is_full:
            heads = dense_attention(q, k, v, scale=ctl.scale)
        else:
            window = self._window(q[:1], k[:1], v[:1])
            if plan.dual:
                full = dense_attention(q[1:], k[1:], v[1:], scale=ctl.scale)
                heads = torch.cat([window, full])
            else:
                heads = window
        return project_out(attn, heads.type_as(q))

    def _window(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Window attention; block-sparse kernels get tokens in tile-major order, where blocks are truly sparse."""
        ctl = self.controller
        kernel = ctl.chosen_kernel or choose_kernel(q, ctl.geometry, ctl.kernel)
        ctl.chosen_kernel = kernel
        if kernel != "flex":
            return window_attention(q, k, v, ctl.geometry, scale=ctl.scale, kernel=kernel)
        q, k, v = (to_layout(x, ctl.geometry, "tiled") for x in (q, k, v))
        out = window_attention(q, k, v, ctl.geometry, scale=ctl.scale, kernel=kernel, layout="tiled")
        return from_layout(out, ctl.geometry, "tiled")


class FreeSwimCrossAttnProcessor:
    """Text cross-attention, own or overridden by the full branch's (optionally cached, pre-projection)."""

    def __init__(self, controller: FreeSwimController, block: int) -> None:
        self.controller = controller
        self.block = block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        check_text_only(attn)
        ctl = self.controller
        plan = ctl.require_plan()
        batch = hidden_states.shape[0]
        if plan.cross == "cached":
            heads = _read_cache(self, hidden_states.device).expand(batch, -1, -1)
            return attn.to_out[1](attn.to_out[0](heads))
        source = hidden_states[-1:] if plan.cross == "override" else hidden_states
        context = encoder_hidden_states[-1:] if plan.cross == "override" else encoder_hidden_states
        q = project_queries(attn, source)
        k, v = project_keys_values(attn, context)
        heads = dense_attention(q, k, v).type_as(q).flatten(2, 3)
        if plan.store:
            _write_cache(self, heads)
        if plan.cross == "override":
            heads = heads.expand(batch, -1, -1)
        return attn.to_out[1](attn.to_out[0](heads))


# The cache is reached through these two compile-opaque calls: `torch.compile` of the repeated blocks would
# otherwise read each processor's block index as a constant and compile one graph per block (30 for Wan, past
# dynamo's recompile limit, after which the blocks silently run eagerly).
@torch.compiler.disable
def _read_cache(processor: FreeSwimCrossAttnProcessor, device: torch.device) -> torch.Tensor:
    return processor.controller.cache.get(processor.block, device)


@torch.compiler.disable
def _write_cache(processor: FreeSwimCrossAttnProcessor, heads: torch.Tensor) -> None:
    processor.controller.cache.put(processor.block, heads)


def apply_freeswim(transformer, controller: FreeSwimController) -> AttentionPlanHandle:
    """Install FreeSwim processors on every attention layer of a Wan transformer.

    Example:
        >>> handle = apply_freeswim(transformer, FreeSwimController(geometry=geometry))  # doctest: +SKIP
        >>> ...  # sample with denoise(..., controller=controller)
        >>> handle.remove()
    """
    processors = {}
    for name in transformer.attn_processors:
        parts = name.split(".")
        if "attn1" in parts:
            processors[name] = FreeSwimSelfAttnProcessor(controller)
        elif "attn2" in parts:
            processors[name] = FreeSwimCrossAttnProcessor(controller, block=int(parts[parts.index("blocks") + 1]))
        else:
            raise RuntimeError(f"unexpected attention layer {name!r}: FreeSwim knows Wan's attn1/attn2 only")
    return install_plan(transformer, "freeswim", processors)
