"""Device and dtype choice, and model-level CPU offload (each component on the GPU only while it runs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import ConfigError

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`runtime.device` is {name!r} but no CUDA GPU is visible; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA (what Wan was trained in), float32 on the CPU (bf16 matmuls are slow there)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


class Placement:
    """Where each component lives and runs. With offload, components rest on the CPU between uses."""

    def __init__(self, device: torch.device, offload: bool) -> None:
        self.device = device
        self.offload = offload and device.type != "cpu"

    @property
    def home(self) -> torch.device:
        return torch.device("cpu") if self.offload else self.device

    @contextlib.contextmanager
    def active(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Run ``module`` on the compute device; with offload, send it back to the CPU afterwards."""
        if self.offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if self.offload:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


def cast_keeping_fp32(module: torch.nn.Module, dtype: torch.dtype, keep: set[str] | None = None) -> None:
    """Cast floating parameters and buffers to ``dtype`` except those whose dotted name has a part in ``keep``.

    ``keep`` defaults to the model's ``_keep_in_fp32_modules`` (Wan: RoPE, time embedder, norms and the
    ``scale_shift_table`` parameters), matching what diffusers' ``from_pretrained(torch_dtype=...)`` does, so a
    model built in code equals a loaded checkpoint. Works on the meta device; tied parameters stay tied.
    """
    if keep is None:
        keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    for prefix, sub in module.named_modules():
        for tensors in (sub._parameters, sub._buffers):
            for key, tensor in tensors.items():
                name = f"{prefix}.{key}" if prefix else key
                if tensor is not None and tensor.is_floating_point() and not keep & set(name.split(".")):
                    tensor.data = tensor.data.to(dtype)
