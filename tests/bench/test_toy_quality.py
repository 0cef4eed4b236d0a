"""The toy-world quality benchmark scores known answers: ground-truth renders pass every check, fabricated
failures (repetition, blur, an object that kept its pixel size) show in their own columns."""

from __future__ import annotations

import dataclasses
import json
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upscale_dit.toy import MOTIONS, OBJECT_COLOURS, SHAPES, TEXTURES, parse_caption, render
from upscale_dit.training.data import collect_dataset

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    """Import a bench script by path (bench/ is scripts, not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class body runs
        spec.loader.exec_module(module)
    return sys.modules[name]


quality = _load("bench_toy_quality")
relay_images = _load("toy_relay_images")

NATIVE = 128  # the toy model's native 128x128
FRAMES = 9


def _ground_truth(case, scale: int, frames: int = FRAMES) -> np.ndarray:
    return quality.reference_video(case.scene, frames=frames, height=NATIVE * scale, width=NATIVE * scale, fps=16.0)


def _upsample(video: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic pixel upsampling: the right content and size, none of the detail."""
    h, w = video.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((w * factor, h * factor), Image.Resampling.BICUBIC))
                     for f in video])


def _prompts(cases: int = 1, seeds: tuple[int, ...] = (0,)):
    prompts = quality.load_prompts()
    return dataclasses.replace(prompts, cases=prompts.cases[:cases], seeds=seeds)


def test_prompt_file_covers_the_world() -> None:
    prompts = quality.load_prompts()  # also checks that every scene still reproduces its caption
    attrs = [parse_caption(c.caption) for c in prompts.cases]
    assert len(prompts.cases) == 8 and len(prompts.seeds) >= 2
    assert {a.shape for a in attrs} == set(SHAPES)
    assert len({a.colour for a in attrs}) == len(attrs) == len(OBJECT_COLOURS)
    assert {a.texture for a in attrs} == set(TEXTURES)
    assert {a.motion for a in attrs} == set(MOTIONS)


def test_every_prompt_scene_is_detected_at_the_native_size() -> None:
    """At 128x128 and 17 frames the detectors get every prompt's own render right, so a benchmark failure is
    the model's, not the prompt's."""
    prompts = quality.load_prompts()
    for case in prompts.cases:
        video = quality.reference_video(case.scene, frames=17, height=NATIVE, width=NATIVE, fps=prompts.fps)
        report = quality.score_video(video, case, fps=prompts.fps)
        assert report["count_exact_frac"] == 1.0, case.caption
        assert report["colour_match_frac"] == report["shape_match_frac"] == 1.0, case.caption
        assert report["motion_match"] == 1.0, case.caption
        assert report["scale_ratio"] == pytest.approx(1.0) and report["detail_ratio"] == pytest.approx(1.0)


def test_plan_rows_shares_one_native_row() -> None:
    rows = quality.plan_rows(["direct", "freeswim"], [3, 1, 2])
    assert [r.label for r in rows] == ["native", "direct 2x", "freeswim 2x", "direct 3x", "freeswim 3x"]
    assert [r.resolution for r in rows] == ["native", "2x", "2x", "3x", "3x"]
    assert rows[0].method == "direct"
    assert [r.label for r in quality.plan_rows(["relay"], [2])] == ["relay 2x"]


def test_ground_truth_as_generated_video_scores_perfectly() -> None:
    prompts = _prompts(cases=2)
    rows = quality.plan_rows(["direct"], [1, 2])
    records, examples = quality.run_benchmark(prompts, rows, lambda case, seed, row: (_ground_truth(case, row.scale),
                                                                                      0.0))
    summary = quality.aggregate(records)
    assert list(summary) == ["native", "direct 2x"] and list(examples) == ["native", "direct 2x"]
    for label, row in summary.items():
        assert row["videos"] == 2 and row["size"] == ("128x128" if label == "native" else "256x256")
        assert row["count_mean"] == 1.0 and row["exact_one_pct"] == 100.0 and row["repetition_pct"] == 0.0
        assert row["colour_pct"] == row["shape_pct"] == row["motion_pct"] == 100.0
        assert row["scale_vs_gt"] == pytest.approx(1.0) and row["detail_ratio"] == pytest.approx(1.0)
        assert row["scale_vs_native"] == pytest.approx(1.0, abs=0.02)  # rendered areas agree across sizes
        assert row["jerk_milli"] < 0.5  # constant velocity
        assert row["valid"]["jerk_milli"] == 2


def test_fabricated_failures_show_in_their_columns() -> None:
    """Repetition → count 2; an upsampled native video → right size, lost detail; an object that kept its pixel
    size at 2x → half the size relative to the frame."""
    prompts = _prompts()
    case = prompts.cases[0]
    twin = dataclasses.replace(case.scene, x=0.25, y=0.3)
    small = dataclasses.replace(case.scene, size=case.scene.size / 2)
    fakes = {
        "native": lambda: _ground_truth(case, 1),
        "direct 2x": lambda: render([case.scene, twin], height=256, width=256, frames=FRAMES),
        "freeswim 2x": lambda: _upsample(_ground_truth(case, 1), 2),
        "relay 2x": lambda: render(small, height=256, width=256, frames=FRAMES),
    }
    rows = quality.plan_rows(["direct", "freeswim", "relay"], [1, 2])
    records, _ = quality.run_benchmark(prompts, rows, lambda c, seed, row: (fakes[row.label](), 1.0))
    summary = quality.aggregate(records)
    repeated, blurry, shrunk = summary["direct 2x"], summary["freeswim 2x"], summary["relay 2x"]
    assert repeated["count_mean"] == 2.0 and repeated["repetition_pct"] == 100.0 and repeated["exact_one_pct"] == 0
    assert repeated["colour_pct"] == repeated["shape_pct"] == 100.0  # the main object itself is right
    assert blurry["count_mean"] == 1.0 and blurry["scale_vs_native"] == pytest.approx(1.0, abs=0.05)
    assert blurry["detail_ratio"] < 0.4
    assert shrunk["scale_vs_native"] == pytest.approx(0.5, abs=0.03)
    assert shrunk["scale_vs_gt"] == pytest.approx(0.5, abs=0.03)
    assert summary["native"]["seconds"] == 1.0


def test_aggregate_skips_nan_and_says_how_many_values_each_mean_has() -> None:
    base = {"row": "direct 2x", "method": "direct", "scale": 2, "size": "256x256", "prompt": 0, "seconds": 2.0,
            "count_mean": 1.0, "count_exact_frac": 1.0, "repetition_frac": 0.0, "missing_frac": 0.0,
            "colour_match_frac": 1.0, "shape_match_frac": 0.5, "area_frac": 0.04, "scale_ratio": 1.0,
            "motion_match": 1.0, "jerk": 0.002, "detail_ratio": 0.5}
    empty = {**base, "count_mean": 0.0, "count_exact_frac": 0.0, "missing_frac": 1.0, "colour_match_frac": 0.0,
             "shape_match_frac": 0.0, "area_frac": math.nan, "scale_ratio": math.nan, "motion_match": math.nan,
             "jerk": math.nan, "detail_ratio": math.nan, "seconds": 4.0}
    records = [dict(base), dict(empty)]
    quality.add_scale_vs_native(records)  # no native row: nothing to compare with
    row = quality.aggregate(records)["direct 2x"]
    assert row["videos"] == 2 and row["seconds"] == 3.0
    assert row["exact_one_pct"] == 50.0 and row["missing_pct"] == 50.0 and row["shape_pct"] == 25.0
    assert row["jerk_milli"] == pytest.approx(2.0) and row["valid"]["jerk_milli"] == 1
    assert row["detail_ratio"] == 0.5 and row["valid"]["detail_ratio"] == 1
    assert math.isnan(row["scale_vs_native"]) and row["valid"]["scale_vs_native"] == 0
    table = quality.markdown_table({"direct 2x": row}).splitlines()
    assert len(table) == 3 and table[0].startswith("| row | size | videos |")
    assert table[2].split(" | ")[-4] == "–"  # size/native: no value
    assert quality._json_safe({"a": [math.nan, 1.0]}) == {"a": [None, 1.0]}


def test_save_frames_writes_each_row_and_a_comparison(tmp_path: Path) -> None:
    prompts = _prompts()
    case = prompts.cases[0]
    rows = quality.plan_rows(["direct", "freeswim"], [1, 2])
    examples = {"native": _ground_truth(case, 1), "direct 2x": _ground_truth(case, 2),
                "freeswim 2x": _upsample(_ground_truth(case, 1), 2)}
    written = quality.save_frames(tmp_path, examples, rows, case, prompts.fps)
    assert sorted(p.name for p in written) == ["compare_2x.png", "direct_2x.png", "freeswim_2x.png",
                                               "ground_truth_2x.png", "ground_truth_native.png", "native.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "direct_2x.png")), examples["direct 2x"][FRAMES // 2])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ground_truth_2x.png")), examples["direct 2x"][FRAMES // 2])
    compare = Image.open(tmp_path / "compare_2x.png")
    assert compare.size == (4 * 256 + 3 * 4, 256 + 14)  # native (scaled up), truth, direct, freeswim


def test_relay_without_a_lora_is_skipped_when_defaulted_and_refused_when_asked(capsys) -> None:
    notes: list[str] = []
    args = quality.parse_args(["--model", "tiny"])
    assert quality.choose_methods(args, notes.append) == ["direct", "freeswim"]
    assert len(notes) == 1 and "skipping relay" in notes[0]
    assert quality.main(["--model", "tiny", "--methods", "direct", "relay"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--relay-lora" in err


def test_generate_video_reads_back_the_tiny_models_video(tmp_path: Path) -> None:
    case = _prompts().cases[0]
    video, seconds = quality.generate_video(case, 0, quality.Row("native", "direct", 1), model="tiny",
                                            workdir=tmp_path, steps=1)
    assert video.shape == (9, 96, 160, 3) and video.dtype == np.uint8 and seconds > 0
    assert list(tmp_path.iterdir()) == []  # the mp4 and its sidecar are gone once read


def test_relay_stills_are_a_train_relay_image_folder(tmp_path: Path) -> None:
    paths = relay_images.write_stills(tmp_path, count=3, width=64, height=48)
    dataset = collect_dataset(tmp_path, caption=None, min_size=(64, 48))
    assert [item.path for item in dataset.items] == paths
    for item in dataset.items:
        assert (item.width, item.height) == (64, 48)
        parse_caption(item.caption)  # the world's template, so the model knows every word
    assert relay_images.parse_size("320x192") == (320, 192)


def test_main_writes_the_table_and_json_and_logs_one_line_per_video(tmp_path: Path, capsys) -> None:
    out = tmp_path / "quality.json"
    code = quality.main(["--model", "tiny", "--limit", "1", "--seeds", "0", "--scales", "1", "2", "--methods", "direct",
                       "--steps", "1", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines()[0].startswith("| row | size | videos |")
    assert "[1/2] native · prompt 1 · seed 0:" in captured.err and "[2/2] direct 2x · prompt 1 · seed 0:" in captured.err
    result = json.loads(out.read_text())
    assert list(result["rows"]) == ["native", "direct 2x"] and len(result["videos"]) == 2
    assert all(row["videos"] == 1 for row in result["rows"].values())


def test_shards_merge_into_the_table_of_one_run(tmp_path: Path, capsys) -> None:
    common = ["--model", "tiny", "--seeds", "0", "--scales", "1", "--steps", "1", "--device", "cpu"]
    whole, first, second = (tmp_path / name for name in ("whole.json", "first.json", "second.json"))
    assert quality.main([*common, "--limit", "2", "--out", str(whole)]) == 0
    assert quality.main([*common, "--first", "1", "--limit", "1", "--out", str(first)]) == 0
    assert quality.main([*common, "--first", "2", "--limit", "1", "--out", str(second)]) == 0
    capsys.readouterr()
    merged = tmp_path / "merged.json"
    assert quality.main(["--merge", str(first), str(second), "--out", str(merged)]) == 0
    table = capsys.readouterr().out
    expected = json.loads(whole.read_text())
    result = json.loads(merged.read_text())
    assert [v["prompt"] for v in result["videos"]] == [0, 1] == [v["prompt"] for v in expected["videos"]]
    assert result["rows"]["native"]["videos"] == 2
    for key, value in expected["rows"]["native"].items():  # the same videos, so the same means
        if key == "seconds":
            continue
        if isinstance(value, float):
            assert result["rows"]["native"][key] == pytest.approx(value), key
        else:
            assert result["rows"]["native"][key] == value, key
    assert "| native |" in table

    assert quality.main(["--merge", str(first), str(first)]) == 2
    assert "not disjoint shards" in capsys.readouterr().err
    assert quality.main([*common, "--first", "99", "--out", str(tmp_path / "none.json")]) == 2
    assert "--first 99 is past the" in capsys.readouterr().err
