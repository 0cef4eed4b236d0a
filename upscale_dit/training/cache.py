"""Cached VAE latents and text embeddings, per image and setting, in the run folder.

Encoding is done once: a file is named by a hash of everything that determines it (the image's bytes, the
crop size and rule, the encoder it went through; or the caption, token length and text encoder), so both
stages, resumed runs and a changed dataset reuse what is still valid and never reuse what is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..adapters import write_safetensors_atomic
from .data import ImageItem, load_image

CROP_RULE = "cover-bilinear-centre-v1"  # bump when load_image changes what it produces


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Sample:
    """Where one training sample's cached tensors live (one latent file per stage size)."""

    name: str
    latents: dict[tuple[int, int], Path]  # (width, height) -> file
    text: Path


class FeatureCache:
    """``cache/latents/<key>.safetensors`` and ``cache/text/<key>.safetensors`` under the run folder."""

    def __init__(self, root: Path, *, model_id: str) -> None:
        self.root, self.model_id = Path(root), model_id

    def latent_path(self, image_digest: str, size: tuple[int, int]) -> Path:
        return self.root / "latents" / f"{_digest(image_digest, f'{size[0]}x{size[1]}', CROP_RULE, self.model_id)}.safetensors"

    def text_path(self, caption: str, max_length: int) -> Path:
        return self.root / "text" / f"{_digest(caption, str(max_length), self.model_id)}.safetensors"

    def plan(self, items: Iterable[ImageItem], sizes: Iterable[tuple[int, int]], max_length: int) -> list[Sample]:
        """The cache files every item needs (hashing each image's bytes once)."""
        sizes = list(sizes)
        samples = []
        for item in items:
            digest = file_digest(item.path)
            samples.append(Sample(name=str(item.path), latents={s: self.latent_path(digest, s) for s in sizes},
                                  text=self.text_path(item.caption, max_length)))
        return samples


def missing_files(samples: Iterable[Sample]) -> tuple[set[Path], set[Path]]:
    """Latent files and text files not on disk yet."""
    latents = {p for s in samples for p in s.latents.values() if not p.is_file()}
    texts = {s.text for s in samples if not s.text.is_file()}
    return latents, texts


def save_tensor(path: Path, tensor: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors_atomic(path, {"value": tensor.detach().to("cpu").contiguous()}, {"udit.cache": "1"})


def load_tensor(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["value"]


@torch.no_grad()
def fill_cache(samples: list[Sample], items: list[ImageItem], parts: dict[str, Any], *, max_length: int,
               device: torch.device, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Encode what is missing: VAE latents (posterior mode, normalised) and padded text embeddings.

    Returns:
        How many files were written.
    """
    from ..engine.refine import encode_video, frames_to_video_tensor
    from ..engine.text import encode_prompts

    todo_latents, todo_text = missing_files(samples)
    total, done = len(todo_latents) + len(todo_text), 0
    for sample, item in zip(samples, items):
        for (width, height), path in sample.latents.items():
            if path in todo_latents:
                frame = load_image(item.path, width, height)
                video = frames_to_video_tensor(frame[None], device=device)
                save_tensor(path, encode_video(parts["vae"], video))
                todo_latents.discard(path)
                done += 1
                if on_progress:
                    on_progress(done, total)
        if sample.text in todo_text:
            embeds = encode_prompts(parts["tokenizer"], parts["text_encoder"], [item.caption],
                                    max_length=max_length, device=device)
            save_tensor(sample.text, embeds)
            todo_text.discard(sample.text)
            done += 1
            if on_progress:
                on_progress(done, total)
    return done
