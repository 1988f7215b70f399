"""The clean beam: an elliptical Gaussian fitted to the main lobe of a PSF."""

import numpy as np
import astropy.units as u
from astropy.modeling import fitting, models
from radio_beam import Beam
from scipy import ndimage

from ._validate import FWHM_PER_SIGMA

__all__ = ["fit_clean_beam", "beam_kernel", "pixel_beam_kernel"]


def fit_clean_beam(psf, pixel_scale, *, level=0.35):
    """Fit an elliptical Gaussian of peak 1 to the main lobe of a PSF.

    The fit uses the pixels of the connected region around the peak that lie
    above ``level`` times the peak, where the main lobe is Gaussian-like and
    the sidelobes do not reach.

    Parameters
    ----------
    psf : `~numpy.ndarray`
        2-D point-spread function; its maximum is the main lobe's peak.
    pixel_scale : `~astropy.units.Quantity`
        Angular size of a pixel (e.g. ``0.1 * u.arcsec``).
    level : float
        Fraction of the peak above which pixels belong to the fit.

    Returns
    -------
    `radio_beam.Beam`
        Major and minor FWHM and position angle (east of north, for an image
        whose x axis points west as in FITS images with negative ``CDELT1``).
    """
    psf = np.asarray(psf, dtype=float)
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    psf = psf / psf[py, px]
    labels, _ = ndimage.label(psf >= level)
    lobe = labels == labels[py, px]
    yy, xx = np.nonzero(lobe)
    if len(yy) < 4:
        raise ValueError("The PSF's main lobe spans fewer than 4 pixels: it cannot be fitted")
    # A moment estimate starts the fit close to the answer.
    w = psf[yy, xx]
    cov = np.cov(np.vstack([xx - px, yy - py]), aweights=w)
    sigma0 = np.sqrt(max(np.trace(cov) / 2, 0.25))
    model = models.Gaussian2D(1.0, px, py, sigma0, sigma0, 0.0, fixed={"amplitude": True, "x_mean": True, "y_mean": True})
    fit = fitting.TRFLSQFitter()(model, xx, yy, psf[yy, xx])
    sx, sy, theta = abs(fit.x_stddev.value), abs(fit.y_stddev.value), fit.theta.value
    if sy > sx:
        sx, sy, theta = sy, sx, theta + np.pi / 2
    scale = pixel_scale.to(u.deg)
    # theta is counter-clockwise from +x; north is +y and east is -x.
    pa = np.degrees(theta) % 180.0 - 90.0
    return Beam(major=sx * FWHM_PER_SIGMA * scale, minor=sy * FWHM_PER_SIGMA * scale, pa=pa * u.deg)


def beam_kernel(beam, pixel_scale, shape=None):
    """The beam as an image of ``shape`` with peak 1 at ``(ny // 2, nx // 2)``.

    Convolving a sky model in Jy/pixel with it gives an image in Jy/beam.
    By default the image is square, ``2 * ceil(4 * FWHM) + 1`` pixels on a
    side for the major-axis FWHM in pixels, which holds the beam down to
    1e-19 of its peak.
    """
    if shape is None:
        side = 2 * int(np.ceil(4 * (beam.major / pixel_scale).decompose().value)) + 1
        shape = (side, side)
    ny, nx = shape
    scale = pixel_scale.to_value(u.deg)
    sx = beam.major.to_value(u.deg) / FWHM_PER_SIGMA / scale
    sy = beam.minor.to_value(u.deg) / FWHM_PER_SIGMA / scale
    theta = np.radians(beam.pa.to_value(u.deg) + 90.0)
    gauss = models.Gaussian2D(1.0, nx // 2, ny // 2, sx, sy, theta)
    yy, xx = np.mgrid[:ny, :nx]
    return gauss(xx, yy)


def pixel_beam_kernel(major, minor, pa, limit=None):
    """A peak-1 elliptical Gaussian of FWHM ``major`` x ``minor`` pixels, odd-sized, out to 5 sigma.

    Odd, so that convolving with ``mode="same"`` keeps sources in place; 5
    sigma of the major axis, where the Gaussian is below 4e-6 of its peak.

    Parameters
    ----------
    major, minor : float
        FWHMs in pixels.
    pa : float
        Position angle in degrees, as `fit_clean_beam` gives it.
    limit : int, optional
        Largest half-width in pixels (e.g. the image's size).
    """
    import math

    half = int(math.ceil(5 * major / FWHM_PER_SIGMA))
    if limit is not None:
        half = min(half, int(limit))
    beam = Beam(major=major * u.deg, minor=minor * u.deg, pa=pa * u.deg)
    return beam_kernel(beam, 1 * u.deg, (2 * half + 1, 2 * half + 1))
