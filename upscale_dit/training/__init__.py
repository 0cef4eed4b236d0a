"""Relay LoRA training (ViBe): data, caching, the two-stage trainer, checkpoints.

>>> from upscale_dit.training import layer_train_config, train_relay
>>> cfg = layer_train_config(flags={"model": "tiny", "data": {"images": "imgs"}})  # doctest: +SKIP
>>> train_relay(cfg, progress=True)  # doctest: +SKIP
"""

from .config import (
    DEFAULT_TARGETS,
    AdapterConfig,
    CheckpointConfig,
    DataConfig,
    FlowConfig,
    GCLFConfig,
    OptimConfig,
    RelayTrainConfig,
    StageConfig,
    TrainRuntimeConfig,
    layer_train_config,
)
from .data import DatasetError
from .run import TrainResult, train_relay

__all__ = [
    "DEFAULT_TARGETS",
    "AdapterConfig",
    "CheckpointConfig",
    "DataConfig",
    "DatasetError",
    "FlowConfig",
    "GCLFConfig",
    "OptimConfig",
    "RelayTrainConfig",
    "StageConfig",
    "TrainResult",
    "TrainRuntimeConfig",
    "layer_train_config",
    "train_relay",
]
