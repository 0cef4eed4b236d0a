"""The flow shift reaches the scheduler explicitly, for both samplers."""

from __future__ import annotations

import numpy as np
import pytest

from upscale_dit.engine.scheduling import build_scheduler


def shifted(sigma, shift):
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift(sigma, shift):
    return sigma / (shift - (shift - 1) * sigma)


@pytest.mark.parametrize("name", ["unipc", "euler"])
@pytest.mark.parametrize("shift", [3.0, 9.0])
def test_sigmas_follow_the_shift(name, shift):
    """Undoing the shift must give the sampler's evenly spaced base grid."""
    scheduler = build_scheduler(name, shift=shift)
    scheduler.set_timesteps(50)
    sigmas = np.asarray(scheduler.sigmas[:-1], dtype=np.float64)
    assert len(sigmas) == 50
    base = unshift(sigmas, shift)
    np.testing.assert_allclose(np.diff(base), np.diff(base).mean(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(shifted(base, shift), sigmas, rtol=1e-6)
    assert base[0] == pytest.approx(1.0, abs=2e-3)


def test_unipc_keeps_checkpoint_solver_settings():
    scheduler = build_scheduler("unipc", shift=9.0, base_config={
        "_class_name": "UniPCMultistepScheduler", "solver_order": 3, "prediction_type": "flow_prediction",
        "use_flow_sigmas": True, "flow_shift": 3.0})
    assert scheduler.config.solver_order == 3
    assert scheduler.config.flow_shift == 9.0


def test_strength_07_with_shift_9_starts_at_sigma_0954():
    """The FreeSwim refinement schedule from the spec: 50 steps, last 35 run, first sigma 0.954."""
    scheduler = build_scheduler("unipc", shift=9.0)
    scheduler.set_timesteps(50)
    assert float(scheduler.sigmas[50 - 35]) == pytest.approx(0.954, abs=1e-3)
