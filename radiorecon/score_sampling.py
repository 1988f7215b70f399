"""Continuous-noise score models: EDM preconditioning, samplers and posterior sampling.

The maths of the ``score`` backend, kept apart from its networks (in the
spirit of k-diffusion). Data ``x0`` are noised as ``x = x0 + sigma * eps``
with ``sigma(t) = t`` (Karras et al. 2022, "EDM"); a denoiser ``D(x, sigma)``
estimates ``E[x0 | x]``, from which the score is ``(D(x, sigma) - x) /
sigma**2``. Every function here calls it as ``denoiser(x, sigma)`` with
``sigma`` a Python float.

- `edm_preconditioning`, `edm_loss_weight`, `lognormal_sigmas`: how the
  network is wrapped and trained (Karras et al. 2022, Table 1).
- `edm_sigmas`: the noise levels a sampler visits,
  ``(sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
  then 0, with ``rho = 7``.
- `sample_edm`: the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) /
  sigma`` solved by Euler or Heun's method, optionally with stochastic
  "churn" (Karras et al. 2022, Algorithm 2); `SAMPLERS` names the variants.
- `sample_posterior`: draws of ``p(x0 | d)`` for a dirty image ``d = P * x0
  + n`` (see its docstring for the scheme and why it was chosen).
"""

import math

import torch

__all__ = [
    "edm_preconditioning",
    "edm_loss_weight",
    "lognormal_sigmas",
    "edm_sigmas",
    "sample_edm",
    "sample_posterior",
    "transfer_function",
    "gaussian_posterior_mean",
    "SAMPLERS",
]


def edm_preconditioning(sigma, sigma_data):
    """The EDM scalings ``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma``.

    The denoiser is ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``
    with ``F`` the network: its input and training target then have unit
    variance at every noise level for data of standard deviation
    ``sigma_data``.

    Parameters
    ----------
    sigma : torch.Tensor or float
        Noise standard deviation, in data units.
    sigma_data : float
        Standard deviation of the data, in data units.

    Returns
    -------
    tuple
        ``sigma_data**2 / (sigma**2 + sigma_data**2)``,
        ``sigma * sigma_data / sqrt(sigma**2 + sigma_data**2)``,
        ``1 / sqrt(sigma**2 + sigma_data**2)`` and ``ln(sigma) / 4``.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def edm_loss_weight(sigma, sigma_data):
    """``lambda(sigma) = (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2``.

    The weight that makes ``lambda(sigma) c_out(sigma)**2 = 1``: every noise
    level contributes to the loss as the network's unit-variance target does.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def lognormal_sigmas(n, p_mean=-1.2, p_std=1.2, *, generator=None, device="cpu"):
    """Training noise levels, ``ln(sigma) ~ N(p_mean, p_std**2)`` (Karras et al. 2022)."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator, device=device))


def edm_sigmas(steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The ``steps`` decreasing noise levels of the EDM schedule, followed by 0.

    Parameters
    ----------
    steps : int
        ``N``, at least 1 (then only ``sigma_max``).
    sigma_min, sigma_max : float
        Smallest and largest noise level, data units (EDM: 0.002 and 80).
    rho : float
        Concentrates the levels near ``sigma_min`` as it grows (EDM: 7).

    Returns
    -------
    torch.Tensor
        ``(steps + 1,)`` float64.
    """
    if isinstance(steps, bool) or not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer of at least 1, not {steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + i * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def sample_edm(denoiser, x, sigmas, *, heun=True, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0,
               noise=None, callback=None):
    """Solve the probability-flow ODE from noise ``x`` at ``sigmas[0]`` down to ``sigmas[-1] = 0``.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> E[x0 | x]`` for a float ``sigma``.
    x : torch.Tensor
        Starting point: standard-normal noise times ``sigmas[0]``.
    sigmas : sequence of float
        From `edm_sigmas`.
    heun : bool
        Heun's second-order correction on every step but the last (which
        goes to sigma 0, where the ODE's slope is undefined): ``2 N - 1``
        denoiser calls for ``N`` levels; Euler (False) makes ``N``.
    s_churn, s_tmin, s_tmax, s_noise : float
        Stochastic churn: on levels in ``[s_tmin, s_tmax]`` noise is first
        raised by the factor ``1 + gamma``, ``gamma = min(s_churn / N,
        sqrt(2) - 1)``, by adding fresh noise times ``s_noise``. 0 (the
        default) is the deterministic ODE.
    noise : callable or None
        ``noise()`` returns standard-normal numbers the shape of ``x``
        (default ``torch.randn_like``), for the churn.
    callback : callable or None
        Called after each step as ``callback(i, denoised)``.

    Returns
    -------
    torch.Tensor
        The samples, the shape of ``x``.
    """
    sigmas = [float(s) for s in sigmas]
    n = len(sigmas) - 1
    gamma_max = min(s_churn / n, math.sqrt(2) - 1) if n else 0.0
    for i, (s, s_next) in enumerate(zip(sigmas, sigmas[1:])):
        gamma = gamma_max if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            eps = torch.randn_like(x) if noise is None else noise()
            x = x + math.sqrt(s_hat**2 - s**2) * s_noise * eps
        denoised = denoiser(x, s_hat)
        slope = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * slope
        if heun and s_next > 0:
            slope_next = (x_next - denoiser(x_next, s_next)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (slope + slope_next)
        x = x_next
        if callback is not None:
            callback(i, denoised)
    return x


def transfer_function(psf, shape):
    """The PSF's transfer function (the sampling function) on an FFT grid of ``shape``.

    Parameters
    ----------
    psf : torch.Tensor
        ``(..., ny, nx)`` PSFs with their peak at ``(ny // 2, nx // 2)``,
        the grid of ``shape``.
    shape : tuple of int
        ``(ny, nx)``.

    Returns
    -------
    torch.Tensor
        ``(..., ny, nx)`` real and non-negative: a dirty beam is the Fourier
        transform of the (non-negative) visibility weights, so its transfer
        function is real and non-negative; the real part, clipped at 0,
        removes what pixelisation and truncation add.
    """
    if tuple(psf.shape[-2:]) != tuple(shape):
        raise ValueError(f"the PSF is {tuple(psf.shape[-2:])}, the image {tuple(shape)}")
    centred = torch.roll(psf, shifts=(-(shape[0] // 2), -(shape[1] // 2)), dims=(-2, -1))
    return torch.fft.fft2(centred.double()).real.clamp(min=0)


def gaussian_posterior_mean(mean, var, dirty, transfer, noise_var):
    """The mean of ``N(x; mean, var I) p(dirty | x)``, exact in Fourier space.

    The dirty image is ``d = P * x + n`` with ``n`` of covariance
    ``noise_var`` times the (circulant) PSF, so in Fourier space each mode
    is an independent observation ``D_k = T_k X_k + N_k``, ``E|N_k|^2 =
    noise_var T_k`` (unnormalised FFT, per pixel): the likelihood has
    precision ``T_k / noise_var`` on ``X_k`` and the product with the
    Gaussian is Gaussian mode by mode, with precision ``1 / var + T_k /
    noise_var`` and mean ``(M_k / var + D_k / noise_var)`` over it. Modes the
    array did not sample (``T_k = 0``) keep the Gaussian's mean.

    Parameters
    ----------
    mean : torch.Tensor
        ``(B, ny, nx)`` mean of the Gaussian (the denoiser's estimate).
    var : float or torch.Tensor
        Its variance per pixel (broadcast against ``(B, 1, 1)``).
    dirty : torch.Tensor
        ``(B, ny, nx)`` dirty images.
    transfer : torch.Tensor
        ``(B, ny, nx)`` from `transfer_function`.
    noise_var : torch.Tensor
        ``(B, 1, 1)`` noise variance of a dirty-image pixel.

    Returns
    -------
    torch.Tensor
        ``(B, ny, nx)``, the dtype of ``mean``.
    """
    precision = 1.0 / var + transfer / noise_var
    # Power of the dirty image where nothing was sampled (edges of a cut-out,
    # which is not periodic) is not data: drop it.
    sampled = transfer > 1e-6 * transfer.amax(dim=(-2, -1), keepdim=True)
    data = torch.where(sampled, torch.fft.fft2(dirty.double()), 0)
    spectrum = (torch.fft.fft2(mean.double()) / var + data / noise_var) / precision
    return torch.fft.ifft2(spectrum).real.to(mean.dtype)


def sample_posterior(denoiser, dirty, psf, noise_std, sigmas, *, noise, heun=True, callback=None):
    """Draws of the sky given its dirty image, under the denoiser's prior.

    The probability-flow ODE of the posterior: `sample_edm` with the
    denoiser ``D(x, sigma)`` replaced by the posterior mean
    ``E[x0 | x, dirty]`` under the Gaussian approximation ``p(x0 | x) =
    N(D(x, sigma), sigma^2 I)`` (Tweedie's first moment with an isotropic
    second one, as in Boys et al. 2023, "Tweedie moment projected diffusions
    for inverse problems"). The dirty-image likelihood is Gaussian in the
    sky with a noise covariance shaped like the PSF, so in Fourier space
    that product is diagonal and its mean is exact and costs three FFTs
    (`gaussian_posterior_mean`): no step size to tune and no
    back-propagation through the network. The ODE starts from ``x =
    sigma_0 eps``; each draw's randomness is its starting noise.

    Why these choices. The variance ``sigma^2`` is that of ``x0`` given
    ``x`` where the sky is bright next to the noise (the denoiser's
    Jacobian is the identity there), which is where the data have something
    to say about sparse skies; the exact variance of a Gaussian prior,
    ``sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)``, caps it at the
    prior's variance and so keeps sources many times brighter than
    ``sigma_data`` from being pulled up by the data (an rms-normalised ALMA
    prior recovered nothing with it). For a Gaussian prior the ODE still
    carries the noise to the closed-form posterior (the tests check its mean
    and covariance). Decoupled annealing (DAPS, Zhang et al. 2024), which
    draws ``x0`` from the Gaussian times the likelihood and re-noises it,
    puts each draw's data noise into the next level's input, where the
    denoiser takes it for sky. Diffusion posterior sampling (Chung et al.
    2023) needs a heuristic step size and back-propagation through the
    network. Measurements are in ``docs/score.rst``.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> E[x0 | x]``.
    dirty : torch.Tensor
        ``(B, ny, nx)`` dirty images, in the data's units.
    psf : torch.Tensor
        ``(B, ny, nx)`` PSFs, peak 1 at ``(ny // 2, nx // 2)``.
    noise_std : torch.Tensor
        ``(B,)`` noise standard deviation of a dirty-image pixel.
    sigmas : sequence of float
        From `edm_sigmas` (decreasing, ending with 0).
    noise : callable
        ``noise()`` returns standard-normal numbers the shape of ``dirty``.
    heun : bool
        Heun's correction (``2 N - 1`` denoiser calls for ``N`` levels) or
        Euler (``N``).
    callback : callable or None
        Called after each step as ``callback(i, posterior_mean)``.

    Returns
    -------
    torch.Tensor
        ``(B, ny, nx)`` draws.
    """
    transfer = transfer_function(psf, dirty.shape[-2:])
    noise_var = (noise_std.double() ** 2)[:, None, None]

    def posterior_mean(x, sigma):
        return gaussian_posterior_mean(denoiser(x, sigma), sigma**2, dirty, transfer, noise_var)

    sigmas = [float(s) for s in sigmas]
    return sample_edm(posterior_mean, sigmas[0] * noise(), sigmas, heun=heun, callback=callback)


#: Samplers by name, as the ``sampler`` configuration of the ``score``
#: backend: whether each takes Heun's correction and whether it churns
#: (with the backend's ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``).
SAMPLERS = {
    "heun": {"heun": True, "churn": False},
    "euler": {"heun": False, "churn": False},
    "stochastic": {"heun": True, "churn": True},
}
