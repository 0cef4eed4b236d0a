"""The toy world: determinism, captions, resolution independence, geometry, motion."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from upscale_dit.toy.world import (
    BACKGROUNDS,
    GRADIENTS,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
    SIZE_CLASSES,
    TEXTURES,
    TRANSLATIONS,
    VOCABULARY,
    CaptionAttributes,
    SceneSpec,
    parse_caption,
    render,
    sample_scene,
    mark_colour,
    size_class,
)


def _box_down(video: np.ndarray, k: int) -> np.ndarray:
    f, h, w, c = video.shape
    return video.reshape(f, h // k, k, w // k, k, c).astype(np.float64).mean(axis=(2, 4))


def _foreground_centroid(frame: np.ndarray, scene: SceneSpec) -> tuple[float, float]:
    """Centroid (fraction of width, fraction of height) of pixels far from the
    background colours, an estimate independent of the detectors."""
    f = frame.astype(np.float64)
    c0, c1 = (np.asarray(c, float) for c in BACKGROUNDS[scene.background])
    dist = np.minimum(np.linalg.norm(f - c0, axis=-1), np.linalg.norm(f - c1, axis=-1))
    ys, xs = np.nonzero(dist > 60)
    h, w = frame.shape[:2]
    return (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h


def test_vocabulary_is_sorted_unique_and_covers_captions() -> None:
    assert list(VOCABULARY) == sorted(set(VOCABULARY))
    for seed in range(300):
        assert set(sample_scene(seed).caption().split()) <= set(VOCABULARY)


def test_same_seed_same_scene_and_pixels() -> None:
    a, b = sample_scene(7), sample_scene(7)
    assert a == b and a.seed == 7
    va = render(a, height=40, width=56, frames=5)
    vb = render(b, height=40, width=56, frames=5)
    assert va.dtype == np.uint8 and va.shape == (5, 40, 56, 3)
    assert np.array_equal(va, vb)


def test_different_seeds_differ() -> None:
    scenes = [sample_scene(s) for s in range(20)]
    assert len({s.caption() for s in scenes}) > 15
    v0 = render(scenes[0], height=32, width=32, frames=3)
    v1 = render(scenes[1], height=32, width=32, frames=3)
    assert not np.array_equal(v0, v1)


def test_generator_input_records_a_reproducible_seed() -> None:
    rng = np.random.default_rng(123)
    scene = sample_scene(rng)
    assert scene.seed is not None
    assert sample_scene(scene.seed) == scene


def test_captions_round_trip() -> None:
    for seed in range(300):
        scene = sample_scene(seed)
        assert parse_caption(scene.caption()) == scene.attributes()
    # every attribute value at least once
    for motion in MOTIONS:
        for gradient in GRADIENTS:
            attrs = CaptionAttributes(
                "triangle", "purple", "dots", motion, "dark gray", gradient, "large"
            )
            assert parse_caption(attrs.caption()) == attrs


def test_parse_caption_tolerates_case_space_and_period_but_rejects_other_text() -> None:
    text = "A  small RED striped circle moving left on a dark blue vertical gradient background."
    attrs = parse_caption(text)
    assert attrs == CaptionAttributes(
        "circle", "red", "stripes", "left", "dark blue", "vertical", "small"
    )
    with pytest.raises(ValueError):
        parse_caption("a red circle")
    with pytest.raises(ValueError):
        parse_caption("a small white striped circle moving left on a dark blue background")


def test_caption_example() -> None:
    scene = SceneSpec("circle", "red", "stripes", "left", "dark blue", size=0.25, speed=0.1)
    assert scene.caption() == "a small red striped circle moving left on a dark blue background"


def test_invalid_specs_raise() -> None:
    with pytest.raises(ValueError):
        SceneSpec("star", "red")
    with pytest.raises(ValueError):
        SceneSpec("circle", "white")
    with pytest.raises(ValueError):
        SceneSpec("circle", "red", speed=-0.1)


def test_sampled_sizes_stay_in_their_class() -> None:
    for seed in range(200):
        scene = sample_scene(seed)
        assert scene.attributes().size == size_class(scene.size)
        assert abs(scene.size / SIZE_CLASSES[size_class(scene.size)] - 1) <= 0.07 + 1e-9


@pytest.mark.parametrize(
    "aspect,clip_seconds", [(1.0, 2.0), (16 / 9, 2.0), (832 / 480, 5.0), (1.0, 1.0)]
)
def test_objects_stay_inside_the_frame(aspect: float, clip_seconds: float) -> None:
    for seed in range(200):
        scene = sample_scene(seed, aspect=aspect, clip_seconds=clip_seconds)
        r = scene.size / 2
        for t in np.linspace(0, clip_seconds, 5):
            fx, fy = scene.centre_at(float(t), aspect)
            cx, cy = fx * aspect, fy  # frame heights
            assert r <= cx <= aspect - r and r <= cy <= 1 - r, (seed, t)
        if scene.motion in TRANSLATIONS:
            assert scene.speed > 0


def test_rotating_circles_are_never_plain() -> None:
    for seed in range(300):
        s = sample_scene(seed, shapes=("circle",), motions=("clockwise", "counterclockwise"))
        assert s.texture != "plain" and s.angular_speed > 0


@pytest.mark.parametrize("seed", range(6))
def test_high_res_render_box_downscales_to_native(seed: int) -> None:
    """Geometry is resolution independent and antialiased: a 2x or 4x render, box
    filtered down, matches the native one (mean |diff| < 0.5, 99th pct <= 2, max <= 40
    of 255; the max sits on single corner pixels)."""
    scene = sample_scene(seed)
    native = render(scene, height=48, width=80, frames=3, fps=4).astype(np.float64)
    for k in (2, 4):
        high = render(scene, height=48 * k, width=80 * k, frames=3, fps=4)
        diff = np.abs(_box_down(high, k) - native)
        assert diff.mean() < 0.5
        assert np.percentile(diff, 99) <= 2.0
        assert diff.max() <= 40.0


@pytest.mark.parametrize("colour", list(OBJECT_COLOURS))
def test_object_has_requested_colour_at_requested_place(colour: str) -> None:
    scene = SceneSpec(
        "square", colour, "stripes", "static", "dark green", "horizontal", 0.4, 0.37, 0.58
    )
    frame = render(scene, height=96, width=128, frames=1)[0]
    pixels = {tuple(p) for p in frame.reshape(-1, 3)}
    assert OBJECT_COLOURS[colour] in pixels
    assert tuple(np.rint(mark_colour(colour)).astype(int)) in pixels
    cx, cy = _foreground_centroid(frame, scene)
    assert abs(cx - 0.37) * 128 < 0.5 and abs(cy - 0.58) * 96 < 0.5


@pytest.mark.parametrize("motion", ["left", "right", "up", "down"])
def test_translation_moves_the_right_way_at_the_right_speed(motion: str) -> None:
    scene = SceneSpec("circle", "yellow", "plain", motion, "black", "none", 0.3, 0.5, 0.5, 0.15)
    fps, frames = 16.0, 17
    video = render(scene, height=64, width=96, frames=frames, fps=fps)
    aspect = 96 / 64
    for f in (0, 8, 16):
        expect = scene.centre_at(f / fps, aspect)
        got = _foreground_centroid(video[f], scene)
        assert abs(got[0] - expect[0]) * 96 < 0.5 and abs(got[1] - expect[1]) * 64 < 0.5
    start, end = _foreground_centroid(video[0], scene), _foreground_centroid(video[-1], scene)
    ux, uy = TRANSLATIONS[motion]
    moved = ((end[0] - start[0]) * aspect, end[1] - start[1])  # frame heights
    assert moved[0] * ux + moved[1] * uy == pytest.approx(0.15 * (frames - 1) / fps, abs=0.01)


def test_rotation_turns_in_place() -> None:
    scene = SceneSpec(
        "square", "pink", "checks", "clockwise", "dark blue", size=0.5, angular_speed=1.0
    )
    video = render(scene, height=64, width=64, frames=9, fps=8)
    assert not np.array_equal(video[0], video[4])
    for f in (0, 4, 8):
        cx, cy = _foreground_centroid(video[f], scene)
        assert abs(cx - 0.5) * 64 < 0.5 and abs(cy - 0.5) * 64 < 0.5
    assert scene.angle_at(1.0) == pytest.approx(1.0)
    counter = dataclasses.replace(scene, motion="counterclockwise")
    assert counter.angle_at(1.0) == pytest.approx(-1.0)
    # a square turned by a quarter turn looks the same
    quarter = dataclasses.replace(scene, motion="static", angle=math.pi / 2)
    assert np.abs(
        render(quarter, height=64, width=64, frames=1).astype(int)
        - render(dataclasses.replace(quarter, angle=0.0), height=64, width=64, frames=1)
    ).max() <= 1


def test_textures_change_pixels_and_plain_is_flat() -> None:
    frames = {
        t: render(SceneSpec("square", "blue", t, size=0.6), height=64, width=64, frames=1)[0]
        for t in TEXTURES
    }
    inner = (slice(24, 40), slice(24, 40))  # well inside the square
    assert len({tuple(p) for p in frames["plain"][inner].reshape(-1, 3)}) == 1
    for t in ("stripes", "dots", "checks"):
        assert not np.array_equal(frames[t], frames["plain"])


def test_gradients_vary_along_their_axis() -> None:
    def bg(gradient: str) -> np.ndarray:
        # object parked far outside the frame so only the background shows
        scene = SceneSpec("circle", "red", "plain", "static", "dark blue", gradient, 0.2, 5.0, 5.0)
        return render(scene, height=32, width=48, frames=1)[0].astype(int)

    plain, vertical, horizontal = bg("none"), bg("vertical"), bg("horizontal")
    assert (plain == plain[0, 0]).all()
    assert (vertical == vertical[:, :1]).all() and (vertical[0] != vertical[-1]).any()
    assert (horizontal == horizontal[:1]).all() and (horizontal[:, 0] != horizontal[:, -1]).any()


def test_several_scenes_draw_several_objects() -> None:
    a = SceneSpec("circle", "red", x=0.25, y=0.5, size=0.3)
    b = dataclasses.replace(a, x=0.75)
    one = render(a, height=32, width=64, frames=1)
    two = render([a, b], height=32, width=64, frames=1)
    assert np.array_equal(two[:, :, :32], one[:, :, :32])
    assert np.array_equal(two[:, :, 32:], one[:, :, :32])  # b is a shifted copy of a
    with pytest.raises(ValueError):
        render([], height=8, width=8, frames=1)


def test_all_shapes_textures_backgrounds_render() -> None:
    for shape in SHAPES:
        for texture in TEXTURES:
            for background in BACKGROUNDS:
                scene = SceneSpec(shape, "cyan", texture, "static", background, "vertical")
                video = render(scene, height=24, width=24, frames=1)
                assert video.shape == (1, 24, 24, 3)


def test_toy_package_imports_no_torch_or_diffusers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, upscale_dit\n"
        "before = {m for m in ('torch', 'diffusers') if m in sys.modules}\n"
        "import upscale_dit.toy, upscale_dit.toy.world, upscale_dit.toy.detect\n"
        "after = {m for m in ('torch', 'diffusers') if m in sys.modules}\n"
        "assert after <= before, after - before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
