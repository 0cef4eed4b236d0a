"""Train the ``toy`` model on the procedural world, from a seed: VAE first, then transformer + text encoder.

    python -m upscale_dit.toy.train --out runs/toy                    # both stages, one GPU
    python -m upscale_dit.toy.train --out runs/toy --stage vae        # stage 1 only → runs/toy/vae
    python -m upscale_dit.toy.train --out runs/toy --stage dit        # stage 2, reads runs/toy/vae
    torchrun --nproc_per_node 2 -m upscale_dit.toy.train --out runs/toy   # the same global batches on 2 GPUs

Stage ``vae``: an ``AutoencoderKLWan`` learns to reconstruct 9-frame world clips at the native size and
native-size crops of 2x and 3x renders (so it also decodes the larger objects of high-resolution output), with
an L1 + squared-error + spatial-gradient loss and a small KL term; then its decoder alone learns whole 17-frame
clips with the encoder frozen (``--stage decoder`` reruns just that phase, even after stage ``dit``, as the
latent space does not move). Its latent statistics over the training clips become ``latents_mean``/
``latents_std``, as in the real Wan VAE.
Stage ``dit``: the transformer and the text encoder learn rectified flow (the objective Wan was trained with)
on 17-frame native clips, with 10 % empty captions for classifier-free guidance and optional caption parts
dropped; an EMA of the weights is what ships. The result is a diffusers ``WanPipeline`` folder in float16
(``OUT/weights``), plus ``training.json`` with the seed, steps, losses and times.

Everything is seeded (torch, Python, the world's scene seeds). GPU kernels are not bit-deterministic, so a
rerun reproduces the weights' quality, not their exact bits.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.quiet import quiet_libraries
from . import model as toy
from .data import ClipRequest, clip_scene, render_clips, scene_seed, vary_caption

EMPTY_CAPTION_RATE = 0.1
TIMESTEP_SCALE = 1000.0  # the model sees timestep = sigma * 1000, as diffusers' flow schedulers pass it


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Rectified flow's straight path: ``(1 - sigma) x0 + sigma noise``; the model learns ``noise - x0``."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - s) * x0 + s * noise


def _log(message: str) -> None:
    if _world()[0] != 0:  # every rank does the same work; one report is enough
        return
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _to_video_tensor(clips: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, F, H, W, 3)`` → float ``(B, 3, F, H, W)`` in [-1, 1] (the VAE's input)."""
    x = _to_device(torch.from_numpy(clips), device).permute(0, 4, 1, 2, 3).float()
    return x / 127.5 - 1.0


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth of the peak at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class _StepBudget:
    """How many steps a stage runs: ``steps``, or fewer when a time budget (``minutes``) would run out first.

    With a budget, the speed is measured between steps ``calibrate_at // 6`` and ``calibrate_at`` (after any
    compilation) and turned into a step count once, on rank 0, shared with every rank: all ranks stop at the
    same step and the learning-rate schedule completes on time. The steps run are recorded, so
    ``--*-steps N`` without a budget reruns the stage.
    """

    def __init__(self, steps: int, minutes: float | None, *, started: float, calibrate_at: int = 60):
        self.total, self.seconds, self.started = steps, (minutes or 0.0) * 60, started
        self.calibrate_at, self._mark = calibrate_at, None

    def after_step(self, step: int, device: torch.device) -> None:
        """Call after each step (``step`` = steps done); fixes ``total`` at the calibration step."""
        if not self.seconds or step not in (self.calibrate_at // 6, self.calibrate_at):
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.monotonic()
        if step < self.calibrate_at:
            self._mark = (step, now)
            return
        first, then = self._mark
        per_step = (now - then) / (step - first)
        affordable = step + int((self.seconds - (now - self.started)) / per_step)
        estimate = torch.tensor([max(step + 1, min(self.total, affordable))], device=device)
        if _world()[1] > 1:
            torch.distributed.broadcast(estimate, src=0)
        self.total = int(estimate.item())
        _log(f"{per_step * 1000:.0f} ms a step: {self.total} steps fit the budget")


class _LossMeter:
    """A loss averaged over every ``every`` steps, summed on the device and read only then.

    Reading a CUDA loss each step (``.item()``) would make the host wait for the GPU and stall the launch queue.
    """

    def __init__(self, every: int, device: torch.device):
        self.every, self.running, self.history = every, torch.zeros((), device=device), []

    def add(self, loss: torch.Tensor, step: int) -> float | None:
        """Add this step's loss (``step`` = steps done); returns the mean when a report is due."""
        self.running += loss.detach()
        if step % self.every:
            return None
        self.history.append(float(self.running) / self.every)
        self.running.zero_()
        return self.history[-1]

    @property
    def last(self) -> float | None:
        return self.history[-1] if self.history else None


# --------------------------------------------------------------------------- distributed


def _world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless launched by torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_distributed(requested: str | None) -> torch.device:
    """Join the torchrun process group when there is one (NCCL on GPUs, gloo on CPUs); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and requested != "cpu"
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _barrier() -> None:
    if _world()[1] > 1:
        torch.distributed.barrier()


def _per_rank(batch: int, name: str) -> int:
    world = _world()[1]
    if batch % world:
        raise SystemExit(f"--{name} {batch} is the global batch: it must divide by the {world} processes")
    return batch // world


def _wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the ranks (gradients averaged), or the module itself on one process."""
    if _world()[1] == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device without stalling the launch queue (pinned memory, non-blocking) on CUDA."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


# --------------------------------------------------------------------------- stage 1: VAE


def vae_clip_pool(seed: int, count: int, *, frames: int, workers: int, size: int = toy.NATIVE_HEIGHT) -> np.ndarray:
    """uint8 ``(count, frames, size, size, 3)``: a third native clips, the rest crops of 2x and 3x renders."""
    rng = np.random.default_rng(seed)
    scales = [1 + i % 3 for i in range(count)]
    requests = [ClipRequest(scene_seed(seed, i), size * s, size * s, frames, toy.FPS) for i, s in enumerate(scales)]
    pool = np.empty((count, frames, size, size, 3), dtype=np.uint8)
    for scale in (1, 2, 3):
        index = [i for i, s in enumerate(scales) if s == scale]
        if not index:
            continue
        videos, _ = render_clips([requests[i] for i in index], workers=workers)
        for i, video in zip(index, videos):
            top, left = (int(v) for v in rng.integers(0, size * (scale - 1) + 1, size=2))
            pool[i] = video[:, top:top + size, left:left + size]
    return pool


def _spatial_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def start_nearly_deterministic(vae, log_variance: float = -6.0) -> None:
    """Start the encoder's posterior with a small variance (std ~0.05) instead of ~1.

    From a fresh init the sampled latent is mostly unit noise, so the decoder can only learn the mean colour
    until the encoder has pushed its variance down; the small KL weight never needs the large one anyway.
    """
    with torch.no_grad():
        log_var = slice(vae.config.z_dim, None)  # quant_conv's output is [mean | log-variance] on channels
        vae.quant_conv.weight[log_var] *= 0.1
        vae.quant_conv.bias[log_var] = log_variance


def _reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 keeps edges sharp; the squared term weighs a missing object (a large error on few pixels) more than
    L1 alone, whose optimum is a median: the background colour; the gradient term keeps textures."""
    return F.l1_loss(recon, x) + F.mse_loss(recon, x) + _spatial_gradient_l1(recon, x)


class _Reconstruction(torch.nn.Module):
    """The VAE's encode → sample → decode as one forward (what DistributedDataParallel needs to wrap)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.mean, posterior.logvar


def _fit_on_pool(model: torch.nn.Module, parameters: list[torch.nn.Parameter], pool: np.ndarray, loss_of, *,
                 name: str, lr: float, warmup: int, local_batch: int, generator: torch.Generator,
                 budget: "_StepBudget", meter: "_LossMeter", device: torch.device) -> int:
    """AdamW on random batches of ``pool`` clips until ``budget`` is spent; returns the steps run.

    ``loss_of(output, clips)`` gives the loss to minimise, the loss to report and a dict of other tensors
    worth printing (read only when a report is due).
    """
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    step = 0
    while step < budget.total:
        _set_lr(optimizer, _lr_at(step, budget.total, lr, warmup=warmup))
        index = torch.randint(0, len(pool), (local_batch,), generator=generator).numpy()
        x = _to_video_tensor(pool[index], device)
        with autocast:
            output = model(x)
        loss, reported, details = loss_of(output, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        budget.after_step(step, device)
        if (report := meter.add(reported, step)) is not None:
            extra = "".join(f" {key} {float(value.detach()):.3f}" for key, value in details.items())
            _log(f"{name} step {step}/{budget.total}: reconstruction {report:.4f}{extra}")
    return step


def train_vae(vae, *, seed: int, steps: int, batch: int, pool_size: int, lr: float, kl_weight: float,
              device: torch.device, workers: int, minutes: float | None,
              size: int = toy.NATIVE_HEIGHT, frames: int = 9) -> dict[str, Any]:
    """Fit the VAE in place (``batch`` is global: split over the ranks); returns what happened."""
    started = time.monotonic()
    rank, _ = _world()
    local_batch = _per_rank(batch, "vae-batch")
    # 9 frames = the first frame, a 4-frame chunk after it and one after a chunk: every case of the causal VAE's
    # frame caches. With 5 frames the third case is never trained and frames 5+ of a clip decode off-colour.
    pool = vae_clip_pool(seed + 1, pool_size, frames=frames, workers=workers, size=size)
    _log(f"vae: rendered {pool_size} clips in {time.monotonic() - started:.1f} s")
    start_nearly_deterministic(vae)
    vae.train().requires_grad_(True).to(device)

    def loss_of(output, x):
        recon, mean, logvar = (t.float() for t in output)
        rec_loss = _reconstruction_loss(recon, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return rec_loss + kl_weight * kl, rec_loss, {"kl": kl}

    meter = _LossMeter(100, device)
    step = _fit_on_pool(_wrap(_Reconstruction(vae), device), list(vae.parameters()), pool, loss_of, name="vae",
                        lr=lr, warmup=50, local_batch=local_batch,
                        generator=torch.Generator().manual_seed(seed + 2 + 1000 * rank),
                        budget=_StepBudget(steps, minutes, started=started), meter=meter, device=device)
    vae.eval().requires_grad_(False)
    _log(f"vae: {step} steps, reconstruction {meter.last}")
    return dict(steps_run=step, steps=steps, batch=batch, frames=frames, pool_size=pool_size, lr=lr,
                kl_weight=kl_weight, final_reconstruction_l1=meter.last,
                seconds=round(time.monotonic() - started, 1))


class _Decoding(torch.nn.Module):
    """Frozen encoder → trainable decode, as one forward (DistributedDataParallel sees only the decoder train)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(x).latent_dist.sample()
        return self.vae.decode(latents).sample


def finetune_decoder(vae, *, seed: int, steps: int, batch: int, pool_size: int, lr: float, device: torch.device,
                     workers: int, minutes: float | None, size: int = toy.NATIVE_HEIGHT,
                     frames: int = toy.FRAMES) -> dict[str, Any]:
    """Second VAE phase: the decoder alone on whole clips, the encoder frozen.

    The causal decoder carries per-frame caches from one latent frame to the next; short training clips never
    show it a long run of them and the last frames of a 17-frame clip drift off-colour. The encoder stays
    fixed, so the latent space (what the transformer learns) does not move: this phase can run before the
    transformer stage or after it.
    """
    started = time.monotonic()
    rank, _ = _world()
    local_batch = _per_rank(batch, "decoder-batch")
    pool = vae_clip_pool(seed + 6, pool_size, frames=frames, workers=workers, size=size)
    _log(f"decoder: rendered {pool_size} clips in {time.monotonic() - started:.1f} s")
    vae.to(device).eval().requires_grad_(False)
    trainable = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for parameter in trainable:
        parameter.requires_grad_(True)
    vae.decoder.train()

    def loss_of(recon, x):
        loss = _reconstruction_loss(recon.float(), x)
        return loss, loss, {}

    meter = _LossMeter(50, device)
    step = _fit_on_pool(_wrap(_Decoding(vae), device), trainable, pool, loss_of, name="decoder", lr=lr, warmup=20,
                        local_batch=local_batch, generator=torch.Generator().manual_seed(seed + 7 + 1000 * rank),
                        budget=_StepBudget(steps, minutes, started=started, calibrate_at=30), meter=meter,
                        device=device)
    vae.eval().requires_grad_(False)
    return dict(steps_run=step, steps=steps, batch=batch, frames=frames, pool_size=pool_size, lr=lr,
                final_reconstruction_l1=meter.last, seconds=round(time.monotonic() - started, 1))


@torch.no_grad()
def check_reconstruction(vae, *, seed: int, clips: int, size: int, frames: int, device: torch.device,
                         image: Path | None = None) -> dict[str, float]:
    """Score the VAE's reconstructions of held-out clips with the world's detectors.

    The transformer can only make what the VAE can decode: if colours or shapes do not survive a round trip,
    stage 2 cannot fix that, so this is measured before it (and recorded in ``training.json``). ``image`` gets
    a PNG with one row per clip: first and last frame, each as rendered and as reconstructed.
    """
    from .detect import evaluate_video

    requests = [ClipRequest(scene_seed(seed + 2000, i), size, size, frames, toy.FPS) for i in range(clips)]
    videos, captions = render_clips(requests)
    scores: dict[str, list[float]] = {"l1": [], "colour_match_frac": [], "shape_match_frac": []}
    rows = []
    for video, caption in zip(videos, captions):
        x = _to_video_tensor(video[None], device)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        scores["l1"].append(float((recon - x).abs().mean()))
        frames_uint8 = ((recon[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        report = evaluate_video(frames_uint8, caption)
        scores["colour_match_frac"].append(report.colour_match_frac)
        scores["shape_match_frac"].append(report.shape_match_frac)
        rows.append(np.concatenate([video[0], frames_uint8[0], video[-1], frames_uint8[-1]], axis=1))
    if image is not None:
        from PIL import Image

        Image.fromarray(np.concatenate(rows, axis=0)).save(image)
    return {key: round(float(np.mean(values)), 4) for key, values in scores.items()}


# --------------------------------------------------------------------------- stage 2: transformer + text encoder


@torch.no_grad()
def encode_dataset(vae, *, seed: int, clips: int, device: torch.device, workers: int, size: int = toy.NATIVE_HEIGHT,
                   frames: int = toy.FRAMES, chunk: int = 512) -> tuple[torch.Tensor, list[str]]:
    """Render ``clips`` clips and encode them → VAE-space latents (posterior mode) and captions."""
    latents, captions = [], []
    for start in range(0, clips, chunk):
        requests = [ClipRequest(scene_seed(seed, i), size, size, frames, toy.FPS)
                    for i in range(start, min(clips, start + chunk))]
        videos, texts = render_clips(requests, workers=workers)
        for i in range(0, len(videos), 64):
            x = _to_video_tensor(videos[i:i + 64], device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                latents.append(vae.encode(x).latent_dist.mode().float())
        captions += texts
    return torch.cat(latents), captions


def set_latent_statistics(vae, latents: torch.Tensor) -> None:
    """Per-channel mean and std of the dataset's latents into the VAE config (what the engine normalises by)."""
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean],
                           latents_std=[round(float(v), 5) for v in std])


def _sample_sigmas(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Half shifted-uniform (where inference spends its steps), half uniform (refinement starts mid-way)."""
    u = torch.rand(batch, generator=generator)
    shifted = shift * u / (1.0 + (shift - 1.0) * u)
    pick = torch.rand(batch, generator=generator) < 0.5
    return torch.where(pick, shifted, u).clamp(1e-3, 1.0)


def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in live.parameters()], 1.0 - decay)


class _FlowModel(torch.nn.Module):
    """Text encoder + transformer as one forward: caption tokens and noisy latents → predicted velocity."""

    def __init__(self, transformer, text_encoder, *, compile: bool):
        super().__init__()
        self.transformer, self.text_encoder = transformer, text_encoder
        # the toy model is launch-bound: compiling the transformer roughly doubles its steps per second
        self._forward = torch.compile(transformer) if compile else transformer

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, noisy: torch.Tensor,
                sigma: torch.Tensor) -> torch.Tensor:
        from ..engine.text import embed_tokens

        context = embed_tokens(self.text_encoder, input_ids, mask)
        return self._forward(hidden_states=noisy, timestep=sigma * TIMESTEP_SCALE, encoder_hidden_states=context,
                             return_dict=False)[0]


class _TokenCache:
    """Token ids of each caption variant, tokenised once: tokenising a batch costs ~10 ms a step otherwise."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length, self._known = tokenizer, max_length, {}

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from ..engine.text import tokenize_prompts

        new = [t for t in dict.fromkeys(texts) if t not in self._known]
        if new:
            ids, mask = tokenize_prompts(self.tokenizer, new, max_length=self.max_length, clean=False)
            self._known.update({t: (ids[i], mask[i]) for i, t in enumerate(new)})
        rows = [self._known[t] for t in texts]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def train_dit(parts: dict[str, Any], latents: torch.Tensor, captions: list[str], *, seed: int, steps: int,
              batch: int, lr: float, ema_decay: float, device: torch.device,
              minutes: float | None, compile: bool = False) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Fit transformer + text encoder on normalised latents (``batch`` is global); returns the EMA modules."""
    started = time.monotonic()
    rank, _ = _world()
    local_batch = _per_rank(batch, "dit-batch")
    transformer, text_encoder = parts["transformer"].to(device), parts["text_encoder"].to(device)
    flow = _FlowModel(transformer, text_encoder, compile=compile)
    flow.train().requires_grad_(True)
    live = torch.nn.ModuleDict(dict(transformer=transformer, text_encoder=text_encoder))
    ema = copy.deepcopy(live).eval().requires_grad_(False)
    model = _wrap(flow, device)
    optimizer = torch.optim.AdamW(live.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed + 3 + 1000 * rank)
    noise_generator = torch.Generator(device).manual_seed(seed + 5 + 1000 * rank)
    captions_rng = random.Random(seed + 4 + 1000 * rank)
    tokens = _TokenCache(parts["tokenizer"], toy.MAX_SEQUENCE_LENGTH)
    shift = float(toy.TOY_SCHEDULER_CONFIG["flow_shift"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    budget = _StepBudget(steps, minutes, started=started)
    step, meter = 0, _LossMeter(250, device)
    while step < budget.total:
        _set_lr(optimizer, _lr_at(step, budget.total, lr, warmup=200))
        index = torch.randint(0, len(captions), (local_batch,), generator=generator)
        texts = ["" if captions_rng.random() < EMPTY_CAPTION_RATE else vary_caption(captions[i], captions_rng)
                 for i in index.tolist()]
        input_ids, mask = tokens(texts)
        sigma = _sample_sigmas(local_batch, shift, generator)
        index, input_ids, mask, sigma = (_to_device(t, device) for t in (index, input_ids, mask, sigma))
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=noise_generator, device=device)
        with autocast:
            velocity = model(input_ids, mask, noisy_latents(x0, noise, sigma), sigma)
        loss = F.mse_loss(velocity.float(), noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(live.parameters(), 1.0)
        optimizer.step()
        _ema_update(ema, live, ema_decay if step >= 200 else 0.0)
        step += 1
        budget.after_step(step, device)
        if (report := meter.add(loss, step)) is not None:
            _log(f"dit step {step}/{budget.total}: flow loss {report:.4f}")
    _log(f"dit: {step} steps, flow loss {meter.last}")
    info = dict(steps_run=step, steps=steps, batch=batch, lr=lr, ema_decay=ema_decay, clips=len(captions),
                compiled=compile, final_flow_loss=meter.last,
                seconds=round(time.monotonic() - started, 1))
    return dict(ema.items()), info


# --------------------------------------------------------------------------- driver


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def run(args: argparse.Namespace) -> Path:
    """Run the requested stage(s) into ``args.out``; returns the folder written last.

    Under torchrun every rank trains on its share of each global batch; rank 0 alone writes files.
    """
    device = _init_distributed(args.device)
    try:
        return _run(args, device)
    finally:
        if _world()[1] > 1:
            torch.distributed.destroy_process_group()


def _run(args: argparse.Namespace, device: torch.device) -> Path:
    rank, world = _world()
    _seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = toy.build_toy_components(seed=args.seed)
    meta_path = out / "training.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    command = " ".join(["python -m upscale_dit.toy.train", *args.argv])
    meta.update(seed=args.seed, device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                processes=world, torch=torch.__version__, command=command)
    workers = max(1, args.workers // world)

    from diffusers import AutoencoderKLWan

    if args.stage in ("vae", "all"):
        meta["vae"] = train_vae(parts["vae"], seed=args.seed, steps=args.vae_steps, batch=args.vae_batch,
                                pool_size=args.vae_pool, lr=args.vae_lr, kl_weight=args.kl_weight, device=device,
                                workers=workers, minutes=args.vae_minutes, size=args.size, frames=args.vae_frames)
        meta["vae"]["command"] = command
    if args.stage in ("vae", "all", "decoder"):
        if args.stage == "decoder":
            parts["vae"] = AutoencoderKLWan.from_pretrained(out / "vae")
        if args.decoder_steps:
            meta["decoder"] = finetune_decoder(parts["vae"], seed=args.seed, steps=args.decoder_steps,
                                               batch=args.decoder_batch, pool_size=args.decoder_pool,
                                               lr=args.decoder_lr, device=device, workers=workers,
                                               minutes=args.decoder_minutes, size=args.size, frames=args.frames)
            meta["decoder"]["command"] = command
        if rank == 0:
            meta.setdefault("vae", {})["check"] = check_reconstruction(parts["vae"], seed=args.seed, clips=args.eval_prompts or 4,
                                                        size=args.size, frames=args.frames, device=device,
                                                        image=out / "vae_check.png")
            _log(f"vae reconstructions of held-out clips: {meta['vae']['check']}")
            with quiet_libraries():
                parts["vae"].save_pretrained(out / "vae")  # float32: stage 2 and reruns start from it
            _write_meta(meta_path, meta)
        _barrier()
        if args.stage == "vae":
            return out / "vae"
        if args.stage == "decoder":
            return _swap_decoder(parts["vae"], out, meta, args, device) if rank == 0 else out / "weights"
    vae = AutoencoderKLWan.from_pretrained(out / "vae").to(device).eval().requires_grad_(False)

    started = time.monotonic()
    latents, captions = encode_dataset(vae, seed=args.seed, clips=args.clips, device=device, workers=workers,
                                       size=args.size, frames=args.frames)
    set_latent_statistics(vae, latents)
    mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    latents = (latents - mean) / std
    meta["dataset"] = dict(clips=args.clips, seconds=round(time.monotonic() - started, 1))
    _log(f"dit: encoded {args.clips} clips in {meta['dataset']['seconds']} s")
    ema, meta["dit"] = train_dit(parts, latents, captions, seed=args.seed, steps=args.dit_steps,
                                 batch=args.dit_batch, lr=args.dit_lr, ema_decay=args.ema_decay, device=device,
                                 minutes=args.dit_minutes, compile=args.compile and device.type == "cuda")
    meta["dit"]["command"] = command
    folder = out / "weights"
    if rank == 0:
        final = dict(parts, vae=vae.cpu(), **{name: module.cpu() for name, module in ema.items()})
        _save_and_evaluate(final, out, meta, args, device)
    _barrier()
    return folder


def _save_and_evaluate(parts: dict[str, Any], out: Path, meta: dict[str, Any], args: argparse.Namespace,
                       device: torch.device) -> Path:
    """Write ``OUT/weights`` (float16) with its ``training.json``, then the quick eval into both records."""
    folder = out / "weights"
    meta["size_mib"] = None
    toy.save_pipeline_folder(parts, folder, metadata=meta)
    meta["size_mib"] = round(toy.weights_size(folder) / 2**20, 2)
    _log(f"wrote {folder} ({meta['size_mib']} MiB)")
    if args.eval_prompts:
        meta["quick_eval"] = quick_eval(folder, prompts=args.eval_prompts, seed=args.seed, device=device,
                                        size=args.size, frames=args.frames)
        _log(f"quick eval: {meta['quick_eval']}")
    _write_meta(out / "training.json", meta)
    _write_meta(folder / "training.json", meta)
    return folder


def _swap_decoder(vae, out: Path, meta: dict[str, Any], args: argparse.Namespace, device: torch.device) -> Path:
    """After ``--stage decoder``: put the retrained decoder into an existing ``weights/`` folder and re-evaluate.

    The encoder did not change, so the transformer's latent space and the folder's latent statistics still hold.
    """
    from diffusers import WanPipeline

    folder = out / "weights"
    if not (folder / "model_index.json").exists():
        return out / "vae"
    with quiet_libraries():
        pipe = WanPipeline.from_pretrained(folder)
    pipe.vae.load_state_dict(vae.state_dict())
    return _save_and_evaluate(dict(pipe.components), out, meta, args, device)


def quick_eval(folder: Path, *, prompts: int, seed: int, device: torch.device, size: int = toy.NATIVE_HEIGHT,
               frames: int = toy.FRAMES) -> dict[str, float]:
    """Generate ``prompts`` held-out captions with the saved folder through the engine and score them.

    A smoke check printed at the end of training (the quality benchmark in ``bench/`` is the real measure).
    """
    from ..generation import generate
    from ..video import read_video
    from .detect import evaluate_video

    scores: dict[str, list[float]] = {"colour_match_frac": [], "shape_match_frac": [], "count_exact_frac": []}
    for i in range(prompts):
        caption = clip_scene(ClipRequest(scene_seed(seed + 1000, i), size, size, frames, toy.FPS)).caption()
        path = folder.parent / "eval" / f"{i:02d}.mp4"
        path.parent.mkdir(exist_ok=True)
        generate(caption, model=str(folder), sampling__seed=i, output__path=str(path), output__overwrite=True,
                 runtime__device=device.type, resolution=f"{size}x{size}", frames=frames)
        report = evaluate_video(read_video(path)[0], caption)
        for key in scores:
            scores[key].append(getattr(report, key))
        _log(f"eval {i}: {caption!r}: colour {report.colour_match_frac:.2f} shape {report.shape_match_frac:.2f} "
             f"count {report.count_mean:.2f}")
    return {key: round(float(np.mean(values)), 3) for key, values in scores.items()}


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m upscale_dit.toy.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder: vae/, weights/ and training.json go here")
    ap.add_argument("--stage", choices=("all", "vae", "decoder", "dit"), default="all",
                    help="vae: both VAE phases; decoder: only the second, on OUT/vae (and into OUT/weights if "
                         "there); dit: transformer + text encoder on OUT/vae")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--size", type=int, default=toy.NATIVE_HEIGHT,
                    help="square training size in pixels (a multiple of 16); the shipped model uses the default")
    ap.add_argument("--frames", type=int, default=toy.FRAMES, help="frames per transformer training clip (4k+1)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="render processes (shared by the torchrun ranks)")
    ap.add_argument("--vae-steps", type=int, default=2000)
    ap.add_argument("--vae-batch", type=int, default=32, help="global batch (split over torchrun ranks)")
    ap.add_argument("--vae-frames", type=int, default=9,
                    help="frames per VAE training clip (4k+1, at least 9 so every frame-cache case is trained)")
    ap.add_argument("--vae-pool", type=int, default=3072, help="distinct clips the VAE trains on")
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--decoder-steps", type=int, default=600,
                    help="second VAE phase: decoder-only steps on whole clips (0 skips it)")
    ap.add_argument("--decoder-batch", type=int, default=16, help="global batch (split over torchrun ranks)")
    ap.add_argument("--decoder-pool", type=int, default=1024, help="distinct whole clips the decoder trains on")
    ap.add_argument("--decoder-lr", type=float, default=3e-4)
    ap.add_argument("--decoder-minutes", type=float, default=None, help="time budget of the decoder phase")
    ap.add_argument("--clips", type=int, default=12000, help="distinct 17-frame clips the transformer trains on")
    ap.add_argument("--dit-steps", type=int, default=12000)
    ap.add_argument("--dit-batch", type=int, default=256, help="global batch (split over torchrun ranks)")
    ap.add_argument("--dit-lr", type=float, default=8e-4)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="torch.compile the transformer on CUDA (falls back to eager if compiling fails)")
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--vae-minutes", type=float, default=None,
                    help="time budget of the VAE stage: it ends after this long even if --vae-steps are not done, "
                         "with its learning-rate schedule complete (the steps run go to training.json)")
    ap.add_argument("--dit-minutes", type=float, default=None, help="the same for the transformer stage")
    ap.add_argument("--eval-prompts", type=int, default=8, help="held-out captions generated and scored at the end")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in training.json
    if args.size % 16 or args.size < 16:
        ap.error(f"--size must be a positive multiple of 16, got {args.size}")
    if args.vae_frames % 4 != 1 or args.vae_frames < 9:
        ap.error(f"--vae-frames must be 4k+1 and at least 9, got {args.vae_frames}")
    if args.frames % 4 != 1:
        ap.error(f"--frames must be 4k+1 (Wan's VAE packs 1 + 4k frames), got {args.frames}")
    if args.decoder_steps < 0:
        ap.error(f"--decoder-steps must be 0 or more, got {args.decoder_steps}")
    for name in ("vae_steps", "vae_batch", "vae_pool", "decoder_batch", "decoder_pool", "clips", "dit_steps",
                 "dit_batch", "workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
