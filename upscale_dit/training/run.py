"""`train_relay`: the whole `udit train-relay` run, callable from Python.

data check → run folder → load the base model → cache latents and text → stage 1 → merge → stage 2 →
``stage1.safetensors``, ``stage2.safetensors``, ``relay.safetensors``. Everything that can be refused (bad data,
bad sizes, an occupied run folder, a resume with different settings) is refused before any weights load.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..adapters import RelayAdapterInfo, encode_relay, encode_stage, model_signature, write_safetensors_atomic
from ..attention.geometry import build_token_geometry
from ..config import ModelPreset, resolve_size, to_dict
from ..errors import ConfigError
from ..progress import StageProgress
from .cache import FeatureCache, fill_cache
from .checkpoint import RunFolder
from .config import RelayTrainConfig
from .data import Dataset, collect_dataset
from .lora import adapter_state
from .trainer import RelayTrainer, StagePlan, load_stage_file

# Settings a resume may change: where and how it runs, not what it trains (the seed fixes data order and noise).
RESUMABLE_PREFIXES = ("runtime.device", "runtime.dtype", "runtime.gradient_checkpointing", "checkpoint.")


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished (or stopped) run left in its folder."""

    run: Path
    relay: Path | None
    stage_files: dict[int, Path]
    steps: dict[int, int]
    final_loss: float | None
    seconds: float
    images: int
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)
    too_small: tuple[str, ...]


class _TrainProgress(StageProgress):
    """Stage bars whose description also shows the latest loss."""

    @contextlib.contextmanager
    def stage_status(self, key: str, description: str, total: int) -> Iterator[Callable[[int, int, str], None]]:
        with self.stage(key, description, total) as update:
            task = self._progress.task_ids[-1]

            def status(done: int, new_total: int, text: str) -> None:
                update(done, new_total)
                self._progress.update(task, description=f"{description} {text}")

            yield status


def _stage_size(stage: int, resolution: str, preset: ModelPreset) -> tuple[int, int]:
    size = resolve_size(resolution, None, preset)
    if size.needs_crop:
        raise ConfigError(f"`stage{stage}.resolution` {resolution} is {size.out_width}x{size.out_height}, not a multiple "
                          f"of {preset.pixel_multiple}; use {size.gen_width}x{size.gen_height}")
    return size.gen_width, size.gen_height


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def check_resume_compatible(recorded: dict[str, Any], config: RelayTrainConfig) -> None:
    """A resume must train what the run started training; only runtime and checkpoint settings may change."""
    old, new = _flat(recorded), _flat(to_dict(config))
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_PREFIXES)]
    if changed:
        detail = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:4])
        raise ConfigError(f"--resume continues {config.output} with its recorded settings, but these differ: {detail}; "
                          "drop those options or start a new run with another --out")


def _build_plans(config: RelayTrainConfig, preset: ModelPreset) -> dict[int, StagePlan]:
    (w1, h1), (w2, h2) = (_stage_size(s, c.resolution, preset) for s, c in ((1, config.stage1), (2, config.stage2)))
    geometry = build_token_geometry(1, h2, w2, native_height=preset.native_height, native_width=preset.native_width,
                                    vae_scale_spatial=preset.vae_scale_spatial, patch_size=preset.patch_size,
                                    window="native")
    return {1: StagePlan(stage=1, width=w1, height=h1, steps=config.stage1.steps, geometry=None),
            2: StagePlan(stage=2, width=w2, height=h2, steps=config.stage2.steps, geometry=geometry)}


def _adapter_info(config: RelayTrainConfig, preset: ModelPreset, plans: dict[int, StagePlan],
                  transformer: Any, stages: tuple[int, ...]) -> RelayAdapterInfo:
    return RelayAdapterInfo(
        base_model=preset.name, base_arch=model_signature(transformer.config),
        native_size=(preset.native_width, preset.native_height),
        stage_sizes={s: (p.width, p.height) for s, p in plans.items()},
        steps={s: plans[s].steps for s in stages}, rank=config.lora.rank, alpha=config.lora.alpha,
        targets=config.lora.targets, pool=config.gclf.pool, stages=stages)


def prepare_run(config: RelayTrainConfig, *, resume: bool) -> tuple[Any, dict[int, StagePlan], Dataset, RunFolder]:
    """Every check that needs no weights: model, sizes, data, run folder."""
    from ..engine.loading import resolve_model

    source = resolve_model(config.model)
    plans = _build_plans(config, source.preset)
    run = RunFolder(config.output)
    if resume:
        check_resume_compatible(run.recorded_config(), config)
    else:
        run.check_new()
    min_size = (max(p.width for p in plans.values()), max(p.height for p in plans.values()))
    dataset = collect_dataset(config.data.images, caption=config.data.caption, min_size=min_size,
                              allow_upscale=config.data.allow_upscale)
    return source, plans, dataset, run


def train_relay(config: RelayTrainConfig, *, resume: bool = False, progress: bool = False,
                stop_after: int | None = None) -> TrainResult:
    """Train both Relay LoRA stages and write the adapters into ``config.output``.

    Args:
        config: the resolved settings (see :func:`~upscale_dit.training.config.layer_train_config`).
        resume: continue the run in ``config.output`` from its latest checkpoint.
        progress: rich progress bars on stderr.
        stop_after: stop once this many steps (over both stages) are done, as if interrupted (tests, budgets).

    Example:
        >>> cfg = layer_train_config(flags={"model": "tiny", "data": {"images": "imgs", "caption": "a photo"}})  # doctest: +SKIP
        >>> train_relay(cfg).relay  # doctest: +SKIP
    """
    from ..engine.device import resolve_device, resolve_dtype
    from ..engine.loading import load_components

    started = time.perf_counter()
    source, plans, dataset, run = prepare_run(config, resume=resume)
    if not resume:
        run.create(to_dict(config))
    run.write_data_report(dataset.summary())
    device = resolve_device(config.runtime.device)
    dtype = resolve_dtype(config.runtime.dtype, device)
    max_length = config.max_sequence_length or source.preset.max_sequence_length
    items = list(dataset.items)
    with _TrainProgress(enabled=progress) as bars:
        with bars.stage("load", f"loading {source.description}"):
            parts = load_components(source, dtype=dtype, device=device)
        cache = FeatureCache(run.cache_dir, model_id=f"{source.description}|{dtype}")
        samples = cache.plan(items, [(p.width, p.height) for p in plans.values()], max_length)
        with bars.stage("cache", "encoding images + captions", total=None) as update:
            fill_cache(samples, items, parts, max_length=max_length, device=device, on_progress=update)
        transformer = parts["transformer"]
        for name in ("text_encoder", "vae"):  # only the transformer trains; free the rest
            parts.pop(name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        trainer = RelayTrainer(transformer, samples, plans, config, device=device, dtype=dtype, run=run)
        finished = _run_stages(trainer, run, plans, bars, resume=resume, stop_after=stop_after,
                               info=lambda stages: _adapter_info(config, source.preset, plans, transformer, stages))
    losses = _read_losses(run)
    stage_files = {s: run.stage_file(s) for s in (1, 2) if run.stage_file(s).is_file()}
    return TrainResult(run=run.root, relay=run.relay_file if finished else None, stage_files=stage_files,
                       steps={s: p.steps for s, p in plans.items()}, final_loss=losses[-1] if losses else None,
                       seconds=time.perf_counter() - started, images=len(items),
                       unreadable=dataset.unreadable, too_small=dataset.too_small)


def _run_stages(trainer: RelayTrainer, run: RunFolder, plans: dict[int, StagePlan], bars: _TrainProgress, *,
                resume: bool, stop_after: int | None, info: Callable[[tuple[int, ...]], RelayAdapterInfo]) -> bool:
    """Stage 1 (unless done), then stage 2; writes each stage's file when it ends. True when both finished."""
    state = run.load_latest() if resume else None
    first_stage, resumed_stage = 1, None
    if state is not None:
        run.truncate_log(state["step"] + (plans[1].steps if state["stage"] == 2 else 0))
        if state["stage"] == 1 and state["step"] >= plans[1].steps:  # stage 1 ended at this checkpoint
            _write_stage(run, 1, state["adapter"], info((1,)), only_if_missing=True)
            first_stage = 2
        else:
            trainer.load_state_dict(state)
            first_stage = resumed_stage = int(state["stage"])
    elif resume:
        run.truncate_log(0)
    for stage in range(first_stage, 3):
        plan = plans[stage]
        if stage != resumed_stage:
            trainer.begin_stage(stage)
        label = f"stage {stage}/2 {plan.width}x{plan.height}"
        with bars.stage_status(f"stage{stage}", label, plan.steps) as status:
            status(trainer.step, plan.steps, "")
            if not trainer.train_stage(on_status=status, stop_at=stop_after):
                trainer.save_checkpoint()  # a requested stop keeps every step done so far
                trainer.finish()
                return False
        _write_stage(run, stage, adapter_state(trainer.transformer, stage), info(tuple(range(1, stage + 1))))
    trainer.finish()
    stages = {s: load_stage_file(run.stage_file(s)) for s in (1, 2)}
    tensors, meta = encode_relay(stages, info((1, 2)))
    write_safetensors_atomic(run.relay_file, tensors, meta)
    return True


def _write_stage(run: RunFolder, stage: int, state: dict[str, torch.Tensor], info: RelayAdapterInfo, *,
                 only_if_missing: bool = False) -> None:
    path = run.stage_file(stage)
    if only_if_missing and path.is_file():
        return
    tensors, meta = encode_stage(state, replace(info, stages=(stage,)), stage, "diffusers")
    write_safetensors_atomic(path, tensors, meta)


def _read_losses(run: RunFolder) -> list[float]:
    import json

    if not run.log_path.is_file():
        return []
    return [json.loads(line)["loss"] for line in run.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
