"""Training data for the toy model: world clips rendered in parallel, and captions with optional parts dropped.

Everything is a pure function of (seed, index), so a dataset is reproducible without being stored.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .world import MOTION_PHRASES, SIZE_CLASSES, SceneSpec, render, sample_scene


@dataclass(frozen=True, slots=True)
class ClipRequest:
    """One clip to render: scene seed, output size, frame count and frame rate."""

    seed: int
    height: int
    width: int
    frames: int
    fps: float = 16.0


def scene_seed(dataset_seed: int, index: int) -> int:
    """A scene seed per (dataset seed, index) that never collides between datasets of different seeds."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def clip_scene(request: ClipRequest) -> SceneSpec:
    """The scene of ``request.seed``, sampled to stay in frame for the clip's length (at least half a second)."""
    clip_seconds = max((request.frames - 1) / request.fps, 0.5)
    return sample_scene(request.seed, aspect=request.width / request.height, clip_seconds=clip_seconds)


def render_clip(request: ClipRequest) -> tuple[np.ndarray, str]:
    """uint8 ``(frames, H, W, 3)`` of the scene ``request.seed`` and its full caption."""
    scene = clip_scene(request)
    video = render(scene, height=request.height, width=request.width, frames=request.frames, fps=request.fps)
    return video, scene.caption()


def render_clips(requests: list[ClipRequest], *, workers: int = 1) -> tuple[np.ndarray, list[str]]:
    """Render many clips (in ``workers`` processes) → stacked uint8 videos and their captions, in order."""
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(render_clip, requests, chunksize=max(1, len(requests) // (4 * workers))))
    else:
        results = [render_clip(r) for r in requests]
    return np.stack([video for video, _ in results]), [caption for _, caption in results]


def vary_caption(caption: str, rng: random.Random, *, drop: float = 0.25) -> str:
    """The caption with optional parts left out, each with probability ``drop``.

    Users write "a red striped circle moving left": no size word, sometimes no background, "plain" or "standing
    still" left implicit. Training on such shortened captions teaches the model what a missing word means.
    """
    words = caption.split()
    if words[1] in SIZE_CLASSES and rng.random() < drop:
        del words[1]
    text = " ".join(words)
    if " plain " in text and rng.random() < drop:
        text = text.replace(" plain ", " ", 1)
    head, _, background = text.partition(" on a ")
    if rng.random() < drop:
        background = ""
    for phrase in MOTION_PHRASES.values():
        if head.endswith(" " + phrase) and rng.random() < drop:
            head = head[: -len(phrase) - 1]
    return f"{head} on a {background}" if background else head

