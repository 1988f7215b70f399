"""Matched filter: the dirty image smoothed with the clean beam, the classical point-source detector."""

import math
import numbers

import numpy as np
from scipy.signal import fftconvolve

from .._noise import robust_std
from ..backend import Backend, Prediction
from .clean import fit_clean_beam_pixels

__all__ = ["MatchedFilterBackend", "matched_filter"]


def matched_filter(dirty, psf, major, minor, pa):
    """The dirty image convolved with an elliptical Gaussian, a point source's peak kept.

    A point source of flux S in the dirty image is ``S * psf`` centred on it;
    after filtering, its value at its own position is ``S`` times the sum of
    the kernel times the PSF. Dividing by that sum keeps the peak at ``S``:
    the result is in the dirty image's unit (Jy/beam for a Jy/beam image).
    Outside the image the dirty image is taken as zero, so within half a
    kernel of the edges the noise is lower and sources lose some flux.

    Parameters
    ----------
    dirty : `~numpy.ndarray`
        ``(ny, nx)`` dirty image, finite.
    psf : `~numpy.ndarray`
        ``(pny, pnx)`` PSF with its peak at ``(pny // 2, pnx // 2)``.
    major, minor : float
        FWHM of the kernel in pixels (``major >= minor > 0``).
    pa : float
        Position angle of the major axis in degrees, counter-clockwise from
        +y towards -x, as `radiorecon.backends.clean.fit_clean_beam_pixels`
        gives it.

    Returns
    -------
    `~numpy.ndarray`
        ``(ny, nx)`` float64 filtered image.
    """
    from ..beam import pixel_beam_kernel

    dirty = np.asarray(dirty, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    kernel = pixel_beam_kernel(major, minor, pa, limit=max(dirty.shape))
    half = kernel.shape[0] // 2
    # The PSF around its peak, zero where it ends before the kernel does.
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    lobe = np.zeros_like(kernel)
    y0, y1 = max(0, cy - half), min(psf.shape[0], cy + half + 1)
    x0, x1 = max(0, cx - half), min(psf.shape[1], cx + half + 1)
    lobe[y0 - cy + half : y1 - cy + half, x0 - cx + half : x1 - cx + half] = psf[y0:y1, x0:x1]
    response = float(np.sum(kernel * lobe))
    if not response > 0:
        raise ValueError("The PSF seen through the kernel sums to zero or less: no point source can be filtered")
    return fftconvolve(dirty, kernel, mode="same") / response


class MatchedFilterBackend(Backend):
    """The dirty image filtered with the clean beam, as a detection image.

    For a point source in white noise the filter that maximises the peak
    signal-to-noise ratio is the source's own shape, here the PSF's main
    lobe, i.e. the clean beam: an elliptical Gaussian fitted to the PSF's
    main lobe (`radiorecon.beam.fit_clean_beam`). Needs no training, only
    the PSF; the gain depends on how the noise is correlated (see
    :doc:`/backends`).

    The estimate is the filtered image in the dirty image's unit (Jy/beam
    for a Jy/beam image), normalised so that an isolated point source's
    peak is its flux. It is a detection image, not a sky model: threshold it
    against its own noise. The uncertainty is that noise, the robust
    standard deviation (1.4826 times the median absolute deviation) of the
    filtered image, in the same unit and the same for every pixel.

    Configuration:

    ``fwhm_factor``
        FWHM of the filter kernel in units of the clean beam's (1: the
        matched filter for white noise), > 0.

    ``meta`` carries the kernel in pixel units:

    ``MFMAJPX``, ``MFMINPX``
        Kernel major and minor FWHM, in pixels.
    ``MFPA``
        Its position angle in degrees, counter-clockwise from +y (north)
        towards -x (east when ``CDELT1`` < 0, as in radio images).
    """

    capabilities = {"reconstruct", "std", "needs_psf"}
    version = "1"
    tile_shape = None
    # The PSF comes at the image's size with its peak at (ny // 2, nx // 2);
    # only its main lobe and the pixels under the kernel are used.
    psf_factor = 1
    input_scale = None
    default_config = {"fwhm_factor": 1.0}

    def check_config(self):
        factor = self.config["fwhm_factor"]
        if not (isinstance(factor, numbers.Real) and not isinstance(factor, bool)
                and math.isfinite(factor) and factor > 0):
            raise ValueError(
                f"fwhm_factor must be a positive number (the filter's FWHM over the clean beam's), not {factor!r}"
            )

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        import torch

        factor = self.config["fwhm_factor"]
        filtered, noise, meta = [], [], []
        for dirty, beam in zip(inputs.detach().cpu().double().numpy(), psf.detach().cpu().double().numpy()):
            try:
                major, minor, pa = fit_clean_beam_pixels(beam)
            except ValueError as exc:
                raise ValueError(f"matched-filter cannot fit a clean beam to the PSF: {exc}") from None
            major, minor = factor * major, factor * minor
            image = matched_filter(dirty, beam, major, minor, pa)
            # Blank input pixels reach the backend as exact zeros; they are
            # not noise, so they stay out of the noise estimate.
            sigma = robust_std(image, mask=dirty == 0)
            filtered.append(image)
            noise.append(np.full(image.shape, sigma))
            meta.append({"MFMAJPX": major, "MFMINPX": minor, "MFPA": pa})

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        return Prediction(mean=stack(filtered), std=stack(noise), units={"estimate": "input"}, meta=meta)
