"""``estimate_cost``: tokens, parameters, FLOPs and bytes of one sampling run, from configs alone.

The same pure function feeds ``udit profile`` and the engine's pre-flight check. A run is one sampling stage at one
size (a FreeSwim generation is two: the native base and the refinement; call it once per stage). Each method is a
schedule of transformer calls, and each call a list of branches (``flops.Branch``):

- direct: one dense branch per pass; 2 passes per step with classifier-free guidance (cond + uncond), else 1.
- FreeSwim ``exact``: every pass is a batch-2 call — the full branch (dense, computes the text cross-attention) and
  the window branch (window self-attention, takes the full branch's cross-attention output).
- FreeSwim ``cache`` with k: cond passes at steps 0, k, 2k, … are the batch-2 call above and store the full branch's
  pre-projection cross-attention (``cross_attn_cache_bytes``); other cond passes are window-only and read the
  cache (output projection only); uncond passes are plain window passes with their own cross-attention.
- GCLF: one branch whose queries see the local window's fine keys and every frame pooled by d, in one softmax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .attention import KeyCounter, attention_flops, gclf_keys, inward_window_keys
from .dims import Record, TokenCounts, TransformerDims, VaeDims, dtype_bytes, token_counts
from .flops import Branch, ForwardFlops, forward_flops, text_encoder_flops
from .memory import (
    ActivationBytes,
    AttentionKernel,
    attention_workspace_bytes,
    cross_attn_cache_bytes,
    transformer_activation_bytes,
    video_bytes,
)
from .params import (
    ParamCounts,
    count_text_encoder_params,
    count_transformer_params,
    lora_param_count,
    text_encoder_weight_bytes,
    transformer_weight_bytes,
)
from .vae import VaeMemory, VaeTiling, count_vae_params, estimate_vae_memory, vae_flops

__all__ = [
    "CostEstimate",
    "Direct",
    "FlopEstimate",
    "FreeSwim",
    "Gclf",
    "LoraSpec",
    "MemoryEstimate",
    "ModelSpec",
    "RunSpec",
    "estimate_cost",
    "time_floor",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Direct:
    """Stock dense attention at the target size: the baseline both methods improve on."""

    name: ClassVar[str] = "direct"


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeSwim:
    """FreeSwim's dual path: inward window branch + full branch whose cross-attention overrides the window's.

    Attributes:
        window: (win_h, win_w) in tokens, e.g. the native grid (30, 52) for Wan2.1-1.3B.
        mode: ``"exact"`` runs the full branch on every pass; ``"cache"`` only on cond passes every
            ``refresh_every`` steps (fewer FLOPs, plus the cache's memory).
        refresh_every: k of cache mode; larger is cheaper and staler.
        keys: keys per window query; default the exact inward count. Pass ``keys_from_block_density(...)`` fed
            by the geometry module's ``block_density`` for what a block-sparse kernel really computes.
        cache_dtype: dtype of the cached cross-attention outputs.
    """

    window: tuple[int, int]
    mode: Literal["exact", "cache"] = "cache"
    refresh_every: int = 2
    keys: KeyCounter | None = None
    cache_dtype: str = "bfloat16"
    name: ClassVar[str] = "freeswim"

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "cache"):
            raise ValueError(f"`mode` must be 'exact' or 'cache', got {self.mode!r}")
        if self.refresh_every < 1:
            raise ValueError(f"`refresh_every` must be ≥ 1, got {self.refresh_every}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Gclf:
    """ViBe's GCLF attention: fine keys in a local window + all keys average-pooled by ``pool``, one softmax."""

    window: tuple[int, int]
    pool: int = 2
    keys: KeyCounter | None = None
    name: ClassVar[str] = "gclf"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoraSpec:
    """A LoRA loaded on the transformer (inference weights; ``memory.lora_training_bytes`` for training)."""

    rank: int
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
    dtype: str = "bfloat16"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """The three config dicts (as in each component's config.json) and the dtypes the components run in."""

    transformer: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    transformer_dtype: str = "bfloat16"
    text_encoder_dtype: str = "bfloat16"
    vae_dtype: str = "float32"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One sampling stage: size, steps, guidance, method, and the memory-relevant runtime choices.

    ``steps`` is the number of denoising steps actually run (35 for strength 0.7 of 50). ``attention_kernel``
    defaults to flash for dense attention and flex for windowed methods. ``encode_input`` adds a VAE encode of an
    input clip at this size (video-to-video). ``vae_stream`` means decoded frames leave per chunk instead of
    diffusers holding the whole clip.
    """

    height: int
    width: int
    frames: int = 81
    steps: int = 50
    guidance: bool = True
    text_len: int = 512
    batch: int = 1
    method: Direct | FreeSwim | Gclf = field(default_factory=Direct)
    attention_kernel: AttentionKernel | None = None
    block_size: int = 128
    vae_tiling: VaeTiling | None = field(default_factory=VaeTiling)
    vae_stream: bool = False
    encode_input: bool = False
    lora: LoraSpec | None = None


@dataclass(frozen=True, slots=True)
class FlopEstimate(Record):
    """FLOPs per transformer call kind, per step kind and per run (transformer, text encoder, VAE)."""

    per_forward: dict[str, ForwardFlops]
    forwards_per_run: dict[str, int]
    per_step: dict[str, int]
    keys_per_query: dict[str, float]
    attention_per_forward: dict[str, int]
    transformer: int
    text_encoder: int
    vae_decode: int
    vae_encode: int

    _derived: ClassVar[tuple[str, ...]] = ("total",)

    @property
    def total(self) -> int:
        return self.transformer + self.text_encoder + self.vae_decode + self.vae_encode


@dataclass(frozen=True, slots=True)
class MemoryEstimate(Record):
    """Bytes by item; ``denoise_peak`` is the transformer's working set while sampling (text encoder and VAE
    offloaded or not yet loaded — add ``weights`` entries for whatever stays resident)."""

    weights: dict[str, int]
    activations: ActivationBytes
    attention_workspace: int
    cross_attn_cache: int
    latents: int
    vae_decode: VaeMemory
    vae_encode: VaeMemory | None
    video_uint8: int
    video_fp32: int

    _derived: ClassVar[tuple[str, ...]] = ("denoise_peak",)

    @property
    def denoise_peak(self) -> int:
        return (self.weights["transformer"] + self.weights["lora"] + self.activations.peak
                + self.attention_workspace + self.cross_attn_cache + self.latents)


@dataclass(frozen=True, slots=True)
class CostEstimate(Record):
    """Everything ``estimate_cost`` derives for one run."""

    method: str
    tokens: TokenCounts
    params: ParamCounts
    flops: FlopEstimate
    memory: MemoryEstimate


def _schedule(method: Direct | FreeSwim | Gclf, n: int, window_keys: float, steps: int, guidance: bool
              ) -> tuple[dict[str, list[Branch]], dict[str, int], dict[str, dict[str, int]]]:
    """(branches of each call kind, calls per run, calls per step kind)."""
    passes = 2 if guidance else 1
    if isinstance(method, Direct):
        return {"dense": [Branch(n)]}, {"dense": passes * steps}, {"step": {"dense": passes}}
    if isinstance(method, Gclf):
        return {"gclf": [Branch(window_keys)]}, {"gclf": passes * steps}, {"step": {"gclf": passes}}
    dual = [Branch(n, "own"), Branch(window_keys, "reused")]
    if method.mode == "exact":
        return {"dual": dual}, {"dual": passes * steps}, {"step": {"dual": passes}}
    calls = {"dual": dual, "window_cached": [Branch(window_keys, "cached")]}
    refresh = math.ceil(steps / method.refresh_every)
    per_run = {"dual": refresh, "window_cached": steps - refresh}
    per_step = {"refresh": {"dual": 1}, "reuse": {"window_cached": 1}}
    if guidance:
        calls["window"] = [Branch(window_keys, "own")]
        per_run["window"] = steps
        per_step["refresh"]["window"] = per_step["reuse"]["window"] = 1
    return calls, per_run, per_step


def estimate_cost(model: ModelSpec, run: RunSpec) -> CostEstimate:
    """Estimate tokens, parameters, FLOPs and bytes of ``run`` on ``model`` without weights or a GPU.

    Example (Wan2.1-1.3B configs as read from its ``transformer/``, ``vae/``, ``text_encoder/`` config.json)::

        model = ModelSpec(transformer=t_cfg, vae=v_cfg, text_encoder=te_cfg)
        run = RunSpec(height=1088, width=1920, steps=35, method=FreeSwim(window=(31, 53), refresh_every=5))
        est = estimate_cost(model, run)
        est.memory.cross_attn_cache        # 15,792,537,600 bytes (15.8 GB)
        time_floor(est.flops.transformer, 550)
    """
    tdims = TransformerDims.from_config(model.transformer)
    vdims = VaeDims.from_config(model.vae)
    tokens = token_counts(tdims, vdims, height=run.height, width=run.width, frames=run.frames, text_len=run.text_len)
    grid, n = tokens.grid, tokens.transformer_tokens
    method = run.method

    keys: dict[str, float] = {"dense": float(n)}
    window_keys = float(n)
    if isinstance(method, FreeSwim):
        keys["window_exact"] = float(inward_window_keys(grid, method.window))
        window_keys = method.keys(grid) if method.keys else keys["window_exact"]
        keys["window"] = window_keys
    elif isinstance(method, Gclf):
        keys["gclf_exact"] = float(gclf_keys(grid, method.window, method.pool))
        window_keys = method.keys(grid) if method.keys else keys["gclf_exact"]
        keys["gclf"] = window_keys

    calls, per_run, per_step_calls = _schedule(method, n, window_keys, run.steps, run.guidance)
    per_forward = {
        kind: forward_flops(tdims, num_tokens=n, text_tokens=run.text_len, branches=branches)
        for kind, branches in calls.items()
    }
    transformer = run.batch * sum(per_forward[k].total * c for k, c in per_run.items())
    per_step = {
        step: run.batch * sum(per_forward[k].total * c for k, c in kinds.items())
        for step, kinds in per_step_calls.items()
    }
    prompts = run.batch * (2 if run.guidance else 1)
    size = dict(height=run.height, width=run.width, frames=run.frames, tiling=run.vae_tiling)
    flops = FlopEstimate(
        per_forward=per_forward,
        forwards_per_run={k: run.batch * c for k, c in per_run.items()},
        per_step=per_step,
        keys_per_query=keys,
        attention_per_forward={
            branch: attention_flops(n, k, tdims.heads, tdims.head_dim) * tdims.layers for branch, k in keys.items()
        },
        transformer=transformer,
        text_encoder=prompts * text_encoder_flops(model.text_encoder, run.text_len),
        vae_decode=run.batch * vae_flops(model.vae, direction="decode", **size),
        vae_encode=run.batch * vae_flops(model.vae, direction="encode", **size) if run.encode_input else 0,
    )

    lora_params = lora_param_count(model.transformer, run.lora.rank, run.lora.target_modules) if run.lora else 0
    params = ParamCounts(
        transformer=count_transformer_params(model.transformer),
        text_encoder=count_text_encoder_params(model.text_encoder),
        vae=count_vae_params(model.vae),
        lora=lora_params,
    )
    memory = _memory(model, run, tdims, tokens, calls, params)
    return CostEstimate(method=method.name, tokens=tokens, params=params, flops=flops, memory=memory)


def _memory(model: ModelSpec, run: RunSpec, tdims: TransformerDims, tokens: TokenCounts,
            calls: Mapping[str, list[Branch]], params: ParamCounts) -> MemoryEstimate:
    n = tokens.transformer_tokens
    windowed = not isinstance(run.method, Direct)
    kernel = run.attention_kernel or ("flex" if windowed else "flash")
    # The largest call decides the activation peak: the batch-2 dual-path call for FreeSwim.
    call_batch = run.batch * max(len(branches) for branches in calls.values())
    vae_args = dict(height=run.height, width=run.width, frames=run.frames, dtype=model.vae_dtype,
                    tiling=run.vae_tiling)
    cache = 0
    if isinstance(run.method, FreeSwim) and run.method.mode == "cache":
        cache = run.batch * cross_attn_cache_bytes(model.transformer, n, run.method.cache_dtype)
    return MemoryEstimate(
        weights={
            "transformer": transformer_weight_bytes(model.transformer, model.transformer_dtype),
            "text_encoder": text_encoder_weight_bytes(model.text_encoder, model.text_encoder_dtype),
            "vae": params.vae * dtype_bytes(model.vae_dtype),
            "lora": params.lora * dtype_bytes(run.lora.dtype) if run.lora else 0,
        },
        activations=transformer_activation_bytes(
            model.transformer, num_tokens=n, text_tokens=run.text_len, batch=call_batch,
            dtype=model.transformer_dtype,
        ),
        attention_workspace=attention_workspace_bytes(
            kernel, num_tokens=n, heads=tdims.heads, batch=call_batch, dtype=model.transformer_dtype,
            block_size=run.block_size,
        ),
        cross_attn_cache=cache,
        # Pipelines keep latents (and the scheduler's history) in fp32: the latent, the model output, and
        # UniPC's order-2 history of model outputs — about four latent-sized fp32 tensors.
        latents=4 * run.batch * tokens.latent_elements * 4,
        vae_decode=estimate_vae_memory(model.vae, direction="decode", stream=run.vae_stream, **vae_args),
        vae_encode=estimate_vae_memory(model.vae, direction="encode", **vae_args) if run.encode_input else None,
        video_uint8=run.batch * video_bytes(run.frames, run.height, run.width, "uint8"),
        video_fp32=run.batch * video_bytes(run.frames, run.height, run.width, "float32"),
    )


def time_floor(flops: int | float, tflops: float) -> float:
    """Seconds ``flops`` take at a sustained ``tflops`` TFLOP/s: a lower bound, not a prediction (e.g. ~550 for
    flash SDPA / GEMMs on an H100 in bf16, ~160–210 for FlexAttention per specs/freeswim.md)."""
    if tflops <= 0:
        raise ValueError(f"`tflops` must be positive, got {tflops}")
    return flops / (tflops * 1e12)

