"""Detectors give the known answers on ground-truth renders and flag fabricated failures."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

from upscale_dit.toy.detect import (
    COLOUR_NAMES,
    classify_shape,
    detail_ratio,
    detect_objects,
    evaluate_video,
    high_frequency_energy,
    segment_colours,
    trajectory_jerk,
)
from upscale_dit.toy.world import (
    BACKGROUNDS,
    OBJECT_COLOURS,
    SHAPES,
    TEXTURES,
    SceneSpec,
    render,
    sample_scene,
    mark_colour,
)


def _resize(video: np.ndarray, height: int, width: int) -> np.ndarray:
    frames = [Image.fromarray(f).resize((width, height), Image.BICUBIC) for f in video]
    return np.stack([np.asarray(f) for f in frames])


def test_segmentation_maps_palette_marks_and_backgrounds() -> None:
    colours = [OBJECT_COLOURS[c] for c in COLOUR_NAMES]
    marks = [tuple(np.rint(mark_colour(c)).astype(int)) for c in COLOUR_NAMES]
    backgrounds = [c for pair in BACKGROUNDS.values() for c in pair]
    frame = np.array([colours, marks, backgrounds[:8]], dtype=np.uint8)
    labels = segment_colours(frame)
    assert labels[0].tolist() == list(range(len(COLOUR_NAMES)))
    assert labels[1].tolist() == list(range(len(COLOUR_NAMES)))
    assert (labels[2] == -1).all()
    mid_gray = np.array([[[128, 128, 128]]], np.uint8)
    assert segment_colours(mid_gray)[0, 0] == -1  # off palette


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("texture", TEXTURES)
def test_single_object_known_answers(shape: str, texture: str) -> None:
    scene = SceneSpec(
        shape, "orange", texture, "static", "dark blue", "vertical", 0.36, 0.45, 0.55, angle=0.4
    )
    frame = render(scene, height=128, width=160, frames=1)[0]
    objects = detect_objects(frame)
    assert len(objects) == 1
    obj = objects[0]
    assert obj.colour == "orange" and obj.shape == shape
    assert obj.colour_purity > 0.95
    assert obj.area_frac == pytest.approx(scene.area_frac(160 / 128), rel=0.04)
    assert abs(obj.centroid[0] - 0.45) * 160 < 0.5 and abs(obj.centroid[1] - 0.55) * 128 < 0.5
    x0, y0, x1, y1 = obj.bbox
    assert x0 < 0.45 < x1 and y0 < 0.55 < y1


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_guess_is_rotation_invariant(shape: str) -> None:
    for angle in np.linspace(0.0, 2.0 * math.pi, 9):
        scene = SceneSpec(shape, "green", "dots", size=0.3, x=0.47, y=0.52, angle=float(angle))
        frame = render(scene, height=64, width=64, frames=1)[0]
        (obj,) = detect_objects(frame)
        assert obj.shape == shape, angle


def test_every_colour_on_every_background() -> None:
    for colour in OBJECT_COLOURS:
        for background in BACKGROUNDS:
            for gradient in ("none", "horizontal"):
                scene = SceneSpec(
                    "hexagon", colour, "checks", background=background, gradient=gradient, size=0.3
                )
                (obj,) = detect_objects(render(scene, height=64, width=64, frames=1)[0])
                assert obj.colour == colour and obj.colour_purity > 0.95


def test_classify_shape_thresholds() -> None:
    assert classify_shape((0.0, 0.0, 0.0)) == "circle"
    assert classify_shape((0.16, 0.0, 0.06)) == "triangle"
    assert classify_shape((0.0, 0.08, 0.0)) == "square"
    assert classify_shape((0.0, 0.0, 0.035)) == "hexagon"


def test_repetition_is_detected() -> None:
    a = SceneSpec("square", "red", "stripes", "right", "black", size=0.3, x=0.25, y=0.3, speed=0.1)
    b = dataclasses.replace(a, x=0.65, y=0.7)
    video = render([a, b], height=96, width=96, frames=5)
    objects = detect_objects(video[0])
    assert len(objects) == 2 and all(o.colour == "red" and o.shape == "square" for o in objects)
    report = evaluate_video(video, a)
    assert report.count_mean == 2.0 and report.repetition_frac == 1.0
    assert report.count_exact_frac == 0.0
    clean = evaluate_video(render(a, height=96, width=96, frames=5), a)
    assert clean.count_mean == 1.0 and clean.repetition_frac == 0.0
    assert clean.count_exact_frac == 1.0


def test_tiny_specks_are_ignored() -> None:
    scene = SceneSpec("circle", "pink", size=0.4)
    frame = render(scene, height=128, width=128, frames=1)[0].copy()
    frame[5:8, 5:8] = OBJECT_COLOURS["red"]  # 9 px = 0.05 % of the frame
    objects = detect_objects(frame)
    assert [o.colour for o in objects] == ["pink"]
    assert len(detect_objects(frame, min_area_frac=0.0)) == 2


@pytest.mark.parametrize("seed", range(4))
def test_ground_truth_video_scores_perfectly(seed: int) -> None:
    scene = sample_scene(seed)
    video = render(scene, height=128, width=128, frames=17)
    report = evaluate_video(video, scene.caption(), reference=video)
    assert report.count_exact_frac == 1.0 and report.missing_frac == 0.0
    assert report.colour_match_frac == 1.0 and report.shape_match_frac == 1.0
    assert report.motion_match == 1.0
    assert report.scale_ratio == pytest.approx(1.0, abs=1e-9)  # vs the reference itself
    assert report.detail_ratio == pytest.approx(1.0, abs=1e-12)
    assert report.jerk < 0.003
    analytic = evaluate_video(video, scene)  # expected area from the exact spec
    assert analytic.scale_ratio == pytest.approx(1.0, abs=0.02)
    nominal = evaluate_video(video, scene.caption())  # expected area from the size word
    size_error = scene.size / scene.attributes().nominal_size
    assert nominal.scale_ratio == pytest.approx(size_error, abs=0.02)
    assert set(report.as_dict()) == {f.name for f in dataclasses.fields(report)}


def test_wrong_caption_scores_low() -> None:
    scene = SceneSpec("triangle", "cyan", "dots", "left", "dark gray", size=0.4, x=0.6, speed=0.15)
    video = render(scene, height=96, width=96, frames=9)
    wrong = dataclasses.replace(scene, shape="circle", colour="purple", motion="up")
    report = evaluate_video(video, wrong.caption())
    assert report.colour_match_frac == 0.0 and report.shape_match_frac == 0.0
    assert report.motion_match == 0.0


def test_scale_ratio_tracks_object_size() -> None:
    scene = SceneSpec("circle", "blue", "plain", size=0.24, x=0.5, y=0.5)
    bigger = dataclasses.replace(scene, size=0.48)
    report = evaluate_video(render(bigger, height=128, width=128, frames=2), scene)
    assert report.scale_ratio == pytest.approx(2.0, rel=0.02)


def test_jerk_near_zero_for_constant_motion_and_large_for_jitter() -> None:
    scene = SceneSpec(
        "hexagon", "pink", "stripes", "right", "dark blue", size=0.3, x=0.3, speed=0.2
    )
    frames, fps = 17, 16.0
    smooth = render(scene, height=128, width=128, frames=frames, fps=fps)
    rng = np.random.default_rng(0)
    jittered = np.stack(
        [
            render(
                dataclasses.replace(scene, x=scene.x + dx, y=scene.y + dy),
                height=128, width=128, frames=1, fps=fps, start_frame=f,
            )[0]
            for f, (dx, dy) in enumerate(rng.normal(0.0, 0.01, size=(frames, 2)))
        ]
    )
    smooth_jerk = evaluate_video(smooth, scene).jerk
    jitter_jerk = evaluate_video(jittered, scene).jerk
    assert smooth_jerk < 0.002  # half a pixel per frame^2 at 128 px
    assert jitter_jerk > 0.01 and jitter_jerk > 10 * smooth_jerk


def test_trajectory_jerk_units_and_gaps() -> None:
    t = np.arange(10.0)[:, None]
    line = np.hstack([0.1 + 0.01 * t, 0.5 - 0.02 * t])
    assert trajectory_jerk(line) == pytest.approx(0.0, abs=1e-12)
    zigzag = np.hstack([0.01 * (t % 2), 0 * t])
    assert trajectory_jerk(zigzag) == pytest.approx(0.02)
    gappy = zigzag.copy()
    gappy[4] = np.nan  # only triples of detected frames count
    assert trajectory_jerk(gappy) == pytest.approx(0.02)
    assert math.isnan(trajectory_jerk(np.full((5, 2), np.nan)))
    assert math.isnan(trajectory_jerk(np.zeros((2, 2))))


def test_detail_ratio_one_for_truth_and_low_for_blurry_versions() -> None:
    scene = SceneSpec(
        "square", "yellow", "checks", "down", "dark green", size=0.4, x=0.5, y=0.3, speed=0.1
    )
    truth = render(scene, height=192, width=192, frames=5)
    native = render(scene, height=48, width=48, frames=5)
    upsampled = _resize(native, 192, 192)
    blur = ImageFilter.GaussianBlur(1.5)
    blurred = np.stack([np.asarray(Image.fromarray(f).filter(blur)) for f in truth])
    assert detail_ratio(truth, truth) == pytest.approx(1.0)
    assert detail_ratio(upsampled, truth) < 0.2
    assert detail_ratio(blurred, truth) < 0.3
    # the same scene re-rendered a few pixels off keeps its detail
    shifted = render(dataclasses.replace(scene, x=0.52), height=192, width=192, frames=5)
    assert detail_ratio(shifted, truth) == pytest.approx(1.0, abs=0.15)
    # and the detectors still see one yellow square in the blurry upsampled video
    report = evaluate_video(upsampled, scene, reference=truth)
    assert report.count_exact_frac == 1.0 and report.shape_match_frac == 1.0
    assert report.scale_ratio == pytest.approx(1.0, abs=0.03)
    assert report.detail_ratio == pytest.approx(detail_ratio(upsampled, truth))


def test_high_frequency_energy_is_zero_on_flat_regions() -> None:
    frame = np.full((16, 16, 3), 90, np.uint8)
    mask = np.zeros((16, 16), bool)
    assert math.isnan(high_frequency_energy(frame, mask))
    mask[4:12, 4:12] = True
    assert high_frequency_energy(frame, mask) == 0.0


def test_detect_fast_on_512() -> None:
    scene = sample_scene(5)
    frame = render(scene, height=512, width=512, frames=1)[0]
    detect_objects(frame)  # builds the colour table once
    start = time.perf_counter()
    objects = detect_objects(frame)
    assert time.perf_counter() - start < 0.5
    assert len(objects) == 1


def test_rejects_non_uint8_frames() -> None:
    with pytest.raises(ValueError):
        segment_colours(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        caption = "a small red plain circle standing still on a black background"
        evaluate_video(np.zeros((4, 4, 3), np.uint8), caption)
