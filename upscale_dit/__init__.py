"""udit: ultra-high-resolution video from pre-trained video diffusion transformers.

>>> from upscale_dit import generate
>>> result = generate("a red circle", model="tiny", output__path="circle.mp4")  # doctest: +SKIP
"""

from ._version import __version__
from .config import GenerateConfig, MethodConfig, OutputConfig, RuntimeConfig, SamplingConfig
from .errors import ConfigError, InputVideoError, ModelNotFoundError, OutOfMemoryError, OutputError, UditError
from .generation import GenerateResult, build_generate_config, generate

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
    "UditError",
    "__version__",
    "build_generate_config",
    "generate",
]
