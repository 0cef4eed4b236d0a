"""Relay LoRA at inference (ViBe): the base weights + the stage-2 LoRA only, with GCLF self-attention.

Stage 1 only ever lived in the training copy of the weights; applying it here would undo the modality
alignment trade (spec ``vibe.md`` §3.3), so it is never applied. Generation then runs directly from noise at
the target size; the SDEdit variant (``--from-base``) renders the native-size base video with the handle removed
(or before applying it), upsamples, and refines at strength 0.7 with the handle applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import (
    AdapterFileError,
    RelayAdapterInfo,
    diffusers_lora_metadata,
    model_signature,
    read_relay_adapter,
    read_safetensors,
)
from ..attention.plan import AttentionPlanHandle
from ..attention.gclf import apply_gclf
from ..attention.geometry import TokenGeometry, build_token_geometry

ADAPTER_NAME = "relay_stage2"


def relay_geometry(preset: Any, frames: int, height: int, width: int) -> TokenGeometry:
    """GCLF geometry for a ``frames x height x width`` generation: window = the preset's native token grid."""
    return build_token_geometry(frames, height, width, native_height=preset.native_height,
                                native_width=preset.native_width, vae_scale_spatial=preset.vae_scale_spatial,
                                vae_scale_temporal=preset.vae_scale_temporal, patch_size=tuple(preset.patch_size),
                                window="native")


def check_relay_file(path: str | Path, *, base_model: str | None = None, transformer: Any = None) -> RelayAdapterInfo:
    """Refuse anything but a stage-2 Relay LoRA for ``base_model`` (a preset name) and ``transformer``'s architecture.

    Reads only the file's header, so ``generate`` can call it with ``base_model`` before any weights load and
    :func:`apply_relay` again with the loaded transformer.
    """
    path = Path(path)
    _, meta = read_safetensors(path)
    info = RelayAdapterInfo.from_metadata(meta, source=str(path))
    if 2 not in info.stages:
        raise AdapterFileError(f"{path} is a stage-1 Relay adapter; generation uses the stage-2 LoRA only "
                               "(pass the run's relay.safetensors or stage2.safetensors)")
    if base_model is not None and info.base_model != base_model:
        raise AdapterFileError(f"{path} was trained on `{info.base_model}`, not `{base_model}`; generate with "
                               f"--model {info.base_model} or train a Relay LoRA for {base_model}")
    if transformer is not None and info.base_arch != (arch := model_signature(transformer.config)):
        raise AdapterFileError(f"{path} was trained on `{info.base_model}` ({_arch(info.base_arch)}), which does not "
                               f"match this model ({_arch(arch)}); use the base model it was trained on")
    return info


def _arch(signature: dict[str, Any]) -> str:
    return (f"{signature.get('num_layers')} layers, {signature.get('num_attention_heads')} heads x "
            f"{signature.get('attention_head_dim')}")


def _diffusers_state(path: Path, info: RelayAdapterInfo) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stage-2 LoRA as diffusers' loader wants it: ``transformer.``-prefixed keys and its LoRA metadata."""
    from diffusers.loaders import WanLoraLoaderMixin

    if info.key_format == "relay":  # the run's combined file: take stage 2 only
        _, stages = read_relay_adapter(path)
        return {f"transformer.{k}": v for k, v in stages[2].items()}, diffusers_lora_metadata(info)
    # diffusers and comfy files go through diffusers' own reader (comfy keys converted, alpha folded in)
    state, metadata = WanLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
    return state, metadata


@dataclass
class RelayHandle:
    """What :func:`apply_relay` changed; :meth:`remove` restores stock attention and deletes the adapter."""

    transformer: Any
    info: RelayAdapterInfo
    gclf: AttentionPlanHandle | None

    def remove(self) -> None:
        if self.gclf is None:
            return
        self.gclf.remove()
        self.gclf = None
        self.transformer.delete_adapters(ADAPTER_NAME)
        if not getattr(self.transformer, "peft_config", None):  # ours was the only adapter: plain Linears again
            self.transformer.unload_lora()

    def __enter__(self) -> "RelayHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_relay(transformer: Any, lora_file: str | Path, *, geometry: TokenGeometry, base_model: str | None = None,
                pool: int | None = None, kernel: str = "auto", scale: float = 1.0) -> RelayHandle:
    """Load the stage-2 Relay LoRA of ``lora_file`` into ``transformer`` (peft, through diffusers) and install GCLF.

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` with the *original* base weights.
        lora_file: ``relay.safetensors`` of a run, its ``stage2.safetensors``, or a ``strip-adapter`` output
            (diffusers or comfy format).
        geometry: token grid being generated (:func:`relay_geometry`).
        base_model: model preset name to check the file against (``None``: check the architecture only).
        pool: GCLF pooling factor; ``None`` takes the one stage 2 was trained with (2). 4 is cheaper at 4K.
        kernel: GCLF kernel (``auto``, ``sdpa``, ``flex``).
        scale: LoRA strength (ViBe: 1.0).

    Returns:
        A :class:`RelayHandle`; ``remove()`` (or leaving a ``with`` block) restores the transformer.

    Example:
        >>> handle = apply_relay(transformer, "run/relay.safetensors", geometry=relay_geometry(preset, 81, 960, 1664))  # doctest: +SKIP
        >>> handle.remove()  # doctest: +SKIP
    """
    path = Path(lora_file)
    info = check_relay_file(path, base_model=base_model, transformer=transformer)
    if ADAPTER_NAME in (getattr(transformer, "peft_config", None) or {}):
        raise AdapterFileError("a Relay LoRA is already applied to this transformer; remove() its handle first")
    state, metadata = _diffusers_state(path, info)
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=ADAPTER_NAME, metadata=metadata)
    transformer.set_adapters([ADAPTER_NAME], weights=[scale])
    try:
        gclf = apply_gclf(transformer, geometry, pool=pool if pool is not None else info.pool, kernel=kernel)
    except Exception:
        transformer.delete_adapters(ADAPTER_NAME)
        raise
    return RelayHandle(transformer=transformer, info=info, gclf=gclf)
