"""Built-in presets (models, resolutions, defaults) and the layering that produces a resolved config."""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .loader import build, deep_merge, layer, read_yaml
from .schema import GenerateConfig, ModelPreset, check_frames

MAX_SIDE = 16384  # Wan's RoPE covers 1024 tokens per axis = 16384 pixels


def presets_dir() -> Path:
    """Where the shipped YAML lives: inside the installed package, or ``presets/`` of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "presets", package.parent / "presets"):
        if (candidate / "defaults.yaml").is_file():
            return candidate
    raise ConfigError(f"udit's built-in presets are missing (looked in {package / 'presets'}); reinstall udit")


BUNDLED_PREFIX = "bundled:"


def bundled_folder(source: str) -> Path | None:
    """The package folder a ``bundled:<path>`` model source names (weights shipped inside udit), else ``None``."""
    if not source.startswith(BUNDLED_PREFIX):
        return None
    return Path(__file__).resolve().parent.parent / source[len(BUNDLED_PREFIX):]


@functools.cache
def model_presets() -> dict[str, ModelPreset]:
    """All built-in model presets by name."""
    out = {}
    for path in sorted((presets_dir() / "models").glob("*.yaml")):
        data = read_yaml(path)
        preset = build(ModelPreset, {**data, "source_file": str(path)}, source=str(path))
        out[preset.name] = preset
    return out


def get_model_preset(name: str) -> ModelPreset:
    presets = model_presets()
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise ConfigError(f"unknown model preset `{name}`{hint}; choose one of: {', '.join(presets)}, a local diffusers folder, or a Hugging Face id")
    return presets[name]


@functools.cache
def named_resolutions() -> dict[str, int]:
    """Named resolutions → short side in pixels (``1080p`` → 1080)."""
    path = presets_dir() / "resolutions.yaml"
    data = read_yaml(path)
    out = {}
    for name, short in data.get("named", {}).items():
        if not isinstance(short, int) or short <= 0:
            raise ConfigError(f"{path}: `named.{name}` must be a positive integer, got {short!r}")
        out[str(name).lower()] = short
    return out


def builtin_defaults() -> dict[str, Any]:
    return read_yaml(presets_dir() / "defaults.yaml")


def layer_config(
    *,
    preset_files: Sequence[str | Path] = (),
    set_options: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> GenerateConfig:
    """Resolve a :class:`GenerateConfig`: built-in < ``--preset FILE`` < ``--set key=value`` < explicit flags.

    ``flags`` is a nested dict of the options given on the command line (``None`` = not given).
    """
    base = (str(presets_dir() / "defaults.yaml"), builtin_defaults())
    return layer(GenerateConfig, base, preset_files=preset_files, set_options=set_options, flags=flags)


@dataclass(frozen=True, slots=True)
class FrameSize:
    """The size written to disk and the (possibly larger) size the model generates at."""

    out_height: int
    out_width: int
    gen_height: int
    gen_width: int

    @property
    def needs_crop(self) -> bool:
        return (self.gen_height, self.gen_width) != (self.out_height, self.out_width)


_WXH = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$", re.IGNORECASE)
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$", re.IGNORECASE)
_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:/]\s*(\d+(?:\.\d+)?)\s*$")


def resolve_size(resolution: str, aspect: str | None, model: ModelPreset) -> FrameSize:
    """Turn ``--res`` (and ``--aspect``) into output and generation sizes.

    Sizes the model cannot take exactly (Wan needs multiples of 16) are generated at the next valid size
    and centre-cropped on export, so ``1080p`` writes exactly 1920x1080 (generated at 1920x1088).
    """
    res = resolution.strip().lower()
    named = named_resolutions()
    if aspect is not None and res not in named:
        raise ConfigError(f"`aspect` applies only to named resolutions ({', '.join(named)}), not to {resolution!r}; "
                          "give an explicit WxH instead")
    if res == "native":
        h, w = model.native_height, model.native_width
    elif res in named:
        short = named[res]
        m = _ASPECT.match(aspect or "16:9")
        if not m or float(m[1]) <= 0 or float(m[2]) <= 0:
            raise ConfigError(f"`aspect` must look like 16:9 or 9:16, got {aspect!r}")
        ratio = float(m[1]) / float(m[2])
        long = 2 * round(short * max(ratio, 1 / ratio) / 2)
        h, w = (short, long) if ratio >= 1 else (long, short)
    elif m := _REL.match(res):
        factor = float(m[1])
        if factor <= 0:
            raise ConfigError(f"`resolution` factor must be > 0, got {resolution!r}")
        h, w = round(model.native_height * factor), round(model.native_width * factor)
    elif m := _WXH.match(res):
        w, h = int(m[1]), int(m[2])
    else:
        raise ConfigError(f"`resolution` {resolution!r} is not understood; use one of {', '.join(named)}, "
                          "native, 2x/3x/4x, or WxH such as 1920x1080")
    multiple = model.pixel_multiple
    if h < multiple or w < multiple:
        raise ConfigError(f"resolution {w}x{h} is too small: both sides must be at least {multiple} pixels")
    if h % 2 or w % 2:
        raise ConfigError(f"resolution {w}x{h} has an odd side; H.264 (yuv420p) needs even sizes, e.g. {w + w % 2}x{h + h % 2}")
    gen_h, gen_w = (math.ceil(v / multiple) * multiple for v in (h, w))
    if max(gen_h, gen_w) > MAX_SIDE:
        raise ConfigError(f"resolution {w}x{h} is too large: the model's position encoding covers at most {MAX_SIDE} pixels a side")
    return FrameSize(out_height=h, out_width=w, gen_height=gen_h, gen_width=gen_w)


def resolve_frames(frames: int | None, model: ModelPreset) -> int:
    value = model.frames if frames is None else frames
    check_frames(value, model.vae_scale_temporal)
    return value


def method_defaults(method: str, model: str) -> dict[str, Any]:
    """A method preset's values for one model: ``defaults`` overlaid with ``models.<model>``."""
    path = presets_dir() / "methods" / f"{method}.yaml"
    data = read_yaml(path)
    return deep_merge(data.get("defaults", {}), data.get("models", {}).get(model, {}))


def fill_from(config: Any, defaults: Mapping[str, Any], *, source: str) -> Any:
    """Replace the ``None`` fields of a config dataclass with ``defaults`` (validated like any preset)."""
    from .loader import to_dict

    given = {k: v for k, v in to_dict(config).items() if v is not None}
    return build(type(config), deep_merge(defaults, given), source=source)
