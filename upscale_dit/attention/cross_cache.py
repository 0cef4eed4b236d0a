"""The FreeSwim cross-attention cache: per-block, pre-projection cross-attention outputs of the full branch.

One entry per transformer block. It lives on the GPU or in pinned CPU memory (copied back asynchronously on
use); which one is a runtime choice made from the memory budget, never a hard-coded device.
"""

from __future__ import annotations

import torch


class CrossAttnCache:
    """Cached ``[1, S, H*D]`` cross-attention outputs keyed by block index."""

    def __init__(self, storage: torch.device | str = "cpu") -> None:
        self.storage = torch.device(storage)
        self._entries: dict[int, torch.Tensor] = {}
        self.refreshes = 0  # how many times the whole cache was recomputed (one per guide step)

    def reset(self) -> None:
        """Drop every entry (start of a generation, and before a refresh so only one set is ever alive)."""
        self._entries.clear()

    def put(self, block: int, value: torch.Tensor) -> None:
        if self.storage.type == "cpu" and value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, device="cpu", pin_memory=True)
            host.copy_(value, non_blocking=True)
            self._entries[block] = host
        else:
            self._entries[block] = value.to(self.storage)

    def get(self, block: int, device: torch.device) -> torch.Tensor:
        if block not in self._entries:
            raise RuntimeError(
                f"cross-attention cache has no entry for block {block}: a cached pass ran before any refresh "
                "(the first conditional pass of a generation must refresh; see FreeSwimController)"
            )
        return self._entries[block].to(device, non_blocking=True)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def __repr__(self) -> str:
        shapes = {tuple(t.shape) for t in self._entries.values()}
        dtypes = {str(t.dtype).removeprefix("torch.") for t in self._entries.values()}
        return (f"CrossAttnCache(entries={len(self)}, storage={self.storage}, shapes={sorted(shapes)}, "
                f"dtypes={sorted(dtypes)}, bytes={self.nbytes})")
