"""A generate run as the engine executes it, stage by stage, and its estimated FLOPs and device bytes per stage.

``estimate_cost`` prices one sampling stage; a ``udit generate`` run is a sequence of stages, each with its own
working set on top of whatever stays resident. This module lays the run out exactly as ``generation._generate``
does, with the same stage keys ``StageProgress`` times and measures, so estimate and measurement line up:

- ``load``: every component lands on the device (on the CPU with ``--offload model``);
- ``text_encoding``: UMT5 on the prompt (and the negative prompt when any stage guides);
- direct: ``denoise`` at the target size;
- freeswim: ``base_denoise`` at the model's native size, ``base_decode`` (whole frames, kept as a float video),
  ``upsample_encode`` (bilinear upsampling to the target size, VAE encode, tiled like the decode), and
  ``refine`` with ``FreeSwim(window, mode, refresh_every)`` at the target size;
- ``decode_and_write``: the engine's streamed decode (per latent frame untiled; per tile, one row of tiles kept,
  when tiled) — never diffusers' whole-clip decode.

Bytes on the device per stage = the weights resident there (all components, or only the active one with
offload) + tensors the engine holds across stages (embeddings, latents, the base video) + the stage's own working
set from the cost model (activations, attention workspace, FreeSwim cache, VAE working set and feature cache).
On a CPU run the same sum is the growth of the resident set over the process's baseline.

The inputs are plain numbers (:class:`RunSettings`), so advice can re-plan with other settings;
:func:`settings_from_resolved` reads them off a resolved ``udit generate`` config. No torch import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .architectures import Architecture, architecture_for
from .attention import KeyCounter
from .cost import CostEstimate, Direct, FreeSwim, Gclf, LoraSpec, ModelSpec, RunSpec, estimate_cost
from .dims import Record, TextEncoderDims, TransformerDims, VaeDims, dtype_bytes, dtype_name
from .flops import text_encoder_flops
from .memory import LoraTrainingBytes, lora_training_bytes, video_bytes
from .vae import VaeTiling, estimate_vae_memory, vae_flops

__all__ = [
    "FreeSwimPlan",
    "RelayPlan",
    "PlanEstimate",
    "RunSettings",
    "StageEstimate",
    "TrainEstimate",
    "estimate_plan",
    "estimate_training_step",
    "model_spec",
    "settings_from_resolved",
]

StageKind = Literal["load", "text", "denoise", "vae_decode", "vae_encode"]
Device = Literal["cuda", "cpu"]


@dataclass(frozen=True, slots=True)
class FreeSwimPlan:
    """FreeSwim refinement settings that cost something (resolved from ``method.freeswim``)."""

    window: tuple[int, int]
    mode: Literal["exact", "cache"] = "cache"
    refresh_every: int = 2
    steps: int = 35  # steps actually run: int(scheduled steps × strength)
    guidance: bool = True
    cache_device: Literal["auto", "gpu", "cpu"] = "auto"
    keys: KeyCounter | None = None  # keys per window query; None = the exact inward count


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """Relay LoRA generation: GCLF attention (native-grid window + every frame pooled by ``pool``) and the stage-2
    LoRA, from noise at the target size or (``from_base``) refining an upsampled native-size base."""

    window: tuple[int, int]
    pool: int = 2
    steps: int = 50  # steps actually run (from_base: int(scheduled × strength))
    guidance: bool = True
    from_base: bool = False
    rank: int = 32
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything about a run that its cost depends on, as plain numbers.

    ``height``/``width`` are the generation size (multiples of 16); ``native_*`` the model's training size (the
    base stage of coarse-to-fine methods). ``vae_tile`` is the VAE tile in pixels (stride ¾ of it), ``None`` for
    whole frames. ``prompts`` is 2 when any stage guides (the negative prompt is encoded too).
    """

    model: str
    arch: Architecture
    device: Device
    dtype: str
    method: Literal["direct", "freeswim", "relay"]
    height: int
    width: int
    native_height: int
    native_width: int
    frames: int
    steps: int
    guidance: bool
    text_len: int
    prompts: int
    offload: bool = False
    vae_tile: int | None = None
    freeswim: FreeSwimPlan | None = None
    relay: RelayPlan | None = None
    temporal_factor: int = 4

    @property
    def vae_tiling(self) -> VaeTiling | None:
        if self.vae_tile is None:
            return None
        stride = self.vae_tile * 3 // 4
        return VaeTiling(tile=(self.vae_tile, self.vae_tile), stride=(stride, stride))

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)


def model_spec(settings: RunSettings) -> ModelSpec:
    a = settings.arch
    return ModelSpec(transformer=a.transformer, vae=a.vae, text_encoder=a.text_encoder,
                     transformer_dtype=settings.dtype, text_encoder_dtype=settings.dtype, vae_dtype="float32")


class _Summed(Record):
    """Mixin: ``peak`` is the sum of ``device_bytes`` and ``total_flops`` the sum of ``flops``."""

    __slots__ = ()
    _derived: ClassVar[tuple[str, ...]] = ("peak", "total_flops")

    @property
    def peak(self) -> int:
        return sum(self.device_bytes.values())

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


@dataclass(frozen=True, slots=True)
class StageEstimate(_Summed):
    """One stage: what runs, its FLOPs, and the bytes on the device while it runs (``peak`` is their sum).

    ``device_bytes`` names every term (``weights.transformer``, ``activations``, ``cross_attn_cache``, …);
    ``host_bytes`` what the plan keeps in CPU memory instead (offloaded weights, a CPU-side FreeSwim cache).
    ``flops`` splits the stage's FLOPs (transformer attention per branch and linear, VAE, text encoder).
    """

    key: str
    label: str
    kind: StageKind
    tokens: int | None
    steps: int | None
    forwards: dict[str, int]
    flops: dict[str, int]
    device_bytes: dict[str, int]
    host_bytes: dict[str, int]


@dataclass(frozen=True, slots=True)
class PlanEstimate(Record):
    """Every stage of a run, the cost model's full estimate of each sampling stage, and the run's peak."""

    model: str
    method: str
    device: str
    dtype: str
    stages: list[StageEstimate]
    costs: dict[str, CostEstimate] = field(default_factory=dict)

    _derived: ClassVar[tuple[str, ...]] = ("peak", "peak_stage", "total_flops")

    @property
    def peak(self) -> int:
        return max(s.peak for s in self.stages)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda s: s.peak).key

    @property
    def total_flops(self) -> int:
        return sum(s.total_flops for s in self.stages)

    def stage(self, key: str) -> StageEstimate:
        return next(s for s in self.stages if s.key == key)


def _latent_bytes(settings: RunSettings, height: int, width: int) -> int:
    """One fp32 latent ``[1, z, F', h/8, w/8]`` (the sampler keeps latents in fp32)."""
    v = VaeDims.from_config(settings.arch.vae)
    lf = (settings.frames - 1) // v.scale_factor_temporal + 1
    return v.z_dim * lf * (height // v.scale_factor_spatial) * (width // v.scale_factor_spatial) * 4


def _text_encoder_activation_bytes(config: Mapping[str, Any], *, tokens: int, batch: int, dtype: str) -> int:
    """Rough live set of one UMT5 layer (eager attention): hidden states and the gated FFN's three d_ff tensors,
    plus scores, softmax and the shared position bias (B·H·S² each). Not calibrated; a few hundred MB for
    UMT5-XXL at 512 tokens — small beside its 10.6 GiB of weights."""
    t = TextEncoderDims.from_config(config)
    a = dtype_bytes(dtype)
    hidden = batch * tokens * (4 * t.d_model + (3 if t.gated else 2) * t.d_ff) * a
    scores = (2 * batch + 1) * t.heads * tokens * tokens * a
    return hidden + scores


def _weights(settings: RunSettings, cost: CostEstimate) -> dict[str, int]:
    w = cost.memory.weights
    return {"transformer": w["transformer"], "text_encoder": w["text_encoder"], "vae": w["vae"]}


def _resident(settings: RunSettings, weights: Mapping[str, int], active: str | None
              ) -> tuple[dict[str, int], dict[str, int]]:
    """(weights on the device, weights in host memory) while ``active`` runs (``None``: while loading)."""
    offload = settings.offload and settings.device == "cuda"
    on, off = {}, {}
    for name, nbytes in weights.items():
        (on if not offload or name == active else off)[f"weights.{name}"] = nbytes
    return on, off


def _engine_decode(settings: RunSettings, height: int, width: int) -> dict[str, int]:
    """The engine's streamed decode (``engine.vae.decode_frames``): working set, feature cache and what it holds.

    Untiled: one latent frame at a time, its 4 decoded frames leave at once (``stream=True``). Tiled: per tile all
    frames are decoded and concatenated (the list and the tile, 2 tiles), and one row of finished tiles (the
    columns) waits for blending, so the tile outputs add ``columns + 1`` tiles of ``frames × tile² × 3`` fp32.
    """
    tiling = settings.vae_tiling
    mem = estimate_vae_memory(settings.arch.vae, direction="decode", height=height, width=width,
                              frames=settings.frames, tiling=tiling, stream=True)
    out = {"vae_working": mem.working, "vae_feature_cache": mem.feature_cache}
    tiled = tiling is not None and (height > tiling.tile[0] or width > tiling.tile[1])
    if tiled:
        tile = min(tiling.tile[0], height) * min(tiling.tile[1], width)
        columns = math.ceil(width / tiling.stride[1])
        out["vae_tiles"] = (columns + 1) * video_bytes(settings.frames, 1, tile, "float32")
        # A finished row of tiles is concatenated into one band (stride rows x full width, fp32) and converted to
        # uint8 through elementwise temporaries: 2.5 band copies, measured (H200, 1080p, 81 frames: 0.85 GiB).
        out["vae_row_band"] = video_bytes(settings.frames, min(tiling.stride[0], height), width, "float32") * 5 // 2
        if settings.device == "cpu":  # the uint8 canvas the rows are written into lives in host memory
            out["video_uint8"] = video_bytes(settings.frames, height, width, "uint8")
    else:
        out["vae_outputs"] = mem.outputs
    return out


# Self-attention branches of each call kind of ``cost._schedule`` (direct: dense; FreeSwim: dual = dense + window).
_BRANCHES = {"dense": ("dense",), "dual": ("dense", "window"), "window_cached": ("window",), "window": ("window",),
             "gclf": ("gclf",)}


def _denoise_flops(cost: CostEstimate) -> dict[str, int]:
    """A stage's transformer FLOPs: self-attention per branch (dense, window), text cross-attention, linear."""
    f = cost.flops
    out: dict[str, int] = {}
    for kind, calls in f.forwards_per_run.items():
        for branch in _BRANCHES[kind]:
            key = f"attention.{branch}"
            out[key] = out.get(key, 0) + calls * f.attention_per_forward[branch]
        out["attention.cross"] = out.get("attention.cross", 0) + calls * f.per_forward[kind].cross_attn_core
        out["linear"] = out.get("linear", 0) + calls * f.per_forward[kind].linear
    return out


def _cache_on_device(settings: RunSettings, fs: FreeSwimPlan) -> bool:
    """Mirror ``methods.freeswim.choose_cache_storage``: `auto` puts the cache in pinned host memory on a GPU run
    (assuming the host has room for it, which the engine checks at run time; otherwise it stays on the GPU)."""
    if settings.device == "cpu":
        return True  # a CPU run keeps it in the same (host) memory
    return fs.cache_device == "gpu"


def estimate_plan(settings: RunSettings, *, budget: int | None = None) -> PlanEstimate:
    """Per-stage FLOPs and device bytes of ``settings`` (``budget``: the device's memory, for the cache choice)."""
    model = model_spec(settings)
    a = dtype_bytes(settings.dtype)
    tdims = TransformerDims.from_config(settings.arch.transformer)
    tiling = settings.vae_tiling
    target = RunSpec(height=settings.height, width=settings.width, frames=settings.frames, steps=settings.steps,
                     guidance=settings.guidance, text_len=settings.text_len, method=Direct(), vae_tiling=tiling,
                     vae_stream=True)
    probe = estimate_cost(model, dataclasses.replace(target, steps=1))
    weights = _weights(settings, probe)
    embeds = settings.prompts * settings.text_len * tdims.text_dim * a
    stages: list[StageEstimate] = []
    costs: dict[str, CostEstimate] = {}

    on, off = _resident(settings, weights, None)
    stages.append(StageEstimate("load", "load weights", "load", None, None, {}, {}, on, off))

    on, off = _resident(settings, weights, "text_encoder")
    te_act = _text_encoder_activation_bytes(settings.arch.text_encoder, tokens=settings.text_len,
                                            batch=settings.prompts, dtype=settings.dtype)
    te_flops = settings.prompts * text_encoder_flops(settings.arch.text_encoder, settings.text_len)
    stages.append(StageEstimate("text_encoding", "encode prompts", "text", settings.text_len, None, {},
                                {"text_encoder": te_flops}, {**on, "activations": te_act, "embeddings": embeds}, off))
    weights.pop("text_encoder")  # the engine releases the text encoder once the prompts are embedded

    def denoise_stage(key: str, label: str, run: RunSpec, held: dict[str, int], budget_left: int | None
                      ) -> StageEstimate:
        cost = estimate_cost(model, run)
        costs[key] = cost
        on, off = _resident(settings, weights, "transformer")
        m = cost.memory
        device = {**on, "embeddings": embeds, **held}
        if m.weights["lora"]:
            device["weights.lora"] = m.weights["lora"]
        device.update(activations=m.activations.peak, attention_workspace=m.attention_workspace, latents=m.latents)
        host = dict(off)
        if m.cross_attn_cache:
            fs = settings.freeswim
            assert fs is not None
            if _cache_on_device(settings, fs):
                device["cross_attn_cache"] = m.cross_attn_cache
            else:
                host["cross_attn_cache"] = m.cross_attn_cache
                device["cross_attn_cache_block"] = m.cross_attn_cache // tdims.layers  # one block in flight
        return StageEstimate(key, label, "denoise", cost.tokens.transformer_tokens, run.steps,
                             dict(cost.flops.forwards_per_run), _denoise_flops(cost), device, host)

    final_latent = _latent_bytes(settings, settings.height, settings.width)

    def base_stages() -> dict[str, int]:
        """Native-size base, its whole-frame decode, upsampling and encode; returns what the refinement holds."""
        nh, nw = settings.native_height, settings.native_width
        base = dataclasses.replace(target, height=nh, width=nw, vae_tiling=None)
        stages.append(denoise_stage("base_denoise", "base (native size, dense)", base, {}, budget))
        base_video = video_bytes(settings.frames, nh, nw, "float32")
        dec = estimate_vae_memory(settings.arch.vae, direction="decode", height=nh, width=nw, frames=settings.frames,
                                  tiling=None, stream=False)
        on, off = _resident(settings, weights, "vae")
        stages.append(StageEstimate(
            "base_decode", "decode base (whole frames)", "vae_decode", None, None, {},
            {"vae_decode": vae_flops(settings.arch.vae, direction="decode", height=nh, width=nw,
                                     frames=settings.frames)},
            {**on, "embeddings": embeds, "base_latents": _latent_bytes(settings, nh, nw),
             "vae_feature_cache": dec.feature_cache, "vae_working_and_video": dec.peak - dec.feature_cache}, off))
        enc = estimate_vae_memory(settings.arch.vae, direction="encode", height=settings.height,
                                  width=settings.width, frames=settings.frames, tiling=tiling)
        stages.append(StageEstimate(
            "upsample_encode", "upsample + encode", "vae_encode", None, None, {},
            {"vae_encode": vae_flops(settings.arch.vae, direction="encode", height=settings.height,
                                     width=settings.width, frames=settings.frames, tiling=tiling)},
            {**on, "embeddings": embeds, "base_video": base_video,
             "upsampled_video": video_bytes(settings.frames, settings.height, settings.width, "float32"),
             "vae_working": enc.working, "vae_feature_cache": enc.feature_cache, "vae_outputs": enc.outputs}, off))
        return {"base_video": base_video, "clean_latents": final_latent}

    if settings.method == "direct":
        stages.append(denoise_stage("denoise", "denoise (target size, dense)", target, {}, budget))
    elif settings.method == "freeswim":
        fs = settings.freeswim
        if fs is None:
            raise ValueError("a freeswim run needs `settings.freeswim`")
        held = base_stages()
        method = FreeSwim(window=fs.window, mode=fs.mode, refresh_every=fs.refresh_every, keys=fs.keys,
                          cache_dtype=settings.dtype)
        refine = dataclasses.replace(target, steps=fs.steps, guidance=fs.guidance, method=method, encode_input=True)
        stages.append(denoise_stage("refine", f"refine (FreeSwim {fs.mode}, k={fs.refresh_every})", refine, held,
                                    budget))
    elif settings.method == "relay":
        rp = settings.relay
        if rp is None:
            raise ValueError("a relay run needs `settings.relay`")
        run = dataclasses.replace(target, steps=rp.steps, guidance=rp.guidance,
                                  method=Gclf(window=rp.window, pool=rp.pool),
                                  lora=LoraSpec(rank=rp.rank, target_modules=rp.targets, dtype=settings.dtype))
        if rp.from_base:
            held = base_stages()
            stages.append(denoise_stage("refine", f"refine (Relay LoRA, GCLF pool {rp.pool})",
                                        dataclasses.replace(run, encode_input=True), held, budget))
        else:
            stages.append(denoise_stage("denoise", f"denoise (Relay LoRA, GCLF pool {rp.pool})", run, {}, budget))
    else:
        raise ValueError(f"unknown method {settings.method!r}")
    on, off = _resident(settings, weights, "vae")
    stages.append(StageEstimate(
        "decode_and_write", "decode + write" + (" (tiled)" if tiling else ""), "vae_decode", None, None, {},
        {"vae_decode": vae_flops(settings.arch.vae, direction="decode", height=settings.height, width=settings.width,
                                 frames=settings.frames, tiling=tiling)},
        # The sampler's final latents and their denormalised copy in the VAE's dtype.
        {**on, "embeddings": embeds, "latents": 2 * final_latent, **_engine_decode(settings, settings.height,
                                                                               settings.width)}, off))
    return PlanEstimate(model=settings.model, method=settings.method, device=settings.device, dtype=settings.dtype,
                        stages=stages, costs=costs)


# ---- from a resolved `udit generate` config ---------------------------------------------------------------------


def settings_from_resolved(run: Any, *, device: Device, dtype: str, folder: Any = None,
                           tiling_auto_pixels: int | None = None) -> RunSettings:
    """``RunSettings`` of a ``generation.ResolvedRun`` as it would run on ``device`` in ``dtype``.

    ``tiling_auto_pixels``: the engine's threshold for ``--vae-tiling auto`` (``generation.TILING_AUTO_PIXELS``).
    """
    cfg, preset, size = run.config, run.preset, run.size
    rt = cfg.runtime
    tiled = rt.vae_tiling == "on" or (rt.vae_tiling == "auto" and tiling_auto_pixels is not None
                                      and size.gen_height * size.gen_width > tiling_auto_pixels)
    freeswim = None
    if cfg.method.name == "freeswim":
        fs = cfg.method.freeswim
        from ..methods.freeswim import window_of  # resolves `reference` / `native` / ROWSxCOLS

        freeswim = FreeSwimPlan(window=window_of(fs, preset), mode=fs.mode, refresh_every=fs.cache_steps,
                                steps=min(int(fs.steps * fs.strength), fs.steps), guidance=fs.guidance > 1.0,
                                cache_device=fs.cache_device)
    relay = None
    if cfg.method.name == "relay":
        rs = cfg.method.relay
        rank, targets, pool = 32, RelayPlan.__dataclass_fields__["targets"].default, rs.pool
        if rs.lora:  # the file's header says how it was trained
            from ..methods.relay import check_relay_file

            info = check_relay_file(rs.lora)
            rank, targets, pool = info.rank, tuple(info.targets), pool or info.pool
        steps = min(int(rs.steps * rs.strength), rs.steps) if rs.from_base else rs.steps
        relay = RelayPlan(window=preset.native_grid, pool=pool or 2, steps=steps, guidance=rs.guidance > 1.0,
                          from_base=bool(rs.from_base), rank=rank, targets=tuple(targets))
    return RunSettings(
        model=preset.name, arch=architecture_for(preset.name, folder), device=device, dtype=dtype_name(dtype),
        method=cfg.method.name, height=size.gen_height, width=size.gen_width, native_height=preset.native_height,
        native_width=preset.native_width, frames=run.frames, steps=cfg.sampling.steps,
        guidance=cfg.sampling.guidance > 1.0, text_len=cfg.sampling.max_sequence_length,
        prompts=2 if run.needs_negative() else 1, offload=rt.offload == "model" and device == "cuda",
        vae_tile=rt.vae_tile if tiled else None, freeswim=freeswim, relay=relay,
        temporal_factor=preset.vae_scale_temporal,
    )


# ---- a Relay training step --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainEstimate(_Summed):
    """One stage-2 Relay step (1-frame image latents at the stage-2 size, GCLF attention, LoRA + AdamW).

    ``activations`` is rough and not calibrated: with gradient checkpointing, every block's input is kept for the
    backward pass plus about two blocks' forward live set while one block is recomputed and differentiated;
    without it, about three times each block's forward live set, per block. FLOPs: forward + backward (2×), plus
    the recomputed forward with checkpointing.
    """

    height: int
    width: int
    tokens: int
    lora: LoraTrainingBytes
    device_bytes: dict[str, int]
    flops: dict[str, int]
    gradient_checkpointing: bool


def estimate_training_step(arch: Architecture, *, height: int, width: int, window: tuple[int, int], pool: int,
                           rank: int, targets: tuple[str, ...], dtype: str = "bfloat16", text_len: int = 512,
                           gradient_checkpointing: bool = True) -> TrainEstimate:
    """Estimate one stage-2 training step of ``udit train-relay`` (text embeddings and latents come cached)."""
    model = ModelSpec(transformer=arch.transformer, vae=arch.vae, text_encoder=arch.text_encoder,
                      transformer_dtype=dtype)
    run = RunSpec(height=height, width=width, frames=1, steps=1, guidance=False, text_len=text_len,
                  method=Gclf(window=window, pool=pool), attention_kernel="flex", vae_tiling=None,
                  lora=LoraSpec(rank=rank, target_modules=targets, dtype="float32"))
    cost = estimate_cost(model, run)
    lora = lora_training_bytes(arch.transformer, rank=rank, target_modules=targets, param_dtype="float32")
    tdims = TransformerDims.from_config(arch.transformer)
    a, n = dtype_bytes(dtype), cost.tokens.transformer_tokens
    block = cost.memory.activations.peak
    if gradient_checkpointing:
        acts = tdims.layers * n * tdims.dim * a + 2 * block
    else:
        acts = 3 * tdims.layers * block
    forward = cost.flops.transformer
    return TrainEstimate(
        height=height, width=width, tokens=n, lora=lora, gradient_checkpointing=gradient_checkpointing,
        device_bytes={"weights.transformer": cost.memory.weights["transformer"], "lora.weights": lora.weights,
                      "lora.grads": lora.grads, "lora.adamw_state": lora.optimizer, "activations": acts,
                      "attention_workspace": cost.memory.attention_workspace,
                      "embeddings_and_latents": text_len * tdims.text_dim * a + 4 * cost.tokens.latent_elements * 4},
        flops={"forward": forward, "backward": 2 * forward, "recompute": forward if gradient_checkpointing else 0},
    )
