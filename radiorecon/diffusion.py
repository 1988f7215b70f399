"""Discrete-time diffusion: the noise schedule and the samplers.

A compact, dependency-free home for what the diffusion backends share (in
the spirit of k-diffusion). The forward process of Ho et al. (2020) noises
data ``x0`` at step ``t`` (0 to ``T - 1``) as

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,    eps ~ N(0, 1),

with ``abar_t`` the cumulative product of ``1 - beta``. A network is trained
to predict ``eps`` from ``(x_t, t)`` (or ``x0``, with ``prediction="x0"``:
each follows from the other and ``x_t``); every sampler here calls it as
``eps_model(x, t)`` with ``t`` a ``(B,)`` float tensor of times in units of
training steps, so a model trained with ``T`` steps can be sampled with any
subset of them ("respacing", Nichol & Dhariwal 2021) or between them.

Samplers (each runs ``steps`` network evaluations per sample, on the noise
levels of `sampling_schedule`, and ends at the clean data, ``abar = 1``):

- `sample_ddim` with ``eta`` between 0 (deterministic DDIM, Song et al.
  2021) and 1. With ``eta=1`` the step's noise is exactly the variance of
  the DDPM posterior ``q(x_s | x_t, x0)`` for the respaced pair ``(t, s)``,
  so DDIM with ``eta=1`` *is* ancestral DDPM sampling with respacing;
  `sample_ddpm` is that case.
- `sample_dpmpp_2m`: DPM-Solver++(2M) of Lu et al. (2022), a second-order
  multistep solver of the probability-flow ODE in ``log(alpha / sigma)``
  that predicts the data, one network evaluation per step.

Randomness comes from torch's global generator, which the front door seeds.
"""

import math

import numpy as np
import torch

__all__ = [
    "linear_beta_schedule",
    "sampling_schedule",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "SAMPLERS",
]


def linear_beta_schedule(timesteps, beta_start=1e-4, beta_end=0.02):
    """Cumulative signal fractions ``abar_t`` of a linear beta schedule.

    Parameters
    ----------
    timesteps : int
        ``T``, the number of training steps (1000 in Ho et al. 2020).
    beta_start, beta_end : float
        Noise variances added at the first and last step.

    Returns
    -------
    torch.Tensor
        ``(T,)`` float64, decreasing from ``1 - beta_start`` towards 0.
    """
    if not (isinstance(timesteps, int) and timesteps >= 2):
        raise ValueError(f"timesteps must be an integer of at least 2, not {timesteps!r}")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start} and {beta_end}")
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def sampling_schedule(alphas_cumprod, steps, spacing="time"):
    """The noise levels a sampler visits: ``steps`` of them, from the noisiest down.

    Parameters
    ----------
    alphas_cumprod : torch.Tensor
        ``(T,)`` from `linear_beta_schedule`.
    steps : int
        Number of network evaluations per sample, 1 to ``T``.
    spacing : {"time", "logsnr"}
        ``"time"``: training steps evenly spaced from ``T - 1`` to 0, the
        respacing of Nichol & Dhariwal (2021), for DDPM and DDIM.
        ``"logsnr"``: even steps in ``lambda = log(alpha / sigma)`` over the
        same range, as Lu et al. (2022) recommend for DPM-Solver; the steps
        then fall between training steps, and the network is evaluated at
        fractional ``t`` (its time embedding is continuous) with ``abar``
        interpolated.

    Returns
    -------
    ts : list of float
        Decreasing times in units of training steps.
    abar : list of float
        ``abar`` at each of them.
    """
    T = len(alphas_cumprod)
    if not (isinstance(steps, int) and 1 <= steps <= T):
        raise ValueError(f"steps must be an integer from 1 to {T}, not {steps!r}")
    if spacing == "time":
        ts = [float(T - 1)] if steps == 1 else [float(round((T - 1) * (1 - i / (steps - 1)))) for i in range(steps)]
        return ts, [float(alphas_cumprod[int(t)]) for t in ts]
    if spacing == "logsnr":
        ab = alphas_cumprod.double()
        lam = 0.5 * torch.log(ab / (1 - ab))  # decreasing in t
        lam_grid = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64) if steps > 1 else lam[-1:]
        # Invert the decreasing lambda(t) by interpolation on the reversed arrays.
        t_axis = torch.arange(T, dtype=torch.float64)
        ts = np.interp(lam_grid.numpy(), lam.flip(0).numpy(), t_axis.flip(0).numpy())
        abar = torch.sigmoid(2 * lam_grid)
        return [float(t) for t in ts], [float(a) for a in abar]
    raise ValueError(f"Unknown spacing {spacing!r}; choose 'time' or 'logsnr'")


def _denoise(eps_model, x, t, a_t, clip, prediction="eps"):
    """Predicted noise and data at one step."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
    if prediction == "x0":
        x0 = eps_model(x, tt)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    elif prediction == "eps":
        eps = eps_model(x, tt)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    else:
        raise ValueError(f"Unknown prediction {prediction!r}; choose 'eps' or 'x0'")
    if clip is not None:
        x0 = x0.clamp(*clip)
        # Keep eps consistent with the clipped data, as the step mixes both.
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    return eps, x0


def sample_ddim(eps_model, x, schedule, *, eta=0.0, clip=None, callback=None, noise=None, prediction="eps"):
    """DDIM sampling, from pure noise ``x`` to data.

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x, t) -> eps``, ``t`` a ``(B,)`` float tensor of times
        in units of training steps.
    x : torch.Tensor
        Standard-normal starting noise.
    schedule : tuple of list
        ``(ts, abar)`` from `sampling_schedule`.
    eta : float
        0 for the deterministic DDIM, 1 for ancestral DDPM.
    clip : tuple of float or None
        ``(low, high)`` range of the data; predicted data are clipped to it.
    callback : callable or None
        Called after each step as ``callback(i, x0)``.
    noise : callable or None
        ``noise()`` returns standard-normal numbers the shape of ``x`` for
        the ancestral steps (``eta > 0``); by default ``torch.randn_like``.
    prediction : {"eps", "x0"}
        What ``eps_model`` predicts: the noise, or the data itself (the
        noise then follows from ``x``).

    Returns
    -------
    torch.Tensor
        Samples, the shape of ``x``.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, not {eta}")
    ts, abs_t = schedule
    for i, (t, a_t, a_s) in enumerate(zip(ts, abs_t, abs_t[1:] + [1.0])):
        eps, x0 = _denoise(eps_model, x, t, a_t, clip, prediction)
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * (torch.randn_like(x) if noise is None else noise())
        if callback is not None:
            callback(i, x0)
    return x


def sample_ddpm(eps_model, x, schedule, *, clip=None, callback=None, eta=1.0, noise=None, prediction="eps"):
    """Ancestral DDPM sampling with respacing (`sample_ddim` with ``eta=1``; ``eta`` is ignored)."""
    return sample_ddim(eps_model, x, schedule, eta=1.0, clip=clip, callback=callback, noise=noise,
                       prediction=prediction)


def sample_dpmpp_2m(eps_model, x, schedule, *, clip=None, callback=None, eta=0.0, noise=None, prediction="eps"):
    """DPM-Solver++(2M): deterministic, second order, one evaluation per step.

    Same parameters as `sample_ddim` (``eta`` and ``noise`` are ignored). The first step is
    first order (there is no previous prediction); the last evaluation's
    predicted data is the result. Use it with ``spacing="logsnr"``: on the
    time grid, the steps in ``log(alpha / sigma)`` near the data are so
    uneven that the second-order extrapolation overshoots.
    """
    ts, abs_t = schedule
    x0_prev = h_prev = None
    for i, (t, a_t, a_s) in enumerate(zip(ts, abs_t, abs_t[1:] + [1.0])):
        _, x0 = _denoise(eps_model, x, t, a_t, clip, prediction)
        if callback is not None:
            callback(i, x0)
        if a_s >= 1.0:
            return x0
        lam_t = 0.5 * math.log(a_t / (1 - a_t))
        lam_s = 0.5 * math.log(a_s / (1 - a_s))
        h = lam_s - lam_t
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


#: Samplers by name, as the ``sampler`` configuration of diffusion backends,
#: with the step spacing each is meant for.
SAMPLERS = {
    "ddpm": (sample_ddpm, "time"),
    "ddim": (sample_ddim, "time"),
    "dpm++2m": (sample_dpmpp_2m, "logsnr"),
}
