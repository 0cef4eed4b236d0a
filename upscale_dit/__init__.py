"""udit: ultra-high-resolution video from pre-trained video diffusion transformers.

>>> from upscale_dit import generate
>>> result = generate("a red circle", model="tiny", output__path="circle.mp4")  # doctest: +SKIP
"""

from ._version import __version__
from .config import GenerateConfig, MethodConfig, OutputConfig, RuntimeConfig, SamplingConfig
from .errors import ConfigError, InputVideoError, ModelNotFoundError, OutOfMemoryError, OutputError, UditError
from .generation import GenerateResult, build_generate_config, generate
from .training import TrainResult, layer_train_config, train_relay

__all__ = [
    "ConfigError",
    "GenerateConfig",
    "GenerateResult",
    "InputVideoError",
    "MethodConfig",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "OutputConfig",
    "OutputError",
    "RuntimeConfig",
    "SamplingConfig",
    "TrainResult",
    "UditError",
    "__version__",
    "build_generate_config",
    "generate",
    "layer_train_config",
    "train_relay",
]
