"""FITS plumbing shared by `radiorecon.io` (reading images) and `radiorecon.result`.

Internal to radiorecon: opening files with every kind of damage turned into
one `~radiorecon.exceptions.InputError`, copying HDU data, reading WCS and
``BUNIT``, and cleaning headers of their axis cards.
"""

import io
import os
import re
import warnings
from contextlib import contextmanager

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .exceptions import InputError, RadioreconWarning

__all__ = [
    "open_fits", "hdu_data", "header_wcs", "clean_header", "parse_bunit", "bunit", "card_key", "AXIS_KEYWORD",
]

# Cards that describe the stored array's axes or scaling rather than the
# observation. They go stale once degenerate axes are dropped and the data
# are unscaled floats, so they are removed and the 2-D WCS rewrites its own.
AXIS_KEYWORD = re.compile(
    r"(NAXIS|WCSAXES|WCSNAME|CTYPE|CRVAL|CDELT|CRPIX|CUNIT|CROTA|CNAME|CRDER|CSYER)\d*[A-Z]?"
    r"|(PC|CD|PV|PS)\d+_\d+[A-Z]?"
    r"|(LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|RESTFRQ|RESTWAV|SPECSYS|SSYSOBS|SSYSSRC"
    r"|VELOSYS|ZSOURCE|MJDREF)[A-Z]?|EPOCH|RESTFREQ|VELREF"
    r"|BUNIT|BLANK|BSCALE|BZERO|CHECKSUM|DATASUM"
)
_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")


def card_key(key):
    """The header key of a meta entry: itself when a valid FITS keyword, else ``HIERARCH key``.

    An explicit HIERARCH avoids astropy's VerifyWarning for keys that are long
    or hold characters FITS keywords lack, and stops a '.' from turning the
    card into a record-valued one.
    """
    key = str(key)  # an int would address a card by position
    return key.upper() if _KEYWORD.fullmatch(key.upper()) else f"HIERARCH {key}"


# CASA and AIPS write units in upper or title case, which astropy rejects.
UNIT_CASE = {"JY": "Jy", "BEAM": "beam", "PIXEL": "pix", "PIXELS": "pix", "PIX": "pix"}


@contextmanager
def open_fits(source):
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
    # A file cut inside an extension's header loses that extension (and
    # those after it) with only this warning.
    damaged = [w for w in caught if str(w.message).startswith("Error validating header for HDU")]
    if truncated or damaged:
        if source is path:
            hdul.close()
        if truncated:
            raise InputError(f"{path} is truncated: {str(truncated[0].message).partition(': ')[2]}")
        reason = " ".join(str(damaged[0].message).split())
        raise InputError(f"{path} is truncated or damaged: {reason}")
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


def hdu_data(hdu, name):
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


def header_wcs(header, name):
    """The header's full WCS when it has celestial axes, else None."""
    try:
        with warnings.catch_warnings():
            # CASA headers trip astropy's fix-ups (dates, observatory, ...).
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except ValueError as exc:  # astropy.wcs.WcsError and friends
        raise ValueError(f"{name}: invalid WCS in the header: {exc}") from exc
    return wcs if wcs.has_celestial else None


def clean_header(header):
    header = header.copy(strip=True)
    for key in {key for key in header if AXIS_KEYWORD.fullmatch(key)}:
        header.remove(key, remove_all=True)
    return header


def parse_bunit(value, name):
    """The unit of a BUNIT card, or None (with a warning when unreadable)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    fixed = re.sub(r"[A-Za-z]+", lambda m: UNIT_CASE.get(m[0].upper(), m[0]), text)
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


def bunit(unit):
    """The ``BUNIT`` text of a unit, as radio viewers and CASA write it.

    Flux densities per beam or per pixel are written ``Jy/beam`` and
    ``Jy/pixel`` (astropy's FITS format would give ``Jy beam-1`` and
    ``Jy pix-1``, which CASA and most viewers do not recognise); other units
    in the FITS format, or astropy's generic one when FITS has no name for
    them. None for no unit or a dimensionless one.
    """
    if unit is None or unit == u.dimensionless_unscaled:
        return None
    unit = u.Unit(unit)
    powers = dict(zip(unit.bases, unit.powers))
    for per, name in ((u.beam, "beam"), (u.pix, "pixel")):
        if powers.get(per) == -1 and len(powers) == 2:
            flux = unit * per
            if flux.physical_type == "spectral flux density":
                return f"{flux.to_string('generic').replace(' ', '')}/{name}"
    try:
        return unit.to_string("fits")
    except ValueError:  # e.g. a scale that is not a power of 10
        return unit.to_string()
