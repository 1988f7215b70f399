"""Resampling a sky model onto another pixel grid, keeping its flux.

A sky model in Jy/pixel holds a flux per pixel. Resampling it as one
resamples an image, by interpolating its values (`reproject.reproject_interp`),
keeps the values but not the total flux, which then scales with the ratio of
the pixel areas: going from 0.1" to 0.2" pixels leaves about a quarter of it.
`reproject_model` resamples it as a flux instead, with the adaptive,
anti-aliased algorithm of `reproject.reproject_adaptive` and its
``conserve_flux`` option, which scales each output pixel by the area it
covers on the input grid (the local Jacobian of the mapping), so it also holds
for rotated grids and wide fields whose pixel areas vary.
"""

import warnings

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.nddata import NDData, StdDevUncertainty
from astropy.wcs import WCS

from .exceptions import RadioreconWarning
from .result import Reconstruction, std_array

__all__ = ["reproject_model"]

_JY_PIX = u.Jy / u.pix

# Output pixels more than half of whose input lies masked (or outside the
# input image) are masked.
_MASKED_FRACTION = 0.5


def reproject_model(model, target_wcs, shape_out, **kwargs):
    """Resample a sky model in a flux per pixel onto another grid, keeping its flux.

    Parameters
    ----------
    model : `~astropy.nddata.NDData`
        The sky model (a `~radiorecon.Reconstruction`), in Jy/pixel or any
        flux per pixel, with a celestial WCS. A model without a unit is
        taken to be in a flux per pixel, with a warning.
    target_wcs : `~astropy.wcs.WCS` or `~astropy.io.fits.Header`
        The celestial WCS of the new grid.
    shape_out : tuple of int
        ``(ny, nx)`` of the new grid.
    **kwargs
        Passed on to `reproject.reproject_adaptive`, e.g.
        ``kernel="gaussian"`` for stronger anti-aliasing at the cost of up
        to 1 % in the flux of point sources, or ``parallel=True``.

    Returns
    -------
    `~radiorecon.Reconstruction`
        On the new grid, in the model's unit (now per pixel of the new
        grid): ``data``, ``samples`` and ``components`` resampled as fluxes;
        ``uncertainty`` (see Notes); ``mask`` True, and ``data`` NaN, where
        more than half of an output pixel's input was masked, not finite or
        outside the model; ``wcs`` the target's; ``meta`` a copy of the
        model's. ``extras`` (maps in other units, such as a residual in
        Jy/beam) are not carried over: resample those as images, with
        `reproject.reproject_interp`.

    Raises
    ------
    astropy.units.UnitConversionError
        If the model's unit is not a flux per pixel (an image in Jy/beam or
        another surface brightness is resampled as an image instead).
    ValueError
        If the model is not 2-D or has no celestial WCS, or ``shape_out``
        is not two positive integers.

    Notes
    -----
    The resampling uses the Hann kernel by default: its weights add up to
    one whatever the shift between the grids, so the flux of a point source
    is kept to within 0.1 % (the Gaussian kernel, `reproject`'s default,
    loses up to 1 %).

    The per-pixel standard deviation is resampled as its
    variance, like a flux: the variance of a sum of independent pixels is
    the sum of their variances, so the quadrature sum of the errors over a
    region (the error of an aperture flux) is what it was on the input grid.
    This is exact when pixels are merged (to larger pixels) and the input
    errors are independent. When pixels are split (to smaller pixels) the
    parts of one input pixel are fully correlated, so each output pixel's
    error is larger, by the square root of the area ratio, than the error
    of its own flux: it stays right for quadrature sums, not for single
    pixels. For correlated errors, resample the samples and take their
    spread.
    """
    from reproject import reproject_adaptive

    if not isinstance(model, NDData):
        raise TypeError(f"model must be an NDData (e.g. a Reconstruction) with a WCS, not {type(model).__name__}")
    data = np.asarray(model.data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"The sky model must be 2-D, not of shape {data.shape}")
    wcs_in = _celestial(model.wcs, "The sky model")
    wcs_out = _celestial(WCS(target_wcs) if isinstance(target_wcs, fits.Header) else target_wcs, "target_wcs")
    shape_out = tuple(shape_out)
    if len(shape_out) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape_out):
        raise ValueError(f"shape_out must be two positive integers (ny, nx), not {shape_out!r}")
    unit = model.unit
    if unit is None:
        warnings.warn("the sky model has no unit; assuming a flux per pixel (e.g. Jy/pixel)",
                      RadioreconWarning, stacklevel=2)
    elif not unit.is_equivalent(_JY_PIX):
        raise u.UnitConversionError(
            f"the sky model is in {unit:generic}, not a flux per pixel such as Jy / pix; resample an "
            "image in Jy/beam or another surface brightness with reproject.reproject_interp"
        )
    options = {"kernel": "hann", "boundary_mode": "ignore_threshold", **kwargs}

    def resample(planes, conserve_flux):
        return reproject_adaptive((planes, wcs_in), wcs_out, shape_out=shape_out,
                                  conserve_flux=conserve_flux, return_footprint=False, **options)

    bad = ~np.isfinite(data)
    if model.mask is not None:
        bad |= np.broadcast_to(np.asarray(model.mask, bool), data.shape)
    sigma = std_array(model)
    samples, components = getattr(model, "samples", None), getattr(model, "components", None)
    counts = [len(extra) if extra is not None else 0 for extra in (samples, components)]

    # Everything that adds like a flux goes through one call: the model,
    # its samples and components and the variance of its errors.
    planes = [data[None]] + [np.asarray(extra, dtype=float) for extra in (samples, components)
                             if extra is not None]
    if sigma is not None:
        planes.append(sigma[None] ** 2)
    fluxes = np.concatenate(planes)
    fluxes[:, bad] = 0.0  # masked pixels bring no flux
    fluxes = resample(np.nan_to_num(fluxes, nan=0.0, posinf=0.0, neginf=0.0), conserve_flux=True)
    # Outside the model (NaN), or mostly from masked pixels.
    mask = ~np.isfinite(fluxes[0])
    if bad.any():
        mask |= ~(resample(bad[None].astype(float), conserve_flux=False)[0] <= _MASKED_FRACTION)
    fluxes[:, mask] = np.nan
    result, new_samples, new_components, variance = np.split(fluxes, np.cumsum([1] + counts))
    uncertainty = None if sigma is None else StdDevUncertainty(np.sqrt(variance[0]))
    meta = model.meta.copy() if hasattr(model.meta, "copy") else dict(model.meta)
    return Reconstruction(result[0], uncertainty=uncertainty, mask=mask, wcs=wcs_out, meta=meta, unit=unit,
                          samples=new_samples if samples is not None else None,
                          components=_like(new_components, components))


def _like(values, original):
    """Resampled ``values`` in the unit of ``original`` (None if there was none)."""
    if original is None:
        return None
    return values * original.unit if isinstance(original, u.Quantity) else values


def _celestial(wcs, what):
    """The celestial part of ``wcs``, which must have one."""
    if not getattr(wcs, "has_celestial", False):
        raise ValueError(f"{what} has no celestial WCS: the pixel grids cannot be related")
    return wcs.celestial
