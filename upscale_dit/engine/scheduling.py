"""Build the sampler's scheduler with an explicit flow shift (never by mutating a frozen config)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

FLOW_DEFAULTS = dict(num_train_timesteps=1000)


def build_scheduler(name: str, *, shift: float, base_config: dict[str, Any] | None = None):
    """A fresh scheduler of kind ``name`` (``unipc`` | ``euler``) with flow shift ``shift``.

    ``base_config`` (the checkpoint's scheduler config) is reused when it is of the same class, so its
    solver settings carry over; otherwise Wan's flow-matching defaults are used.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    base = dict(base_config or {})
    if name == "unipc":
        if base.get("_class_name") == "UniPCMultistepScheduler" or "use_flow_sigmas" in base:
            clean = {k: v for k, v in base.items() if not k.startswith("_")}
            return UniPCMultistepScheduler.from_config(clean, flow_shift=shift, use_flow_sigmas=True,
                                                       prediction_type="flow_prediction")
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                       **FLOW_DEFAULTS)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift, **FLOW_DEFAULTS)
    raise ConfigError(f"`sampling.scheduler` must be unipc or euler, got {name!r}")
