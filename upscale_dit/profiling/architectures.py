"""The real architectures' config dicts, in one place: what ``udit profile`` estimates and ``--random-weights`` builds.

Values as the Diffusers-format ``config.json`` files of Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers hold them
(specs/environment.md §3; parameter counts checked on the meta device: 1,418,996,800 / 14,288,491,584 / 5,680,910,336
/ 126,892,531). The ``tiny`` model's configs live with its builder (``upscale_dit.engine.tiny``);
:func:`component_configs` returns either, so nothing else needs to know where a model's configs come from.
No torch, diffusers or transformers import here.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "T2V_1_3B",
    "T2V_14B",
    "I2V_14B",
    "UMT5_XXL",
    "WAN21_SCHEDULER",
    "WAN21_VAE",
    "architecture_for",
    "read_folder_architecture",
    "tiny_architecture",
    "toy_architecture",
]

T2V_1_3B: dict[str, Any] = {
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
T2V_14B: dict[str, Any] = {**T2V_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
I2V_14B: dict[str, Any] = {**T2V_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}

WAN21_VAE: dict[str, Any] = {
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
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                     -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                    1.6382, 1.1253, 2.8251, 1.916],
}

UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "scalable_attention": True,
    "layer_norm_epsilon": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "dropout_rate": 0.0,
}

# UniPCMultistepScheduler as the converted checkpoints ship it (specs/environment.md §3.4).
WAN21_SCHEDULER: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "num_train_timesteps": 1000,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
}


@dataclass(frozen=True, slots=True)
class Architecture:
    """Config dicts of one model's components (as their config.json files hold them)."""

    name: str
    transformer: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    scheduler: Mapping[str, Any]


ARCHITECTURES: dict[str, Architecture] = {
    "wan2.1-t2v-1.3b": Architecture("wan2.1-t2v-1.3b", T2V_1_3B, WAN21_VAE, UMT5_XXL, WAN21_SCHEDULER),
    "wan2.1-t2v-14b": Architecture("wan2.1-t2v-14b", T2V_14B, WAN21_VAE, UMT5_XXL, WAN21_SCHEDULER),
}

# The tiny model's character-level tokenizer (engine/tiny.py): <pad>, </s>, <unk>, "▁", then every printable
# character c and "▁"+c. Counted here so the profile needs no transformers import (a test checks it).
TINY_VOCAB_SIZE = 4 + 2 * len(string.ascii_letters + string.digits + string.punctuation)


def tiny_architecture() -> Architecture:
    """The ``tiny`` model's configs, from the constants its builder uses."""
    from ..engine.tiny import (  # engine.tiny imports torch: only when the tiny model is asked for
        TINY_SCHEDULER_CONFIG,
        TINY_TEXT_ENCODER_CONFIG,
        TINY_TRANSFORMER_CONFIG,
        TINY_VAE_CONFIG,
    )

    return Architecture("tiny", dict(TINY_TRANSFORMER_CONFIG), dict(TINY_VAE_CONFIG),
                        {"vocab_size": TINY_VOCAB_SIZE, **TINY_TEXT_ENCODER_CONFIG}, dict(TINY_SCHEDULER_CONFIG))


def read_folder_architecture(folder: str | Path, name: str | None = None) -> Architecture:
    """Configs of a diffusers-format Wan folder (``transformer/config.json`` etc.; no weights are read)."""
    folder = Path(folder)

    def read(*parts: str) -> dict[str, Any]:
        return json.loads(folder.joinpath(*parts).read_text())

    return Architecture(name or folder.name, read("transformer", "config.json"), read("vae", "config.json"),
                        read("text_encoder", "config.json"), read("scheduler", "scheduler_config.json"))


def toy_architecture() -> Architecture:
    """The ``toy`` model's configs, from the constants its trainer builds it with (they match the shipped files)."""
    from ..toy.model import (  # numpy-only module: no torch import
        TOY_SCHEDULER_CONFIG,
        TOY_TEXT_ENCODER_CONFIG,
        TOY_TRANSFORMER_CONFIG,
        TOY_VAE_CONFIG,
        TOY_VOCAB_SIZE,
    )

    return Architecture("toy", dict(TOY_TRANSFORMER_CONFIG), dict(TOY_VAE_CONFIG),
                        {"vocab_size": TOY_VOCAB_SIZE, **TOY_TEXT_ENCODER_CONFIG}, dict(TOY_SCHEDULER_CONFIG))


def architecture_for(preset_name: str, folder: str | Path | None = None) -> Architecture:
    """Configs for a resolved model: the folder's own files when there is one, else the preset's built-in ones."""
    if preset_name == "tiny" and folder is None:
        return tiny_architecture()
    if preset_name == "toy" and folder is None:
        return toy_architecture()
    if folder is not None:
        return read_folder_architecture(folder, preset_name)
    if preset_name not in ARCHITECTURES:
        raise KeyError(f"no built-in architecture for model preset {preset_name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[preset_name]
