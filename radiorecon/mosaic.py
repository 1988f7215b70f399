"""Mosaics: sky models of several pointings combined on one sky grid.

An interferometer sees the sky through its antennas' primary beam, so the
sky model reconstructed from the dirty image of pointing ``i`` is the
*apparent* sky ``A_i = pb_i S + n_i``, with ``pb_i`` the primary-beam gain and
``n_i`` noise of standard deviation ``sigma_i`` (the reconstruction's
uncertainty). `combine_pointings` resamples every pointing onto one grid and
takes, where pointings overlap, the inverse-variance weighted mean of their
primary-beam-corrected skies ``A_i / pb_i`` (linear mosaicking, as MIRIAD's
``linmos`` and CASA's ``linearmosaic`` do).
"""

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.nddata import NDData, StdDevUncertainty
from astropy.wcs import WCS

from .exceptions import InputError
from .pipeline import PROGRESS_DELAY
from .resample import reproject_model
from .result import Reconstruction, std_array

__all__ = ["combine_pointings"]

_JY_PIX = u.Jy / u.pix


def combine_pointings(pointings, primary_beams, *, wcs_out=None, shape_out=None, pb_cutoff=0.2, progress=True):
    r"""Combine the sky models of several pointings into one mosaic with its uncertainty.

    Every pointing's apparent sky model ``A_i`` (not corrected for the
    primary beam, as `~radiorecon.Reconstructor.predict` gives it from a
    dirty image) and the variance of its errors are resampled onto the
    output grid as fluxes (`~radiorecon.resample.reproject_model`), its
    primary-beam gain ``pb_i`` as an image. The primary-beam-corrected sky
    ``A_i / pb_i`` has standard deviation ``sigma_i / pb_i``; its
    inverse-variance weighted mean is the minimum-variance unbiased
    combination of the pointings:

    .. math::

        w_i = \frac{pb_i^2}{\sigma_i^2}, \qquad
        S = \frac{\sum_i w_i A_i / pb_i}{\sum_i w_i}
          = \frac{\sum_i pb_i A_i / \sigma_i^2}{\sum_i pb_i^2 / \sigma_i^2}, \qquad
        \sigma_S = \frac{1}{\sqrt{\sum_i w_i}},

    the last because, the pointings' noise being independent,
    ``var(S) = sum(w_i**2 var(A_i / pb_i)) / sum(w_i)**2 = 1 / sum(w_i)``.
    Each pointing is used where its gain is at least ``pb_cutoff``.

    Parameters
    ----------
    pointings : sequence of `~astropy.nddata.NDData`
        Sky models of the pointings (e.g. `~radiorecon.Reconstruction`), each
        2-D with a celestial WCS, a unit of flux per pixel (Jy/pixel;
        other pointings' are converted to the first one's) and an
        uncertainty (a standard deviation, or anything astropy converts to
        one). Masked or NaN pixels are left out.
    primary_beams : sequence of array-like
        The primary-beam gain of each pointing on its own pixel grid (the
        shape of its data), between 0 and 1, e.g. a simulated data set's
        ``primary_beam``.
    wcs_out : `~astropy.wcs.WCS` or `~astropy.io.fits.Header`, optional
        Celestial WCS of the mosaic; by default the one that covers all
        pointings with the finest of their pixel sizes
        (`reproject.mosaicking.find_optimal_celestial_wcs`).
    shape_out : tuple of int, optional
        ``(ny, nx)`` of the mosaic; required with ``wcs_out`` unless the WCS
        knows its pixel shape.
    pb_cutoff : float
        Lowest primary-beam gain at which a pointing is used, in (0, 1].
        Positions where no pointing reaches it are blank.
    progress : bool
        Show a progress bar over the pointings (after half a second).

    Returns
    -------
    `~radiorecon.Reconstruction`
        The primary-beam-corrected sky ``S`` in the first pointing's unit
        (per pixel of the output grid), its `~astropy.nddata.StdDevUncertainty`
        ``sigma_S``, ``mask`` True (and data and uncertainty NaN) where no
        pointing has a gain of at least ``pb_cutoff``, ``wcs`` the mosaic's
        and in ``meta`` the number of pointings (``RRNPOINT``) and the cut-off
        (``RRPBCUT``).

    Raises
    ------
    InputError
        For a pointing without a celestial WCS, without an uncertainty or
        unit, in a unit that is not a flux per pixel, with a primary beam of another shape or with
        negative or non-finite gains, for a pointing that falls outside
        ``wcs_out``, for counts that do not match, a bad ``pb_cutoff``, or a
        ``wcs_out`` without ``shape_out``.

    Notes
    -----
    The uncertainty is propagated pixel by pixel: correlations between
    neighbouring pixels (from the beam, the reconstruction, or the
    resampling) are not propagated, and where pixels are split onto a finer
    grid ``sigma_S`` is that of an aperture sum, not of one pixel (see
    `~radiorecon.resample.reproject_model`). The weights assume the
    pointings' errors are independent; pointings observed at the same time
    share no noise, but a shared calibration error is not averaged down.
    The dirty images' sidelobes of sources outside a pointing's cut-off are
    not accounted for.
    """
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs
    from tqdm.auto import tqdm

    pointings, primary_beams = list(pointings), list(primary_beams)
    if not pointings:
        raise InputError("No pointings to combine")
    if len(primary_beams) != len(pointings):
        raise InputError(f"{len(primary_beams)} primary beams for {len(pointings)} pointings")
    if not 0 < pb_cutoff <= 1:
        raise InputError(f"pb_cutoff must be in (0, 1], not {pb_cutoff!r}")
    # Fluxes per pixel all convert to one another: the mosaic takes the first one's.
    unit = [_check_pointing(pointing, i) for i, pointing in enumerate(pointings)][0]
    beams = [_check_beam(pb, pointing, i) for i, (pb, pointing) in enumerate(zip(primary_beams, pointings))]

    if wcs_out is None:
        wcs_out, shape_out = find_optimal_celestial_wcs([(p.data.shape, p.wcs.celestial) for p in pointings])
    else:
        wcs_out = WCS(wcs_out) if isinstance(wcs_out, fits.Header) else wcs_out
        if not getattr(wcs_out, "has_celestial", False):
            raise InputError("wcs_out has no celestial WCS")
        wcs_out = wcs_out.celestial
        if shape_out is None:
            if wcs_out.pixel_shape is None:
                raise InputError("wcs_out does not give the mosaic's shape: pass shape_out=(ny, nx)")
            shape_out = wcs_out.pixel_shape[::-1]
    shape_out = tuple(int(n) for n in shape_out)

    # Sums of pb A / sigma^2 and of the weights pb^2 / sigma^2.
    numerator = np.zeros(shape_out)
    weight = np.zeros(shape_out)
    for i, (pointing, pb) in enumerate(tqdm(list(zip(pointings, beams)), disable=not progress,
                                           desc="mosaic", unit="pointing", delay=PROGRESS_DELAY)):
        box = _footprint(pointing, wcs_out, shape_out)
        if box is None:
            raise InputError(f"Pointing {i} does not overlap the output grid")
        # Only the part of the output grid the pointing covers is resampled.
        (y0, y1), (x0, x1) = box
        sub_wcs, sub_shape = wcs_out[y0:y1, x0:x1], (y1 - y0, x1 - x0)
        model = reproject_model(_in_unit(pointing, unit), sub_wcs, sub_shape)
        gain = reproject_interp((pb, pointing.wcs.celestial), sub_wcs, shape_out=sub_shape,
                                return_footprint=False)
        variance = model.uncertainty.array ** 2
        use = np.isfinite(model.data) & (variance > 0) & (np.nan_to_num(gain) >= pb_cutoff)
        g, v = gain[use], variance[use]
        # w A / pb = pb A / sigma^2
        numerator[y0:y1, x0:x1][use] += g * model.data[use] / v
        weight[y0:y1, x0:x1][use] += g**2 / v

    mask = ~(weight > 0)
    if mask.all():
        raise InputError(f"No pointing reaches a primary-beam gain of {pb_cutoff} on the output grid")
    with np.errstate(divide="ignore", invalid="ignore"):
        sky = np.where(mask, np.nan, numerator / weight).astype(np.float32)
        sigma = np.where(mask, np.nan, 1 / np.sqrt(weight)).astype(np.float32)
    meta = fits.Header([("RRNPOINT", len(pointings), "pointings in the mosaic"),
                        ("RRPBCUT", pb_cutoff, "lowest primary-beam gain used")])
    return Reconstruction(sky, uncertainty=StdDevUncertainty(sigma), mask=mask, wcs=wcs_out, unit=unit,
                          meta=meta)


def _check_pointing(pointing, i):
    """The pointing's unit, after checking it can join a mosaic."""
    if not isinstance(pointing, NDData):
        raise InputError(f"Pointing {i} is a {type(pointing).__name__}, not an NDData (e.g. a Reconstruction)")
    if np.ndim(pointing.data) != 2:
        raise InputError(f"Pointing {i} is not 2-D (shape {np.shape(pointing.data)})")
    if not getattr(pointing.wcs, "has_celestial", False):
        raise InputError(f"Pointing {i} has no celestial WCS: it cannot be placed on the sky")
    if pointing.uncertainty is None:
        raise InputError(f"Pointing {i} has no uncertainty: its weight in the mosaic is unknown")
    if pointing.unit is None:
        raise InputError(f"Pointing {i} has no unit; give it a flux per pixel such as Jy / pix")
    if not pointing.unit.is_equivalent(_JY_PIX):
        raise InputError(f"Pointing {i} is in {pointing.unit:generic}, not a flux per pixel such as Jy / pix")
    return pointing.unit


def _check_beam(pb, pointing, i):
    pb = np.asarray(pb, dtype=float)
    if pb.shape != np.shape(pointing.data):
        raise InputError(f"The primary beam of pointing {i} has shape {pb.shape}, its data "
                         f"{np.shape(pointing.data)}")
    if not np.all(np.isfinite(pb)) or pb.min() < 0:
        raise InputError(f"The primary beam of pointing {i} has negative or non-finite gains")
    return pb


def _in_unit(pointing, unit):
    """The pointing in ``unit``, its uncertainty a standard deviation (what reproject_model resamples)."""
    factor = pointing.unit.to(unit)
    return Reconstruction(np.asarray(pointing.data, dtype=float) * factor,
                          uncertainty=StdDevUncertainty(std_array(pointing) * factor),
                          mask=pointing.mask, wcs=pointing.wcs.celestial, unit=unit)


def _footprint(pointing, wcs_out, shape_out):
    """``((y0, y1), (x0, x1))``, the output pixels the pointing covers (a pixel's margin around), or None."""
    ny, nx = np.shape(pointing.data)
    # Points along the edges, not just the corners: in another projection
    # the edges of a grid bulge between its corners.
    ty, tx = np.linspace(-0.5, ny - 0.5, 16), np.linspace(-0.5, nx - 0.5, 16)
    ys = np.concatenate([ty, ty, np.full(16, -0.5), np.full(16, ny - 0.5)])
    xs = np.concatenate([np.full(16, -0.5), np.full(16, nx - 0.5), tx, tx])
    world = pointing.wcs.celestial.pixel_to_world(xs, ys)
    ox, oy = wcs_out.world_to_pixel(world)
    if not (np.all(np.isfinite(ox)) and np.all(np.isfinite(oy))):
        return ((0, shape_out[0]), (0, shape_out[1]))  # beyond the projection's edge: all of it
    y0, y1 = max(int(np.floor(oy.min())) - 1, 0), min(int(np.ceil(oy.max())) + 2, shape_out[0])
    x0, x1 = max(int(np.floor(ox.min())) - 1, 0), min(int(np.ceil(ox.max())) + 2, shape_out[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, y1), (x0, x1)
