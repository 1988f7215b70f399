"""Noise schedule and samplers, checked against Gaussian data whose exact denoiser is known."""

import math

import pytest
import torch

from radiorecon.diffusion import SAMPLERS, linear_beta_schedule, sample_ddim, sampling_schedule

ABAR = linear_beta_schedule(1000)
MEAN, STD = 0.5, 0.2


def exact_eps(x, t):
    """The optimal noise prediction for data ~ N(MEAN, STD**2), at fractional t."""
    log_ab = torch.log(ABAR)
    i0 = t.floor().long().clamp(0, len(ABAR) - 2)
    w = (t - i0).double()
    a = torch.exp(log_ab[i0] * (1 - w) + log_ab[i0 + 1] * w).float()[:, None]
    return (1 - a).sqrt() * (x - a.sqrt() * MEAN) / (a * STD**2 + 1 - a)


def draw(name, steps, n=20000, seed=0, **kwargs):
    sampler, spacing = SAMPLERS[name]
    torch.manual_seed(seed)
    x = torch.randn(n, 1)
    return sampler(exact_eps, x, sampling_schedule(ABAR, steps, spacing), **kwargs)


def test_linear_schedule():
    assert ABAR.dtype == torch.float64 and len(ABAR) == 1000
    assert float(ABAR[0]) == pytest.approx(1 - 1e-4)
    assert torch.all(ABAR[1:] < ABAR[:-1])
    assert float(ABAR[-1]) == pytest.approx(4.04e-5, rel=0.01)  # Ho et al.: almost pure noise
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        linear_beta_schedule(10, 0.5, 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        linear_beta_schedule(1)


@pytest.mark.parametrize("spacing", ["time", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 10, 250])
def test_sampling_schedule(spacing, steps):
    ts, abar = sampling_schedule(ABAR, steps, spacing)
    assert len(ts) == len(abar) == steps
    assert ts[0] == pytest.approx(999)
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert all(a < b for a, b in zip(abar, abar[1:]))
    if steps > 1:
        assert ts[-1] == pytest.approx(0, abs=1e-9)
        assert abar[-1] == pytest.approx(float(ABAR[0]))
    assert abar[0] == pytest.approx(float(ABAR[-1]))


def test_schedule_errors():
    with pytest.raises(ValueError, match="steps must be an integer from 1 to 1000"):
        sampling_schedule(ABAR, 0)
    with pytest.raises(ValueError, match="Unknown spacing"):
        sampling_schedule(ABAR, 5, "karras")


def test_logsnr_spacing_is_even_in_lambda():
    _, abar = sampling_schedule(ABAR, 20, "logsnr")
    lam = [0.5 * math.log(a / (1 - a)) for a in abar]
    steps = [b - a for a, b in zip(lam, lam[1:])]
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)


@pytest.mark.parametrize("name, steps, tol", [("ddim", 1000, 0.01), ("ddpm", 1000, 0.03), ("dpm++2m", 20, 0.03)])
def test_samplers_draw_the_data_distribution(name, steps, tol):
    x = draw(name, steps)
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)
    assert float(x.std()) == pytest.approx(STD, rel=tol)


def test_second_order_solver_converges_faster_than_ddim():
    # At 10 evaluations DDIM has lost half the spread; DPM-Solver++(2M) keeps it.
    err_ddim = abs(float(draw("ddim", 10).std()) - STD)
    err_dpm = abs(float(draw("dpm++2m", 10).std()) - STD)
    assert err_dpm < 0.05 * STD < err_ddim
    # More steps bring DDIM closer.
    assert abs(float(draw("ddim", 100).std()) - STD) < err_ddim


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    a, b = draw("ddim", 10, n=100, seed=0), draw("ddim", 10, n=100, seed=0)
    torch.testing.assert_close(a, b)
    sched = sampling_schedule(ABAR, 10)
    x = torch.ones(100, 1)
    torch.manual_seed(1)
    det1 = sample_ddim(exact_eps, x.clone(), sched, eta=0.0)
    torch.manual_seed(2)
    det2 = sample_ddim(exact_eps, x.clone(), sched, eta=0.0)
    torch.testing.assert_close(det1, det2)
    torch.manual_seed(1)
    sto1 = sample_ddim(exact_eps, x.clone(), sched, eta=1.0)
    torch.manual_seed(2)
    sto2 = sample_ddim(exact_eps, x.clone(), sched, eta=1.0)
    assert not torch.allclose(sto1, sto2)
    with pytest.raises(ValueError, match="eta must be non-negative"):
        sample_ddim(exact_eps, x, sched, eta=-1.0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_clipping_bounds_the_draws_and_callback_sees_every_step(name):
    seen = []
    x = draw(name, 8, n=2000, clip=(0.45, 0.55), callback=lambda i, x0: seen.append(i))
    assert seen == list(range(8))
    assert float(x.min()) >= 0.45 - 1e-4 and float(x.max()) <= 0.55 + 1e-4


def exact_x0(x, t):
    """The optimal data prediction for data ~ N(MEAN, STD**2): the same denoiser as `exact_eps`."""
    log_ab = torch.log(ABAR)
    i0 = t.floor().long().clamp(0, len(ABAR) - 2)
    w = (t - i0).double()
    a = torch.exp(log_ab[i0] * (1 - w) + log_ab[i0 + 1] * w).float()[:, None]
    return (x - (1 - a).sqrt() * exact_eps(x, t)) / a.sqrt()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_data_predicting_model_samples_the_same(name):
    # The same exact denoiser, predicting the data instead of the noise:
    # the same draws, up to the interpolation of abar between steps.
    sampler, spacing = SAMPLERS[name]
    schedule = sampling_schedule(ABAR, 20, spacing)
    torch.manual_seed(0)
    x = torch.randn(20000, 1)
    torch.manual_seed(1)
    by_eps = sampler(exact_eps, x, schedule)
    torch.manual_seed(1)
    by_x0 = sampler(exact_x0, x, schedule, prediction="x0")
    assert float((by_eps - by_x0).abs().max()) < 0.02
    assert float(by_x0.mean()) == pytest.approx(MEAN, abs=0.01)
    with pytest.raises(ValueError, match="Unknown prediction 'v'"):
        sampler(exact_x0, x[:4], schedule, prediction="v")
