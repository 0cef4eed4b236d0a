"""Write high-resolution stills of the toy world: the training images of a toy Relay LoRA (issue 7).

Relay (ViBe) learns high-resolution generation from images only, so the toy model's LoRA needs toy-world
images at its stage-2 size. Each still is frame 0 of a scene drawn with :func:`upscale_dit.toy.sample_scene`
(exactly what the video model should produce as the first frame for that caption), saved as
``toy_NNNN.png`` with the scene's caption in a same-stem ``toy_NNNN.txt`` — the folder layout
``udit train-relay --images`` reads. Scene seeds start at ``--seed-base`` (default 1,000,000), far from the
benchmark's prompt scenes (bench/toy_quality/prompts.yaml uses seeds below 2,000).

Toy model (native 128x128; stage 2 at 2x = 256x256), on the GPU:

    python bench/toy_relay_images.py --out toy_relay_images --count 200 --size 256x256
    udit train-relay --images toy_relay_images --model toy --out runs/toy-relay
    # -> runs/toy-relay/relay.safetensors, for bench/bench_toy_quality.py --relay-lora

(stage 1 at native, stage 2 at 2x, 1000 steps each by default; --stage1-steps/--stage2-steps/--rank tune it.)

CPU smoke run with the random-weight ``tiny`` model (native 160x96, so stage 2 needs 320x192 stills):

    .venv/bin/python bench/toy_relay_images.py --out /tmp/toy_relay_tiny --count 4 --size 320x192
    .venv/bin/udit train-relay --images /tmp/toy_relay_tiny --model tiny --stage1-steps 2 --stage2-steps 2 \\
        --out /tmp/toy_relay_tiny_run
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from upscale_dit.toy import render, sample_scene

CLIP_SECONDS = 1.0  # the toy model's 17 frames at 16 fps, (17 - 1) / 16: the scenes' motion range


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` → (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise argparse.ArgumentTypeError(f"expected WxH such as 256x256, got {text!r}")
    return int(m[1]), int(m[2])


def write_stills(folder: Path, *, count: int, width: int, height: int, seed_base: int = 1_000_000,
                 clip_seconds: float = CLIP_SECONDS) -> list[Path]:
    """Render ``count`` stills (frame 0 of sampled scenes, sized for this aspect) with .txt captions."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        scene = sample_scene(seed_base + i, aspect=width / height, clip_seconds=clip_seconds)
        frame = render(scene, height=height, width=width, frames=1)[0]
        path = folder / f"toy_{i:04d}.png"
        Image.fromarray(frame).save(path)
        path.with_suffix(".txt").write_text(scene.caption() + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=200, help="number of stills (default: %(default)s)")
    parser.add_argument("--size", type=parse_size, default=(256, 256),
                        help="WxH of the stills, at least the stage-2 size (default: 256x256, 2x the toy model)")
    parser.add_argument("--seed-base", type=int, default=1_000_000, help="first scene seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    width, height = args.size
    paths = write_stills(args.out, count=args.count, width=width, height=height, seed_base=args.seed_base)
    print(f"wrote {len(paths)} stills of {width}x{height} with captions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
