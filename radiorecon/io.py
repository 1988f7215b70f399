"""Reading dirty images: anything that holds one, as a 2-D NDData.

`read_image` turns whatever holds a dirty image (a FITS file, an HDU, an
`~astropy.nddata.NDData`, an array) into a 2-D image with its celestial WCS,
unit, blank mask and header; `get_beam` reads its restoring beam.
`write_result` and `read_result` store a `~radiorecon.Reconstruction` in the
FITS layout of `~astropy.nddata.CCDData`; they live with the class, in
`radiorecon.result` (as CCDData's reader and writer do), and are the
functions behind ``Reconstruction.read`` and ``Reconstruction.write``.
"""

import copy
import io
import os
import warnings
from collections.abc import Mapping

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData
from astropy.wcs import WCS
from radio_beam import Beam, Beams
from radio_beam.beam import NoBeamException

from ._fits import clean_header, hdu_data, header_wcs, open_fits, parse_bunit
from .exceptions import InputError, RadioreconWarning
from .result import read_result, write_result

__all__ = ["read_image", "get_beam", "write_result", "read_result"]

_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


def read_image(source, *, hdu=None, unit=None):
    """Read a dirty image as 2-D data with its celestial WCS, unit and mask.

    Parameters
    ----------
    source : path, file, HDUList, image HDU, NDData, Quantity, ndarray or MaskedArray
        A FITS file (str, `os.PathLike` or open binary file), an
        `~astropy.io.fits.HDUList`, a `~astropy.io.fits.PrimaryHDU`,
        `~astropy.io.fits.ImageHDU` or `~astropy.io.fits.CompImageHDU`, or
        in-memory data. The source is never modified.
    hdu : int or str, optional
        Index or EXTNAME of the image HDU, for files and HDU lists only.
        Default: the first HDU holding an image of 2 or more axes.
    unit : str or `~astropy.units.Unit`, optional
        Unit of the data (e.g. ``"Jy/beam"``). It replaces the unit of the
        source (``BUNIT`` or the Quantity's unit) without converting values.

    Returns
    -------
    image : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        `~astropy.nddata.CCDData` when the unit is known, else
        `~astropy.nddata.NDData`. ``data`` is a new ``(ny, nx)`` float array
        (float32 stays float32; integer data become float64), with NaN
        where the source was blank. ``mask`` is a boolean array, True where
        the data are not finite, equal ``BLANK`` or were masked in the
        source (an NDData's ``mask``, a `numpy.ma.MaskedArray`'s mask).
        ``wcs`` is the 2-D celestial `~astropy.wcs.WCS` or None.
        ``meta`` is a `~astropy.io.fits.Header` (the source's header without
        its axis, scaling and ``BUNIT`` cards, plus the 2-D WCS cards, and
        the beam ``BMAJ``/``BMIN``/``BPA`` in degrees also from a CASA
        ``BEAMS`` table); an NDData's own meta is kept as it is.

    Raises
    ------
    FileNotFoundError
        If ``source`` names no file.
    ValueError
        If the file is not readable FITS or holds no image, if the data have
        fewer than 2 axes, or if an axis other than the two image axes has
        more than one plane (e.g. a FREQ axis of a cube): select one plane
        first, as the message shows.
    TypeError
        If the data are not real numbers, or an NDData's WCS is not an
        `~astropy.wcs.WCS`.
    """
    from_file = isinstance(source, (str, os.PathLike, fits.HDUList, io.IOBase))
    if hdu is not None and not from_file:
        raise ValueError("hdu= selects an HDU of a FITS file or HDUList only")
    wcs = mask = None
    from_header = True
    if from_file:
        with open_fits(source) as (hdul, name):
            data, header = hdu_data(_pick_hdu(hdul, hdu, name), name)
            if "BMAJ" not in header:
                header.update(_table_beam(hdul, name))
    elif isinstance(source, _IMAGE_HDUS):
        name = f"HDU {source.name!r}"
        data, header = hdu_data(source, name)
    elif isinstance(source, NDData):
        name, from_header = f"the {type(source).__name__}", False
        data, wcs, mask = np.array(source.data), source.wcs, source.mask
        header = copy.deepcopy(source.meta)
        if wcs is not None and not isinstance(wcs, WCS):
            raise TypeError(f"{name} has a {type(wcs).__name__}; read_image needs an astropy.wcs.WCS")
    elif isinstance(source, np.ma.MaskedArray):
        name = "the masked array"
        data, mask, header = np.array(source.data), np.ma.getmaskarray(source), fits.Header()
    else:
        name = f"the {type(source).__name__}"
        data, header = np.array(source), fits.Header()
    if data is None:
        raise ValueError(f"{name} holds no image data")
    if data.size == 0:
        raise InputError(f"{name} holds no pixels (shape {data.shape})")
    if data.dtype.kind not in "iubf":
        raise TypeError(f"{name}: {data.dtype} data cannot be an image")
    if unit is None:
        if isinstance(source, (NDData, u.Quantity)):
            unit = source.unit
        else:
            unit = parse_bunit(header.get("BUNIT"), name)

    if from_header:
        wcs = header_wcs(header, name)
    axes = _image_axes(data.shape, wcs, name)
    plane = tuple(slice(None) if a in axes else 0 for a in range(data.ndim))
    if wcs is not None:
        wcs = wcs.celestial if wcs.has_celestial else (wcs if wcs.naxis == 2 else None)
    blank = None
    if data.dtype.kind in "iub" and isinstance(header, Mapping) and header.get("BLANK") is not None:
        # BLANK is a stored value; astropy keeps the BZERO offset of
        # pseudo-unsigned data applied, so compare with the physical value.
        blank = header["BLANK"] * header.get("BSCALE", 1) + header.get("BZERO", 0)
    if from_header:
        header = clean_header(header)
        if wcs is not None:
            header.extend(wcs.to_header(relax=True), update=True, useblanks=False)

    plane_data = data[plane]
    dtype = np.float64 if data.dtype.kind in "iub" else np.promote_types(data.dtype, np.float32)
    # data is already a private copy; copy again only to make it contiguous.
    out = np.ascontiguousarray(plane_data, dtype=np.dtype(dtype).newbyteorder("="))
    if blank is not None:
        out[plane_data == blank] = np.nan
    bad = ~np.isfinite(out)
    if mask is not None:
        bad |= np.broadcast_to(np.asarray(mask, dtype=bool), data.shape)[plane]
    if unit is not None:
        return CCDData(out, unit=u.Unit(unit), wcs=wcs, mask=bad, meta=header)
    return NDData(out, wcs=wcs, mask=bad, meta=header)


def get_beam(image):
    """The restoring beam recorded in an image's header.

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or mapping
        An image from `read_image`, or its ``meta``: a
        `~astropy.io.fits.Header` or mapping with ``BMAJ``, ``BMIN`` and
        ``BPA`` in degrees (a full header may instead carry the beam in AIPS
        or CASA ``HISTORY`` cards).

    Returns
    -------
    beam : `radio_beam.Beam` or None
        The beam, or None when the header records none.

    Raises
    ------
    ValueError
        If ``BMAJ``, ``BMIN`` or ``BPA`` holds something other than a number.
    """
    meta = getattr(image, "meta", image)
    for key in ("BMAJ", "BMIN", "BPA"):
        value = meta.get(key) if isinstance(meta, Mapping) else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise ValueError(f"beam card {key} = {value!r} is not a number of degrees")
    if not isinstance(meta, fits.Header):
        # radio_beam accepts only a real Header.
        meta = fits.Header([(key, meta[key]) for key in ("BMAJ", "BMIN", "BPA") if key in meta])
    try:
        return Beam.from_fits_header(meta)
    except NoBeamException:
        return None


def _pick_hdu(hdul, hdu, name):
    if hdu is None:
        for candidate in hdul:
            # .shape comes from the header, so no data are read here.
            if candidate.is_image and len(candidate.shape) >= 2 and 0 not in candidate.shape:
                return candidate
        raise InputError(f"{name} holds no image data (no HDU with 2 or more axes)")
    try:
        chosen = hdul[hdu]
    except (IndexError, KeyError) as exc:
        raise InputError(f"{name} has no HDU {hdu!r}; it has {[h.name for h in hdul]}") from exc
    if not chosen.is_image or not chosen.shape:
        raise InputError(f"HDU {hdu!r} of {name} holds no image data")
    return chosen


def _image_axes(shape, wcs, name):
    """The two numpy axes of the image; every other axis must have length 1."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"{name} has shape {shape}; an image needs 2 axes")
    if ndim == 2:
        return (0, 1)
    if wcs is not None and wcs.has_celestial and max(wcs.wcs.lng, wcs.wcs.lat) < ndim:
        # FITS/WCS axis i is numpy axis ndim - 1 - i.
        axes = tuple(sorted(ndim - 1 - i for i in (wcs.wcs.lng, wcs.wcs.lat)))
        for axis, length in enumerate(shape):
            if axis not in axes and length != 1:
                i = ndim - 1 - axis
                ctype = (wcs.wcs.ctype[i] if i < wcs.naxis else "") or "no CTYPE"
                example = ", ".join(
                    ":" if a in axes else "k" if a == axis else "0" for a in range(ndim)
                )
                raise ValueError(
                    f"{name}: axis {i + 1} ({ctype}) has length {length}, but only the two "
                    f"celestial axes may be longer than 1. Select one plane first, e.g. "
                    f"NDData(data[{example}], wcs=WCS(header).celestial) for plane k."
                )
        return axes
    axes = tuple(a for a, length in enumerate(shape) if length > 1)
    if len(axes) != 2:
        raise ValueError(
            f"{name} has shape {shape} and no celestial WCS to tell the image axes; "
            f"exactly 2 axes longer than 1 are needed"
        )
    return axes


def _table_beam(hdul, name):
    """BMAJ/BMIN/BPA cards (degrees) from a CASA BEAMS table holding one beam."""
    if "BEAMS" not in hdul:
        return {}
    try:
        beams = Beams.from_fits_bintable(hdul["BEAMS"])
    except (KeyError, IndexError, ValueError) as exc:
        warnings.warn(
            f"{name}: unreadable BEAMS table ({exc}); no beam read", RadioreconWarning, stacklevel=3
        )
        return {}
    if len(beams) == 0:
        return {}
    if any(np.any(q != q[0]) for q in (beams.major, beams.minor, beams.pa)):
        warnings.warn(
            f"{name}: the BEAMS table holds {len(beams)} different beams for a 2-D image; no beam read",
            RadioreconWarning,
            stacklevel=3,
        )
        return {}
    return {key: float(value) for key, value in beams[0].to_header_keywords().items()}
