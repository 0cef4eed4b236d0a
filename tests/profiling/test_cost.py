"""estimate_cost end to end: schedules per method, token counts, validation, serialisation, import hygiene."""

import json
import subprocess
import sys

import pytest

from upscale_dit.profiling import (
    Direct,
    FreeSwim,
    Gclf,
    LoraSpec,
    ModelSpec,
    RunSpec,
    TokenGrid,
    estimate_cost,
    keys_from_block_density,
    time_floor,
)

from .configs import T2V_1_3B, T2V_14B, UMT5_XXL, VIBE_TARGETS, WAN21_VAE

MODEL = ModelSpec(transformer=T2V_1_3B, vae=WAN21_VAE, text_encoder=UMT5_XXL)
HD = dict(height=1088, width=1920, frames=81)


def test_token_counts_at_1080p():
    est = estimate_cost(MODEL, RunSpec(**HD, steps=1))
    t = est.tokens
    assert (t.latent_frames, t.latent_height, t.latent_width) == (21, 136, 240)
    assert t.grid == TokenGrid(21, 68, 120)
    assert t.transformer_tokens == 171_360 and t.text_tokens == 512
    assert est.params.transformer == 1_418_996_800
    assert est.params.total == 1_418_996_800 + 5_680_910_336 + 126_892_531


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(height=1080, width=1920, frames=81), r"`height` must be a positive multiple of 16.*\(use 1088\)"),
        (dict(height=1088, width=1900, frames=81), r"`width`.*\(use 1904\)"),
        (dict(height=1088, width=1920, frames=80), r"`frames` must be of the form 4k\+1, got 80 \(use 77\)"),
    ],
)
def test_invalid_sizes_say_what_to_use(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_cost(MODEL, RunSpec(**kwargs))


def test_direct_schedule():
    est = estimate_cost(MODEL, RunSpec(**HD, steps=35))
    dense = est.flops.per_forward["dense"]
    assert est.flops.forwards_per_run == {"dense": 70}
    assert est.flops.per_step == {"step": 2 * dense.total}
    assert est.flops.transformer == 70 * dense.total
    # specs/freeswim.md anchor: linear ≈ 0.43 PFLOP, dense attention ≈ 5.4 PFLOP per forward.
    assert dense.self_attn_core / 1e15 == pytest.approx(5.41, abs=0.01)
    no_cfg = estimate_cost(MODEL, RunSpec(**HD, steps=35, guidance=False))
    assert no_cfg.flops.transformer == est.flops.transformer // 2
    assert no_cfg.flops.text_encoder == est.flops.text_encoder // 2


def test_freeswim_cache_schedule():
    # 35 steps, k = 5: 7 refresh steps (0, 5, …, 30) run the batch-2 dual call; 28 cond passes read the cache;
    # all 35 uncond passes are plain window passes.
    run = RunSpec(**HD, steps=35, method=FreeSwim(window=(31, 53), mode="cache", refresh_every=5))
    est = estimate_cost(MODEL, run)
    f = est.flops
    assert f.forwards_per_run == {"dual": 7, "window_cached": 28, "window": 35}
    assert set(f.per_step) == {"refresh", "reuse"}
    assert f.per_step["refresh"] == f.per_forward["dual"].total + f.per_forward["window"].total
    assert f.transformer == 7 * f.per_step["refresh"] + 28 * f.per_step["reuse"]
    assert f.keys_per_query["window_exact"] == 21 * 31 * 53
    # Window attention ≈ 1.09 PFLOP per forward (specs/freeswim.md anchor), 0.2 of dense.
    assert f.attention_per_forward["window"] / 1e15 == pytest.approx(1.09, abs=0.01)
    assert f.attention_per_forward["window"] / f.attention_per_forward["dense"] == pytest.approx(0.2013, abs=1e-4)
    assert est.memory.cross_attn_cache / 1e9 == pytest.approx(15.8, abs=0.05)
    # The dual call has two branches: batch-2 activations.
    single = estimate_cost(MODEL, RunSpec(**HD, steps=35))
    assert est.memory.activations.ffn == 2 * single.memory.activations.ffn
    assert est.memory.denoise_peak > est.memory.cross_attn_cache + single.memory.denoise_peak


def test_freeswim_exact_and_refresh_every_step():
    exact = estimate_cost(MODEL, RunSpec(**HD, steps=10, method=FreeSwim(window=(31, 53), mode="exact")))
    assert exact.flops.forwards_per_run == {"dual": 20}
    assert exact.memory.cross_attn_cache == 0
    k1 = estimate_cost(MODEL, RunSpec(**HD, steps=10, method=FreeSwim(window=(31, 53), refresh_every=1)))
    assert k1.flops.forwards_per_run == {"dual": 10, "window_cached": 0, "window": 10}
    # Cache mode with k = 1 still differs from exact: its uncond passes are plain window passes.
    assert k1.flops.transformer < exact.flops.transformer
    with pytest.raises(ValueError, match="`mode`"):
        FreeSwim(window=(31, 53), mode="nocache")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`refresh_every`"):
        FreeSwim(window=(31, 53), refresh_every=0)


def test_freeswim_block_level_keys():
    # A block-sparse kernel visiting 48.1 % of 128-token blocks (row-major, specs/freeswim.md §2) does ≈ 2.4× the
    # exact window work.
    keys = keys_from_block_density(0.481, 128)
    method = FreeSwim(window=(31, 53), mode="exact", keys=keys)
    est = estimate_cost(MODEL, RunSpec(**HD, steps=1, method=method))
    k = est.flops.keys_per_query
    assert k["window"] / k["window_exact"] == pytest.approx(2.39, abs=0.01)
    assert est.memory.attention_workspace > 0


def test_gclf():
    # Quadrants of the 68 × 120 grid and d = 2: every query sees N/4 fine + N/4 pooled keys.
    est = estimate_cost(MODEL, RunSpec(**HD, steps=2, method=Gclf(window=(34, 60), pool=2)))
    assert est.flops.keys_per_query["gclf"] == 171_360 / 2
    assert est.flops.forwards_per_run == {"gclf": 4}
    assert est.flops.attention_per_forward["gclf"] == est.flops.attention_per_forward["dense"] // 2


def test_lora_and_v2v_and_14b():
    run = RunSpec(**HD, steps=35, lora=LoraSpec(rank=32, target_modules=VIBE_TARGETS), encode_input=True)
    est = estimate_cost(MODEL, run)
    assert est.params.lora == 43_745_280
    assert est.memory.weights["lora"] == 2 * 43_745_280
    assert est.flops.vae_encode > 0 and est.memory.vae_encode is not None
    big = estimate_cost(ModelSpec(transformer=T2V_14B, vae=WAN21_VAE, text_encoder=UMT5_XXL),
                        RunSpec(height=2160, width=3840, steps=1, guidance=False))
    # ecosystem.md §3b: 14B at 4K, dense attention ≈ 379 PFLOP per forward.
    assert big.flops.per_forward["dense"].self_attn_core / 1e15 == pytest.approx(379, rel=0.01)


def test_to_dict_is_json():
    est = estimate_cost(MODEL, RunSpec(**HD, steps=35, method=FreeSwim(window=(31, 53), refresh_every=5)))
    data = json.loads(json.dumps(est.to_dict()))
    assert data["method"] == "freeswim"
    assert data["tokens"]["transformer_tokens"] == 171_360
    assert data["flops"]["total"] == est.flops.total
    assert data["flops"]["per_forward"]["dual"]["total"] == est.flops.per_forward["dual"].total
    assert data["memory"]["denoise_peak"] == est.memory.denoise_peak
    assert data["memory"]["activations"]["peak"] == est.memory.activations.peak
    assert data["params"]["total"] == est.params.total


def test_time_floor():
    assert time_floor(5.5e15, 550) == pytest.approx(10.0)
    est = estimate_cost(MODEL, RunSpec(**HD, steps=35, method=Direct()))
    # 70 dense forwards of ≈ 5.86 PFLOP at 550 TFLOP/s: ≈ 746 s (the H100 anchor measured 782 s).
    assert time_floor(est.flops.transformer, 550) == pytest.approx(746, rel=0.01)
    with pytest.raises(ValueError, match="`tflops`"):
        time_floor(1.0, 0)


def test_import_does_not_load_diffusers():
    code = "import sys, upscale_dit.profiling; print('diffusers' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
