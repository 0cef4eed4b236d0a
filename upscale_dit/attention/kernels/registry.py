"""One signature, one registry, and the checks that decide which window-attention kernel can run.

Every kernel is a plain function ``fn(q, k, v, geometry, *, scale, layout) -> out`` with tensors
``[B, S, H, D]`` (diffusers' dispatcher layout), registered by name where it is defined. Processors,
methods and the CLI refer to kernels by name only. ``kernel="auto"`` walks the kernels in priority
order and takes the first that can run; an explicitly named kernel that cannot run raises
:class:`KernelUnavailableError`, never falls back silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ...errors import UditError
from ..geometry import TokenGeometry
from ..layout import LayoutLike, resolve_layout

__all__ = [
    "KernelSpec",
    "KernelUnavailableError",
    "check_qkv",
    "choose_kernel",
    "get_kernel",
    "kernel_rejections",
    "list_kernels",
    "register_kernel",
    "window_attention",
]

logger = logging.getLogger(__name__)


class KernelUnavailableError(UditError):
    """A named window-attention kernel cannot run here (missing package, device, size), or none can."""

    exit_code = 2


class KernelFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry, *,
        scale: float | None, layout: LayoutLike,
    ) -> torch.Tensor: ...


Reason = str | None
"""``None`` means "yes"; a string says why not, in words a user can act on."""


@dataclass(frozen=True)
class KernelSpec:
    """A registered kernel.

    Attributes:
        name: the name users type (``--kernel flex``).
        fn: the kernel function.
        unavailable: ``() -> reason`` — can this installation run it at all (package, version)?
        cannot_run: ``(q, geometry) -> reason`` — can it run these inputs (device, size, dtype)?
        priority: higher is tried first by ``auto``.
        auto_devices: device types on which ``auto`` may pick it (explicit requests ignore this).
    """

    name: str
    fn: KernelFn
    unavailable: Callable[[], Reason]
    cannot_run: Callable[[torch.Tensor, TokenGeometry], Reason]
    priority: int
    auto_devices: frozenset[str]

    def is_available(self) -> bool:
        """True if this installation can run the kernel at all."""
        return self.unavailable() is None

    def why_not(self, q: torch.Tensor, geometry: TokenGeometry, *, auto: bool = False) -> Reason:
        """Why this kernel cannot run ``q`` on ``geometry`` (``None`` if it can)."""
        reason = self.unavailable()
        if reason is None and auto and q.device.type not in self.auto_devices:
            reason = f"not picked automatically on {q.device.type} (pass kernel={self.name!r} to force it)"
        return reason if reason is not None else self.cannot_run(q, geometry)


_REGISTRY: dict[str, KernelSpec] = {}  # filled at import by @register_kernel; never mutated afterwards


def _always_available() -> Reason:
    return None


def _runs_anything(q: torch.Tensor, geometry: TokenGeometry) -> Reason:
    return None


def register_kernel(
    name: str,
    *,
    unavailable: Callable[[], Reason] = _always_available,
    cannot_run: Callable[[torch.Tensor, TokenGeometry], Reason] = _runs_anything,
    priority: int = 0,
    auto_devices: tuple[str, ...] = ("cpu", "cuda"),
) -> Callable[[KernelFn], KernelFn]:
    """Decorator registering a kernel under ``name`` (see :class:`KernelSpec` for the arguments).

    Registering enrols the kernel in ``auto`` selection and in the kernel test sweep.
    """

    def decorate(fn: KernelFn) -> KernelFn:
        if name in _REGISTRY or name == "auto":
            raise ValueError(f"kernel name {name!r} is already taken")
        _REGISTRY[name] = KernelSpec(
            name=name, fn=fn, unavailable=unavailable, cannot_run=cannot_run,
            priority=priority, auto_devices=frozenset(auto_devices),
        )
        return fn

    return decorate


def list_kernels() -> list[str]:
    """Registered kernel names, highest priority first."""
    return [spec.name for spec in sorted(_REGISTRY.values(), key=lambda s: -s.priority)]


def get_kernel(name: str) -> KernelSpec:
    """The spec registered as ``name``; a typo raises with the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown window-attention kernel {name!r}; choose one of {list_kernels()} or 'auto'") from None


def kernel_rejections(q: torch.Tensor, geometry: TokenGeometry, *, auto: bool = True) -> dict[str, Reason]:
    """For every registered kernel, why it cannot run ``q`` on ``geometry`` (``None`` = it can)."""
    return {name: get_kernel(name).why_not(q, geometry, auto=auto) for name in list_kernels()}


def choose_kernel(q: torch.Tensor, geometry: TokenGeometry, preference: str = "auto") -> str:
    """Resolve ``preference`` (a kernel name or ``"auto"``) to a kernel that can run.

    Args:
        q: the query ``[B, S, H, D]`` (its device, dtype and size decide).
        geometry: the token geometry.
        preference: ``"auto"`` (highest-priority kernel that can run and suits the device) or a name.

    Returns:
        The kernel name.

    Raises:
        KernelUnavailableError: the named kernel cannot run, or (auto) none can; the message lists
            every kernel with the reason it was rejected.
    """
    if preference != "auto":
        reason = get_kernel(preference).why_not(q, geometry)
        if reason is not None:
            raise KernelUnavailableError(f"window-attention kernel {preference!r} cannot run: {reason}")
        return preference
    rejections = kernel_rejections(q, geometry, auto=True)
    for name, reason in rejections.items():
        if reason is None:
            logger.debug("window attention: auto picked kernel %r for %r on %s", name, geometry, q.device)
            return name
    lines = "\n".join(f"  - {name}: {reason}" for name, reason in rejections.items())
    raise KernelUnavailableError(f"no window-attention kernel can run {geometry!r} on {q.device}:\n{lines}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry) -> None:
    """Raise ``ValueError`` unless q, k, v are ``[B, S, H, D]`` self-attention inputs for ``geometry``.

    q and k must have the same shape; v the same ``[B, S, H]`` (its head dim may differ); all on one
    device with one floating dtype; ``S == geometry.num_tokens``.
    """
    if q.dim() != 4:
        raise ValueError(f"window attention takes [B, S, H, D] tensors, got {q.shape=}")
    if k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k, v must share [B, S, H] (and q, k the head dim), got {q.shape=}, {k.shape=}, {v.shape=}")
    if q.shape[1] != geometry.num_tokens:
        raise ValueError(
            f"sequence length {q.shape[1]} does not match {geometry!r}, which has "
            f"{geometry.num_tokens} tokens; build the geometry from the latents being denoised"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device=}, {k.device=}, {v.device=}")
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype=}, {k.dtype=}, {v.dtype=}")


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    geometry: TokenGeometry,
    *,
    scale: float | None = None,
    kernel: str = "auto",
    layout: LayoutLike = "natural",
) -> torch.Tensor:
    """FreeSwim window self-attention: every query attends to its (inward) window in all frames.

    Args:
        q: queries ``[B, S, H, D]``, S = ``geometry.num_tokens``.
        k: keys ``[B, S, H, D]``.
        v: values ``[B, S, H, Dv]``.
        geometry: token grid and window (see :class:`TokenGeometry`).
        scale: softmax scale; ``None`` is ``1/sqrt(D)``. FreeSwim uses
            :func:`~upscale_dit.attention.geometry.freeswim_attention_scale`.
        kernel: ``"auto"`` or a registered name (:func:`list_kernels`); a named kernel that
            cannot run raises :class:`KernelUnavailableError`.
        layout: the token order of q, k, v (and of the output): ``"natural"`` (frame-major
            row-major, as diffusers produces), ``"tiled"`` or a :class:`TokenLayout`. Inputs must
            already be in that order (:func:`~upscale_dit.attention.layout.to_layout`); block-sparse
            kernels are much faster on tiled inputs.

    Returns:
        ``[B, S, H, Dv]`` in q's dtype and token order.
    """
    check_qkv(q, k, v, geometry)
    layout = resolve_layout(layout)
    name = choose_kernel(q, geometry, kernel)
    return get_kernel(name).fn(q, k, v, geometry, scale=scale, layout=layout)
