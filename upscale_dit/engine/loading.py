"""Find and load a model: a built-in preset, a local diffusers folder, a Hugging Face id from the local cache, or `tiny`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ModelPreset, get_model_preset, model_presets
from ..config.presets import bundled_folder
from ..errors import ConfigError, ModelNotFoundError
from ..profiling.architectures import architecture_for
from .device import cast_keeping_fp32
from .tiny import build_tiny_components

COMPONENT_FOLDERS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model request resolved to a preset and a place the weights come from (``None`` = built in code)."""

    preset: ModelPreset
    folder: Path | None
    random_weights: bool = False  # build the architecture (the folder's configs, else the preset's) with random weights

    @property
    def description(self) -> str:
        where = str(self.folder) if self.folder else self.preset.source
        return f"{where} (random weights)" if self.random_weights else where


def resolve_model(model: str, *, random_weights: bool = False) -> ModelSource:
    """Resolve ``--model`` without loading weights; fails fast with what is missing and how to get it.

    With ``random_weights`` a built-in preset needs no download (its architecture is known); a folder or a cached
    Hugging Face id still supplies its config files.
    """
    presets = model_presets()
    if model in presets:
        preset = presets[model]
        if preset.source == "tiny":
            return ModelSource(preset, None)
        if random_weights:
            return ModelSource(preset, None, random_weights=True)
        bundled = bundled_folder(preset.source)
        if bundled is not None:
            return ModelSource(preset, _check_bundled(bundled, preset.name))
        return ModelSource(preset, _find_weights(preset.source, preset_name=preset.name))
    if random_weights:
        source = resolve_model(model)
        return ModelSource(source.preset, source.folder, random_weights=True)
    path = Path(model).expanduser()
    if path.exists():
        folder = _check_folder(path)
    elif "/" in model and not model.startswith((".", "/")) and model.count("/") == 1:
        folder = _find_weights(model, preset_name=None)
    else:
        get_model_preset(model)  # raises the "unknown preset" error with suggestions
        raise AssertionError  # unreachable
    return ModelSource(_preset_for_folder(folder), folder)


def _find_weights(source: str, *, preset_name: str | None) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        return _check_folder(path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(source, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        name = f" (preset `{preset_name}`)" if preset_name else ""
        raise ModelNotFoundError(
            f"model {source}{name} is not in the local Hugging Face cache; download it with "
            f"`hf download {source}` (or pass --model /path/to/diffusers-folder); try --model {offline_demo_model()} "
            f"for an offline demo"
        ) from None
    return _check_folder(folder)


def offline_demo_model() -> str:
    """The model to suggest when weights are missing: the trained ``toy`` when it is installed, else ``tiny``."""
    toy = model_presets().get("toy")
    folder = bundled_folder(toy.source) if toy is not None else None
    return "toy" if folder is not None and (folder / "model_index.json").is_file() else "tiny"


def _check_bundled(folder: Path, name: str) -> Path:
    if not (folder / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"the `{name}` model's weights are missing from this installation ({folder}); "
            f"train them with `python -m upscale_dit.toy.train --out runs/{name}` and pass --model runs/{name}/weights"
        )
    return _check_folder(folder)


def _check_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ConfigError(f"--model {path} is not a folder; give a diffusers-format model folder (with model_index.json)")
    missing = [name for name in COMPONENT_FOLDERS if not (path / name).is_dir()]
    if missing:
        raise ModelNotFoundError(f"{path} is not a complete diffusers Wan folder: missing {', '.join(n + '/' for n in missing)}")
    return path


def _preset_for_folder(folder: Path) -> ModelPreset:
    """Match a folder to a preset by its transformer architecture (layers, heads, head dim, input channels)."""
    try:
        cfg = json.loads((folder / "transformer" / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(f"cannot read {folder}/transformer/config.json: {exc}") from None
    keys = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels")
    found = tuple(cfg.get(k) for k in keys)
    for name in model_presets():
        arch = architecture_for(name).transformer
        if tuple(arch.get(k) for k in keys) == found:
            return get_model_preset(name)
    raise ConfigError(f"{folder}: a transformer with (layers, heads, head_dim, in_channels) = {found} matches no "
                      f"model preset; udit knows {', '.join(model_presets())}")


def load_components(source: ModelSource, *, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Load tokenizer, text encoder, transformer (``dtype``), VAE (float32) and the scheduler config onto ``device``.

    The scheduler comes back as its config dict: the sampler builds a fresh scheduler per run from it.
    """
    if source.random_weights:
        from .random_weights import build_random_components

        arch = architecture_for(source.preset.name, source.folder)
        parts = build_random_components(arch, dtype=dtype, device=device)
    elif source.folder is None:
        parts = build_tiny_components()
        for name in ("text_encoder", "transformer"):
            cast_keeping_fp32(parts[name], dtype)
        parts["scheduler"] = dict(parts["scheduler"].config)
    else:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        from .quiet import quiet_libraries

        folder = source.folder
        with quiet_libraries():  # the load stage has udit's own progress line
            parts = dict(
                tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
                text_encoder=UMT5EncoderModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype),
                transformer=WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype),
                vae=AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=torch.float32),
                scheduler=json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
            )
    for name in ("text_encoder", "transformer", "vae"):
        parts[name].to(device=device).eval().requires_grad_(False)
    return parts
