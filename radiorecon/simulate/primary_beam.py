"""The antennas' primary beam, as the Gaussian approximation ALMA uses.

A dish of diameter D at wavelength λ has a main lobe of FWHM ≈ 1.13 λ/D for
ALMA's 12 m antennas with their illumination taper (ALMA Technical Handbook);
about 25.3" at 230 GHz. The Gaussian describes the main lobe, where the
simulated sources lie (gain above 0.56 within the default 11.43" placement
radius); the sidelobes beyond the first null are not modelled. The beam is
evaluated at the centre frequency for all channels.
"""

import astropy.units as u
import numpy as np
from astropy.constants import c

__all__ = ["primary_beam_fwhm", "primary_beam_gain", "primary_beam_image"]

_FOUR_LN2 = 4 * np.log(2)


def primary_beam_fwhm(frequency, diameter=12 * u.m, factor=1.13):
    """FWHM ``factor * λ / D`` of the Gaussian primary beam.

    Parameters
    ----------
    frequency : `~astropy.units.Quantity`
        Observing frequency.
    diameter : `~astropy.units.Quantity`
        Dish diameter.
    factor : float
        FWHM in units of λ/D (1.13 for ALMA's 12 m dishes).

    Returns
    -------
    fwhm : `~astropy.units.Quantity`
        In arcsec.
    """
    return (factor * c / (frequency * diameter) * u.rad).to(u.arcsec)


def primary_beam_gain(offset, fwhm):
    """Gain ``exp(-4 ln 2 r² / FWHM²)`` at angular distance ``offset`` from the pointing.

    Parameters
    ----------
    offset, fwhm : `~astropy.units.Quantity`
        Angles; ``fwhm=None`` means no primary beam (gain 1).

    Returns
    -------
    gain : `~numpy.ndarray` or float
        Between 0 and 1.
    """
    if fwhm is None:
        return np.ones(np.shape(offset))
    return np.exp(-_FOUR_LN2 * (offset / fwhm).to_value(u.one) ** 2)


def primary_beam_image(npix, pixel_scale, fwhm):
    """Gain of the primary beam on an ``npix x npix`` image pointed at pixel ``npix // 2``.

    Parameters
    ----------
    npix : int
        Image size.
    pixel_scale : `~astropy.units.Quantity`
        Pixel size.
    fwhm : `~astropy.units.Quantity` or None
        FWHM of the primary beam; None gives a gain of 1 everywhere.

    Returns
    -------
    gain : `~numpy.ndarray`
        ``(npix, npix)`` float32.
    """
    # Separable: the 2-D Gaussian is the outer product of two 1-D ones.
    r = (np.arange(npix) - npix // 2) * pixel_scale
    g = primary_beam_gain(r, fwhm).astype(np.float32)
    return np.outer(g, g)
