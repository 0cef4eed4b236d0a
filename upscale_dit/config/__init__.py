"""Configuration: typed schema, strict YAML presets, layering."""

from .loader import to_dict
from .presets import FrameSize, get_model_preset, layer_config, model_presets, resolve_frames, resolve_size
from .schema import GenerateConfig, MethodConfig, ModelPreset, OutputConfig, RuntimeConfig, SamplingConfig

__all__ = [
    "FrameSize",
    "GenerateConfig",
    "MethodConfig",
    "ModelPreset",
    "OutputConfig",
    "RuntimeConfig",
    "SamplingConfig",
    "get_model_preset",
    "layer_config",
    "model_presets",
    "resolve_frames",
    "resolve_size",
    "to_dict",
]
