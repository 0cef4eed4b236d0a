"""The Relay LoRA training loop: two stages over one base transformer, resumable bit for bit.

Stage 1 trains ``stage1`` with stock attention and the velocity loss at the native size. Stage 2 merges the
saved stage-1 weights into the (in-memory) base, adds a fresh ``stage2`` with GCLF self-attention and trains it
with HFATO at the high-resolution size. Per step everything random (sample, noise level, noise) comes from a
generator seeded by (seed, stage, step), so a resumed run draws exactly what the continuous run drew.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..attention.plan import AttentionPlanHandle
from ..attention.gclf import apply_gclf
from ..attention.geometry import TokenGeometry
from .cache import Sample, load_tensor
from .checkpoint import RunFolder
from .config import RelayTrainConfig
from .flow import NoiseTable, add_noise, degrade_latents, hfato_loss, velocity_loss
from .lora import add_stage_adapter, adapter_state, load_adapter_state, merge_stage1, remove_adapters

StatusFn = Callable[[int, int, str], None]  # (done, total, status text)


@dataclass(frozen=True, slots=True)
class StagePlan:
    """What one stage trains: its size, its length, and which attention and objective it uses."""

    stage: int
    width: int
    height: int
    steps: int
    geometry: TokenGeometry | None  # GCLF geometry (stage 2); None = stock attention

    @property
    def objective(self) -> str:
        return "hfato" if self.stage == 2 else "velocity"


class RelayTrainer:
    """Trains both Relay stages; ``state_dict()``/``load_state_dict()`` carry everything a resume needs."""

    # what is trained and on what
    transformer: Any
    samples: list[Sample]
    plans: dict[int, StagePlan]
    # how
    config: RelayTrainConfig
    table: NoiseTable
    device: torch.device
    dtype: torch.dtype
    run: RunFolder
    # state of the current stage
    stage: int
    step: int
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer | None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    _gclf: AttentionPlanHandle | None

    def __init__(self, transformer: Any, samples: list[Sample], plans: dict[int, StagePlan], config: RelayTrainConfig,
                 *, device: torch.device, dtype: torch.dtype, run: RunFolder) -> None:
        self.transformer, self.samples, self.plans, self.config = transformer, samples, plans, config
        self.device, self.dtype, self.run = device, dtype, run
        self.table = NoiseTable.build(shift=config.flow.shift, num_train_timesteps=config.flow.num_train_timesteps,
                                      weighting=config.flow.weighting)
        self.stage, self.step, self.params = 1, 0, []
        self.optimizer = self.scheduler = self._gclf = None
        if config.runtime.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()

    # ---- stages ------------------------------------------------------------------------------------------------

    @property
    def global_step(self) -> int:
        return self.step + (self.plans[1].steps if self.stage == 2 else 0)

    def begin_stage(self, stage: int) -> None:
        """Prepare ``stage`` from its first step: adapters, attention and a fresh optimizer."""
        seed = self.config.runtime.seed
        self._remove_gclf()
        remove_adapters(self.transformer)
        if stage == 2:
            stage1 = load_stage_file(self.run.stage_file(1))
            merge_stage1(self.transformer, stage1, self.config.lora, seed=seed)
            geometry = self.plans[2].geometry
            assert geometry is not None
            self._gclf = apply_gclf(self.transformer, geometry, pool=self.config.gclf.pool,
                                    kernel=self.config.gclf.kernel)
        self.params = add_stage_adapter(self.transformer, stage, self.config.lora, seed=seed)
        o = self.config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                           weight_decay=o.weight_decay)
        factor = o.warmup_factor if o.warmup_steps > 0 else 1.0
        self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=factor,
                                                             total_iters=max(o.warmup_steps, 1))
        self.stage, self.step = stage, 0

    def _remove_gclf(self) -> None:
        if self._gclf is not None:
            self._gclf.remove()
            self._gclf = None

    def finish(self) -> None:
        """Restore stock attention and drop the adapters (the transformer is the merged working copy)."""
        self._remove_gclf()
        remove_adapters(self.transformer)

    # ---- one step ----------------------------------------------------------------------------------------------

    def _generator(self, purpose: int) -> torch.Generator:
        seed = self.config.runtime.seed
        return torch.Generator().manual_seed(((seed * 1_000_003 + self.stage) * 1_000_033 + purpose) % (2**63))

    def sample_index(self) -> int:
        """The sample for the current step: a fresh permutation per epoch, derived from (seed, stage, epoch)."""
        n = len(self.samples)
        epoch, within = divmod(self.step, n)
        order = torch.randperm(n, generator=self._generator(-(epoch + 1)))
        return int(order[within])

    def train_step(self) -> dict[str, float]:
        """One optimizer step on one image; returns what the log records."""
        assert self.optimizer is not None and self.scheduler is not None
        plan = self.plans[self.stage]
        sample = self.samples[self.sample_index()]
        generator = self._generator(self.step)
        index = self.table.sample(generator)
        sigma, weight = float(self.table.sigmas[index]), float(self.table.weights[index])
        x0 = load_tensor(sample.latents[(plan.width, plan.height)]).to(self.device, torch.float32)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(self.device)
        text = load_tensor(sample.text).to(self.device, self.dtype)
        x_sigma = add_noise(degrade_latents(x0) if plan.objective == "hfato" else x0, noise, sigma)
        timestep = torch.tensor([float(self.table.timesteps[index])], device=self.device, dtype=torch.float32)
        prediction = self.transformer(hidden_states=x_sigma.to(self.dtype), timestep=timestep,
                                      encoder_hidden_states=text, return_dict=False)[0]
        if plan.objective == "hfato":
            loss = hfato_loss(prediction, x_sigma, x0, sigma, weight)
        else:
            loss = velocity_loss(prediction, x0, noise, weight)
        loss.backward()
        if self.config.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr, "sigma": sigma, "weight": weight}

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"stage": self.stage, "step": self.step, "adapter": adapter_state(self.transformer, self.stage),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: set up its stage, then restore adapter, optimizer, schedule and RNG."""
        self.begin_stage(int(state["stage"]))
        assert self.optimizer is not None and self.scheduler is not None
        load_adapter_state(self.transformer, self.stage, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save_checkpoint(self) -> None:
        self.run.save_checkpoint(self.global_step, self.state_dict(), keep=self.config.checkpoint.keep)

    # ---- the loop ----------------------------------------------------------------------------------------------

    def train_stage(self, *, on_status: StatusFn | None = None, stop_at: int | None = None) -> bool:
        """Run the current stage to its end (or until the global step ``stop_at``); True if the stage finished."""
        plan, every = self.plans[self.stage], self.config.checkpoint.every
        while self.step < plan.steps:
            if stop_at is not None and self.global_step >= stop_at:
                return False
            started = time.perf_counter()
            record = self.train_step()
            seconds = time.perf_counter() - started
            self.run.log({"stage": self.stage, "step": self.step, "global_step": self.global_step,
                          **record, "it_s": round(1.0 / seconds, 4) if seconds > 0 else None})
            if self.step % every == 0 or self.step == plan.steps:
                self.save_checkpoint()
            if on_status:
                on_status(self.step, plan.steps, f"loss {record['loss']:.4f}")
        return True


def load_stage_file(path: Any) -> dict[str, torch.Tensor]:
    """The PEFT state of a ``stage<N>.safetensors`` written by this run (diffusers format)."""
    from ..adapters import read_relay_adapter

    _, stages = read_relay_adapter(path)
    return next(iter(stages.values()))
