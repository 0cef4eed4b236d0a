"""Real and tiny config dicts, as the components' config.json files hold them (specs/environment.md §2.1, §3)."""

# The real configs live in the package (upscale_dit.profiling.architectures), used by `udit profile` too.
from upscale_dit.profiling.architectures import I2V_14B, T2V_1_3B, T2V_14B, UMT5_XXL, WAN21_VAE  # noqa: F401

TINY_TRANSFORMER = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 128,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
}
TINY_I2V = {**TINY_TRANSFORMER, "in_channels": 36, "image_dim": 24, "added_kv_proj_dim": 64}

# The Wan2.2 (TI2V-5B) VAE: residual blocks, 2×2 patchify, separate decoder width.
WAN22_VAE = {
    **WAN21_VAE,
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "scale_factor_spatial": 16,
}
TINY_VAE = {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "temperal_downsample": [False, True, True]}
# A VAE with encoder attention, to exercise `attn_scales`.
ATTN_VAE = {**TINY_VAE, "base_dim": 8, "attn_scales": [0.5]}

TINY_UMT5 = {"vocab_size": 100, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2, "num_heads": 2,
             "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32,
             "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
TINY_UMT5_RELU = {**TINY_UMT5, "feed_forward_proj": "relu"}

# ViBe's Relay-LoRA targets (q, k, v, o of both attentions and both FFN linears), in diffusers names.
VIBE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
