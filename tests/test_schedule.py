import math

import pytest
import torch

from ddrm.diffusion.schedule import NoiseSchedule


def test_alpha_bar_follows_the_linear_variance_formula():
    T, a_min, a_max, s = 5, 1e-4, 1e-2, 0.1
    sched = NoiseSchedule(T, a_min, a_max, s)
    for t in range(1, T + 1):
        expected = s * (a_min + (t - 1) / (T - 1) * (a_max - a_min))
        assert 1 - sched.alpha_bar[t].item() == pytest.approx(expected, rel=1e-12)
        assert sched.betas[t].item() == pytest.approx(1 - sched.alpha_bar[t].item() / sched.alpha_bar[t - 1].item())
    assert sched.alpha_bar[0] == 1.0


def test_add_noise_matches_q_xt_given_x0():
    sched = NoiseSchedule(10, 1e-3, 1e-1, 0.5)
    torch.manual_seed(0)
    x0 = torch.randn(20000, 4)
    t = torch.full((20000,), 7)
    xt = sched.add_noise(x0, torch.randn_like(x0), t)
    ab = sched.alpha_bar[7].item()
    residual = xt - math.sqrt(ab) * x0
    assert residual.mean().abs() < 0.01
    assert residual.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.02)
    noise = torch.randn_like(x0)
    exact = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
    assert torch.allclose(sched.add_noise(x0, noise, 7), exact, atol=1e-6)


def test_posterior_coefficients_closed_form():
    sched = NoiseSchedule(6, 1e-4, 1e-2, 0.3)
    x0, xt = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for t in range(1, 7):
        ab, ab_prev, beta = sched.alpha_bar[t], sched.alpha_bar[t - 1], sched.betas[t]
        alpha = 1 - beta
        mean = (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * xt + (ab_prev.sqrt() * beta / (1 - ab)) * x0
        assert torch.allclose(sched.step(x0, t, xt), mean)
        assert sched.posterior_variance[t] == pytest.approx((beta * (1 - ab_prev) / (1 - ab)).item())
    # at t = 1 the posterior mean is the predicted x0 itself (paper formula: beta_1 = 1 - alpha_bar_1)
    assert torch.allclose(sched.step(x0, 1, xt), x0)
    # the posterior mean is exact when x0 is right: E[x_{t-1} | x_t, x_0] composes back to q(x_{t-1} | x_0) means
    assert torch.allclose(sched.step(x0, 3, math.sqrt(sched.alpha_bar[3]) * x0),
                          math.sqrt(sched.alpha_bar[2]) * x0)


def test_steps_beyond_T_reuse_step_T():
    sched = NoiseSchedule(4, 1e-4, 1e-3, 1e-2)
    x0, xt = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(sched.step(x0, 9, xt), sched.step(x0, 4, xt))


def test_first_beta_option_recomputes_alpha_bar():
    paper = NoiseSchedule(20, 1e-4, 1e-3, 1e-4)
    ref = NoiseSchedule(20, 1e-4, 1e-3, 1e-4, first_beta=1e-5)
    assert paper.describe()["first_beta_overwritten"] is False and ref.describe()["first_beta_overwritten"]
    assert ref.betas[1].item() == 1e-5
    assert torch.allclose(ref.alpha_bar[1:], torch.cumprod(1 - ref.betas[1:], 0))
    # DESIGN §1: the overwrite makes the injected std at T about 0.003-0.0045; the paper formula ~3e-4
    assert 0.003 <= ref.describe()["noise_std_tT"] <= 0.0045
    assert paper.describe()["noise_std_tT"] == pytest.approx(math.sqrt(1e-4 * 1e-3), rel=1e-6)


def test_single_step_schedule():
    sched = NoiseSchedule(1, 1e-3, 1e-2, 0.5)
    assert 1 - sched.alpha_bar[1].item() == pytest.approx(0.5 * 1e-3)


def test_reverse_timesteps_count_down_from_round_n_t_and_reuse_step_t_beyond_it():
    sched = NoiseSchedule(10, 1e-4, 1e-3, 1e-2)
    assert sched.reverse_timesteps() == list(range(10, 0, -1))
    assert sched.reverse_timesteps(1.25) == list(range(13, 0, -1))  # round(12.5) rounds the half up
    assert sched.reverse_timesteps(1.5, count=4) == [4, 3, 2, 1] and sched.reverse_timesteps(count=0) == []
    x0, xt = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(sched.step(x0, sched.reverse_timesteps(1.25)[0], xt), sched.step(x0, 10, xt))
