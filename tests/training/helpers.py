"""Shared by the Relay tests: small generated images and a tiny-model training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from upscale_dit.config.loader import nest
from upscale_dit.training import RelayTrainConfig, layer_train_config

TINY_STAGE2 = "320x192"  # 2x the tiny model's native 160x96


def make_images(folder: Path, count: int = 2, *, size: tuple[int, int] = (340, 200), captions: bool = True,
                suffix: str = ".png") -> list[Path]:
    """``count`` smooth, distinct pattern images (``size`` = (width, height)), each with a .txt caption."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    paths = []
    for i in range(count):
        rgb = np.stack([np.sin(xx / (15 + 10 * i)) * 127 + 128, np.cos(yy / (20 - 5 * i)) * 127 + 128,
                        (xx + yy * (i + 1)) % 255], axis=-1).astype(np.uint8)
        path = folder / f"img{i}{suffix}"
        Image.fromarray(rgb).save(path)
        if captions:
            path.with_suffix(".txt").write_text(f"a pattern number {i}\n")
        paths.append(path)
    return paths


def tiny_config(images: Path, out: Path, **dotted: Any) -> RelayTrainConfig:
    """A tiny-model run: few steps, stage 2 at 320x192; ``dotted`` keys (``stage1.steps``) override."""
    flags = {"model": "tiny", "output": str(out), "data.images": str(images), "stage1.steps": 3, "stage2.steps": 3,
             "stage2.resolution": TINY_STAGE2, "checkpoint.every": 2, **dotted}
    return layer_train_config(flags=nest(flags))
