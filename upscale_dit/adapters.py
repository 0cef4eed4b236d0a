"""Relay LoRA files: the three key formats, the provenance header, and `strip-adapter`.

Inside udit an adapter is a PEFT state dict (``blocks.0.attn1.to_q.lora_A.weight``, what
``peft.get_peft_model_state_dict`` returns). On disk there are three layouts, all safetensors with a ``udit.*``
header naming the base model, stage sizes, rank, alpha, targets and steps:

* ``relay`` — the training run's combined file: ``stage1.<peft key>`` and ``stage2.<peft key>``.
* ``diffusers`` — ``transformer.<peft key>`` plus diffusers' ``lora_adapter_metadata`` (r, lora_alpha,
  target_modules), so ``WanPipeline.load_lora_weights`` takes it as is.
* ``comfy`` — ComfyUI / original-Wan names (``diffusion_model.blocks.N.self_attn.q.lora_A.weight``) with one
  ``.alpha`` scalar per module; diffusers converts it on load (folding alpha/rank into the weights). It must not
  carry ``lora_adapter_metadata``, or diffusers would apply alpha twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ._version import __version__
from .errors import OutputError, UditError
from .video import partial_path

FORMAT_NAME = "udit-relay-lora"
FORMAT_VERSION = "1"
KeyFormat = Literal["relay", "diffusers", "comfy"]
OUTPUT_FORMATS = ("diffusers", "comfy")
DIFFUSERS_PREFIX = "transformer."
COMFY_PREFIX = "diffusion_model."

# diffusers module path → original-Wan (ComfyUI) module path, per transformer block.
_TO_COMFY = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_FROM_COMFY = {v: k for k, v in _TO_COMFY.items()}
ARCH_KEYS = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "ffn_dim",
             "text_dim", "patch_size")


class AdapterFileError(UditError):
    """A LoRA file is not a (stage-2) Relay LoRA, or not one for this base model."""

    exit_code = 2


def model_signature(transformer_config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture facts a LoRA depends on (layer count, widths, patch), JSON-friendly."""
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in transformer_config.items() if k in ARCH_KEYS}


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayAdapterInfo:
    """Provenance of a Relay LoRA file, stored as ``udit.*`` strings in the safetensors header."""

    base_model: str = field(metadata={"help": "Model preset the LoRA was trained on (e.g. `wan2.1-t2v-1.3b`)."})
    base_arch: dict[str, Any] = field(metadata={"help": "model_signature() of the base transformer."})
    native_size: tuple[int, int] = field(metadata={"help": "Base model's native (width, height) in pixels."})
    stage_sizes: dict[int, tuple[int, int]] = field(metadata={"help": "Training (width, height) per stage."})
    steps: dict[int, int] = field(metadata={"help": "Optimizer steps per stage."})
    rank: int = field(metadata={"help": "LoRA rank r."})
    alpha: float = field(metadata={"help": "LoRA alpha (scale alpha/r)."})
    targets: tuple[str, ...] = field(metadata={"help": "Target module suffixes (diffusers names)."})
    pool: int = field(default=2, metadata={"help": "GCLF pooling factor stage 2 was trained with."})
    stages: tuple[int, ...] = field(default=(1, 2), metadata={"help": "Stages held by the file."})
    key_format: KeyFormat = field(default="relay", metadata={"help": "relay, diffusers or comfy."})

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "udit.format": FORMAT_NAME, "udit.format_version": FORMAT_VERSION, "udit.version": __version__,
            "udit.key_format": self.key_format, "udit.stages": ",".join(map(str, self.stages)),
            "udit.base_model": self.base_model, "udit.base_arch": json.dumps(self.base_arch, sort_keys=True),
            "udit.native_size": _size(self.native_size), "udit.rank": str(self.rank), "udit.alpha": repr(self.alpha),
            "udit.targets": json.dumps(list(self.targets)), "udit.gclf.pool": str(self.pool),
        }
        for stage, size in sorted(self.stage_sizes.items()):
            meta[f"udit.stage{stage}.size"] = _size(size)
            meta[f"udit.stage{stage}.steps"] = str(self.steps.get(stage, 0))
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], *, source: str) -> "RelayAdapterInfo":
        if meta.get("udit.format") != FORMAT_NAME:
            raise AdapterFileError(f"{source} is not a udit Relay LoRA (its header has no udit provenance); "
                                   "use the relay.safetensors or stage2.safetensors of a `udit train-relay` run, "
                                   "or a file written by `udit strip-adapter`")
        try:
            stage_ids = [int(k.split(".")[1].removeprefix("stage")) for k in meta if k.endswith(".size") and k.startswith("udit.stage")]
            return cls(
                base_model=meta["udit.base_model"], base_arch=json.loads(meta["udit.base_arch"]),
                native_size=_parse_size(meta["udit.native_size"]),
                stage_sizes={s: _parse_size(meta[f"udit.stage{s}.size"]) for s in stage_ids},
                steps={s: int(meta[f"udit.stage{s}.steps"]) for s in stage_ids},
                rank=int(meta["udit.rank"]), alpha=float(meta["udit.alpha"]),
                targets=tuple(json.loads(meta["udit.targets"])), pool=int(meta.get("udit.gclf.pool", "2")),
                stages=tuple(int(s) for s in meta["udit.stages"].split(",") if s),
                key_format=meta["udit.key_format"],  # type: ignore[arg-type]
            )
        except (KeyError, ValueError) as exc:
            raise AdapterFileError(f"{source} has a damaged udit header ({exc}); re-export it with udit strip-adapter") from None


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}x{wh[1]}"


def _parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


# ---- reading and writing -------------------------------------------------------------------------------------

def write_safetensors_atomic(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` to ``path`` through a hidden temporary file and a rename: never half-written."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = partial_path(path)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata))
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata; an unreadable file is an :class:`AdapterFileError` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            return {k: handle.get_tensor(k) for k in handle.keys()}, meta
    except FileNotFoundError:
        raise AdapterFileError(f"LoRA file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise AdapterFileError(f"cannot read {path} as safetensors: {exc}") from None


def to_comfy(state: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """PEFT keys → ``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` plus one ``.alpha`` per module."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, kind = _split_lora_key(key)
        block, inner = _split_block(module)
        comfy = f"{COMFY_PREFIX}{block}.{_TO_COMFY[inner]}"
        out[f"{comfy}.{kind}"] = tensor
        out[f"{comfy}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def from_comfy(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
    """Inverse of :func:`to_comfy`: PEFT keys and the (single) alpha."""
    state, alphas = {}, set()
    for key, tensor in tensors.items():
        rest = key.removeprefix(COMFY_PREFIX)
        if key.endswith(".alpha"):
            alphas.add(float(tensor))
            continue
        module, kind = _split_lora_key(rest)
        block, inner = _split_block(module)
        state[f"{block}.{_FROM_COMFY[inner]}.{kind}"] = tensor
    if len(alphas) != 1:
        raise AdapterFileError(f"a comfy-format Relay LoRA holds one alpha for all modules, found {sorted(alphas)}")
    return state, alphas.pop()


def _split_lora_key(key: str) -> tuple[str, str]:
    for kind in ("lora_A.weight", "lora_B.weight"):
        if key.endswith("." + kind):
            return key[: -len(kind) - 1], kind
    raise AdapterFileError(f"unexpected tensor {key!r} in a Relay LoRA (only lora_A/lora_B weights belong there)")


def _split_block(module: str) -> tuple[str, str]:
    parts = module.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise AdapterFileError(f"unexpected module {module!r} in a Relay LoRA (expected blocks.N.<layer>)")
    inner = ".".join(parts[2:])
    if inner not in _TO_COMFY and inner not in _FROM_COMFY:
        raise AdapterFileError(f"module {module!r} has no ComfyUI name; Relay LoRAs target "
                               f"{', '.join(_TO_COMFY)}")
    return f"blocks.{parts[1]}", inner


def diffusers_lora_metadata(info: RelayAdapterInfo) -> dict[str, Any]:
    """diffusers' ``lora_adapter_metadata`` (the LoraConfig to rebuild), keys prefixed by ``transformer.``."""
    return {"transformer.r": info.rank, "transformer.lora_alpha": info.alpha,
            "transformer.target_modules": list(info.targets)}


def encode_stage(state: Mapping[str, torch.Tensor], info: RelayAdapterInfo, stage: int,
                 fmt: Literal["diffusers", "comfy"]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One stage's PEFT state as file tensors + header in ``fmt``."""
    single = dataclasses.replace(info, stages=(stage,), key_format=fmt)
    meta = single.to_metadata()
    if fmt == "comfy":
        return to_comfy(state, info.alpha), meta
    meta["lora_adapter_metadata"] = json.dumps(diffusers_lora_metadata(info), sort_keys=True)
    return {DIFFUSERS_PREFIX + k: v for k, v in state.items()}, meta


def encode_relay(stages: Mapping[int, Mapping[str, torch.Tensor]], info: RelayAdapterInfo) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The combined run file: ``stage<N>.<peft key>`` for every stage."""
    tensors = {f"stage{s}.{k}": v for s, state in sorted(stages.items()) for k, v in state.items()}
    meta = dataclasses.replace(info, stages=tuple(sorted(stages)), key_format="relay").to_metadata()
    return tensors, meta


def read_relay_adapter(path: Path) -> tuple[RelayAdapterInfo, dict[int, dict[str, torch.Tensor]]]:
    """Any of the three formats → (info, PEFT state per stage). Refuses files without udit provenance."""
    tensors, meta = read_safetensors(Path(path))
    info = RelayAdapterInfo.from_metadata(meta, source=str(path))
    if info.key_format == "relay":
        stages: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            head, _, rest = key.partition(".")
            stages.setdefault(int(head.removeprefix("stage")), {})[rest] = tensor
        return info, stages
    if info.key_format == "comfy":
        state, alpha = from_comfy(tensors)
        info = dataclasses.replace(info, alpha=alpha)
    else:
        state = {k.removeprefix(DIFFUSERS_PREFIX): v for k, v in tensors.items()}
    return info, {info.stages[0]: state}


# ---- strip-adapter -------------------------------------------------------------------------------------------

def find_relay_file(source: Path) -> Path:
    """A run folder means its ``relay.safetensors``; a file is taken as is."""
    source = Path(source)
    if source.is_dir():
        candidate = source / "relay.safetensors"
        if not candidate.is_file():
            raise AdapterFileError(f"{source} has no relay.safetensors: the run has not finished stage 2 "
                                   "(resume it with `udit train-relay --resume`)")
        return candidate
    if not source.exists():
        raise AdapterFileError(f"{source} does not exist; give a train-relay run folder or its relay.safetensors")
    return source


def strip_adapter(source: Path, out: Path, *, fmt: str = "diffusers", overwrite: bool = False) -> Path:
    """Write only the stage-2 LoRA of ``source`` (run folder or Relay file) to ``out`` in ``fmt``.

    Example:
        >>> strip_adapter(Path("runs/cat"), Path("cat-relay.safetensors"), fmt="comfy")  # doctest: +SKIP
    """
    if fmt not in OUTPUT_FORMATS:
        raise AdapterFileError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.suffix != ".safetensors":
        raise OutputError(f"--out must end in .safetensors, got {out}")
    if not out.parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {out.parent} does not exist")
    path = find_relay_file(source)
    info, stages = read_relay_adapter(path)
    if 2 not in stages:
        raise AdapterFileError(f"{path} holds no stage-2 LoRA (stages: {', '.join(map(str, sorted(stages)))}); "
                               "finish stage 2 of the run first")
    tensors, meta = encode_stage(stages[2], info, 2, fmt)  # type: ignore[arg-type]
    return write_safetensors_atomic(out, tensors, meta)
