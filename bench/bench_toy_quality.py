"""Toy-world quality benchmark (issue 7): how each method's high-resolution video fails, in numbers.

For every prompt × seed of ``bench/toy_quality/prompts.yaml`` it generates one video at the native size (a
single ``native`` row, shared by all methods) and one per ``--methods`` × ``--scales`` factor, through
:func:`upscale_dit.generate`, and scores each against its caption with :func:`upscale_dit.toy.evaluate_video`
and a ground-truth render of the prompt's scene at the same size and frame count:

- repetition: objects per frame (the caption asks for one), % of frames with exactly one, more, none;
- scale: object size (linear) vs the ground-truth render, and vs this prompt's native-size videos
  (1 = the object kept its size relative to the frame; 0.5 = it kept its size in pixels);
- colour and shape agreement (% of frames), motion agreement (% of videos), centroid jerk (temporal
  coherence, thousandths of a frame height per frame²);
- detail: high-frequency energy inside the object vs the ground-truth render (1 = as sharp; < 1 blurry;
  grain also counts as detail, so read it next to the other columns).

Each row averages its videos (NaNs, e.g. jerk with no object found, are left out; the JSON's ``valid`` counts
say how many values each average has). Videos are written losslessly for luma (``crf 0``) so that the
measured detail is the model's, not the encoder's; chroma is still 4:2:0.

``--methods`` defaults to direct, freeswim and relay; relay needs ``--relay-lora FILE`` (a ``udit train-relay``
run's ``relay.safetensors``; ``bench/toy_relay_images.py`` writes its training images). When relay was only
defaulted and no file is given it is skipped with a note; asking for it explicitly without a file is an error.

CPU smoke run (the ``tiny`` model has random weights, so its numbers mean nothing; every stage still runs):

    .venv/bin/python bench/bench_toy_quality.py --model tiny --steps 2 --limit 2 --seeds 0 \\
        --out /tmp/toy_quality.json --frames-dir /tmp/toy_quality

The real run, once the toy weights and a toy Relay LoRA exist:

    python bench/bench_toy_quality.py --relay-lora runs/toy-relay/relay.safetensors \\
        --out $OUT/toy_quality.json --frames-dir $OUT/toy_quality
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from upscale_dit.toy import SceneSpec, evaluate_video, render

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "toy_quality" / "prompts.yaml"
ALL_METHODS = ("direct", "freeswim", "relay")
NATIVE = "native"


# --------------------------------------------------------------------------- prompts and rows


@dataclass(frozen=True)
class Case:
    """One prompt: its caption and the scene whose render is the ground truth for it."""

    index: int
    caption: str
    scene: SceneSpec


@dataclass(frozen=True)
class PromptSet:
    cases: tuple[Case, ...]
    seeds: tuple[int, ...]
    fps: float


def load_prompts(path: str | Path = DEFAULT_PROMPTS) -> PromptSet:
    """Read the prompt file; a scene that no longer reproduces its caption (the world changed) is an error,
    because its ground truth would silently stop matching the prompt."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    cases = []
    for i, item in enumerate(data["prompts"]):
        scene = SceneSpec(**item["scene"])
        if scene.caption() != item["caption"]:
            raise ValueError(f"{path}: prompt {i}'s scene now captions as {scene.caption()!r}, not "
                             f"{item['caption']!r}; the toy world changed, regenerate the file")
        cases.append(Case(index=i, caption=item["caption"], scene=scene))
    return PromptSet(cases=tuple(cases), seeds=tuple(int(s) for s in data["seeds"]), fps=float(data["fps"]))


@dataclass(frozen=True)
class Row:
    """One line of the table: a method at a scale (scale 1 is the shared native-size row)."""

    label: str
    method: str
    scale: int

    @property
    def resolution(self) -> str:
        """The ``--res`` spelling the presets understand."""
        return NATIVE if self.scale == 1 else f"{self.scale}x"

    @property
    def slug(self) -> str:
        return self.label.replace(" ", "_")


def plan_rows(methods: Sequence[str], scales: Sequence[int]) -> list[Row]:
    """The native row first (when scale 1 is asked for: the other rows' ``scale_vs_native`` needs it), then
    every method at every scale above 1. Native is plain generation, whatever the methods."""
    rows = [Row(NATIVE, "direct", 1)] if 1 in scales else []
    rows += [Row(f"{m} {s}x", m, s) for s in sorted(set(scales)) if s > 1 for m in methods]
    return rows


# --------------------------------------------------------------------------- scoring


def reference_video(scene: SceneSpec, *, frames: int, height: int, width: int, fps: float) -> np.ndarray:
    """Ground truth: the prompt's scene rendered at the generated video's size and length."""
    return render(scene, height=height, width=width, frames=frames, fps=fps)


def score_video(video: np.ndarray, case: Case, *, fps: float) -> dict[str, float]:
    """:class:`~upscale_dit.toy.VideoReport` fields of a uint8 ``(F, H, W, 3)`` video against its caption,
    with the ground-truth render at the same size as reference (scale and detail)."""
    frames, height, width = video.shape[:3]
    reference = reference_video(case.scene, frames=frames, height=height, width=width, fps=fps)
    return evaluate_video(video, case.caption, reference=reference).as_dict()


def add_scale_vs_native(records: list[dict[str, Any]]) -> None:
    """Set each record's ``scale_vs_native``: sqrt(object area / mean area of the same prompt's native-size
    videos), both as fractions of the frame. NaN where that prompt has no native video with an object."""
    native: dict[int, list[float]] = {}
    for r in records:
        if r["row"] == NATIVE and math.isfinite(r["area_frac"]):
            native.setdefault(r["prompt"], []).append(r["area_frac"])
    for r in records:
        areas = native.get(r["prompt"])
        ok = bool(areas) and math.isfinite(r["area_frac"])
        r["scale_vs_native"] = math.sqrt(r["area_frac"] / float(np.mean(areas))) if ok else math.nan


@dataclass(frozen=True)
class Metric:
    """A table column: the mean of one per-video field, times ``factor``."""

    key: str
    header: str
    field: str
    factor: float = 1.0
    digits: int = 2


METRICS: tuple[Metric, ...] = (
    Metric("count_mean", "objects", "count_mean"),
    Metric("exact_one_pct", "=1 %", "count_exact_frac", 100.0, 0),
    Metric("repetition_pct", ">1 %", "repetition_frac", 100.0, 0),
    Metric("missing_pct", "none %", "missing_frac", 100.0, 0),
    Metric("colour_pct", "colour %", "colour_match_frac", 100.0, 0),
    Metric("shape_pct", "shape %", "shape_match_frac", 100.0, 0),
    Metric("scale_vs_gt", "size/GT", "scale_ratio"),
    Metric("scale_vs_native", "size/native", "scale_vs_native"),
    Metric("motion_pct", "motion %", "motion_match", 100.0, 0),
    Metric("jerk_milli", "jerk ‰", "jerk", 1000.0),
    Metric("detail_ratio", "detail/GT", "detail_ratio"),
)


def _finite_mean(values: Iterable[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(finite)


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row (in first-seen order): video count, mean seconds, size and every :data:`METRICS` mean, with
    ``valid`` = how many finite values each mean is over."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["row"], []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for label, group in groups.items():
        row: dict[str, Any] = {"method": group[0]["method"], "scale": group[0]["scale"], "size": group[0]["size"],
                               "videos": len(group), "seconds": _finite_mean(r["seconds"] for r in group)[0]}
        valid = {}
        for m in METRICS:
            mean, n = _finite_mean(float(r.get(m.field, math.nan)) for r in group)
            row[m.key] = mean * m.factor
            valid[m.key] = n
        row["valid"] = valid
        summary[label] = row
    return summary


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary as a markdown table, one line per row; ``–`` where no video gave a value."""
    headers = ["row", "size", "videos", *(m.header for m in METRICS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for label, row in summary.items():
        cells = [label, row["size"], str(row["videos"])]
        for m in METRICS:
            value = row[m.key]
            cells.append(f"{value:.{m.digits}f}" if math.isfinite(value) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN/inf → null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- frames


def middle_frame(video: np.ndarray) -> np.ndarray:
    return video[len(video) // 2]


def montage(panels: Sequence[tuple[str, np.ndarray]], *, gap: int = 4, label_height: int = 14) -> np.ndarray:
    """Frames side by side, each scaled (nearest neighbour, so pixels stay visible) to the tallest one's
    height, with its label above it."""
    from PIL import Image, ImageDraw

    height = max(p.shape[0] for _, p in panels)
    scaled = []
    for label, image in panels:
        width = round(image.shape[1] * height / image.shape[0])
        tile = Image.new("RGB", (width, height + label_height), (255, 255, 255))
        tile.paste(Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST), (0, label_height))
        ImageDraw.Draw(tile).text((2, 1), label, fill=(0, 0, 0))
        scaled.append(np.asarray(tile))
    spacer = np.full((height + label_height, gap, 3), 255, np.uint8)
    parts = [p for tile in scaled for p in (tile, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def save_frames(folder: Path, examples: Mapping[str, np.ndarray], rows: Sequence[Row], case: Case,
                fps: float) -> list[Path]:
    """Middle frames of the example videos (the first case and seed): one PNG per row and per ground-truth
    size, plus ``compare_Nx.png`` per scale above 1 (native, ground truth, then each method at that scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, image: np.ndarray) -> None:
        written.append(folder / name)
        save_png(written[-1], image)

    shown = [r for r in rows if r.label in examples]
    middles = {r.label: middle_frame(examples[r.label]) for r in shown}
    truths: dict[int, np.ndarray] = {}
    for row in shown:
        save(f"{row.slug}.png", middles[row.label])
        if row.scale not in truths:
            frames, height, width = examples[row.label].shape[:3]
            truth = reference_video(case.scene, frames=frames, height=height, width=width, fps=fps)
            truths[row.scale] = middle_frame(truth)
            save(f"ground_truth_{row.resolution}.png", truths[row.scale])
    for scale, truth in truths.items():
        if scale == 1:
            continue
        panels = [(NATIVE, middles[NATIVE])] if NATIVE in middles else []
        panels.append((f"ground truth {scale}x", truth))
        panels += [(r.label, middles[r.label]) for r in shown if r.scale == scale]
        save(f"compare_{scale}x.png", montage(panels))
    return written


# --------------------------------------------------------------------------- generation


def generate_video(case: Case, seed: int, row: Row, *, model: str, workdir: Path, steps: int | None = None,
                   relay_lora: Path | None = None, device: str | None = None,
                   set_options: Sequence[str] = ()) -> tuple[np.ndarray, float]:
    """One video through the library API, read back as uint8 ``(F, H, W, 3)``; and its seconds.

    ``steps`` overrides every stage's step count (base, FreeSwim refinement, Relay) for quick runs.
    """
    from upscale_dit import build_generate_config, generate
    from upscale_dit.video import read_video

    path = workdir / f"{row.slug}_p{case.index}_s{seed}.mp4"
    flags: dict[str, Any] = dict(
        model=model, resolution=row.resolution, method__name=row.method, sampling__seed=seed,
        output__path=str(path), output__overwrite=True, output__crf=0, runtime__device=device,
    )
    if steps is not None:
        flags.update(sampling__steps=steps, method__freeswim__steps=steps, method__relay__steps=steps)
    if row.method == "relay":
        flags["method__relay__lora"] = str(relay_lora)
    config = build_generate_config(case.caption, set=set_options, **flags)
    result = generate(config)
    video, _ = read_video(result.video)
    path.unlink(missing_ok=True)
    result.sidecar.unlink(missing_ok=True)
    return video, result.seconds


GenerateFn = Callable[[Case, int, Row], tuple[np.ndarray, float]]


def run_benchmark(prompts: PromptSet, rows: Sequence[Row], generate_fn: GenerateFn, *,
                  on_video: Callable[[str], None] = lambda _: None,
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Generate and score every row × case × seed.

    Returns the per-video records (report fields, ``scale_vs_native`` included) and, by row label, the
    video of the first case and seed (the example whose frames are saved).
    """
    records: list[dict[str, Any]] = []
    examples: dict[str, np.ndarray] = {}
    for row in rows:
        for case in prompts.cases:
            for seed in prompts.seeds:
                on_video(f"{row.label} · prompt {case.index + 1}/{len(prompts.cases)} · seed {seed}")
                video, seconds = generate_fn(case, seed, row)
                if row.label not in examples:
                    examples[row.label] = video
                records.append({"row": row.label, "method": row.method, "scale": row.scale, "prompt": case.index,
                                "caption": case.caption, "seed": seed, "seconds": seconds,
                                "size": f"{video.shape[2]}x{video.shape[1]}", "frames": len(video),
                                **score_video(video, case, fps=prompts.fps)})
    add_scale_vs_native(records)
    return records, examples


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", help="model preset (default: toy; tiny for smoke tests)")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=None,
                        help="methods at scales above 1 (default: direct freeswim relay; relay is skipped "
                             "without --relay-lora unless named here)")
    parser.add_argument("--scales", nargs="+", type=int, default=[1, 2, 3],
                        help="size factors of the native size; 1 = the shared native row (default: 1 2 3)")
    parser.add_argument("--relay-lora", type=Path, help="stage-2 Relay LoRA for --method relay")
    parser.add_argument("--steps", type=int, help="denoising steps of every stage (default: the presets')")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="prompt file (default: %(default)s)")
    parser.add_argument("--first", type=int, default=1,
                        help="start at the Nth prompt (1-based; with --limit, a shard of the file to run in "
                             "parallel, e.g. --first 5 --limit 4; --merge joins the shards)")
    parser.add_argument("--limit", type=int, help="use only N prompts (from --first)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="generate nothing: join the --out files of shards run with the same settings into "
                             "one table (and --out)")
    parser.add_argument("--seeds", nargs="+", type=int, help="noise seeds (default: the prompt file's)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE",
                        help="any generate setting by dotted key, e.g. method.freeswim.mode=exact; repeatable")
    parser.add_argument("--out", type=Path, help="write the summary and per-video records as JSON")
    parser.add_argument("--frames-dir", type=Path, help="save PNG middle frames of the first prompt and seed")
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.scales):
        parser.error("--scales must be positive integers")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.first < 1:
        parser.error("--first must be at least 1")
    for path in args.merge or ():
        if not path.is_file():
            parser.error(f"--merge: {path} does not exist")
    for folder in (args.out.parent if args.out else None, args.frames_dir and args.frames_dir.parent):
        if folder is not None and not folder.is_dir():  # fail now, not after an hour of generation
            parser.error(f"folder {folder} does not exist")
    return args


def choose_methods(args: argparse.Namespace, note: Callable[[str], None]) -> list[str] | str:
    """The methods to run, or an error line: relay without a LoRA is skipped when defaulted, refused when asked."""
    if args.methods is None:
        if args.relay_lora is None:
            note("note: skipping relay (no --relay-lora given); pass --relay-lora FILE to include it")
            return ["direct", "freeswim"]
        methods = list(ALL_METHODS)
    else:
        methods = list(dict.fromkeys(args.methods))
    if "relay" in methods:
        if args.relay_lora is None:
            return ("error: --methods relay needs --relay-lora FILE (the relay.safetensors of a `udit train-relay` "
                    "run; bench/toy_relay_images.py writes its training images)")
        if not args.relay_lora.is_file():
            return f"error: --relay-lora {args.relay_lora} does not exist or is not a file"
    return methods


def _note(line: str) -> None:
    """One unwrapped line on stderr (stdout holds only the table)."""
    print(line, file=sys.stderr, flush=True)


def merge_results(paths: Sequence[Path], out: Path | None) -> int:
    """Join shard results (``--out`` files of runs that differ only in their prompts): print and write one table."""
    parts = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    settings = ("model", "steps", "seeds", "methods", "scales", "set", "relay_lora")
    for path, part in zip(paths[1:], parts[1:]):
        different = [key for key in settings if part.get(key) != parts[0].get(key)]
        if different:
            _note(f"error: --merge: {path} was run with other {', '.join(different)} than {paths[0]}")
            return 2
    seen = [(r["row"], r["prompt"], r["seed"]) for part in parts for r in part["videos"]]
    if len(set(seen)) != len(seen):
        _note("error: --merge: the files share videos (same row, prompt and seed): they are not disjoint shards")
        return 2
    nan = lambda v: math.nan if v is None else v  # noqa: E731 - the JSON wrote non-finite values as null
    records = [{key: nan(value) for key, value in r.items()} for part in parts for r in part["videos"]]
    summary = aggregate(records)
    print(markdown_table(summary))
    if out:
        merged = {**parts[0], "prompts": [part["prompts"] for part in parts], "cases": sum(p["cases"] for p in parts),
                  "seconds": round(sum(p["seconds"] for p in parts), 2), "merged_from": [str(p) for p in paths],
                  "rows": summary, "videos": [r for part in parts for r in part["videos"]]}
        out.write_text(json.dumps(_json_safe(merged), indent=2) + "\n", encoding="utf-8")
        _note(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from transformers.utils import logging as transformers_logging

    from upscale_dit import UditError
    from upscale_dit.generation import package_versions

    args = parse_args(argv)
    if args.merge:
        return merge_results(args.merge, args.out)
    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per video would bury ours
    methods = choose_methods(args, _note)
    if isinstance(methods, str):
        _note(methods)
        return 2
    prompts = load_prompts(args.prompts)
    start = args.first - 1
    prompts = dataclasses.replace(prompts, cases=prompts.cases[start: start + args.limit if args.limit else None],
                                  seeds=tuple(args.seeds) if args.seeds else prompts.seeds)
    if not prompts.cases:
        _note(f"error: --first {args.first} is past the {start} prompts of {args.prompts}")
        return 2
    rows = plan_rows(methods, args.scales)
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    total = len(rows) * len(prompts.cases) * len(prompts.seeds)
    with tempfile.TemporaryDirectory(prefix="toy_quality_") as tmp, \
            Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("videos", total=total)

        def generate_fn(case: Case, seed: int, row: Row) -> tuple[np.ndarray, float]:
            out = generate_video(case, seed, row, model=args.model, workdir=Path(tmp), steps=args.steps,
                                 relay_lora=args.relay_lora, device=args.device, set_options=args.set_options)
            progress.advance(task)
            if not console.is_terminal:  # a log file gets one line a video instead of a bar it never sees
                done = int(progress.tasks[0].completed)
                _note(f"[{done}/{total}] {row.label} · prompt {case.index + 1} · seed {seed}: {out[1]:.1f} s "
                      f"({time.perf_counter() - started:.0f} s in all)")
            return out

        try:
            records, examples = run_benchmark(prompts, rows, generate_fn,
                                            on_video=lambda text: progress.update(task, description=text))
        except UditError as exc:
            progress.stop()
            _note(f"error: {exc}")
            return 1
    summary = aggregate(records)
    print(markdown_table(summary))
    if args.frames_dir:
        for path in save_frames(args.frames_dir, examples, rows, prompts.cases[0], prompts.fps):
            _note(f"wrote {path}")
    if args.out:
        result = {"model": args.model, "steps": args.steps, "device": args.device or "auto",
                  "prompts": str(args.prompts), "cases": len(prompts.cases), "seeds": list(prompts.seeds),
                  "methods": methods, "scales": sorted(set(args.scales)), "set": args.set_options,
                  "relay_lora": str(args.relay_lora) if args.relay_lora else None,
                  "seconds": round(time.perf_counter() - started, 2), "versions": package_versions(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": summary, "videos": records}
        args.out.write_text(json.dumps(_json_safe(result), indent=2) + "\n", encoding="utf-8")
        _note(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
