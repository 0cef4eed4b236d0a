"""The real Wan architectures with random weights, on any device: plan and measure a run before downloading it.

``--random-weights`` builds every component from its config (``upscale_dit.profiling.architectures``, or a local
folder's config.json files) without reading a weight file: on the meta device first (no memory, no init cost),
cast to the dtypes ``from_pretrained(torch_dtype=...)`` would give (the transformer's ``_keep_in_fp32_modules``
stay float32, the VAE is float32), then ``to_empty`` on the target device and a cheap init there. A 1.3B
transformer plus the 5.7B UMT5-XXL text encoder come up in about a second on a GPU, and the memory each component
takes is exactly what its real checkpoint would take, so measured peaks are the real run's.

Choices:
* The text encoder is the real UMT5-XXL (10.6 GiB in bf16), not random embeddings: with ``--offload none`` it stays
  resident on the GPU for the whole run, and a profile that left it out would under-state every stage's peak.
* The tokenizer is the tiny model's character-level T5 tokenizer (the real ``spiece.model`` is part of the
  download this avoids); every id it produces is valid for the real vocabulary. The toy model has its own
  word-level tokenizer, built in code.
* Init: weights N(0, 0.02), biases 0, norm scales 1 — activations stay finite; the video is noise.
* ``to_empty`` leaves non-persistent buffers as uninitialised memory: Wan's RoPE tables (``rope.freqs_cos`` /
  ``freqs_sin``) are rebuilt by constructing a fresh ``WanRotaryPosEmbed`` on the device
  (specs/environment.md §3.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..profiling.architectures import Architecture
from .device import cast_keeping_fp32

__all__ = ["build_random_components", "init_random_"]

_SEED = 0


def _clean(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


@torch.no_grad()
def init_random_(module: torch.nn.Module, *, seed: int = _SEED, std: float = 0.02) -> torch.nn.Module:
    """Fill every parameter in place: matrices and tables N(0, ``std``), biases 0, 1-D scales 1."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    for name, param in module.named_parameters():
        if param.dim() >= 2:
            param.normal_(0.0, std, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)
    return module


def _to_empty(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``to_empty`` that keeps tied parameters tied (it gives each module its own new tensor otherwise: UMT5's
    ``encoder.embed_tokens`` would become a second 2 GiB copy of ``shared``)."""
    owners: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for sub in module.modules():
        for key, param in sub._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((sub, key))
    for (_, _), *rest in owners.values():
        for sub, key in rest:  # allocate each tied tensor once
            sub._parameters[key] = None
    module = module.to_empty(device=device)
    for (first, first_key), *rest in owners.values():
        for sub, key in rest:
            sub._parameters[key] = first._parameters[first_key]
    return module


def build_transformer(config: Mapping[str, Any], *, dtype: torch.dtype, device: torch.device | str):
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    cfg = _clean(config)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(cfg)
    cast_keeping_fp32(model, dtype)
    model = _to_empty(model, device)
    init_random_(model, seed=_SEED)
    rope = model.rope
    model.rope = WanRotaryPosEmbed(rope.attention_head_dim, rope.patch_size, rope.max_seq_len).to(device)
    return model


def build_text_encoder(config: Mapping[str, Any], *, dtype: torch.dtype, device: torch.device | str):
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**_clean(config)))
    # transformers keeps `wo` in float32 only when loading in float16 (as the cost model counts it).
    cast_keeping_fp32(model, dtype, {"wo"} if dtype == torch.float16 else set())
    model = _to_empty(model, device)
    return init_random_(model, seed=_SEED + 1)


def build_vae(config: Mapping[str, Any], *, device: torch.device | str):
    from diffusers import AutoencoderKLWan

    # 127 M parameters: PyTorch's own init, directly on the device, is quick and keeps activations in range.
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(_SEED + 2)
        model = AutoencoderKLWan.from_config(_clean(config))
    return model  # float32, as from_pretrained(torch_dtype=torch.float32)


def build_random_components(arch: Architecture, *, dtype: torch.dtype, device: torch.device | str) -> dict[str, Any]:
    """Tokenizer, text encoder, transformer (``dtype``), VAE (float32) and scheduler config, random, on ``device``."""
    if arch.name == "toy":  # its word-level vocabulary is smaller than the character-level tokenizer's
        from ..toy.model import build_toy_tokenizer as build_tokenizer
    else:
        from .tiny import build_tiny_tokenizer as build_tokenizer

    return dict(
        tokenizer=build_tokenizer(),
        text_encoder=build_text_encoder(arch.text_encoder, dtype=dtype, device=device),
        transformer=build_transformer(arch.transformer, dtype=dtype, device=device),
        vae=build_vae(arch.vae, device=device),
        scheduler=dict(arch.scheduler),
    )
