"""The cross-attention cache: entries per block, reset, a clear error when read before a refresh."""

from __future__ import annotations

import pytest
import torch

from upscale_dit.attention.cross_cache import CrossAttnCache


def test_put_get_reset_and_repr():
    cache = CrossAttnCache("cpu")
    values = {b: torch.randn(1, 6, 8) for b in range(3)}
    for block, value in values.items():
        cache.put(block, value)
    assert len(cache) == 3 and cache.nbytes == 3 * 6 * 8 * 4
    for block, value in values.items():
        assert torch.equal(cache.get(block, torch.device("cpu")), value)
    assert "entries=3" in repr(cache) and "bytes=576" in repr(cache) and "tensor(" not in repr(cache)
    cache.reset()
    assert len(cache) == 0
    with pytest.raises(RuntimeError, match="no entry for block 1: a cached pass ran before any refresh"):
        cache.get(1, torch.device("cpu"))
