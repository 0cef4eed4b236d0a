"""The FreeSwim cross-attention cache: per-block, pre-projection cross-attention outputs of the full branch.

One entry per transformer block. It lives on the GPU or in pinned CPU memory; which one is a runtime choice
made from the memory budget, never a hard-coded device. In CPU memory, copies run on a side CUDA stream:
stores leave the GPU while the next blocks compute, and reading block b starts the copy of block b+1, so the
host-to-device traffic of a cached pass overlaps its compute.
"""

from __future__ import annotations

import torch


class CrossAttnCache:
    """Cached ``[1, S, H*D]`` cross-attention outputs keyed by block index."""

    def __init__(self, storage: torch.device | str = "cpu") -> None:
        self.storage = torch.device(storage)
        self._entries: dict[int, torch.Tensor] = {}
        self._prefetched: dict[int, tuple[torch.Tensor, torch.cuda.Event]] = {}
        self._stream: torch.cuda.Stream | None = None
        self.refreshes = 0  # how many times the whole cache was recomputed (one per guide step)

    def reset(self) -> None:
        """Drop every entry (start of a generation, and before a refresh so only one set is ever alive)."""
        self._entries.clear()
        self._prefetched.clear()

    def _copy_stream(self, device: torch.device) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def put(self, block: int, value: torch.Tensor) -> None:
        if self.storage.type == "cpu" and value.device.type == "cuda":
            stream = self._copy_stream(value.device)
            stream.wait_stream(torch.cuda.current_stream(value.device))  # the value is computed
            host = torch.empty(value.shape, dtype=value.dtype, device="cpu", pin_memory=True)
            with torch.cuda.stream(stream):
                host.copy_(value, non_blocking=True)
            value.record_stream(stream)  # its memory is not reused before the copy is done
            self._entries[block] = host
        else:
            self._entries[block] = value.to(self.storage)

    def get(self, block: int, device: torch.device) -> torch.Tensor:
        if block not in self._entries:
            raise RuntimeError(
                f"cross-attention cache has no entry for block {block}: a cached pass ran before any refresh "
                "(the first conditional pass of a generation must refresh; see FreeSwimController)"
            )
        if not (self.storage.type == "cpu" and device.type == "cuda"):
            return self._entries[block].to(device)
        value, ready = self._prefetched.pop(block, None) or self._start_copy(block, device)
        torch.cuda.current_stream(device).wait_event(ready)
        value.record_stream(torch.cuda.current_stream(device))  # used on the compute stream from here on
        following = block + 1 if block + 1 in self._entries else min(self._entries)
        if following not in self._prefetched:
            self._prefetched[following] = self._start_copy(following, device)
        return value

    def _start_copy(self, block: int, device: torch.device) -> tuple[torch.Tensor, torch.cuda.Event]:
        stream = self._copy_stream(device)
        with torch.cuda.stream(stream):
            value = self._entries[block].to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        return value, ready

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
