"""Preset layering: built-in < --preset FILE < --set key=value < explicit flags; sizes and frames."""

from __future__ import annotations

import pytest

from upscale_dit import ConfigError, build_generate_config
from upscale_dit.config import get_model_preset, model_presets, resolve_frames, resolve_size, to_dict


def test_each_layer_overrides_the_one_below(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("sampling:\n  steps: 10\n  guidance: 3.0\n  seed: 1\nresolution: 720p\n")
    second = tmp_path / "b.yaml"
    second.write_text("sampling:\n  guidance: 4.0\n")
    config = build_generate_config(
        "p", preset=[first, second], set=["sampling.seed=2", "sampling.steps=20", "resolution=2x"],
        sampling__steps=30,
    )
    assert config.sampling.guidance == 4.0  # second file over first
    assert config.sampling.seed == 2  # --set over files
    assert config.resolution == "2x"  # --set over files
    assert config.sampling.steps == 30  # flag over --set
    assert config.model == "wan2.1-t2v-1.3b"  # built-in default
    assert config.output.crf == 18


def test_resolved_config_round_trips_as_a_preset(tmp_path):
    import yaml

    config = build_generate_config("p", model="tiny", set=["sampling.steps=3"], runtime__offload="model")
    saved = tmp_path / "resolved.yaml"
    saved.write_text(yaml.safe_dump(to_dict(config)))
    assert build_generate_config(None, preset=[saved]) == config


def test_set_parses_yaml_scalars():
    config = build_generate_config("p", set=["output.overwrite=true", "sampling.negative_prompt=blurry, dark",
                                              "sampling.shift=9"])
    assert config.output.overwrite is True
    assert config.sampling.negative_prompt == "blurry, dark"
    assert config.sampling.shift == 9.0


def test_set_without_equals_is_refused():
    with pytest.raises(ConfigError, match=r"--set expects key=value \(e.g. sampling.steps=30\), got 'steps'"):
        build_generate_config("p", set=["steps"])


def test_builtin_model_presets():
    presets = model_presets()
    assert set(presets) >= {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny"}
    small, big = presets["wan2.1-t2v-1.3b"], presets["wan2.1-t2v-14b"]
    assert (small.native_height, small.native_width, small.native_grid) == (480, 832, (30, 52))
    assert (big.native_height, big.native_width, big.native_grid) == (720, 1280, (45, 80))
    # reference FreeSwim window: 2*floor(n/2)+1 of the native token grid
    for p in presets.values():
        rows, cols = p.native_grid
        assert (p.window_rows, p.window_cols) == (2 * (rows // 2) + 1, 2 * (cols // 2) + 1)
    assert small.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and big.source == "Wan-AI/Wan2.1-T2V-14B-Diffusers"


def test_malformed_model_preset_value_names_the_file(tmp_path):
    from upscale_dit.config.loader import build, read_yaml
    from upscale_dit.config.schema import ModelPreset

    bad = tmp_path / "m.yaml"
    bad.write_text("name: x\nsource: tiny\nnative_height: 100\nnative_width: 160\nfps: 16\nframes: 9\n"
                   "window_rows: 7\nwindow_cols: 11\nscheduler: ddim\n")
    with pytest.raises(ConfigError, match=rf"{bad}: `scheduler` must be one of unipc, euler; got 'ddim'"):
        build(ModelPreset, read_yaml(bad), source=str(bad))
    bad.write_text(bad.read_text().replace("ddim", "unipc"))
    with pytest.raises(ConfigError, match="`native_height` must be a positive multiple of 16, got 100"):
        build(ModelPreset, read_yaml(bad), source=str(bad))


@pytest.mark.parametrize(
    ("res", "aspect", "out", "gen"),
    [
        ("1080p", None, (1080, 1920), (1088, 1920)),
        ("2160p", None, (2160, 3840), (2160, 3840)),
        ("4k", None, (2160, 3840), (2160, 3840)),
        ("720p", None, (720, 1280), (720, 1280)),
        ("1440p", None, (1440, 2560), (1440, 2560)),
        ("480p", None, (480, 854), (480, 864)),
        ("1080p", "9:16", (1920, 1080), (1920, 1088)),
        ("1080p", "1:1", (1080, 1080), (1088, 1088)),
        ("2x", None, (960, 1664), (960, 1664)),
        ("3x", None, (1440, 2496), (1440, 2496)),
        ("native", None, (480, 832), (480, 832)),
        ("1920x1080", None, (1080, 1920), (1088, 1920)),
    ],
)
def test_resolutions(res, aspect, out, gen):
    size = resolve_size(res, aspect, get_model_preset("wan2.1-t2v-1.3b"))
    assert (size.out_height, size.out_width) == out
    assert (size.gen_height, size.gen_width) == gen
    assert size.gen_height % 16 == 0 and size.gen_width % 16 == 0


def test_frames_default_and_validation():
    preset = get_model_preset("wan2.1-t2v-1.3b")
    assert resolve_frames(None, preset) == 81
    assert resolve_frames(1, preset) == 1
    with pytest.raises(ConfigError, match="use 77 or 81"):
        resolve_frames(80, preset)
