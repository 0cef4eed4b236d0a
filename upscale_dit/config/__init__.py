"""Configuration: typed schema, strict YAML presets, layering."""

from .loader import to_dict
from .presets import (
    FrameSize,
    fill_from,
    get_model_preset,
    layer_config,
    method_defaults,
    model_presets,
    resolve_frames,
    resolve_size,
)
from .schema import (
    FreeSwimConfig,
    GenerateConfig,
    MethodConfig,
    ModelPreset,
    OutputConfig,
    RelayConfig,
    RuntimeConfig,
    SamplingConfig,
)

__all__ = [
    "FrameSize",
    "FreeSwimConfig",
    "GenerateConfig",
    "MethodConfig",
    "ModelPreset",
    "OutputConfig",
    "RelayConfig",
    "RuntimeConfig",
    "SamplingConfig",
    "fill_from",
    "get_model_preset",
    "layer_config",
    "method_defaults",
    "model_presets",
    "resolve_frames",
    "resolve_size",
    "to_dict",
]
