"""YAML presets → typed configs, strictly: unknown keys, wrong types and malformed YAML name file, key and fix.

Layering (lowest to highest): built-in ``defaults.yaml`` < ``--preset FILE`` < ``--set key=value`` < explicit
flags. Each layer is a nested dict; dotted keys are the dataclass field paths (``sampling.steps``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ..errors import ConfigError

T = TypeVar("T")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read preset file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got a {type(data).__name__}")
    return data


def parse_set_option(item: str) -> dict[str, Any]:
    """Turn ``a.b=value`` (value parsed as YAML: numbers, true/false, null, strings) into ``{"a": {"b": value}}``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. sampling.steps=30), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return nest({key.strip(): value})


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}``; values that are ``None`` are dropped (flag not given)."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested dicts, later layers winning key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = deep_merge(value)
            else:
                out[key] = value
    return out


def layer(
    cls: type[T],
    base: tuple[str, Mapping[str, Any]],
    *,
    preset_files: Sequence[str | Path] = (),
    set_options: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from layers, each overriding the one before: ``base`` (named) < ``preset_files`` <
    ``set_options`` (``key=value``) < ``flags`` (a nested dict). Validated after each layer, so an error names
    the layer that caused it."""
    layers: list[tuple[str, Mapping[str, Any]]] = [base]
    layers += [(str(path), read_yaml(Path(path))) for path in preset_files]
    layers += [(f"--set {item}", parse_set_option(item)) for item in set_options]
    layers.append(("options", flags or {}))
    merged: dict[str, Any] = {}
    for source, data in layers:
        merged = deep_merge(merged, data)
        build(cls, merged, source=source)
    return build(cls, merged, source="options")


def field_paths(cls: type) -> list[str]:
    """All dotted leaf paths of a config dataclass (what --set accepts)."""
    hints = typing.get_type_hints(cls)
    paths = []
    for f in dataclasses.fields(cls):
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            paths += [f"{f.name}.{p}" for p in field_paths(sub)]
        else:
            paths.append(f.name)
    return paths


def build(cls: type[T], data: Mapping[str, Any], *, source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, checking keys and types on the way."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: `{prefix.rstrip('.') or '<root>'}` must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key `{dotted}`{_suggest(prefix, key, names)}")
        kwargs[key] = _coerce(hints[key], value, source=source, dotted=dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {exc}") from None


def _suggest(prefix: str, key: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(names), n=1)
    valid = ", ".join(sorted(names))
    hint = f" (did you mean `{prefix}{close[0]}`?)" if close else ""
    return f"{hint}; valid keys here: {valid}"


def _coerce(tp: Any, value: Any, *, source: str, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return build(tp, value, source=source, prefix=f"{dotted}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source=source, dotted=dotted)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{source}: `{dotted}` has an invalid value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            options = ", ".join(str(a) for a in allowed)
            raise ConfigError(f"{source}: `{dotted}` must be one of {options}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: `{dotted}` must be a list, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, source=source, dotted=dotted) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: `{dotted}` must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: `{dotted}` must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: `{dotted}` must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: `{dotted}` must be a string, got {value!r}")
    return value


def to_dict(config: Any) -> Any:
    """A config dataclass as plain JSON/YAML data (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [to_dict(v) for v in config]
    return config
