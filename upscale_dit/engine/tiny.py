"""A tiny random-weight Wan2.1 (text encoder, transformer, VAE, scheduler) built in code, for tests and CPU demos.

The real classes at toy sizes: every code path of the engine runs, in well under a second a step on a CPU.
Built under a fixed seed, so two builds give bit-identical weights. Its videos are noise.
"""

from __future__ import annotations

import string
from typing import Any

import torch

TINY_SEED = 0

#: Configs for the tiny components (diffusers / transformers constructor arguments).
TINY_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
    text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024,  # 1024 like the real models, so every size a user can ask for works
)
TINY_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
)
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
    relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
    dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
)
TINY_SCHEDULER_CONFIG: dict[str, Any] = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0,
)


def build_tiny_tokenizer():
    """A character-level T5 (Unigram) tokenizer: no files, no sentencepiece, every printable character known."""
    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("▁" + c, -3.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_seeded_components(tokenizer, *, text_encoder: dict[str, Any], transformer: dict[str, Any],
                            vae: dict[str, Any], scheduler: dict[str, Any], seed: int) -> dict[str, Any]:
    """Freshly initialised Wan parts from constructor configs, under ``seed`` (the caller's RNG is untouched)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = dict(
            tokenizer=tokenizer,
            text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **text_encoder)),
            transformer=WanTransformer3DModel(**transformer),
            vae=AutoencoderKLWan(**vae),
        )
    return dict(parts, scheduler=UniPCMultistepScheduler(**scheduler))


def build_tiny_components(seed: int = TINY_SEED) -> dict[str, Any]:
    """Tokenizer, text encoder, transformer, VAE and scheduler of the tiny model, as a dict of diffusers parts."""
    parts = build_seeded_components(build_tiny_tokenizer(), text_encoder=TINY_TEXT_ENCODER_CONFIG,
                                    transformer=TINY_TRANSFORMER_CONFIG, vae=TINY_VAE_CONFIG,
                                    scheduler=TINY_SCHEDULER_CONFIG, seed=seed)
    for name in ("text_encoder", "transformer", "vae"):
        parts[name].eval().requires_grad_(False)
    return parts
