"""The radio instrument as a linear operator, with the whitening of its correlated noise.

An interferometer's dirty image of an apparent sky ``x`` (Jy/pixel) is

.. math:: y = A x + n, \\qquad A x = \\mathrm{PSF} * (\\mathrm{pb} \\cdot x),

the sky times the primary beam ``pb``, convolved with the point-spread
function (peak 1, so that ``y`` is in Jy/beam). `Instrument` applies ``A``
and its adjoint by FFT on a zero-padded grid of ``(ny + py, nx + px)``
pixels for a ``(py, px)`` PSF, so the convolution is the linear one cropped
to the image ("same" size): nothing wraps around.

The noise ``n`` is correlated. Its power spectrum ``P(k)`` is

- ``noise="dirty"``: proportional to the PSF's transfer function ``T(k)``
  (the PSF's Fourier transform, the gridded imaging weights): the noise of
  a dirty image is the visibility noise imaged with the same weights as
  the sky, so its spectrum follows the weights (exactly so for natural
  weighting);
- ``noise="restored"``: proportional to ``T(k)^2``: white noise convolved
  with the (restoring) beam;
- ``noise="white"``: flat.

`Instrument.whiten` divides a residual's spectrum by ``sqrt(P(k))``,
normalised so that noise of per-pixel standard deviation ``sigma`` becomes
unit white noise, and drops the frequencies where ``P(k) < floor * max P``
(which the instrument does not measure). The whitening works on the
image's own (periodic) FFT grid, an approximation at the image's edges.
``0.5 * |whiten(y - A x)|^2`` is then the negative Gaussian
log-likelihood up to a constant (`Instrument.chi2`).

With ``psf=None`` the operator is the identity (an image already at the
model's resolution: optical images, or models of restored images) and the
noise white.

All methods take ``(..., ny, nx)`` torch tensors and are differentiable.
"""

import torch

__all__ = ["Instrument", "NOISE_MODELS"]

#: Noise power spectra: in proportion to the PSF's transfer function, its square, or flat.
NOISE_MODELS = ("dirty", "restored", "white")


def _centred_kernel(psf, shape):
    """The PSF on a grid of ``shape`` with its peak pixel (``p // 2``) at index (0, 0).

    A PSF larger than the grid is cut around its peak.
    """
    py, px = psf.shape[-2:]
    cy, cx = py // 2, px // 2
    ny, nx = shape
    # Keep the lags that fit: -ny//2 .. ny - ny//2 - 1 around the peak.
    lo_y, lo_x = max(0, cy - ny // 2), max(0, cx - nx // 2)
    hi_y, hi_x = min(py, lo_y + ny), min(px, lo_x + nx)
    kernel = psf.new_zeros(*psf.shape[:-2], ny, nx)
    kernel[..., : hi_y - lo_y, : hi_x - lo_x] = psf[..., lo_y:hi_y, lo_x:hi_x]
    return torch.roll(kernel, shifts=(lo_y - cy, lo_x - cx), dims=(-2, -1))


class Instrument:
    """``A x = psf * (pb x)``, its adjoint, and the whitening of its noise.

    Parameters
    ----------
    psf : torch.Tensor or None
        ``(py, px)`` or ``(B, py, px)`` point-spread function(s), peak 1 at
        pixel ``(py // 2, px // 2)``, of any size (twice the image's, as
        `radiorecon.Backend.psf_factor` 2 gives, reaches the sidelobes of a
        source anywhere in the image). None: the identity operator.
    shape : tuple of int
        ``(ny, nx)`` of the images.
    primary_beam : torch.Tensor or None
        ``(ny, nx)`` or ``(B, ny, nx)`` primary-beam gain; None for 1 (a
        model of the apparent sky).
    noise : {"dirty", "restored", "white"}
        The noise power spectrum (see the module docs); ``"white"`` without
        a PSF.
    floor : float
        Frequencies where the noise power is below ``floor`` times its
        maximum are left out of the likelihood.
    """

    def __init__(self, psf, shape, *, primary_beam=None, noise="dirty", floor=1e-3):
        if noise not in NOISE_MODELS:
            raise ValueError(f"noise must be one of {NOISE_MODELS}, not {noise!r}")
        if psf is None and noise != "white":
            raise ValueError(f"noise={noise!r} follows the PSF: give a PSF, or use noise='white'")
        if not 0 <= floor < 1:
            raise ValueError(f"floor must be in [0, 1), not {floor!r}")
        self.shape = tuple(int(n) for n in shape)
        self.primary_beam = primary_beam
        self.noise = noise
        self.psf = psf
        if psf is None:
            return
        ny, nx = self.shape
        py, px = psf.shape[-2:]
        # ny + py >= the linear convolution's support: the circular one on
        # this grid equals it on the image (see the module docs).
        self.fft_shape = (ny + py, nx + px)
        self.transfer = torch.fft.rfft2(_centred_kernel(psf, self.fft_shape))
        # The noise spectrum on the image's own grid; a real, symmetric PSF
        # has a real transfer function (negative values are sidelobe truncation).
        t = torch.fft.rfft2(_centred_kernel(psf, self.shape)).real.clamp_min(0)
        power = {"dirty": t, "restored": t**2, "white": torch.ones_like(t)}[noise]
        #: Noise power spectrum on the image's rfft2 half plane, mean 1 over the full plane:
        #: ``sigma * irfft2(rfft2(w) * sqrt(noise_power))`` of white ``w`` draws the noise.
        self.noise_power = power / _full_plane_mean(power, nx)
        power = self.noise_power
        keep = power > floor * power.amax(dim=(-2, -1), keepdim=True)
        self.inverse_amplitude = torch.where(keep, power.clamp_min(1e-30).rsqrt(), torch.zeros_like(power))

    def _beam(self, x):
        return x if self.primary_beam is None else x * self.primary_beam

    def forward(self, x):
        """``A x``: the sky times the primary beam, convolved with the PSF (Jy/pixel to Jy/beam)."""
        x = self._beam(x)
        if self.psf is None:
            return x
        ny, nx = self.shape
        spectrum = torch.fft.rfft2(x, s=self.fft_shape) * self.transfer
        return torch.fft.irfft2(spectrum, s=self.fft_shape)[..., :ny, :nx]

    __call__ = forward

    def adjoint(self, y):
        """``A^T y``: correlation with the PSF, times the primary beam."""
        if self.psf is not None:
            ny, nx = self.shape
            spectrum = torch.fft.rfft2(y, s=self.fft_shape) * self.transfer.conj()
            y = torch.fft.irfft2(spectrum, s=self.fft_shape)[..., :ny, :nx]
        return self._beam(y)

    def whiten(self, residual, sigma):
        """A residual in units of its noise, decorrelated.

        Parameters
        ----------
        residual : torch.Tensor
            ``(..., ny, nx)``, e.g. ``y - A x``.
        sigma : float or torch.Tensor
            Per-pixel standard deviation of the noise (broadcast against
            ``residual[..., 0, 0]``), in the residual's unit.

        Returns
        -------
        torch.Tensor
            Same shape: unit white noise where the residual is noise alone.
        """
        sigma = torch.as_tensor(sigma, dtype=residual.dtype, device=residual.device)[..., None, None]
        if self.psf is None or self.noise == "white":
            return residual / sigma
        spectrum = torch.fft.rfft2(residual) * self.inverse_amplitude
        return torch.fft.irfft2(spectrum, s=self.shape) / sigma

    def chi2(self, y, x, sigma):
        """``|whiten(y - A x)|^2`` summed over the pixels: minus twice the log-likelihood plus a constant."""
        return self.whiten(y - self.forward(x), sigma).pow(2).sum(dim=(-2, -1))


def _full_plane_mean(half, nx):
    """Mean over the full FFT plane of a real-signal spectrum stored as its rfft half plane."""
    # Columns 1 .. (nx - 1) // 2 stand for themselves and their mirror image.
    weights = torch.full((half.shape[-1],), 2.0, dtype=half.dtype, device=half.device)
    weights[0] = 1.0
    if nx % 2 == 0:
        weights[-1] = 1.0
    return (half * weights).sum(dim=(-2, -1), keepdim=True) / (half.shape[-2] * nx)
