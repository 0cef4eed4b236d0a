"""Real and tiny config dicts, as the components' config.json files hold them (specs/environment.md §2.1, §3)."""

T2V_1_3B = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2],
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
T2V_14B = {**T2V_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
I2V_14B = {**T2V_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}

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

WAN21_VAE = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "in_channels": 3,
    "out_channels": 3,
    "is_residual": False,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}
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

UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
TINY_UMT5 = {"vocab_size": 100, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2, "num_heads": 2,
             "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32,
             "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
TINY_UMT5_RELU = {**TINY_UMT5, "feed_forward_proj": "relu"}

# ViBe's Relay-LoRA targets (q, k, v, o of both attentions and both FFN linears), in diffusers names.
VIBE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
