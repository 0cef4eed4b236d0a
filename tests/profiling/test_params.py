"""Parameter-count formulas against the real classes built on the meta device (no weights)."""

import pytest
import torch

from upscale_dit.profiling import (
    count_params_on_meta,
    count_text_encoder_params,
    count_transformer_params,
    count_vae_params,
    lora_param_count,
    text_encoder_weight_bytes,
    transformer_weight_bytes,
)

from .configs import (
    ATTN_VAE,
    I2V_14B,
    T2V_1_3B,
    T2V_14B,
    TINY_I2V,
    TINY_TRANSFORMER,
    TINY_UMT5,
    TINY_UMT5_RELU,
    TINY_VAE,
    UMT5_XXL,
    VIBE_TARGETS,
    WAN21_VAE,
    WAN22_VAE,
)

FORMULAS = {
    "transformer": count_transformer_params,
    "vae": count_vae_params,
    "text_encoder": count_text_encoder_params,
}


@pytest.mark.parametrize(
    ("component", "config", "expected"),
    [
        ("transformer", T2V_1_3B, 1_418_996_800),  # environment.md §3.1
        ("transformer", T2V_14B, 14_288_491_584),
        ("transformer", I2V_14B, None),
        ("transformer", TINY_TRANSFORMER, 161_536),  # environment.md §2.1
        ("transformer", TINY_I2V, None),
        ("vae", WAN21_VAE, 126_892_531),  # environment.md §3.2
        ("vae", {}, 126_892_531),  # the class defaults are the Wan2.1 VAE
        ("vae", TINY_VAE, 13_861),
        ("vae", WAN22_VAE, None),  # residual blocks, patchify, separate decoder width
        ("vae", ATTN_VAE, None),  # encoder attention (attn_scales)
        ("text_encoder", UMT5_XXL, 5_680_910_336),  # environment.md §3.3
        ("text_encoder", TINY_UMT5, None),
        ("text_encoder", TINY_UMT5_RELU, None),
    ],
    ids=["t2v-1.3b", "t2v-14b", "i2v-14b", "tiny", "tiny-i2v", "wan2.1-vae", "vae-defaults", "tiny-vae",
         "wan2.2-vae", "attention-vae", "umt5-xxl", "tiny-umt5", "tiny-umt5-relu"],
)
def test_formula_matches_meta_model(component, config, expected):
    counted = count_params_on_meta(component, config)
    assert FORMULAS[component](config) == counted
    if expected is not None:
        assert counted == expected


@pytest.mark.parametrize("config", [T2V_1_3B, TINY_I2V], ids=["t2v-1.3b", "tiny-i2v"])
def test_weight_bytes_keep_diffusers_fp32_modules(config):
    # diffusers keeps any parameter whose name contains a `_keep_in_fp32_modules` entry in fp32, even for bf16.
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    fp32 = sum(p.numel() for n, p in model.named_parameters() if any(k in n for k in keep))
    total = sum(p.numel() for p in model.parameters())
    assert transformer_weight_bytes(config, "bfloat16") == 2 * total + 2 * fp32
    assert transformer_weight_bytes(config, torch.float32) == 4 * total


def test_weight_bytes_of_real_models():
    assert transformer_weight_bytes(T2V_1_3B) / 2**30 == pytest.approx(2.64, abs=0.02)  # environment.md §3.1
    assert transformer_weight_bytes(T2V_14B) / 2**30 == pytest.approx(26.6, abs=0.1)
    assert text_encoder_weight_bytes(UMT5_XXL) / 2**30 == pytest.approx(10.6, abs=0.05)  # §3.3
    # transformers keeps T5's `wo` in fp32 only for float16.
    wo = 24 * 10240 * 4096
    assert text_encoder_weight_bytes(UMT5_XXL, "float16") == text_encoder_weight_bytes(UMT5_XXL) + 2 * wo


@pytest.mark.parametrize("config", [TINY_TRANSFORMER, T2V_1_3B, TINY_I2V], ids=["tiny", "t2v-1.3b", "tiny-i2v"])
@pytest.mark.parametrize("targets", [VIBE_TARGETS, ("attn1.to_q", "proj_out"), ("add_k_proj",)])
def test_lora_params_match_peft(config, targets):
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig

    if targets == ("add_k_proj",) and config.get("added_kv_proj_dim") is None:
        with pytest.raises(ValueError, match="match no linear layer"):
            lora_param_count(config, 4, targets)
        return
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    model.add_adapter(LoraConfig(r=8, target_modules=list(targets)))
    expected = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora_param_count(config, 8, targets) == expected


def test_vibe_lora_size_on_1_3b():
    # specs/vibe.md §3.1: r = 32 on the 300 target linears is 43.7 M parameters on Wan2.1-1.3B.
    assert lora_param_count(T2V_1_3B, 32, VIBE_TARGETS) == 43_745_280


def test_lora_rejects_bad_input():
    with pytest.raises(ValueError, match="`rank` must be positive"):
        lora_param_count(T2V_1_3B, 0, VIBE_TARGETS)
    with pytest.raises(ValueError, match=r"\['to_qq'\]"):
        lora_param_count(T2V_1_3B, 4, ["to_q", "to_qq"])
