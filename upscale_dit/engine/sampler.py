"""Our denoising loop: classifier-free guidance over a diffusers transformer and scheduler.

Base generation, refinement and relay generation are configurations of this loop. Each transformer call
is wrapped in a *pass context* (name ``"cond"``/``"uncond"``, step index, sigma) so attention methods and
diffusers' caching hooks know which pass they are in; by default that is ``transformer.cache_context``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

StepCallback = Callable[[int, int], None]  # (step index, number of steps), after each step


@dataclass(frozen=True, slots=True)
class PassInfo:
    """What a transformer call is: which pass, at which step, at which noise level."""

    name: str  # "cond" or "uncond"
    step_index: int
    num_steps: int
    sigma: float


class PassController:
    """Tells attention processors which pass is running. The default only opens diffusers' cache context."""

    def begin_generation(self) -> None:
        """Called once before the first step (reset per-generation state here)."""

    def pass_context(self, transformer, info: PassInfo):
        if hasattr(transformer, "cache_context"):
            return transformer.cache_context(info.name)
        return contextlib.nullcontext()


@torch.no_grad()
def denoise(
    transformer,
    scheduler,
    latents: torch.Tensor,
    *,
    timesteps: Sequence[torch.Tensor] | torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    controller: PassController | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run the scheduler over ``timesteps`` from ``latents`` (float32, ``[B, C, F, h, w]``).

    Guidance follows Wan: ``uncond + g * (cond - uncond)`` from two sequential passes; with ``g <= 1`` or no
    ``uncond`` the negative pass is skipped. Latents stay float32 between steps; the transformer sees its dtype.
    """
    controller = controller or PassController()
    controller.begin_generation()
    use_cfg = uncond is not None and guidance > 1.0
    model_dtype = transformer.dtype
    num_steps = len(timesteps)
    sigmas = getattr(scheduler, "sigmas", None)
    for i, t in enumerate(timesteps):
        sigma = float(sigmas[i]) if sigmas is not None and i < len(sigmas) else float("nan")
        model_input = latents.to(model_dtype)
        timestep = t.expand(latents.shape[0])
        with controller.pass_context(transformer, PassInfo("cond", i, num_steps, sigma)):
            prediction = transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=cond,
                                     return_dict=False)[0]
        if use_cfg:
            with controller.pass_context(transformer, PassInfo("uncond", i, num_steps, sigma)):
                negative = transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=uncond,
                                       return_dict=False)[0]
            prediction = negative + guidance * (prediction - negative)
        latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        if on_step:
            on_step(i, num_steps)
    return latents
