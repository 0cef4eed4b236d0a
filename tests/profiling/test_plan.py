"""The run plan: stages as the engine runs them, hand-derived token counts, bytes per stage, advice, random weights."""

from __future__ import annotations

import dataclasses
import mmap

import pytest

from upscale_dit.generation import TILING_AUTO_PIXELS, build_generate_config, resolve_run
from upscale_dit.profiling import cross_attn_cache_bytes, lora_param_count
from upscale_dit.profiling.advice import advise, usable_bytes
from upscale_dit.profiling.architectures import (
    ARCHITECTURES,
    TINY_VOCAB_SIZE,
    Architecture,
    T2V_1_3B,
    UMT5_XXL,
    WAN21_SCHEDULER,
    WAN21_VAE,
    architecture_for,
)
from upscale_dit.profiling.plan import estimate_plan, estimate_training_step, settings_from_resolved
from upscale_dit.training import DEFAULT_TARGETS

GIB = 2**30


def settings(tmp_path, *, device="cuda", dtype="bfloat16", **flags):
    flags.setdefault("model", "wan2.1-t2v-1.3b")
    config = build_generate_config("a cat", output__path=str(tmp_path / "x.mp4"), runtime__random_weights=True,
                                   **flags)
    run, source = resolve_run(config)
    return settings_from_resolved(run, device=device, dtype=dtype, folder=source.folder,
                                  tiling_auto_pixels=TILING_AUTO_PIXELS)


def test_tiny_freeswim_2x_tokens_per_stage(tmp_path):
    # tiny: native 96x160, 9 frames -> 3 latent frames; grid 6x10 at native, 12x20 at 2x (192x320).
    s = settings(tmp_path, model="tiny", resolution="2x", method__name="freeswim", device="cpu", dtype="float32")
    est = estimate_plan(s)
    assert [st.key for st in est.stages] == ["load", "text_encoding", "base_denoise", "base_decode",
                                             "upsample_encode", "refine", "decode_and_write"]
    assert est.stage("base_denoise").tokens == 3 * 6 * 10 == 180
    assert est.stage("refine").tokens == 3 * 12 * 20 == 720
    assert est.stage("text_encoding").tokens == 64  # the tiny preset's max_sequence_length
    # tiny preset: 4 base steps; refinement 4 scheduled x strength 0.7 -> int(2.8) = 2 run, window 7x11.
    assert est.stage("base_denoise").steps == 4 and est.stage("refine").steps == 2
    assert s.freeswim.window == (7, 11)
    refine = est.costs["refine"]
    assert refine.flops.keys_per_query["window_exact"] == 3 * 7 * 11
    # cache mode, k = 2, 2 steps: step 0 refreshes (dual), step 1 reads the cache; both uncond passes are window.
    assert est.stage("refine").forwards == {"dual": 1, "window_cached": 1, "window": 2}


def test_direct_stages_and_flops_split(tmp_path):
    s = settings(tmp_path, resolution="1080p", sampling__steps=10)
    est = estimate_plan(s)
    assert [st.key for st in est.stages] == ["load", "text_encoding", "denoise", "decode_and_write"]
    denoise = est.stage("denoise")
    assert denoise.tokens == 21 * 68 * 120 == 171_360 and denoise.forwards == {"dense": 20}
    cost = est.costs["denoise"]
    assert denoise.total_flops == cost.flops.transformer
    assert denoise.flops["attention.dense"] == 20 * cost.flops.attention_per_forward["dense"]
    assert set(denoise.flops) == {"attention.dense", "attention.cross", "linear"}
    # 1080p is above the auto-tiling threshold: tiled with 256-pixel tiles.
    assert s.vae_tile == 256 and "vae_tiles" in est.stage("decode_and_write").device_bytes


def test_freeswim_2160p_on_13b(tmp_path):
    s = settings(tmp_path, resolution="2160p", method__name="freeswim")
    est = estimate_plan(s)
    refine, base = est.stage("refine"), est.stage("base_denoise")
    assert refine.tokens == 21 * 135 * 240 == 680_400
    assert base.tokens == 21 * 30 * 52 == 32_760
    assert refine.steps == 35 and s.freeswim.window == (31, 53)
    # specs/freeswim.md §4: the 1.3B cache at 4K is 62.7 GB; `auto` keeps it in pinned host memory on a GPU run.
    assert refine.host_bytes["cross_attn_cache"] / 1e9 == pytest.approx(62.7, abs=0.05)
    assert refine.host_bytes["cross_attn_cache"] == cross_attn_cache_bytes(T2V_1_3B, 680_400)
    on_gpu = estimate_plan(s.replace(freeswim=dataclasses.replace(s.freeswim, cache_device="gpu"))).stage("refine")
    assert on_gpu.device_bytes["cross_attn_cache"] == refine.host_bytes["cross_attn_cache"]
    # refine: dense branch on dual passes, window branch on every pass.
    assert set(refine.flops) == {"attention.dense", "attention.window", "attention.cross", "linear"}
    assert est.peak_stage == "refine"


def test_resident_weights_and_offload(tmp_path):
    s = settings(tmp_path, resolution="1080p")
    est = estimate_plan(s)
    w = {k: v for k, v in est.stage("load").device_bytes.items()}
    assert set(w) == {"weights.transformer", "weights.text_encoder", "weights.vae"}
    assert w["weights.text_encoder"] / GIB == pytest.approx(10.58, abs=0.01)  # UMT5-XXL in bf16
    for stage in est.stages:  # without offload everything stays resident until the prompts are embedded ...
        kept = w if stage.key in ("load", "text_encoding") else {k: v for k, v in w.items() if "text_encoder" not in k}
        assert all(stage.device_bytes[k] == v for k, v in kept.items())
        # ... then the text encoder is released (neither on the device nor in host memory)
        if stage.key not in ("load", "text_encoding"):
            assert "weights.text_encoder" not in {**stage.device_bytes, **stage.host_bytes}
    off = estimate_plan(s.replace(offload=True))
    assert off.stage("load").peak == 0
    denoise = off.stage("denoise")
    assert "weights.vae" not in denoise.device_bytes and "weights.vae" in denoise.host_bytes
    assert off.stage("denoise").peak == est.stage("denoise").peak - w["weights.vae"]


def test_decode_tiling_bounds_memory(tmp_path):
    s = settings(tmp_path, resolution="2160p")
    tiled = estimate_plan(s).stage("decode_and_write").peak
    untiled = estimate_plan(s.replace(vae_tile=None)).stage("decode_and_write").peak
    smaller = estimate_plan(s.replace(vae_tile=128)).stage("decode_and_write").peak
    assert smaller < tiled < untiled


def test_advice_makes_the_estimate_fit(tmp_path):
    s = settings(tmp_path, resolution="2160p", method__name="freeswim")
    total = 64 * GIB  # the 4K refine's activations alone exceed it: only a shorter video fits
    advice = advise(s, total)
    assert not advice.fits and advice.fits_after
    assert advice.flags == ["--frames", "69"]  # knobs that do not help (cache already on the CPU) are left out
    assert estimate_plan(s.replace(frames=69), budget=total).peak <= usable_bytes(total)
    assert estimate_plan(s.replace(frames=73), budget=total).peak > usable_bytes(total)
    # A run that fits needs no advice.
    assert advise(settings(tmp_path, resolution="480p"), total).fits


def test_advice_falls_back_to_fewer_frames(tmp_path):
    # 14B at 1080p on a 40 GiB card: 26.6 GiB of transformer weights leave too little for 81 frames' activations.
    s = settings(tmp_path, model="wan2.1-t2v-14b", resolution="1080p")
    total = 40 * GIB
    advice = advise(s, total)
    assert advice.fits_after and advice.flags[-2] == "--frames"
    frames = int(advice.flags[-1])
    assert frames < 81 and (frames - 1) % 4 == 0
    fixed = s.replace(offload=True, vae_tile=128, frames=frames)
    assert estimate_plan(fixed, budget=total).peak <= usable_bytes(total) == advice.usable
    assert estimate_plan(fixed.replace(frames=frames + 4), budget=total).peak > usable_bytes(total)


def test_architectures():
    from upscale_dit.engine.tiny import build_tiny_tokenizer

    assert TINY_VOCAB_SIZE == len(build_tiny_tokenizer())
    assert architecture_for("wan2.1-t2v-1.3b") is ARCHITECTURES["wan2.1-t2v-1.3b"]
    tiny = architecture_for("tiny")
    assert tiny.transformer["num_layers"] == 2 and tiny.text_encoder["vocab_size"] == TINY_VOCAB_SIZE
    with pytest.raises(KeyError, match="no built-in architecture"):
        architecture_for("nope")


def test_training_step_estimate():
    arch = ARCHITECTURES["wan2.1-t2v-1.3b"]
    est = estimate_training_step(arch, height=960, width=1664, window=(30, 52), pool=2, rank=32,
                                 targets=DEFAULT_TARGETS)
    assert est.tokens == 60 * 104
    # ViBe's rank-32 LoRA on q, k, v, o of both attentions and both FFN linears (test_params anchor).
    assert est.lora.params == lora_param_count(T2V_1_3B, 32, DEFAULT_TARGETS) == 43_745_280
    # fp32 LoRA: weights, grads, and AdamW's two moments, 4 bytes each.
    assert est.device_bytes["lora.adamw_state"] == 2 * 4 * est.lora.params
    assert est.peak > est.device_bytes["weights.transformer"]
    assert est.flops["backward"] == 2 * est.flops["forward"]


def test_random_weights_match_the_cost_model():
    torch = pytest.importorskip("torch")
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from upscale_dit.engine.random_weights import build_random_components
    from upscale_dit.profiling import count_vae_params, text_encoder_weight_bytes, transformer_weight_bytes

    # The real 1.3B block and UMT5 layer shapes, one layer each and a small vocabulary, to stay fast on a CPU.
    arch = Architecture("small", {**T2V_1_3B, "num_layers": 1}, {**WAN21_VAE, "base_dim": 8},
                        {**UMT5_XXL, "num_layers": 1, "vocab_size": 1000}, WAN21_SCHEDULER)
    parts = build_random_components(arch, dtype=torch.bfloat16, device="cpu")
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    transformer, text = parts["transformer"], parts["text_encoder"]
    assert nbytes(transformer) == transformer_weight_bytes(arch.transformer, "bfloat16")
    assert nbytes(text) == text_encoder_weight_bytes(arch.text_encoder, "bfloat16")
    assert text.encoder.embed_tokens.weight is text.shared.weight  # tied, not a second copy
    assert nbytes(parts["vae"]) == 4 * count_vae_params(arch.vae)
    assert transformer.scale_shift_table.dtype == torch.float32  # diffusers' _keep_in_fp32_modules
    assert transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    fresh = WanRotaryPosEmbed(128, (1, 2, 2), 1024)
    assert torch.equal(transformer.rope.freqs_cos, fresh.freqs_cos)  # rebuilt, not to_empty's garbage
    x = torch.randn(1, 16, 1, 8, 8, dtype=torch.bfloat16)
    out = transformer(hidden_states=x, timestep=torch.tensor([500]),
                      encoder_hidden_states=torch.randn(1, 8, 4096, dtype=torch.bfloat16), return_dict=False)[0]
    assert torch.isfinite(out).all()


def test_stage_progress_records_memory():
    from upscale_dit.progress import StageProgress

    with StageProgress(enabled=False) as bars:
        with bars.stage("outer", "outer"):
            with bars.stage("inner", "inner"):
                # 64 MiB of fresh pages, each written: resident whatever the allocator holds already.
                block = mmap.mmap(-1, 64 * 2**20)
                for offset in range(0, len(block), mmap.PAGESIZE):
                    block[offset] = 1
                block.close()
    assert set(bars.memory) == {"outer", "inner"}
    inner, outer = bars.memory["inner"], bars.memory["outer"]
    assert inner["source"] in ("rss", "rss_process_peak", "cuda")
    if inner["source"] == "rss":
        assert inner["peak"] - inner["start"] >= 60 * 2**20
        assert outer["peak"] >= inner["peak"]  # the inner reset does not hide the peak from the outer stage


def test_settings_replace_is_a_copy(tmp_path):
    s = settings(tmp_path, resolution="1080p")
    assert dataclasses.replace(s, frames=17).frames == 17 and s.frames == 81


@pytest.fixture
def relay_file(tmp_path):
    """A stage-2 Relay LoRA header for the 1.3B (rank 32, ViBe's targets); the cost needs only the header."""
    torch = pytest.importorskip("torch")
    from upscale_dit.adapters import RelayAdapterInfo, encode_relay, model_signature, write_safetensors_atomic

    info = RelayAdapterInfo(base_model="wan2.1-t2v-1.3b", base_arch=model_signature(T2V_1_3B),
                            native_size=(832, 480), stage_sizes={1: (832, 480), 2: (1664, 960)}, steps={1: 1, 2: 1},
                            rank=32, alpha=32.0, targets=DEFAULT_TARGETS, pool=2, stages=(2,))
    tensors, meta = encode_relay({2: {"blocks.0.attn1.to_q.lora_A.weight": torch.zeros(32, 1536)}}, info)
    return write_safetensors_atomic(tmp_path / "relay.safetensors", tensors, meta)


def test_relay_from_noise_and_from_base(tmp_path, relay_file):
    s = settings(tmp_path, resolution="1080p", method__name="relay", method__relay__lora=str(relay_file))
    assert s.relay.rank == 32 and s.relay.window == (30, 52) and s.relay.pool == 2
    est = estimate_plan(s)
    assert [st.key for st in est.stages] == ["load", "text_encoding", "denoise", "decode_and_write"]
    denoise = est.stage("denoise")
    # GCLF keys: the native 30x52 window over 21 frames + every frame pooled by 2 (68x120 -> 34x60).
    assert est.costs["denoise"].flops.keys_per_query["gclf"] == 21 * 30 * 52 + 21 * 34 * 60
    assert denoise.device_bytes["weights.lora"] == 2 * 43_745_280
    assert set(denoise.flops) == {"attention.gclf", "attention.cross", "linear"} and denoise.steps == 50
    based = estimate_plan(settings(tmp_path, resolution="1080p", method__name="relay",
                                   method__relay__lora=str(relay_file), method__relay__from_base=True))
    assert [st.key for st in based.stages][2:] == ["base_denoise", "base_decode", "upsample_encode", "refine",
                                                   "decode_and_write"]
    assert based.stage("refine").steps == 35
