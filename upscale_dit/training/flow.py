"""Flow-matching training math: Wan's noise table, the bell loss weight, and the two Relay objectives.

Rectified flow: ``x_sigma = (1 - sigma) x0 + sigma eps``; the model predicts the velocity ``v = eps - x0``.

* Stage 1 (modality alignment): ``w(t) * mean((v_theta - (eps - x0))^2)``.
* Stage 2 (HFATO, ViBe §4): the clean latent is degraded by the top octave (2x2 average pool, bilinear back up),
  *that* is noised, and the one-step estimate ``x0_hat = x_sigma - sigma v_theta`` is compared with the **clean**
  latent: ``w(t) * mean((x0_hat - x0)^2)``. Equivalently ``w sigma^2 |v_theta - v*|^2`` with
  ``v* = (eps - x0) + ((1 - sigma)/sigma)(x_deg - x0)``: the ordinary target plus "restore the lost band".

Everything here is float32, whatever the model's dtype (the reference forms x0_hat in bf16, lossy at small sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseTable:
    """The 1000-entry training table: ``s_i = 1 - i/N``, ``sigma_i = shift s / (1 + (shift-1) s)``, ``t_i = N sigma_i``.

    ``weights`` is DiffSynth's bell ``exp(-2((t - N/2)/N)^2)`` minus its minimum, scaled to mean 1
    (0 at sigma = 1, ~2.08 at sigma = 0.5), or all ones.
    """

    sigmas: torch.Tensor  # [N] float64
    timesteps: torch.Tensor  # [N] float64
    weights: torch.Tensor  # [N] float64

    @classmethod
    def build(cls, *, shift: float = 5.0, num_train_timesteps: int = 1000, weighting: str = "bell") -> "NoiseTable":
        n = num_train_timesteps
        s = 1.0 - torch.arange(n, dtype=torch.float64) / n
        sigmas = shift * s / (1.0 + (shift - 1.0) * s)
        timesteps = sigmas * n
        if weighting == "bell":
            bell = torch.exp(-2.0 * ((timesteps - n / 2) / n) ** 2)
            bell = bell - bell.min()
            weights = bell * (n / bell.sum())
        elif weighting == "none":
            weights = torch.ones(n, dtype=torch.float64)
        else:
            raise ValueError(f"unknown loss weighting {weighting!r}; use bell or none")
        return cls(sigmas=sigmas, timesteps=timesteps, weights=weights)

    def __len__(self) -> int:
        return int(self.sigmas.numel())

    def sample(self, generator: torch.Generator) -> int:
        """A uniform table index (one per sample, the same index for sigma, t and the weight)."""
        return int(torch.randint(len(self), (1,), generator=generator))


def add_noise(x_start: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(1 - sigma) x_start + sigma noise`` in float32."""
    return (1.0 - sigma) * x_start.float() + sigma * noise.float()


def degrade_latents(x0: torch.Tensor) -> torch.Tensor:
    """Remove the top octave of ``[B, C, F, H, W]`` latents per frame: 2x2 average pool, then bilinear x2 back.

    Equals DiffSynth's ``interpolate(scale=(1, .5, .5), trilinear)`` down / up for even H, W (tested).
    """
    b, c, f, h, w = x0.shape
    frames = x0.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    low = F.avg_pool2d(frames, 2, ceil_mode=True)
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return up.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def velocity_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, weight: float) -> torch.Tensor:
    """Stage 1: ``weight * mean((v_theta - (noise - x0))^2)`` in float32."""
    target = noise.float() - x0.float()
    return weight * (prediction.float() - target).pow(2).mean()


def hfato_loss(prediction: torch.Tensor, x_sigma: torch.Tensor, x0: torch.Tensor, sigma: float,
               weight: float) -> torch.Tensor:
    """Stage 2: ``weight * mean((x_sigma - sigma v_theta - x0)^2)`` against the clean ``x0``, in float32."""
    x0_hat = x_sigma.float() - sigma * prediction.float()
    return weight * (x0_hat - x0.float()).pow(2).mean()
