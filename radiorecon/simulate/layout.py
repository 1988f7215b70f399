"""The files of a simulated data set directory: names, manifest, checked reading.

Internal API of `radiorecon.simulate`, used by `radiorecon.simulate.dataset`
to write, resume, replace and read data sets; not part of the public API.

Layout of a data set directory::

    config.json       preset, overrides, all resolved parameters, seed, n,
                      shard size, radiorecon version
    images.ecsv       per image: image_id, phase centre ra/dec (deg), psf_index
    psf.npy           (n_psf, 2 npix, 2 npix) float32 PSF bank, peak 1 at
                      pixel npix (twice the image size, as CLEAN needs)
    psf_bank.ecsv     per PSF: declination it was computed at, fitted beam,
                      expected image noise rms
    primary_beam.npy  (npix, npix) float32 primary-beam gain
    shards/dirty_KKKKK.npy, shards/sky_KKKKK.npy
                      (shard_size, npix, npix) float32, Jy/beam and Jy/pixel
                      (the last shard holds the remaining images)
    shards/truth_KKKKK.npy
                      the shard's truth rows
    truth.ecsv        truth catalog of all images (written when all shards are)

``config.json`` is also the data set's manifest: the files above, for its
``n`` and ``shard_size`` (`manifest`), are every file the data set has, and
the only ones that replacing it removes. Files are written through
`radiorecon._files.atomic_path`, so an interrupted run leaves only whole
files and temporaries, which the next run removes.

The readers check each file before use (a ``.npy`` file's header and size,
a table's columns and length) and raise `~radiorecon.exceptions.InputError`
naming the file, rather than fail later inside numpy or astropy.
"""

import json
import math
import os
import re

import numpy as np
from astropy.table import QTable

from .._files import is_temporary
from .._validate import check_int
from ..exceptions import InputError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "TOP_FILES", "TRUTH_DTYPE", "shard_name", "shard_length",
    "manifest", "read_config", "foreign_files", "own_temporaries", "check_array", "open_array", "read_table",
]

FORMAT = "radiorecon.simulate.dataset"
FORMAT_VERSION = 1
TOP_FILES = ("config.json", "images.ecsv", "psf.npy", "psf_bank.ecsv", "primary_beam.npy", "truth.ecsv")
_SHARD_KINDS = ("dirty", "sky", "truth")
TRUTH_DTYPE = np.dtype(
    [("image_id", "i8")] + [(name, "f8") for name in (
        "x", "y", "ra", "dec", "flux", "fwhm_major", "fwhm_minor", "pa", "pb_gain", "peak_snr")]
)
_SHARD = re.compile(r"(dirty|sky|truth)_\d{5,}\.npy")
# What a config.json must hold for the files to be found and read.
_REQUIRED = ("n", "shard_size", "npix", "pixel_scale_arcsec", "seed", "preset", "parameters", "meta")
_REMAKE = "call make_dataset again with the data set's arguments (see its config.json) to remake it"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def shard_name(kind, k):
    """Path of shard ``k`` of ``kind`` ("dirty", "sky" or "truth") within the directory."""
    return os.path.join("shards", f"{kind}_{k:05d}.npy")


def shard_length(config, k):
    """Number of images in shard ``k``."""
    return min(config["shard_size"], config["n"] - k * config["shard_size"])


def manifest(config):
    """Every file of the data set described by ``config``, relative to its directory."""
    shards = math.ceil(config["n"] / config["shard_size"])
    return [*TOP_FILES, *(shard_name(kind, k) for k in range(shards) for kind in _SHARD_KINDS)]


def read_config(directory):
    """The checked ``config.json`` of ``directory``, or None where there is none.

    Raises
    ------
    InputError
        If there is a ``config.json`` that is not a radiorecon data set's,
        is damaged, or was written by a newer radiorecon.
    """
    path = os.path.join(directory, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        raise InputError(f"{path} is not the config.json of a simulated data set ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{path} is not the config.json of a radiorecon simulated data set")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{path} is damaged: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path} was written by a newer radiorecon (data set format {version}); upgrade radiorecon to read it"
        )
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise InputError(f"{path} is damaged: it lacks {', '.join(missing)}")
    try:
        for key in ("n", "shard_size", "npix"):
            check_int(config[key], key)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path} is damaged: {exc}") from None
    return config


def own_temporaries(directory):
    """Names in ``directory`` of temporaries of data set files, left by interrupted runs."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return [name for name in names if is_temporary(name) and _is_own(name.split(".tmp.", 1)[1])]


def _is_own(name):
    return name in TOP_FILES or bool(_SHARD.fullmatch(name))


def foreign_files(directory, own):
    """Files in ``directory`` named as a data set's files but not among ``own``.

    Anything in ``shards/`` that is neither in ``own`` nor a temporary of a
    shard counts: that folder belongs to the data set.
    """
    own = set(own)
    found = [name for name in TOP_FILES if os.path.lexists(os.path.join(directory, name)) and name not in own]
    shards = os.path.join(directory, "shards")
    if os.path.isdir(shards) and not os.path.islink(shards):
        temporaries = set(own_temporaries(shards))
        found += [os.path.join("shards", name) for name in sorted(os.listdir(shards))
                  if os.path.join("shards", name) not in own and name not in temporaries]
    elif os.path.lexists(shards):
        found.append("shards")
    return found


def check_array(path, shape, dtype):
    """Check that a ``.npy`` file holds a whole array of ``shape`` and ``dtype``.

    Only the header and the file size are read. ``None`` in ``shape``
    matches any length.

    Raises
    ------
    InputError
        If the file is missing, is not an array file, holds another shape
        or type, or is truncated. The message names the file.
    """
    dtype = np.dtype(dtype)
    try:
        with open(path, "rb") as f:
            reader = _HEADER_READERS.get(np.lib.format.read_magic(f))
            if reader is None:
                raise ValueError("an .npy format version radiorecon does not write")
            found_shape, _, found_dtype = reader(f)
            data_start, size = f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{path} is missing; {_REMAKE}") from None
    except (OSError, ValueError, EOFError) as exc:  # ValueError: not a .npy header
        raise InputError(f"{path} is not a readable array file ({exc}); {_REMAKE}") from None
    wanted = all(want is None or want == got for want, got in zip(shape, found_shape))
    if found_dtype != dtype or len(found_shape) != len(shape) or not wanted:
        raise InputError(
            f"{path} holds a {found_shape} {found_dtype} array where a {_shape(shape)} {dtype} one belongs; "
            f"{_REMAKE}"
        )
    expected = data_start + math.prod(found_shape) * dtype.itemsize
    if size != expected:
        raise InputError(f"{path} is {size} bytes where {expected} belong (a damaged copy?); {_REMAKE}")


def _shape(shape):
    text = ", ".join("n" if n is None else str(n) for n in shape)
    return f"({text},)" if len(shape) == 1 else f"({text})"


def open_array(path, shape, dtype, *, mmap=True):
    """A checked array file (see `check_array`), memory-mapped read-only or loaded."""
    check_array(path, shape, dtype)
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as exc:  # changed since the check
        raise InputError(f"{path} cannot be read ({exc}); {_REMAKE}") from None


def read_table(path, columns, rows=None):
    """An ECSV table of the data set with at least ``columns`` (and ``rows`` rows, if given).

    Raises
    ------
    InputError
        If the file is missing, is not a readable ECSV table, or lacks
        columns or rows. The message names the file.
    """
    try:
        table = QTable.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise InputError(f"{path} is missing; {_REMAKE}") from None
    except (OSError, ValueError) as exc:  # astropy's InconsistentTableError is one
        raise InputError(f"{path} is not a readable ECSV table ({exc}); {_REMAKE}") from None
    missing = [name for name in columns if name not in table.colnames]
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(missing)}; {_REMAKE}")
    if rows is not None and len(table) != rows:
        raise InputError(f"{path} has {len(table)} rows where {rows} belong; {_REMAKE}")
    return table
