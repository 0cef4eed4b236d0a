"""Regional compilation of the transformer: compile one block, reuse it for every block.

Compiling the whole transformer would trace 30 identical blocks (minutes of compile time, recompiles whenever
a pass changes); diffusers' ``compile_repeated_blocks`` compiles ``WanTransformerBlock.forward`` once and every
block reuses the graph. ``fullgraph=False`` because the FreeSwim and Relay processors reach host-side state (the
pass plan, the cross-attention cache) through graph breaks; ``dynamic=False`` because flex attention is compiled
for static shapes anyway, and a new size simply compiles again.
"""

from __future__ import annotations

import torch


def compile_blocks(transformer: torch.nn.Module, *, backend: str = "inductor") -> None:
    """Compile ``transformer``'s repeated blocks in place (lazily: the first pass of each kind compiles)."""
    if not getattr(transformer, "_repeated_blocks", None):
        raise ValueError(f"{type(transformer).__name__} declares no repeated blocks to compile")
    transformer.compile_repeated_blocks(fullgraph=False, dynamic=False, backend=backend)
