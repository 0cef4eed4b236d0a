"""The training math: Wan's noise table, the bell weight, the degradation and HFATO's two equivalent forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from upscale_dit.training.flow import NoiseTable, add_noise, degrade_latents, hfato_loss, velocity_loss


def test_table_matches_wan_shift_5_and_diffsynth_weights():
    table = NoiseTable.build(shift=5.0)
    assert len(table) == 1000
    s = 1 - torch.arange(1000, dtype=torch.float64) / 1000
    assert torch.allclose(table.sigmas, 5 * s / (1 + 4 * s))
    assert torch.allclose(table.timesteps, 1000 * table.sigmas)
    assert table.sigmas[0] == 1.0 and table.weights[0] == 0.0  # the bell minimum sits at sigma = 1
    assert abs(float(table.weights.mean()) - 1.0) < 1e-12
    near_half = int((table.sigmas - 0.5).abs().argmin())
    assert abs(float(table.weights[near_half]) - 2.08) < 0.01  # spec §2.3: w = 2.08 at sigma = 0.5
    assert float((table.sigmas > 0.5).double().mean()) > 0.8  # shift 5: most draws are noisy
    assert torch.equal(NoiseTable.build(weighting="none").weights, torch.ones(1000, dtype=torch.float64))


def test_index_sampling_is_uniform_and_seeded():
    table = NoiseTable.build()
    draws = [table.sample(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    g = torch.Generator().manual_seed(0)
    many = torch.tensor([table.sample(g) for _ in range(4000)])
    assert many.min() >= 0 and many.max() <= 999 and 450 < float(many.double().mean()) < 550


def test_degradation_is_2x2_average_then_bilinear_up_as_the_reference_trilinear():
    x = torch.randn(1, 16, 3, 12, 20, dtype=torch.float64)
    down = F.interpolate(x, scale_factor=(1, 0.5, 0.5), mode="trilinear", align_corners=False)
    reference = F.interpolate(down, size=x.shape[2:], mode="trilinear", align_corners=False)
    assert torch.allclose(degrade_latents(x).double(), reference, atol=1e-6)
    assert torch.allclose(degrade_latents(torch.ones(1, 2, 1, 8, 8)), torch.ones(1, 2, 1, 8, 8))  # keeps the DC


def test_hfato_x0_form_equals_velocity_form_of_the_spec():
    """L = w·mean((x_σ − σv − x0)²) = w·σ²·mean((v − v*)²), v* = (ε − x0) + ((1−σ)/σ)(x̃ − x0)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 1, 12, 20, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_deg = degrade_latents(x0).double()
    for sigma, weight in [(0.05, 0.3), (0.5, 2.08), (0.93, 1.1)]:
        x_sigma = (1 - sigma) * x_deg + sigma * eps
        x0_form = weight * ((x_sigma - sigma * v - x0) ** 2).mean()
        v_star = (eps - x0) + ((1 - sigma) / sigma) * (x_deg - x0)
        v_form = weight * sigma**2 * ((v - v_star) ** 2).mean()
        assert torch.allclose(x0_form, v_form, rtol=1e-12)
        ours = hfato_loss(v, add_noise(x_deg, eps, sigma), x0, sigma, weight)  # float32 inside
        assert abs(float(ours) - float(x0_form)) / float(x0_form) < 1e-5


def test_velocity_loss_is_weighted_mse_to_noise_minus_data():
    x0, eps = torch.zeros(1, 2, 1, 2, 2), torch.ones(1, 2, 1, 2, 2)
    assert float(velocity_loss(eps, x0, eps, 2.0)) == 0.0
    assert float(velocity_loss(torch.zeros_like(eps), x0, eps, 2.0)) == 2.0
