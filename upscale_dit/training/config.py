"""Typed settings of `udit train-relay`, and their layering from presets, ``--set`` items and flags.

Layering (lowest to highest): built-in ``presets/training/relay.yaml`` < ``--preset FILE`` < ``--set key=value``
< explicit flags. Dotted keys are the dataclass field paths (``stage2.steps``, ``optim.lr``), the same paths the
run folder's ``config.yaml`` records. ``__post_init__`` validates each value alone; checks that need the model
(stage sizes) happen when the run is resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config.loader import layer, read_yaml
from ..config.presets import presets_dir
from ..config.schema import documented
from ..errors import ConfigError

#: The Wan linears ViBe adapts in every block (DiffSynth's ``q,k,v,o,ffn.0,ffn.2`` in diffusers names).
DEFAULT_TARGETS: tuple[str, ...] = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ffn.net.0.proj", "ffn.net.2",
)
DtypeName = Literal["auto", "bfloat16", "float32"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Where the training images and their captions come from."""

    images: str = documented("Folder of jpg/png/webp images (searched recursively) with same-stem .txt captions, "
                        "or a folder holding metadata.csv (columns image|video and prompt|caption).", "")
    caption: str | None = documented("Caption for images without one (no .txt / empty CSV cell).")
    allow_upscale: bool = documented("Use images smaller than the stage-2 size by upscaling them (off: skip them).", False)


@dataclass(frozen=True, kw_only=True, slots=True)
class StageConfig:
    """One Relay stage: its training size and length."""

    resolution: str = documented("Training size: native, 2x/3x (of native) or WxH; multiples of 16.", "native")
    steps: int = documented("Optimizer steps (batch 1).", 1000)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"stage `steps` must be at least 1, got {self.steps}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AdapterConfig:
    """The LoRA trained in each stage (peft ``LoraConfig``; the same shape in both stages)."""

    rank: int = documented("LoRA rank r.", 32)
    alpha: float = documented("LoRA alpha; the update is scaled by alpha/r (ViBe: alpha = r).", 32.0)
    targets: tuple[str, ...] = documented("Linear layers adapted in every block (diffusers names).", DEFAULT_TARGETS)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"`lora.rank` must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"`lora.alpha` must be > 0, got {self.alpha}")
        unknown = [t for t in self.targets if t not in DEFAULT_TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"`lora.targets` must be a non-empty subset of {', '.join(DEFAULT_TARGETS)}; "
                              f"got {', '.join(unknown) or 'nothing'}")


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimConfig:
    """AdamW and DiffSynth's ConstantLR schedule (lr x factor for the first steps, then constant)."""

    lr: float = documented("Learning rate.", 1e-4)
    weight_decay: float = documented("AdamW weight decay.", 0.01)
    beta1: float = documented("AdamW beta1.", 0.9)
    beta2: float = documented("AdamW beta2.", 0.999)
    eps: float = documented("AdamW epsilon.", 1e-8)
    warmup_factor: float = documented("ConstantLR factor applied for the first `warmup_steps` steps of each stage.", 1 / 3)
    warmup_steps: int = documented("Steps at the reduced learning rate (PyTorch's ConstantLR default: 5).", 5)
    max_grad_norm: float | None = documented("Clip the gradient norm to this (null: no clipping, as ViBe).")

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"`optim.lr` must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"`optim.weight_decay` must be >= 0, got {self.weight_decay}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"`optim.beta1`/`optim.beta2` must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not 0 < self.warmup_factor <= 1 or self.warmup_steps < 0:
            raise ConfigError("`optim.warmup_factor` must be in (0, 1] and `optim.warmup_steps` >= 0, got "
                              f"{self.warmup_factor}, {self.warmup_steps}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"`optim.max_grad_norm` must be > 0 or null, got {self.max_grad_norm}")


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowConfig:
    """Wan's training noise table: which noise levels are drawn and how the loss is weighted."""

    shift: float = documented("Flow shift of the 1000-entry table (Wan/DiffSynth training: 5).", 5.0)
    num_train_timesteps: int = documented("Entries of the timestep table.", 1000)
    weighting: Literal["bell", "none"] = documented("`bell`: DiffSynth's exp(-2((t-500)/1000)^2) weight with mean 1; "
                                               "`none`: uniform.", "bell")

    def __post_init__(self) -> None:
        if self.shift <= 0:
            raise ConfigError(f"`flow.shift` must be > 0, got {self.shift}")
        if self.num_train_timesteps < 2:
            raise ConfigError(f"`flow.num_train_timesteps` must be >= 2, got {self.num_train_timesteps}")


@dataclass(frozen=True, kw_only=True, slots=True)
class GCLFConfig:
    """Stage-2 attention: fine keys in the native-size inward window + all keys pooled by `pool`."""

    pool: int = documented("Average-pooling factor d of the coarse keys (ViBe trains with 2).", 2)
    kernel: Literal["auto", "sdpa", "flex"] = documented("`auto` (flex on CUDA, sdpa on CPU), `sdpa` or `flex`.", "auto")

    def __post_init__(self) -> None:
        if self.pool < 1:
            raise ConfigError(f"`gclf.pool` must be >= 1, got {self.pool}")


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointConfig:
    """Resumable checkpoints in the run folder."""

    every: int = documented("Write a checkpoint every N steps (and at the end of each stage).", 250)
    keep: int = documented("How many of the latest checkpoints to keep.", 2)

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ConfigError(f"`checkpoint.every` and `checkpoint.keep` must be >= 1, got {self.every}, {self.keep}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainRuntimeConfig:
    """Machine settings of a training run."""

    device: str = documented("`auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`.", "auto")
    dtype: DtypeName = documented("Base-model dtype: `auto` = bfloat16 on CUDA, float32 on CPU. LoRA weights stay float32.",
                             "auto")
    gradient_checkpointing: bool = documented("Recompute block activations in backward (less memory, ~30% slower).", True)
    seed: int = documented("Seed of LoRA init, data order, noise levels and noise.", 0)

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"`runtime.device` must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.seed < 0:
            raise ConfigError(f"`runtime.seed` must be >= 0, got {self.seed}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayTrainConfig:
    """Everything `udit train-relay` needs; recorded as ``config.yaml`` in the run folder."""

    model: str = documented("Base model: preset name, local diffusers folder, or Hugging Face id.", "wan2.1-t2v-1.3b")
    output: str = documented("Run folder: config, log, cache, checkpoints and the adapters.", "relay-run")
    max_sequence_length: int | None = documented("Text tokens (default: the model preset's).")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Images and captions."})
    stage1: StageConfig = field(default_factory=lambda: StageConfig(resolution="native", steps=1000),
                                metadata={"help": "Stage 1: modality alignment at the native size."})
    stage2: StageConfig = field(default_factory=lambda: StageConfig(resolution="2x", steps=1000),
                                metadata={"help": "Stage 2: spatial extrapolation at the high-resolution size."})
    lora: AdapterConfig = field(default_factory=AdapterConfig, metadata={"help": "LoRA shape."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer and schedule."})
    flow: FlowConfig = field(default_factory=FlowConfig, metadata={"help": "Noise levels and loss weight."})
    gclf: GCLFConfig = field(default_factory=GCLFConfig, metadata={"help": "Stage-2 GCLF attention."})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "Checkpoints."})
    runtime: TrainRuntimeConfig = field(default_factory=TrainRuntimeConfig, metadata={"help": "Machine settings."})

    def __post_init__(self) -> None:
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise ConfigError(f"`max_sequence_length` must be >= 1, got {self.max_sequence_length}")


def builtin_training_defaults() -> dict[str, Any]:
    return read_yaml(presets_dir() / "training" / "relay.yaml")


def layer_train_config(*, base: Mapping[str, Any] | None = None, preset_files: Sequence[str | Path] = (),
                       set_options: Sequence[str] = (), flags: Mapping[str, Any] | None = None) -> RelayTrainConfig:
    """Resolve a :class:`RelayTrainConfig`: ``base`` (built-in defaults, or a run's recorded config on resume)
    < ``preset_files`` < ``set_options`` < ``flags`` (a nested dict; ``None`` values = flag not given).
    """
    first = ("recorded config", base) if base is not None else ("built-in relay.yaml", builtin_training_defaults())
    return layer(RelayTrainConfig, first, preset_files=preset_files, set_options=set_options, flags=flags)
