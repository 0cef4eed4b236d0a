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
    """Runs each transformer pass; methods subclass it to tell their attention processors what to do.

    The default runs the plain model inside diffusers' cache context, as ``WanPipeline`` does.
    """

    def begin_generation(self) -> None:
        """Called once before the first step (reset per-generation state here)."""

    def run_pass(self, transformer, model_input: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                 info: PassInfo) -> torch.Tensor:
        context = transformer.cache_context(info.name) if hasattr(transformer, "cache_context") else contextlib.nullcontext()
        with context:
            return transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeds,
                               return_dict=False)[0]


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
    offset = getattr(scheduler, "begin_index", None) or 0  # a truncated (refinement) schedule starts later
    for i, t in enumerate(timesteps):
        sigma = float(sigmas[offset + i]) if sigmas is not None and offset + i < len(sigmas) else float("nan")
        model_input = latents.to(model_dtype)
        timestep = t.expand(latents.shape[0])
        prediction = controller.run_pass(transformer, model_input, timestep, cond, PassInfo("cond", i, num_steps, sigma))
        if use_cfg:
            negative = controller.run_pass(transformer, model_input, timestep, uncond,
                                           PassInfo("uncond", i, num_steps, sigma))
            prediction = negative + guidance * (prediction - negative)
        latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        if on_step:
            on_step(i, num_steps)
    return latents
