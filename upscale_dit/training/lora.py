"""Stage adapters through peft: add a named LoRA, read/write its weights, merge stage 1 into the working copy.

Adapters are peft ``LoraConfig`` layers with an explicit ``target_modules`` list, named ``"stage1"`` and
``"stage2"``; nothing here computes a LoRA product itself. LoRA weights are kept in float32 even on a bf16
base (AdamW on bf16 parameters loses small updates); peft casts activations to them and the result back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import AdapterConfig

STAGE_ADAPTERS = {1: "stage1", 2: "stage2"}


def lora_config(settings: AdapterConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(settings.targets),
                      lora_dropout=0.0, init_lora_weights=True)


def add_stage_adapter(transformer: Any, stage: int, settings: AdapterConfig, *, seed: int) -> list[torch.nn.Parameter]:
    """Add the fresh ``stage<N>`` adapter (A Kaiming-uniform from ``seed``, B zero) and return its parameters."""
    from peft.tuners.tuners_utils import cast_adapter_dtype

    name = STAGE_ADAPTERS[stage]
    with torch.random.fork_rng(devices=[]):  # the init draws from the global CPU generator; keep it reproducible
        torch.manual_seed(seed * 1000 + stage)
        transformer.add_adapter(lora_config(settings), adapter_name=name)
    cast_adapter_dtype(transformer, name)
    params = [p for n, p in transformer.named_parameters() if f".{name}." in n]
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state(transformer: Any, stage: int) -> dict[str, torch.Tensor]:
    """The adapter's weights under peft's file keys (``blocks.0.attn1.to_q.lora_A.weight``), copied to the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=STAGE_ADAPTERS[stage])
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def load_adapter_state(transformer: Any, stage: int, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` (peft file keys) into the existing ``stage<N>`` adapter; every key must land."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, dict(state), adapter_name=STAGE_ADAPTERS[stage])
    missing = [k for k in result.missing_keys if STAGE_ADAPTERS[stage] in k]
    if result.unexpected_keys or missing:
        raise RuntimeError(f"adapter weights do not fit the model: unexpected {result.unexpected_keys[:3]}, "
                           f"missing {missing[:3]}")


def remove_adapters(transformer: Any) -> None:
    """Drop every peft layer (without merging): the base weights as they were."""
    if getattr(transformer, "_hf_peft_config_loaded", False):
        transformer.unload_lora()


def merge_stage1(transformer: Any, state: Mapping[str, torch.Tensor], settings: AdapterConfig, *, seed: int) -> None:
    """Fuse the stage-1 LoRA into the base weights (``W += alpha/r B A`` by peft) and remove the adapter layers.

    Both the continuous run and a run resumed in stage 2 merge from the saved ``stage1.safetensors`` weights,
    so the stage-2 base is bit-identical either way.
    """
    remove_adapters(transformer)
    add_stage_adapter(transformer, 1, settings, seed=seed)
    load_adapter_state(transformer, 1, state)
    transformer.fuse_lora(adapter_names=[STAGE_ADAPTERS[1]])
    transformer.unload_lora()
    transformer.requires_grad_(False)
