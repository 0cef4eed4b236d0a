"""The ``toy`` model: real Wan2.1 classes at a size that trains in minutes and runs on a CPU.

Architecture constants live here so the trainer, the shipped weights and the tests agree on one definition.
The trained weights ship as an ordinary diffusers ``WanPipeline`` folder (``upscale_dit/toy/weights``), so
they load through the same engine path as a real checkpoint, and in diffusers itself.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .world import VOCABULARY

NATIVE_HEIGHT = NATIVE_WIDTH = 128
FRAMES = 17  # Wan-style 4k+1: 5 latent frames
FPS = 16
LATENT_CHANNELS = 8
MAX_SEQUENCE_LENGTH = 24  # the longest caption is 14 words + </s>

#: <pad>, </s>, <unk>, then "▁" + each caption word (see :func:`build_toy_tokenizer`).
TOY_VOCAB_SIZE = 3 + len(VOCABULARY)

TOY_TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=0, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
    dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
)
TOY_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=6, attention_head_dim=32, in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS, text_dim=64, freq_dim=256, ffn_dim=768, num_layers=8, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
TOY_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=24, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=[0.0] * LATENT_CHANNELS, latents_std=[1.0] * LATENT_CHANNELS,  # set from data after training
)
TOY_SCHEDULER_CONFIG: dict[str, Any] = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0,
)


def build_toy_tokenizer():
    """A word-level T5 (Unigram) tokenizer over the world's caption vocabulary.

    Lower-cases and treats punctuation as spaces, so "A red, striped circle" reads like the captions it was
    trained on; any other word becomes ``<unk>``.
    """
    from tokenizers import Regex, normalizers
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + word, -1.0) for word in VOCABULARY]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    assert len(tokenizer) == TOY_VOCAB_SIZE
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z\s]"), " ")]
    )
    return tokenizer


def build_toy_components(seed: int = 0) -> dict[str, Any]:
    """Freshly initialised toy parts (tokenizer, text encoder, transformer, VAE, scheduler), seeded."""
    from ..engine.tiny import build_seeded_components

    return build_seeded_components(build_toy_tokenizer(), text_encoder=TOY_TEXT_ENCODER_CONFIG,
                                   transformer=TOY_TRANSFORMER_CONFIG, vae=TOY_VAE_CONFIG,
                                   scheduler=TOY_SCHEDULER_CONFIG, seed=seed)


def save_pipeline_folder(parts: dict[str, Any], folder: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``parts`` as a diffusers ``WanPipeline`` folder in float16 safetensors, atomically.

    float16 halves the size (the whole model stays under 16 MiB); the engine upcasts the VAE to float32 on
    load. ``metadata`` (how the weights were made) goes to ``training.json`` next to ``model_index.json``.
    """
    from diffusers import WanPipeline

    from ..engine.quiet import quiet_libraries

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with quiet_libraries():  # the fp32-kept-modules warning does not apply to storage
        copies = {name: _half_copy(parts[name]) for name in ("text_encoder", "transformer", "vae")}
        pipe = WanPipeline(tokenizer=parts["tokenizer"], scheduler=parts["scheduler"], **copies)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with quiet_libraries():
            pipe.save_pretrained(tmp, safe_serialization=True)
        if metadata is not None:
            (tmp / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
        for path in (tmp, *tmp.rglob("*")):  # mkdtemp and safetensors make them private; shipped files are not
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _half_copy(module):
    import copy

    import torch

    return copy.deepcopy(module).to(torch.float16)


def weights_size(folder: str | Path) -> int:
    """Total bytes of every file in a model folder (the issue's budget is 16 MiB)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
