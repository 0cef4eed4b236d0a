"""Typed configuration: what a run asks for, validated once, recorded next to every output.

Every field carries ``metadata={"help": ...}``; that text is the single source for error messages and the
CLI's ``--help``. Dotted paths (``sampling.steps``) are what YAML presets, ``--set key=value`` and the
recorded ``out.json`` use. Validation lives in ``__post_init__`` and never mutates: bad values raise
:class:`~upscale_dit.errors.ConfigError` naming the key, the value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError

SchedulerName = Literal["unipc", "euler"]
DeviceName = str  # "auto", "cpu", "cuda", "cuda:N"
DtypeName = Literal["auto", "bfloat16", "float16", "float32"]
OffloadMode = Literal["none", "model"]
TilingMode = Literal["auto", "on", "off"]


def documented(text: str, default=None, **kwargs):
    """A dataclass field whose help text is the single source for docs, errors and the CLI."""
    return field(default=default, metadata={"help": text}, **kwargs)


def check_frames(frames: int, temporal_factor: int, key: str = "frames") -> None:
    """Wan's causal VAE maps ``1 + temporal_factor*k`` frames to ``1 + k`` latent frames; nothing else is exact."""
    if frames < 1 or (frames - 1) % temporal_factor != 0:
        below = 1 + temporal_factor * ((max(frames, 1) - 1) // temporal_factor)
        above = below + temporal_factor
        raise ConfigError(
            f"`{key}` must be of the form {temporal_factor}k+1 (the VAE compresses time by {temporal_factor}), "
            f"got {frames}: use {below} or {above}"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelPreset:
    """A base model: where its weights come from and the geometry it was trained at."""

    name: str = documented("Preset name, e.g. `wan2.1-t2v-1.3b`.")
    description: str = documented("One line shown in listings.", "")
    source: str = documented("Hugging Face id, local diffusers folder, `bundled:<path in the package>` (weights shipped with udit), or `tiny` (built in code).")
    native_height: int = documented("Training height in pixels; FreeSwim/Relay windows derive from it.")
    native_width: int = documented("Training width in pixels.")
    fps: int = documented("Frame rate the model was trained at; used for the output video.")
    frames: int = documented("Default frame count (4k+1).")
    vae_scale_spatial: int = documented("Pixels per latent cell along H and W.", 8)
    vae_scale_temporal: int = documented("Frames per latent frame (after the first).", 4)
    patch_size: tuple[int, int, int] = documented("Transformer patch (t, h, w) in latent cells.", (1, 2, 2))
    latent_channels: int = documented("Channels of the VAE latent (the transformer's in_channels).", 16)
    scheduler: SchedulerName = documented("Default sampler: `unipc` (UniPC flow, Wan's default) or `euler`.", "unipc")
    shift: float = documented("Default flow shift for the native size.", 3.0)
    steps: int = documented("Default number of denoising steps.", 50)
    guidance: float = documented("Default classifier-free guidance scale.", 5.0)
    max_sequence_length: int = documented("Text tokens given to the transformer (padded).", 512)
    negative_prompt: str = documented("Default negative prompt.", "")
    window_rows: int = documented("FreeSwim window height in tokens (reference: 2*floor(native_rows/2)+1).")
    window_cols: int = documented("FreeSwim window width in tokens (reference: 2*floor(native_cols/2)+1).")
    source_file: str = documented("File this preset was read from (filled by the loader).", "")

    def __post_init__(self) -> None:
        cell = self.vae_scale_spatial * self.patch_size[1]
        for key in ("native_height", "native_width"):
            value = getattr(self, key)
            if value <= 0 or value % cell:
                raise ConfigError(f"model preset `{self.name}`: `{key}` must be a positive multiple of {cell}, got {value}")
        check_frames(self.frames, self.vae_scale_temporal, key=f"model preset `{self.name}`: `frames`")
        if self.window_rows < 1 or self.window_cols < 1:
            raise ConfigError(f"model preset `{self.name}`: window must be at least 1x1 tokens")

    @property
    def pixel_multiple(self) -> int:
        """Height and width must be multiples of this (VAE factor x patch size: 16 for Wan)."""
        return self.vae_scale_spatial * self.patch_size[1]

    @property
    def native_grid(self) -> tuple[int, int]:
        """Token rows and columns of one latent frame at the native size."""
        return self.native_height // self.pixel_multiple, self.native_width // self.pixel_multiple


@dataclass(frozen=True, kw_only=True, slots=True)
class FreeSwimConfig:
    """FreeSwim refinement (spec freeswim.md §5). `None` means: the method preset's value for this model."""

    strength: float | None = documented("Noise level the upsampled video is re-noised to (0, 1]; 0.7 runs the last 70% of the steps.")
    steps: int | None = documented("Scheduled refinement steps before truncation by strength (50 → 35 run).")
    shift: float | None = documented("Flow shift of the refinement schedule (9: start at sigma 0.954).")
    guidance: float | None = documented("Guidance scale of the refinement.")
    scheduler: SchedulerName | None = documented("Refinement sampler: unipc or euler.")
    mode: Literal["exact", "cache"] | None = documented(
        "`exact`: the full-attention branch runs on every pass (reference no-cache semantics, slow); "
        "`cache`: it runs on conditional passes every `cache_steps` steps and its cross-attention is reused.")
    cache_steps: int | None = documented("k: refresh the cross-attention cache every k steps (cache mode).")
    window: str | None = documented("`reference` (2*floor(n/2)+1 of the native token grid), `native`, or ROWSxCOLS tokens.")
    inward: bool | None = documented("Clamp border windows inside the grid (FreeSwim); false is the 'w/o inward' ablation.")
    scale: bool | None = documented("Sharpen self-attention by sqrt(log_N(2N)) (N = scale_tokens); false keeps 1/sqrt(d).")
    scale_tokens: int | None = documented("N of the attention scale: native tokens per frame (1560 for Wan2.1-1.3B).")
    cache_device: Literal["auto", "gpu", "cpu"] | None = documented(
        "Where the cross-attention cache lives; `auto` picks from the memory budget (CPU = pinned, async copies).")
    kernel: str | None = documented("Window-attention kernel: auto, or a registered name (sdpa_mask, flex).")

    def __post_init__(self) -> None:
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"`method.freeswim.strength` must be in (0, 1], got {self.strength}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`method.freeswim.steps` must be at least 1, got {self.steps}")
        if self.cache_steps is not None and self.cache_steps < 1:
            raise ConfigError(f"`method.freeswim.cache_steps` must be at least 1 (k=1 refreshes every step), got {self.cache_steps}")
        if self.shift is not None and self.shift <= 0:
            raise ConfigError(f"`method.freeswim.shift` must be > 0, got {self.shift}")
        if self.scale_tokens is not None and self.scale_tokens < 2:
            raise ConfigError(f"`method.freeswim.scale_tokens` must be >= 2, got {self.scale_tokens}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayConfig:
    """Relay LoRA generation (ViBe). `None` means: the method preset's value for this model."""

    lora: str | None = documented("Relay LoRA file: a train-relay run's relay.safetensors or stage2.safetensors, or a "
                             "strip-adapter output (diffusers or comfy keys). Required.")
    scale: float | None = documented("LoRA strength (1.0 as trained).")
    pool: int | None = documented("GCLF pooling factor of the coarse keys (default: as trained, 2); 4 is cheaper at 4K.")
    kernel: Literal["auto", "sdpa", "flex"] | None = documented("GCLF attention kernel.")
    from_base: bool | None = documented("SDEdit variant: native-size base video, upsample, re-noise to `strength`, refine.")
    strength: float | None = documented("Re-noise level with from_base, in (0, 1].")
    steps: int | None = documented("Denoising steps at the target size (before truncation by strength with from_base).")
    guidance: float | None = documented("Guidance scale at the target size.")
    shift: float | None = documented("Flow shift at the target size (ViBe: 5, unverified for Wan2.1).")
    scheduler: SchedulerName | None = documented("Sampler at the target size: euler (ViBe) or unipc.")

    def __post_init__(self) -> None:
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"`method.relay.strength` must be in (0, 1], got {self.strength}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`method.relay.steps` must be at least 1, got {self.steps}")
        if self.pool is not None and self.pool < 1:
            raise ConfigError(f"`method.relay.pool` must be >= 1, got {self.pool}")
        if self.shift is not None and self.shift <= 0:
            raise ConfigError(f"`method.relay.shift` must be > 0, got {self.shift}")


@dataclass(frozen=True, kw_only=True, slots=True)
class MethodConfig:
    """Which method runs, and each method's settings."""

    name: Literal["direct", "freeswim", "relay"] = documented(
        "`direct`: plain generation at the target size with stock attention (the baseline); "
        "`freeswim`: native-size generation, pixel upsampling, then refinement with FreeSwim attention; "
        "`relay`: the stage-2 Relay LoRA with GCLF attention, generated at the target size.", "direct"
    )
    freeswim: FreeSwimConfig = field(default_factory=FreeSwimConfig, metadata={"help": "FreeSwim settings."})
    relay: RelayConfig = field(default_factory=RelayConfig, metadata={"help": "Relay LoRA settings."})


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingConfig:
    """The denoising run. `None` means: take the model preset's value."""

    steps: int | None = documented("Denoising steps (default: the model preset's).")
    guidance: float | None = documented("Classifier-free guidance scale; 1 disables the negative pass.")
    shift: float | None = documented("Flow shift of the sigma schedule (higher = more time at high noise).")
    scheduler: SchedulerName | None = documented("`unipc` or `euler` (default: the model preset's).")
    seed: int = documented("Seed of the initial noise; the same seed gives the same video.", 0)
    negative_prompt: str | None = documented("Negative prompt (default: the model preset's).")
    max_sequence_length: int | None = documented("Text tokens (default: the model preset's).")

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`sampling.steps` must be at least 1, got {self.steps}")
        if self.guidance is not None and self.guidance < 0:
            raise ConfigError(f"`sampling.guidance` must be >= 0, got {self.guidance}")
        if self.shift is not None and self.shift <= 0:
            raise ConfigError(f"`sampling.shift` must be > 0, got {self.shift}")
        if self.seed < 0:
            raise ConfigError(f"`sampling.seed` must be >= 0, got {self.seed}")
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise ConfigError(f"`sampling.max_sequence_length` must be >= 1, got {self.max_sequence_length}")


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputConfig:
    """Where the video goes and how it is encoded."""

    path: str = documented("Output .mp4 file; a sidecar .json with the same stem is written beside it.", "udit.mp4")
    overwrite: bool = documented("Replace an existing output instead of refusing.", False)
    fps: int | None = documented("Frame rate of the mp4 (default: the model's).")
    crf: int = documented("H.264 constant rate factor: 0 lossless, 18 visually lossless, 28 small.", 18)
    save_base: bool = documented("Also write the native-size base video as FILE.base.mp4 (coarse-to-fine methods).", False)

    def __post_init__(self) -> None:
        if not self.path.lower().endswith(".mp4"):
            raise ConfigError(f"`output.path` must end in .mp4, got {self.path!r}")
        if self.fps is not None and self.fps < 1:
            raise ConfigError(f"`output.fps` must be >= 1, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"`output.crf` must be in 0..51, got {self.crf}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeConfig:
    """Machine-specific settings: recorded under their own key so presets stay portable."""

    device: DeviceName = documented("`auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`.", "auto")
    dtype: DtypeName = documented("Transformer/text-encoder dtype; `auto` = bfloat16 on CUDA, float32 on CPU. The VAE stays float32.", "auto")
    offload: OffloadMode = documented("`model`: keep components on the CPU and move each to the GPU only while it runs.", "none")
    vae_tiling: TilingMode = documented("Decode/encode the VAE in overlapping spatial tiles; `auto` = on above 864x480.", "auto")
    vae_tile: int = documented("VAE tile size in pixels (stride is 3/4 of it).", 256)
    compile: bool = documented(
        "torch.compile the transformer's repeated blocks (one graph shared by every block): 5-14% faster "
        "transformer passes at 1080p on an H200 after ~10 s of compiling; worth it for long runs.", False)
    random_weights: bool = documented(
        "Build the model's real architecture with random weights instead of loading a checkpoint (no download): "
        "for planning and profiling memory and time; the video is noise.", False)

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"`runtime.device` must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.vae_tile < 64 or self.vae_tile % 32:
            raise ConfigError(f"`runtime.vae_tile` must be a multiple of 32 and >= 64, got {self.vae_tile}")


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateConfig:
    """Everything `udit generate` needs. Layering: built-in < --preset FILE < --set key=value < flags."""

    prompt: str = documented("What the video shows.", "")
    model: str = documented("Model preset name, local diffusers folder, or Hugging Face id.", "wan2.1-t2v-1.3b")
    resolution: str = documented("480p/720p/1080p/1440p/2160p, 2x/3x/4x of native, native, or WxH (e.g. 1920x1080).", "native")
    aspect: str | None = documented("Aspect W:H for the named p-resolutions, e.g. 9:16 or 1:1 (default 16:9).")
    frames: int | None = documented("Frame count, 4k+1 (default: the model's, or the input video's).")
    input: str | None = documented("Video to refine instead of generating the base (methods with a refinement stage).")
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "Method settings."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "Sampling settings."})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "Output settings."})
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"help": "Machine settings."})

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"`frames` must be >= 1, got {self.frames}")
