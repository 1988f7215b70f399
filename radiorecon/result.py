"""The sky model that `~radiorecon.Reconstructor.predict` returns, and its FITS files.

`Reconstruction` owns its FITS reader and writer (`read_result`,
`write_result`), registered with astropy's unified I/O as
`~astropy.nddata.CCDData` registers its own, so ``Reconstruction.read`` and
``Reconstruction.write`` work for ``.fits`` paths.
"""

import os

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io import registry as io_registry
from astropy.nddata import NDDataRef, StdDevUncertainty
from astropy.wcs import WCS

from ._fits import bunit, card_key, clean_header, hdu_data, header_wcs, open_fits, parse_bunit
from ._files import atomic_path, check_new

__all__ = ["Reconstruction", "write_result", "read_result", "std_array"]

_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".fts.gz")
_FITS_SIGNATURE = b"SIMPLE  =                    T"
# Extensions with a fixed meaning; any other image extension is an extra map.
_LAYOUT = ("UNCERT", "MASK", "SAMPLES", "COMPONENTS")


class Reconstruction(NDDataRef):
    """A reconstructed sky model: an `~astropy.nddata.NDData` with its samples.

    ``data`` is the sky model (Jy/pixel when the input was Jy/beam),
    ``uncertainty`` a `~astropy.nddata.StdDevUncertainty` or `None` when the
    method gives none, ``mask`` is True where the input was blank, ``wcs`` is
    the input's 2-D celestial WCS and ``meta`` a `~astropy.io.fits.Header`
    with provenance cards (``RR*``). Arithmetic, slicing and unit handling
    come from `~astropy.nddata.NDDataRef`; ``write`` and ``read`` use the
    FITS layout of `~radiorecon.io.write_result`, which
    `~astropy.nddata.CCDData` also reads.

    Parameters
    ----------
    data, uncertainty, mask, wcs, meta, unit
        As for `~astropy.nddata.NDData`.
    samples : `~numpy.ndarray` or None
        ``(n_samples, ny, nx)`` individual draws, in ``unit``, when asked for.
    components : `~astropy.units.Quantity`, `~numpy.ndarray` or None
        ``(n_sources, ny, nx)`` per-source models from a deblending backend
        (``components[k]`` is source ``k``'s model, their sum the sky
        model), on the pixels of ``wcs``: a `~astropy.units.Quantity` in
        the model's unit as `~radiorecon.Reconstructor.predict` and
        `read_result` make them (a plain array when there is no unit, and
        then taken to be in ``unit``).
        `~radiorecon.catalog.deblended_catalog` measures them.
    extras : dict of str to `~astropy.units.Quantity` or `~numpy.ndarray`
        Further ``(ny, nx)`` maps from the method (e.g. ``residual``), each
        in its own unit (a plain array when the input had none).
    """

    def __init__(self, data, *args, samples=None, components=None, extras=None, **kwargs):
        super().__init__(data, *args, **kwargs)
        shape = np.shape(self.data)
        for name, arr in (("samples", samples), ("components", components)):
            if arr is not None and np.shape(arr)[1:] != shape:
                raise ValueError(
                    f"{name} of shape {np.shape(arr)} do not match the data's shape {shape}"
                )
        self.samples = samples
        self.components = components
        self.extras = dict(extras or {})

    @property
    def n_samples(self):
        """Number of stored samples (0 when none were kept)."""
        return 0 if self.samples is None else len(self.samples)

    def plot(self, dirty=None, **kwargs):
        """Draw the sky model, its uncertainty and residual on sky axes.

        See `radiorecon.visualization.plot_reconstruction`, which takes the
        same arguments and returns the `~matplotlib.figure.Figure`.
        """
        from .visualization import plot_reconstruction

        return plot_reconstruction(self, dirty, **kwargs)

    def _slice(self, item):
        kwargs = super()._slice(item)
        from astropy.wcs import WCS

        if isinstance(self.wcs, WCS):
            # Keep a FITS WCS (as CCDData does), so slices can be written.
            kwargs["wcs"] = self.wcs[item]
        planes = (slice(None),) + (item if isinstance(item, tuple) else (item,))
        if self.samples is not None:
            kwargs["samples"] = self.samples[planes]
        if self.components is not None:
            kwargs["components"] = self.components[planes]
        kwargs["extras"] = {key: value[item] for key, value in self.extras.items()}
        return kwargs


def std_array(nddata, unit=None):
    """The standard deviation of an NDData's uncertainty as a float array, or None.

    Parameters
    ----------
    nddata : `~astropy.nddata.NDData`
        With any uncertainty astropy can represent as a standard deviation.
    unit : `~astropy.units.Unit`, optional
        Unit of the numbers returned; by default the data's. The
        uncertainty's own unit, when it has one, is converted (NDData only
        accepts one that converts to the data's).
    """
    sigma = nddata.uncertainty
    if sigma is None:
        return None
    if not isinstance(sigma, StdDevUncertainty):
        sigma = sigma.represent_as(StdDevUncertainty)
    array = np.asarray(sigma.array, dtype=float)
    have = sigma.unit if sigma.unit is not None else nddata.unit
    want = unit if unit is not None else nddata.unit
    if have is not None and want is not None:
        array = array * have.to(want)
    return array


def write_result(result, path, *, overwrite=False, samples=False, extras=False, components=False):
    """Write an image or reconstruction to a FITS file in CCDData's layout.

    The primary HDU holds ``result.data`` with ``result.meta``, the WCS
    cards and ``BUNIT``; then come an ``UNCERT`` extension (standard
    deviations, ``UTYPE='StdDevUncertainty'``), a ``MASK`` extension (uint8,
    1 = masked), with ``samples=True`` a ``SAMPLES`` extension
    ``(n_samples, ny, nx)`` and with ``components=True`` a ``COMPONENTS``
    extension ``(n_sources, ny, nx)``, each only when present, and each image
    extension with the WCS cards too (the cube of components with a third,
    ``SOURCE`` axis whose value is the source's ``id`` in
    `~radiorecon.catalog.deblended_catalog`: 1 for the first plane). ``BUNIT`` is written as radio viewers
    expect it (``Jy/pixel``, ``Jy/beam``); a dimensionless unit is written as
    no ``BUNIT``, as CCDData does. The file is written to a
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
    components : bool, optional
        Also write ``result.components`` (a deblending backend's per-source
        models) when it is not None, with their own ``BUNIT``.
    extras : bool, optional
        Also write each map of ``result.extras`` (e.g. CLEAN's ``residual``
        and ``restored``) as an extension named after its key in capitals,
        with the map's own ``BUNIT``.

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
    check_new(path, overwrite)  # before the work, not only after
    data = np.asarray(result.data)
    header, wcs_cards = result_header(result.meta, result.wcs, result.unit, data.ndim)
    wcs = result.wcs

    def extension(array, name, cards=(), unit=None):
        return fits.ImageHDU(array, extension_header(cards, unit, wcs_cards if np.ndim(array) == data.ndim else None),
                             name=name)

    hdus = fits.HDUList([fits.PrimaryHDU(data, header)])
    uncertainty = result.uncertainty
    if uncertainty is not None:
        if not isinstance(uncertainty, StdDevUncertainty):
            raise ValueError(f"only a StdDevUncertainty can be written, not {type(uncertainty).__name__}")
        sigma = np.asarray(uncertainty.array)
        if uncertainty.unit is not None and result.unit is not None:
            sigma = (sigma * uncertainty.unit).to_value(result.unit)
        hdus.append(extension(sigma, "UNCERT", [("UTYPE", "StdDevUncertainty")], result.unit))
    if result.mask is not None:
        mask = np.broadcast_to(np.asarray(result.mask, dtype=bool), data.shape)
        hdus.append(extension(mask.astype(np.uint8), "MASK"))
    if samples and getattr(result, "samples", None) is not None:
        hdus.append(extension(np.asarray(result.samples), "SAMPLES", unit=result.unit))
    cube = getattr(result, "components", None) if components else None
    if cube is not None:
        cards = _unit_cards(getattr(cube, "unit", result.unit))
        if wcs is not None and data.ndim == 2:
            source = wcs.sub([1, 2, 0])
            source.wcs.ctype[2], source.wcs.crpix[2], source.wcs.crval[2] = "SOURCE", 1, 1
            cards.extend(source.to_header(relax=True), update=True, useblanks=False)
        hdus.append(fits.ImageHDU(np.asarray(getattr(cube, "value", cube)), cards, name="COMPONENTS"))
    for key, value in (getattr(result, "extras", None) or {}).items() if extras else ():
        if key.upper() in _LAYOUT or key.upper() == "PRIMARY":
            raise ValueError(f"extra map {key!r} would take the name of the {key.upper()} extension")
        hdus.append(extension(np.asarray(getattr(value, "value", value)), key.upper(),
                              unit=getattr(value, "unit", None)))

    with atomic_path(path, overwrite=overwrite) as tmp:
        hdus.writeto(tmp)


def result_header(meta, wcs, unit, ndim):
    """The primary header `write_result` writes, without its structural cards.

    Parameters
    ----------
    meta : `~astropy.io.fits.Header` or mapping
        The result's ``meta``.
    wcs : `~astropy.wcs.WCS` or None
        The result's WCS.
    unit : `~astropy.units.Unit` or None
        The result's unit (``BUNIT``).
    ndim : int
        Number of data axes.

    Returns
    -------
    header, wcs_cards : `~astropy.io.fits.Header`
        The header (meta, WCS cards, ``BUNIT``) and the WCS cards alone,
        for the image extensions (`extension_header`).

    Raises
    ------
    ValueError
        As for `write_result`.
    """
    header = _meta_header(meta)
    wcs_cards = fits.Header()
    if wcs is not None:
        if not isinstance(wcs, WCS) or wcs.naxis != ndim:
            raise ValueError(f"cannot write a {type(wcs).__name__} for {ndim}-D data to FITS")
        wcs_cards = wcs.to_header(relax=True)
    header.extend(wcs_cards, update=True, useblanks=False)
    header.update(_unit_cards(unit))
    return header, wcs_cards


def extension_header(cards=(), unit=None, wcs_cards=None):
    """The header of an image extension as `write_result` writes it.

    ``cards`` first, then ``BUNIT`` of ``unit`` and the WCS cards (from
    `result_header`) of an extension with the data's axes.
    """
    # Every image extension carries the WCS, so viewers show coordinates on it too.
    ext = fits.Header(list(cards))
    ext.update(_unit_cards(unit))
    if wcs_cards is not None:
        ext.extend(wcs_cards, update=True, useblanks=False)
    return ext


def _unit_cards(unit):
    text = bunit(unit)
    return fits.Header([("BUNIT", text)] if text else [])


def read_result(path):
    """Read a reconstruction written by `write_result`.

    Parameters
    ----------
    path : str, os.PathLike, file-like or `~astropy.io.fits.HDUList`
        The FITS file.

    Returns
    -------
    result : `~radiorecon.result.Reconstruction`
        Data, ``UNCERT``, ``MASK``, ``SAMPLES`` and ``COMPONENTS`` (with
        its ``BUNIT``) when present, any other
        image extension of the data's shape as an ``extras`` map (with its
        ``BUNIT``), the celestial WCS, the unit from ``BUNIT`` (None when
        absent) and as ``meta`` the primary header without its structural
        and WCS cards.

    Raises
    ------
    FileNotFoundError, ValueError
        As for `radiorecon.io.read_image`.
    """
    with open_fits(path) as (hdul, name):
        data, header = hdu_data(hdul[0], name)
        if data is None:
            raise ValueError(f"{name} has no data in its primary HDU")
        extensions = {key: hdu_data(hdul[key], name) for key in _LAYOUT if key in hdul}
        extras = {}
        for hdu in hdul[1:]:
            if hdu.is_image and hdu.name not in _LAYOUT and hdu.shape == data.shape:
                array, ext_header = hdu_data(hdu, name)
                unit = parse_bunit(ext_header.get("BUNIT"), name)
                extras[hdu.name.lower()] = array if unit is None else u.Quantity(array, unit, copy=False)
    arrays = {key: array for key, (array, _) in extensions.items()}
    utype = extensions["UNCERT"][1].get("UTYPE", "StdDevUncertainty") if "UNCERT" in arrays else None
    if utype not in (None, "StdDevUncertainty"):
        raise ValueError(f"{name}: cannot read an UNCERT extension of type {utype!r}")
    wcs = header_wcs(header, name)
    components = arrays.get("COMPONENTS")
    if components is not None:
        unit = parse_bunit(extensions["COMPONENTS"][1].get("BUNIT"), name)
        components = components if unit is None else u.Quantity(components, unit, copy=False)
    return Reconstruction(
        data,
        uncertainty=StdDevUncertainty(arrays["UNCERT"]) if "UNCERT" in arrays else None,
        mask=arrays["MASK"].astype(bool) if "MASK" in arrays else None,
        wcs=None if wcs is None else wcs.celestial,
        meta=clean_header(header),
        unit=parse_bunit(header.get("BUNIT"), name),
        samples=arrays.get("SAMPLES"),
        components=components,
        extras=extras,
    )


def _meta_header(meta):
    """A FITS header from NDData meta, without axis and scaling cards."""
    if isinstance(meta, fits.Header):
        return clean_header(meta)
    header = fits.Header()
    for key, value in (meta or {}).items():
        try:
            header[card_key(key)] = value
        except ValueError as exc:
            raise ValueError(f"meta[{key!r}] cannot be written to a FITS header: {exc}") from exc
    return clean_header(header)


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
