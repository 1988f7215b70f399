"""Reading dirty images and writing reconstructions as FITS files.

`read_image` turns whatever holds a dirty image (a FITS file, an HDU, an
`~astropy.nddata.NDData`, an array) into a 2-D image with its celestial WCS,
unit, blank mask and header. `write_result` and `read_result` store a
`~radiorecon.result.Reconstruction` in the FITS layout of
`~astropy.nddata.CCDData`, so other astropy tools read the files too;
importing this module also makes ``Reconstruction.read`` and
``Reconstruction.write`` work for ``.fits`` paths.
"""

import copy
import io
import os
import re
import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io import registry as io_registry
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS, FITSFixedWarning
from radio_beam import Beam, Beams
from radio_beam.beam import NoBeamException

from ._files import atomic_path
from .exceptions import InputError, RadioreconWarning
from .result import Reconstruction

__all__ = ["read_image", "get_beam", "write_result", "read_result"]

_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".fts.gz")
_FITS_SIGNATURE = b"SIMPLE  =                    T"

# Cards that describe the stored array's axes or scaling rather than the
# observation. They go stale once degenerate axes are dropped and the data
# are unscaled floats, so they are removed and the 2-D WCS rewrites its own.
_AXIS_KEYWORD = re.compile(
    r"(NAXIS|WCSAXES|WCSNAME|CTYPE|CRVAL|CDELT|CRPIX|CUNIT|CROTA|CNAME|CRDER|CSYER)\d*[A-Z]?"
    r"|(PC|CD|PV|PS)\d+_\d+[A-Z]?"
    r"|(LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|RESTFRQ|RESTWAV|SPECSYS|SSYSOBS|SSYSSRC"
    r"|VELOSYS|ZSOURCE|MJDREF)[A-Z]?|EPOCH|RESTFREQ|VELREF"
    r"|BUNIT|BLANK|BSCALE|BZERO|CHECKSUM|DATASUM"
)
# CASA and AIPS write units in upper or title case, which astropy rejects.
_UNIT_CASE = {"JY": "Jy", "BEAM": "beam", "PIXEL": "pix", "PIXELS": "pix", "PIX": "pix"}


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
        with _open_fits(source) as (hdul, name):
            data, header = _hdu_data(_pick_hdu(hdul, hdu, name), name)
            if "BMAJ" not in header:
                header.update(_table_beam(hdul, name))
    elif isinstance(source, _IMAGE_HDUS):
        name = f"HDU {source.name!r}"
        data, header = _hdu_data(source, name)
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
    if data.dtype.kind not in "iubf":
        raise TypeError(f"{name}: {data.dtype} data cannot be an image")
    if unit is None:
        if isinstance(source, (NDData, u.Quantity)):
            unit = source.unit
        else:
            unit = _parse_bunit(header.get("BUNIT"), name)

    if from_header:
        wcs = _header_wcs(header, name)
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
        header = _clean_header(header)
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


def write_result(result, path, *, overwrite=False, samples=False, extras=False):
    """Write an image or reconstruction to a FITS file in CCDData's layout.

    The primary HDU holds ``result.data`` with ``result.meta``, the WCS
    cards and ``BUNIT``; then come an ``UNCERT`` extension (standard
    deviations, ``UTYPE='StdDevUncertainty'``), a ``MASK`` extension (uint8,
    1 = masked) and, with ``samples=True``, a ``SAMPLES`` extension
    ``(n_samples, ny, nx)``, each only when present. A dimensionless unit is
    written as no ``BUNIT``, as CCDData does. The file is written to a
    temporary name in the same directory and then renamed, so a failure
    leaves any existing file untouched.

    Parameters
    ----------
    result : `~astropy.nddata.NDData`
        E.g. a `~radiorecon.result.Reconstruction`; its unit may be None.
        ``meta`` is a `~astropy.io.fits.Header` or a mapping of FITS-able
        scalars (keys longer than 8 characters become HIERARCH cards).
    path : str or os.PathLike
        Output file; a ``.gz`` suffix compresses it.
    overwrite : bool, optional
        Replace an existing file.
    samples : bool, optional
        Also write ``result.samples`` when it is not None.
    extras : bool, optional
        Also write each map of ``result.extras`` (e.g. CLEAN's ``residual``
        and ``restored``) as an extension named after its key in capitals.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If a meta value cannot go into a FITS header (the message names the
        key), the uncertainty is not a `~astropy.nddata.StdDevUncertainty`, or
        the WCS is not a `~astropy.wcs.WCS` with one axis per data axis.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):  # before the work, not only after
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    data = np.asarray(result.data)
    header = _meta_header(result.meta)
    wcs = result.wcs
    if wcs is not None:
        if not isinstance(wcs, WCS) or wcs.naxis != data.ndim:
            raise ValueError(f"cannot write a {type(wcs).__name__} for {data.ndim}-D data to FITS")
        header.extend(wcs.to_header(relax=True), update=True, useblanks=False)
    unit_cards = fits.Header()
    if result.unit is not None and result.unit != u.dimensionless_unscaled:
        try:
            unit_cards["BUNIT"] = result.unit.to_string("fits")
        except ValueError:  # e.g. a scale that is not a power of 10
            unit_cards["BUNIT"] = result.unit.to_string()
    header.update(unit_cards)
    hdus = fits.HDUList([fits.PrimaryHDU(data, header)])

    uncertainty = result.uncertainty
    if uncertainty is not None:
        if not isinstance(uncertainty, StdDevUncertainty):
            raise ValueError(
                f"only a StdDevUncertainty can be written, not {type(uncertainty).__name__}"
            )
        sigma = np.asarray(uncertainty.array)
        if uncertainty.unit is not None and result.unit is not None:
            sigma = (sigma * uncertainty.unit).to_value(result.unit)
        uncert_header = fits.Header([("UTYPE", "StdDevUncertainty")])
        uncert_header.update(unit_cards)
        hdus.append(fits.ImageHDU(sigma, uncert_header, name="UNCERT"))
    if result.mask is not None:
        mask = np.broadcast_to(np.asarray(result.mask, dtype=bool), data.shape)
        hdus.append(fits.ImageHDU(mask.astype(np.uint8), name="MASK"))
    if samples and getattr(result, "samples", None) is not None:
        hdus.append(fits.ImageHDU(np.asarray(result.samples), unit_cards, name="SAMPLES"))
    for key, value in (getattr(result, "extras", None) or {}).items() if extras else ():
        hdus.append(fits.ImageHDU(np.asarray(value), name=key.upper()))

    with atomic_path(path, overwrite=overwrite) as tmp:
        hdus.writeto(tmp)


def read_result(path):
    """Read a reconstruction written by `write_result`.

    Parameters
    ----------
    path : str, os.PathLike, file-like or `~astropy.io.fits.HDUList`
        The FITS file.

    Returns
    -------
    result : `~radiorecon.result.Reconstruction`
        Data, ``UNCERT``, ``MASK`` and ``SAMPLES`` when present, the
        celestial WCS, the unit from ``BUNIT`` (None when absent) and as
        ``meta`` the primary header without its structural and WCS cards.

    Raises
    ------
    FileNotFoundError, ValueError
        As for `read_image`.
    """
    with _open_fits(path) as (hdul, name):
        data, header = _hdu_data(hdul[0], name)
        if data is None:
            raise ValueError(f"{name} has no data in its primary HDU")
        extensions = {
            key: _hdu_data(hdul[key], name) for key in ("UNCERT", "MASK", "SAMPLES") if key in hdul
        }
    arrays = {key: array for key, (array, _) in extensions.items()}
    utype = extensions["UNCERT"][1].get("UTYPE", "StdDevUncertainty") if "UNCERT" in arrays else None
    if utype not in (None, "StdDevUncertainty"):
        raise ValueError(f"{name}: cannot read an UNCERT extension of type {utype!r}")
    wcs = _header_wcs(header, name)
    return Reconstruction(
        data,
        uncertainty=StdDevUncertainty(arrays["UNCERT"]) if "UNCERT" in arrays else None,
        mask=arrays["MASK"].astype(bool) if "MASK" in arrays else None,
        wcs=None if wcs is None else wcs.celestial,
        meta=_clean_header(header),
        unit=_parse_bunit(header.get("BUNIT"), name),
        samples=arrays.get("SAMPLES"),
    )


@contextmanager
def _open_fits(source):
    """Yield ``(hdul, name)``; files opened here are closed afterwards.

    Content that is not readable FITS (garbage, an empty or truncated file,
    a corrupted or cut compressed stream) raises one
    `~radiorecon.exceptions.InputError` naming the file.
    """
    if isinstance(source, fits.HDUList):
        yield source, "the HDUList"
        return
    if isinstance(source, io.IOBase):  # astropy's unified I/O hands readers open files
        path = getattr(source, "name", repr(source))
    else:
        path = source = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such FITS file: {path}")
    hdul = _checked_open(source, path)
    if source is path:
        with hdul:
            yield hdul, path
    else:
        # Closing the HDUList would close the caller's file object too.
        yield hdul, path


def _checked_open(source, path):
    """``fits.open(source)`` with all HDU headers read, damage raising one InputError."""
    if isinstance(source, str) and os.path.getsize(source) == 0:
        raise InputError(f"{path} is not a readable FITS file (it is empty)")
    _check_compression(source, path)
    # astropy reports a truncated file as a warning, and then fails (or
    # silently drops HDUs) later; recorded, it becomes the error instead.
    hdul = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(source)
            hdul.readall()  # headers only: a damaged extension shows now, not half-way
        except (OSError, EOFError, ValueError) as exc:
            if hdul is not None and source is path:
                hdul.close()
            if isinstance(exc, OSError) and exc.errno is not None:  # a system error (permissions, ...)
                raise
            raise InputError(f"{path} is not a readable FITS file ({exc})") from exc
    truncated = [w for w in caught if str(w.message).startswith("File may have been truncated")]
    if truncated:
        if source is path:
            hdul.close()
        raise InputError(f"{path} is truncated: {str(truncated[0].message).partition(': ')[2]}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return hdul


def _check_compression(source, path):
    """Decompress a compressed file to its end, so that its checksum and length are checked.

    astropy decompresses only up to the end of the last HDU it reads, so a
    corrupted or cut stream would otherwise give wrong pixels without an
    error. This costs one more pass of decompression.
    """
    import bz2
    import gzip
    import lzma
    import zlib

    streams = (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)
    openers = {b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f), b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}
    fh = open(source, "rb") if isinstance(source, str) else source
    try:
        if not fh.seekable():  # a pipe: astropy reads it as it comes
            return
        start = fh.tell()
        if isinstance(fh, streams):  # already decompressing (astropy's unified I/O)
            stream = fh
        else:
            magic = fh.read(6)
            fh.seek(start)
            opener = next((o for m, o in openers.items() if magic.startswith(m)), None)
            if opener is None:
                return
            stream = opener(fh)
        try:
            while stream.read(1 << 24):
                pass
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise InputError(f"{path}: the compressed data are corrupted or cut short ({exc})") from exc
        finally:
            if stream is not fh:
                stream.close()
        fh.seek(start)
    finally:
        if fh is not source:
            fh.close()


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


def _hdu_data(hdu, name):
    """A copy of the HDU's data (native byte order, or None) and of its header."""
    # Copied first: once astropy scales integer data it rewrites BITPIX,
    # BZERO and BLANK in the live header.
    header = hdu.header.copy()
    try:
        data = hdu.data
    except (TypeError, ValueError, OSError, EOFError) as exc:  # truncated or corrupted data
        raise InputError(f"{name}: cannot read the data of HDU {hdu.name!r} (truncated or corrupted: {exc})") from exc
    if data is None:
        return None, header
    if header.get("BITPIX", -32) > 0 and data.dtype.kind == "f":
        # astropy has turned blank integers into NaN in float32; integer
        # images are promised as float64.
        return np.array(data, dtype=np.float64), header
    # A copy, so that nothing returned pins a memory map of a closed file.
    return np.array(data, dtype=data.dtype.newbyteorder("=")), header


def _header_wcs(header, name):
    """The header's full WCS when it has celestial axes, else None."""
    try:
        with warnings.catch_warnings():
            # CASA headers trip astropy's fix-ups (dates, observatory, ...).
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except ValueError as exc:  # astropy.wcs.WcsError and friends
        raise ValueError(f"{name}: invalid WCS in the header: {exc}") from exc
    return wcs if wcs.has_celestial else None


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


def _clean_header(header):
    header = header.copy(strip=True)
    for key in {key for key in header if _AXIS_KEYWORD.fullmatch(key)}:
        header.remove(key, remove_all=True)
    return header


def _parse_bunit(value, name):
    """The unit of a BUNIT card, or None (with a warning when unreadable)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    fixed = re.sub(r"[A-Za-z]+", lambda m: _UNIT_CASE.get(m[0].upper(), m[0]), text)
    for candidate in (text, fixed):
        try:
            return u.Unit(candidate)
        except ValueError:
            pass
    warnings.warn(
        f"{name}: BUNIT {text!r} is not a unit astropy understands; reading the image as "
        f"unitless (pass unit=... to set one)",
        RadioreconWarning,
        stacklevel=3,
    )
    return None


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


def _meta_header(meta):
    """A FITS header from NDData meta, without axis and scaling cards."""
    if isinstance(meta, fits.Header):
        return _clean_header(meta)
    header = fits.Header()
    for key, value in (meta or {}).items():
        # An explicit HIERARCH avoids astropy's VerifyWarning for keys that
        # are long or hold characters FITS keywords lack, and stops a '.'
        # from turning the card into a record-valued one.
        key = str(key)  # an int would address a card by position
        card_key = key if re.fullmatch(r"[A-Z0-9_-]{0,8}", key.upper()) else f"HIERARCH {key}"
        try:
            header[card_key] = value
        except ValueError as exc:
            raise ValueError(f"meta[{key!r}] cannot be written to a FITS header: {exc}") from exc
    return _clean_header(header)


def _identify_fits(origin, path, fileobj, *args, **kwargs):
    if fileobj is not None:  # reading: the content decides, whatever the name
        position = fileobj.tell()
        signature = fileobj.read(len(_FITS_SIGNATURE))
        fileobj.seek(position)
        return signature == _FITS_SIGNATURE
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path).lower().endswith(_FITS_SUFFIXES)
    return bool(args) and isinstance(args[0], fits.HDUList)


# force=True: re-importing or reloading this module re-registers the same
# format instead of raising IORegistryError.
io_registry.register_reader("fits", Reconstruction, read_result, force=True)
io_registry.register_writer("fits", Reconstruction, write_result, force=True)
io_registry.register_identifier("fits", Reconstruction, _identify_fits, force=True)
