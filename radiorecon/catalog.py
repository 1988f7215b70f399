"""Source catalogs from sky models and images, built on `photutils.segmentation`.

`find_sources` measures a catalog of any image, `find_sources_in_model`
catalogs a reconstructed sky model as the benchmarks do (detection in the
model seen through the clean beam, against the dirty image's noise), `match`
pairs a catalog one-to-one with another (e.g. the true sources of a
simulation) and `to_regions` turns it into `regions` shapes for DS9 or CASA.
`deblended_catalog` measures the per-source models of a deblending backend
(``vae-deblend``) instead of detecting sources.

`model_catalog` is the recipe behind `find_sources_in_model` on plain
arrays in Jy/beam and Jy/pixel. It is internal (not in ``__all__`` and not
a stable API), and public by name only so that `radiorecon.benchmark` can
score the truth and the dirty image with the very same recipe.
"""

import json
import warnings
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.table import QTable
from astropy.utils.exceptions import AstropyUserWarning
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
from photutils.utils import NoDetectionsWarning
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ._noise import robust_std
from ._validate import FWHM_PER_SIGMA, check_int
from .exceptions import InputError, RadioreconWarning
from .result import std_array

__all__ = ["find_sources", "find_sources_in_model", "deblended_catalog", "match", "Match", "to_regions",
           "DEFAULT_THRESHOLD", "default_threshold"]

#: Detection threshold (S/N) of the catalogs of a model that records no
#: ``catalog_threshold`` (one calibrated on a split of simulated images).
DEFAULT_THRESHOLD = 5.0


def default_threshold(model):
    """The detection threshold a model's catalogs use unless told otherwise.

    Its ``catalog_threshold`` (`~radiorecon.Reconstructor.catalog_threshold`)
    where it has one, else `DEFAULT_THRESHOLD`: what ``predict --catalog``,
    the demo and the benchmark's default rows use, so that all three agree.

    Parameters
    ----------
    model : `~radiorecon.Reconstructor` or None

    Returns
    -------
    float
        In units of the dirty image's noise.
    """
    stored = getattr(model, "catalog_threshold", None)
    return float(stored) if stored else DEFAULT_THRESHOLD

_JY_PIX = u.Jy / u.pix
_JY_BEAM = u.Jy / u.beam

# A noise below this fraction of the peak is round-off, not thermal noise: no
# interferometric image reaches a dynamic range of 1e7.
_MIN_NOISE_FRACTION = 1e-7


def _check_threshold(threshold):
    """``threshold`` as a float if it is a positive, finite S/N."""
    wrong_type = f"threshold must be a number (an S/N such as 5), not {threshold!r}"
    if isinstance(threshold, (bool, np.bool_, str)) or np.ndim(threshold) != 0:
        raise TypeError(wrong_type)
    try:
        value = float(threshold)
    except TypeError:  # None, or a Quantity with a unit
        raise TypeError(wrong_type) from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"threshold must be a positive, finite S/N (such as 5), not {threshold!r}")
    return value


def _check_noise(noise, given, shape):
    """Refuse a given noise (float or map, plain values) that no pixel can use."""
    if np.ndim(noise) == 0:
        if not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be positive and finite, not {given!r}")
        return
    try:
        np.broadcast_shapes(np.shape(noise), shape)
    except ValueError:
        raise ValueError(
            f"the noise map has shape {np.shape(noise)}, which does not fit the image's {shape}"
        ) from None
    if np.any(noise < 0):
        raise ValueError("the noise map has negative pixels: pass a standard deviation (>= 0)")
    if not np.any(np.isfinite(noise) & (noise > 0)):
        raise ValueError("the noise map has no positive, finite pixel: no S/N can be formed")


def _values(x, unit, name):
    """Plain float array of ``x`` in ``unit`` (``x`` may be a Quantity)."""
    if isinstance(x, u.Quantity):
        if unit is None:
            if x.unit.physical_type != "dimensionless":
                raise ValueError(f"{name} has unit {x.unit} but the image has none")
            return x.to_value(u.one)
        return x.to_value(unit)
    return np.asarray(x, dtype=float)


def _unpack(image, mask):
    """Data, unit, mask, WCS and StdDev uncertainty of any supported input."""
    if isinstance(image, NDData):
        unit = image.unit
        data = _values(image.data, unit, "data")
        bad = np.zeros(data.shape) if image.mask is None else image.mask
        # Variance and inverse-variance maps convert; the noise is a std in the data's unit.
        sigma = std_array(image)
        wcs = image.wcs
    else:
        unit = image.unit if isinstance(image, u.Quantity) else None
        data = _values(image, unit, "image")
        bad = np.ma.getmaskarray(image) if np.ma.isMaskedArray(image) else np.zeros(data.shape)
        sigma = wcs = None
    if data.ndim != 2:
        raise ValueError(f"find_sources needs a 2-D image, got shape {data.shape}")
    bad = np.asarray(bad, bool)
    if mask is not None:
        bad = bad | np.asarray(mask, bool)
    if wcs is not None and getattr(wcs, "naxis", 2) > 2:
        wcs = wcs.celestial
    return data, unit, np.broadcast_to(bad, data.shape), wcs, sigma


def _segment(data, noise, bad, threshold, npixels, connectivity, deblend):
    """Segmentation image of the S/N map, None if nothing is detected."""
    if bad.all():
        return None
    # Dividing only the good pixels keeps 0/0 and x/0 from warning.
    snr = np.divide(data, noise, out=np.zeros(data.shape), where=~bad)
    # photutils reports empty maps and deblending-mode fallbacks as warnings;
    # both are ordinary outcomes here (and errors under filterwarnings=error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        segm = detect_sources(snr, threshold, npixels, connectivity=connectivity, mask=bad)
        # An int limits deblending to maps of few segments: past it they are
        # noise peaks, which deblending would split for a second per map.
        if segm is not None and deblend and (deblend is True or segm.n_labels <= deblend):
            segm = deblend_sources(snr, segm, npixels, connectivity=connectivity, progress_bar=False)
    return segm


def find_sources(
    image,
    threshold=5.0,
    *,
    npixels=5,
    deblend=True,
    noise=None,
    mask=None,
    connectivity=8,
    match_radius=2.0,
):
    """Detect and measure the sources of an image or sky model.

    Pixels whose signal-to-noise ratio ``data / noise`` exceeds
    ``threshold`` are grouped into sources of at least ``npixels``
    connected pixels (`photutils.segmentation.detect_sources`), optionally
    split by `photutils.segmentation.deblend_sources`, and measured by
    `photutils.segmentation.SourceCatalog`.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, `~numpy.ndarray` or `~astropy.units.Quantity`
        The 2-D image (a `~radiorecon.Reconstruction`, a
        `~astropy.nddata.CCDData`, ...), e.g. in Jy/pixel or Jy/beam. Its ``mask``,
        ``uncertainty``, ``wcs`` and (for a reconstruction) ``samples`` are used.
    threshold : float, optional
        Detection threshold in units of the per-pixel noise (S/N), > 0.
    npixels : int, optional
        Minimum number of connected pixels above ``threshold`` in a source.
    deblend : bool or int, optional
        Whether to split blended sources with multi-thresholding; an int
        ``N`` splits them only when at most ``N`` sources were found (a
        threshold deep in the noise finds hundreds of noise peaks, whose
        deblending costs about a second on a 512x512 image and changes
        nothing that matters).
    noise : float, `~numpy.ndarray` or `~astropy.units.Quantity`, optional
        Per-pixel noise (scalar > 0, or map >= 0 whose zero pixels are left
        out) in the image's unit, used when the image has no uncertainty. By
        default it is the MAD-based standard deviation of the unmasked pixels
        (``1.4826 * median(|x - median(x)|)``).
    mask : bool `~numpy.ndarray`, optional
        True where pixels must be ignored, in addition to ``image.mask``
        and non-finite pixels.
    connectivity : {8, 4}, optional
        Whether pixels touching at corners (8) or only at edges (4) connect.
    match_radius : float, optional
        Distance in pixels within which a detection in a sample counts as the
        same source, for ``detection_probability``.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        One row per source: ``id`` (from 1); ``x``, ``y`` (0-based pixel
        centroid); ``sky_centroid`` (`~astropy.coordinates.SkyCoord`, only
        when the image has a WCS); ``flux``, ``flux_err`` (sum of the
        source's pixels and its error) and ``peak`` (brightest pixel), in
        the image's unit; ``snr`` (``flux / flux_err``); ``a``, ``b``
        (semimajor and semiminor standard deviation, pix); ``theta``
        (major axis counter-clockwise from +x, deg in [0, 180)); and, when
        the image has 2 or more samples, ``detection_probability`` (fraction
        of samples with a detection within ``match_radius``). ``meta``
        holds ``threshold``, ``npixels``, ``noise_method`` ('uncertainty',
        'given' or 'robust'), for a scalar noise ``noise`` (a
        `~astropy.units.Quantity` in the image's unit, a float for an image
        without one) and, with samples, ``match_radius`` (pix). With a
        celestial WCS it also holds the pixel grid's orientation at the
        image centre, which `to_regions` uses: ``pixel_scale`` (arcsec/pix,
        the geometric mean of the two axes), ``north_angle`` (deg: the
        direction of north on the pixel grid, counter-clockwise from +x; 90
        for north up) and ``mirrored`` (bool: True when east is clockwise
        from north, i.e. to the right for north up, unlike the sky as seen
        from Earth). Written as ECSV, these Quantities keep their units. An
        empty table with these columns is returned when nothing is detected.

    Raises
    ------
    ValueError
        If ``threshold`` is not positive and finite, ``noise`` is zero,
        negative or not finite, or the robust noise estimate is zero, as for
        a sparse sky model without noise (pass ``noise=`` then).
    TypeError
        If ``threshold`` is not a number, ``npixels`` not an integer or
        ``deblend`` neither a bool nor an integer.

    Notes
    -----
    ``flux_err`` adds the pixel noise in quadrature, as if pixels were
    independent; in a dirty image, whose noise is correlated over the beam,
    it underestimates the true error.
    """
    threshold = _check_threshold(threshold)
    npixels = check_int(npixels, "npixels", minimum=1)
    if isinstance(deblend, (bool, np.bool_)):
        deblend = bool(deblend)
    else:
        deblend = check_int(deblend, "deblend (True, False or a number of sources)", minimum=1)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity!r}")
    data, unit, bad, wcs, sigma = _unpack(image, mask)
    bad = bad | ~np.isfinite(data)
    if sigma is not None:
        method, noise = "uncertainty", sigma
    elif noise is not None:
        given, noise = noise, _values(noise, unit, "noise")
        _check_noise(noise, given, data.shape)
        method = "given"
    else:
        method, noise = "robust", _image_noise(data, bad)
    meta = {"threshold": threshold, "npixels": npixels, "noise_method": method}
    if np.ndim(noise) == 0:
        meta["noise"] = float(noise) if unit is None else float(noise) * unit
    if wcs is not None:
        meta.update(_orientation(wcs, data.shape))
    noise = np.broadcast_to(noise, data.shape)
    # Pixels without a usable noise have no S/N; leave them out.
    bad = bad | ~(np.isfinite(noise) & (noise > 0))

    segm = _segment(data, noise, bad, threshold, npixels, connectivity, deblend)
    table = _measure(data, noise, bad, segm, wcs, unit, meta)

    samples = getattr(image, "samples", None)
    if samples is not None and len(samples) >= 2:
        found = np.zeros(len(table), int)
        positions = np.column_stack([table["x"], table["y"]])
        for sample in samples if len(table) else ():
            found += _found_in(
                _values(sample, unit, "samples"), positions, noise, bad, match_radius,
                threshold, npixels, connectivity, deblend,
            )
        table["detection_probability"] = found / len(samples)
        table.meta["match_radius"] = match_radius * u.pix
    return table


def find_sources_in_model(model, dirty=None, threshold=3.0, *, beam=None, noise=None, npixels=5,
                          deblend=True, match_radius=2.0):
    """Catalog a reconstructed sky model as a restored image shows it.

    A sky model in Jy/pixel has no noise of its own to measure a detection
    against (its per-pixel uncertainty vanishes wherever the model is empty),
    so it is seen as astronomers see a CLEAN model: convolved with the clean
    beam (peak 1, giving Jy/beam), and detected with `find_sources` where it
    exceeds ``threshold`` times the noise of the dirty image it came from.
    The samples of a `~radiorecon.Reconstruction` are treated alike and give
    each source's ``detection_probability``. A reconstruction that carries
    its own restored image (``extras["restored"]``, as CLEAN's does) is
    detected there instead. This is how `radiorecon.benchmark` and
    ``radiorecon demo`` catalog every method.

    Parameters
    ----------
    model : `~astropy.nddata.NDData`
        The sky model (a `~radiorecon.Reconstruction`) in Jy/pixel or any
        flux per pixel (mJy/pixel, ...), with a WCS for sky positions. A
        model without a unit is taken to be in Jy/pixel, with a warning.
    dirty : image, optional
        The dirty image it was reconstructed from (anything
        `~radiorecon.io.read_image` reads), in Jy/beam or any flux per beam:
        the default for ``beam`` (its ``BMAJ``/``BMIN``/``BPA`` cards) and
        ``noise`` (the robust standard deviation of its pixels). Without a
        unit it is taken to be in Jy/beam, with a warning.
    threshold : float, optional
        Detection threshold in units of ``noise`` (S/N), > 0.
    beam : `radio_beam.Beam`, optional
        The clean beam; by default the dirty image's, or else the input beam
        that `~radiorecon.Reconstructor.predict` records in the model's
        header (``RRBMAJ``, ``RRBMIN``, ``RRBPA``).
    noise : float or `~astropy.units.Quantity`, optional
        Noise of the dirty image, in any flux per beam (a float is taken as
        Jy/beam).
    npixels, deblend, match_radius
        As for `find_sources`.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        The columns of `find_sources`, with ``flux`` (Jy) measured on the
        model in an aperture of one beam FWHM radius around each source
        (pixels near two sources go to the nearer one; on a restored image,
        divided by the beam's share of the aperture) and ``flux_err`` (Jy)
        the standard deviation of that flux over the samples, times the
        model's calibrated uncertainty scale (``RRUSCALE``, 1 if absent),
        with the model's flux error floor times ``noise`` added in
        quadrature (``RRFFLOOR``, 0 if absent; NaN without two or more
        samples and without a floor); with samples, or with a calibrated
        model (``RRDCAL``), ``detection_probability`` (the fraction of
        samples in which the source is found, times the calibrated
        probability that a source of its S/N is real); ``peak``
        (Jy/beam) is the brightest pixel of the restored model and ``snr``
        is ``peak / noise``. Whatever the
        units of the inputs, the catalog is in Jy and Jy/beam. ``meta`` adds
        ``noise`` (Jy/beam), ``beam_fwhm_pix`` (pix) and ``detected_in``.

    Raises
    ------
    ValueError
        If the model is not 2-D, has no WCS pixel scale, if no beam or no
        noise can be found, if the noise is not positive and finite, or if
        ``threshold`` is not a positive, finite number.
    astropy.units.UnitConversionError
        If the model is not in a flux per pixel, or the dirty image or
        ``noise`` not in a flux per beam.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales
    from scipy.signal import fftconvolve

    from .beam import beam_kernel
    from .io import get_beam, read_image

    threshold = _check_threshold(threshold)
    data = np.asarray(model.data if isinstance(model, NDData) else model, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"The sky model must be 2-D, not of shape {data.shape}")
    wcs = getattr(model, "wcs", None)
    if wcs is None:
        raise ValueError("The sky model has no WCS: its pixel scale is needed to draw the beam")
    # One factor takes the model (X/pixel) to Jy/pixel and the restored
    # image, in the model's flux per beam (X/beam), to Jy/beam.
    to_jy = _unit_factor(getattr(model, "unit", None), _JY_PIX, "the sky model")
    if dirty is not None:
        dirty = read_image(dirty)
    if beam is None and dirty is not None:
        beam = get_beam(dirty)
    if beam is None:
        meta = getattr(model, "meta", {}) or {}
        if all(key in meta for key in ("RRBMAJ", "RRBMIN", "RRBPA")):
            from radio_beam import Beam

            beam = Beam(major=meta["RRBMAJ"] * u.deg, minor=meta["RRBMIN"] * u.deg, pa=meta["RRBPA"] * u.deg)
    if beam is None:
        raise ValueError("No clean beam: pass beam= or a dirty image with BMAJ/BMIN/BPA cards")
    if noise is None:
        if dirty is None:
            raise ValueError("No noise level: pass noise= (Jy/beam) or the dirty image")
        noise = robust_std(dirty.data, mask=dirty.mask) * _unit_factor(dirty.unit, _JY_BEAM, "the dirty image")
        if not noise > 0:
            raise ValueError("The dirty image's robust noise is 0 (is it blank?): pass noise= (Jy/beam)")
    else:
        given = noise
        if isinstance(noise, u.Quantity):
            noise = noise.value * _unit_factor(noise.unit, _JY_BEAM, "noise")
        if np.ndim(noise) != 0 or not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive, finite number (Jy/beam), not {given!r}")
    noise = float(noise)

    pixel = proj_plane_pixel_scales(wcs.celestial if hasattr(wcs, "celestial") else wcs)[1] * u.deg
    fwhm_px = float((beam.major / pixel).decompose())
    kernel = beam_kernel(beam, pixel)
    mask = getattr(model, "mask", None)
    data = np.nan_to_num(data) * to_jy
    if mask is not None:
        data = np.where(np.asarray(mask, bool), 0.0, data)
    extras = getattr(model, "extras", None) or {}
    meta = getattr(model, "meta", None) or {}
    if "restored" in extras:
        restored = np.nan_to_num(_plain(extras["restored"], _JY_BEAM, to_jy))
        catalog = model_catalog(restored, wcs, noise, threshold, restored, fwhm_px, psf=kernel,
                                flux_err_floor=float(meta.get("RRFFLOOR", 0.0)) * noise, npixels=npixels,
                                deblend=deblend, match_radius=match_radius)
        catalog.meta["detected_in"] = "the method's restored image"
    else:
        samples = getattr(model, "samples", None)
        models = None if samples is None else [np.nan_to_num(_plain(smp, _JY_PIX, to_jy)) for smp in samples]
        detect = fftconvolve(data, kernel, mode="same")
        restored_samples = None if models is None else [fftconvolve(m, kernel, mode="same") for m in models]
        # A calibrated model's samples spread too little by the same factor
        # as its std (RRUSCALE), so their flux spread is scaled by it too.
        catalog = model_catalog(detect, wcs, noise, threshold, data, fwhm_px, samples=restored_samples,
                                flux_samples=models, flux_err_scale=float(meta.get("RRUSCALE", 1.0)),
                                flux_err_floor=float(meta.get("RRFFLOOR", 0.0)) * noise,
                                npixels=npixels, deblend=deblend, match_radius=match_radius)
        catalog.meta["detected_in"] = "the model convolved with the clean beam"
    if meta.get("RRDCAL"):
        catalog["detection_probability"] = calibrated_probability(catalog, json.loads(meta["RRDCAL"]))
    return catalog


def calibrated_probability(catalog, coefficients):
    """The calibrated probability that each source of a catalog is real (a `detection_calibration`).

    ``fraction**c / (1 + exp(-(a + b ln(snr))))`` for coefficients ``[a,
    b, c]`` (``c`` = 1 for ``[a, b]``), with ``fraction`` the catalog's
    ``detection_probability`` (of the samples), or 1 without it.
    """
    a, b, c = (*coefficients, 1.0) if len(coefficients) == 2 else coefficients
    snr = np.asarray(catalog["snr"], float)
    fraction = np.asarray(catalog["detection_probability"], float) if "detection_probability" in catalog.colnames \
        else np.ones(len(catalog))
    with np.errstate(divide="ignore"):
        z = a + b * np.log(snr)
    return fraction ** c / (1.0 + np.exp(-z))


def deblended_catalog(result):
    """The sources of a deblended reconstruction as a table, one row per component.

    Parameters
    ----------
    result : `~radiorecon.Reconstruction`
        From a backend with the ``deblend`` capability (``components``
        set); errors are read from the ``DBFE<i>``, ``DBXE<i>``, ``DBYE<i>``,
        ``DBAE<i>``, ``DBBE<i>``, ``DBTE<i>`` cards of ``vae-deblend`` when
        present (else NaN).

    Returns
    -------
    `~astropy.table.QTable`
        ``id`` (from 1: the ``SOURCE`` axis of the ``COMPONENTS`` extension
        `~radiorecon.io.write_result` writes); ``x``, ``y`` (flux-weighted
        centroid, 0-based pixels) with ``x_err``, ``y_err``;
        ``sky_centroid`` when the result has a celestial WCS; ``flux`` (sum
        of the component's pixels, in the model's unit times pixel: Jy for
        Jy/pixel) with ``flux_err``; ``a``, ``b`` (semi-major and
        semi-minor standard deviations, pixels) and ``theta`` (major axis
        counter-clockwise from +x, deg) from the second moments, with
        ``a_err``, ``b_err``, ``theta_err``; and
        ``blendedness`` (`radiorecon.simulate.blends.blendedness` of the
        components: the fraction of a source's light under its neighbours).

    Raises
    ------
    InputError
        If ``result`` has no components.
    """
    from .simulate.blends import blendedness

    components = getattr(result, "components", None)
    if components is None:
        raise InputError("this result has no per-source components: predict with a 'deblend' backend")
    unit = getattr(components, "unit", result.unit)
    comps = np.nan_to_num(np.asarray(getattr(components, "value", components), np.float64))
    k, ny, nx = comps.shape
    flux = comps.sum(axis=(1, 2))
    yy, xx = np.mgrid[:ny, :nx]
    safe = np.where(flux != 0, flux, np.nan)
    x = (comps * xx).sum(axis=(1, 2)) / safe
    y = (comps * yy).sum(axis=(1, 2)) / safe
    dx, dy = xx[None] - x[:, None, None], yy[None] - y[:, None, None]
    cxx = (comps * dx * dx).sum(axis=(1, 2)) / safe
    cyy = (comps * dy * dy).sum(axis=(1, 2)) / safe
    cxy = (comps * dx * dy).sum(axis=(1, 2)) / safe
    half_trace, diff = (cxx + cyy) / 2, np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    meta = result.meta or {}
    # The flux errors are in normalised units: RRSCALE brings them to the model's.
    scale = float(meta.get("RRSCALE", 1.0))

    def card(name):
        return np.array([float(meta.get(f"{name}{i}", np.nan)) for i in range(1, k + 1)])

    flux_unit = u.one if unit is None else (unit * u.pix if (unit * u.pix).is_equivalent(u.Jy) else unit)
    table = QTable()
    table["id"] = np.arange(1, k + 1)
    table["x"], table["y"] = x, y
    table["x_err"], table["y_err"] = card("DBXE"), card("DBYE")
    wcs = getattr(result, "wcs", None)
    if wcs is not None and getattr(wcs, "has_celestial", False):
        table["sky_centroid"] = wcs.pixel_to_world(x, y)
    table["flux"] = flux * flux_unit
    table["flux_err"] = card("DBFE") * scale * flux_unit
    table["a"] = np.sqrt(np.clip(half_trace + diff, 0, None))
    table["b"] = np.sqrt(np.clip(half_trace - diff, 0, None))
    table["a_err"], table["b_err"] = card("DBAE"), card("DBBE")
    table["theta"] = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180 * u.deg
    table["theta_err"] = card("DBTE") * u.deg
    table["blendedness"] = blendedness(comps)
    return table


def _unit_factor(unit, target, what):
    """Factor taking values in ``unit`` to ``target``; None is taken as ``target``, with a warning."""
    if unit is None:
        warnings.warn(f"{what} has no unit; assuming {target:generic}", RadioreconWarning, stacklevel=3)
        return 1.0
    try:
        return unit.to(target)
    except u.UnitConversionError:
        per = "pixel" if target == _JY_PIX else "beam"
        raise u.UnitConversionError(
            f"{what} is in {unit:generic}, not a flux per {per} such as {target:generic}"
        ) from None


def _plain(values, unit, factor):
    """Float array of ``values`` in ``unit``: a Quantity is converted, plain values scaled by ``factor``."""
    if isinstance(values, u.Quantity):
        return values.to_value(unit)
    return np.asarray(values, dtype=float) * factor


def model_catalog(detect, wcs, noise, threshold, flux_image, radius, *, psf=None, samples=None,
                  flux_samples=None, flux_err_scale=1.0, flux_err_floor=0.0, npixels=5, deblend=True,
                  match_radius=2.0):
    """Detect in ``detect`` (Jy/beam) against ``noise``; fluxes (Jy) in apertures on ``flux_image``.

    The one recipe behind `find_sources_in_model` and the benchmark's rows
    (truth limit, dirty image, methods); internal, see the module docstring.

    Parameters
    ----------
    detect : `~numpy.ndarray`
        The image to detect in, plain floats in Jy/beam.
    wcs : `~astropy.wcs.WCS` or None
        Its celestial WCS.
    noise : float
        The noise of the dirty image, Jy/beam (> 0).
    threshold : float
        Detection threshold in units of ``noise``.
    flux_image : `~numpy.ndarray`
        Where fluxes are measured: plain floats in Jy/pixel, or in Jy/beam
        with ``psf`` given, whose apertures divide those on ``flux_image``.
    radius : float
        Aperture radius, pix (one beam FWHM).
    psf : `~numpy.ndarray`, optional
        Peak-1 beam centred at ``(ny // 2, nx // 2)``.
    samples, flux_samples : list of `~numpy.ndarray`, optional
        Samples of ``detect`` (for ``detection_probability``) and of
        ``flux_image`` (for ``flux_err``), in the same units.
    flux_err_scale : float
        Factor on the samples' flux spread (a model's calibrated
        ``uncertainty_scale``).
    flux_err_floor : float
        Flux error (Jy) added in quadrature to that spread, or alone
        without samples; 0 for none.
    npixels, deblend, match_radius
        As for `find_sources`.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        As `find_sources_in_model` returns it, without ``detected_in``.
    """
    if samples is not None:
        from .result import Reconstruction

        image = Reconstruction(detect, wcs=wcs, unit=_JY_BEAM, samples=samples)
    else:
        image = NDData(detect, wcs=wcs, unit=_JY_BEAM)
    found = find_sources(image, threshold=threshold, noise=noise, npixels=npixels, deblend=deblend,
                         match_radius=match_radius)
    share = 1.0
    if psf is not None:
        cy, cx = np.array(psf.shape) // 2
        share = _aperture_sum(psf, [cx], [cy], radius)[0]
    found["flux"] = _aperture_sum(flux_image, found["x"], found["y"], radius) / share * u.Jy
    if flux_samples is not None and len(flux_samples) >= 2 and len(found):
        sums = [_aperture_sum(f, found["x"], found["y"], radius) / share for f in flux_samples]
        found["flux_err"] = np.hypot(flux_err_scale * np.std(sums, axis=0, ddof=1), flux_err_floor) * u.Jy
    elif flux_err_floor > 0:
        found["flux_err"] = np.full(len(found), float(flux_err_floor)) * u.Jy
    else:
        found["flux_err"] = np.full(len(found), np.nan) * u.Jy
    found["snr"] = np.asarray(u.Quantity(found["peak"]).value, float) / noise
    found.meta["noise"] = noise * _JY_BEAM
    found.meta["beam_fwhm_pix"] = radius * u.pix
    return found


def _aperture_sum(image, x, y, radius):
    """Sum of ``image`` within ``radius`` of each position, pixels shared by
    neighbours going to the nearest one (so blended sources are not counted twice)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return np.zeros(0)
    r = int(np.ceil(radius))
    y0, y1 = max(0, int(y.min()) - r), min(image.shape[0], int(y.max()) + r + 2)
    x0, x1 = max(0, int(x.min()) - r), min(image.shape[1], int(x.max()) + r + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    # The nearest position of every pixel, within the radius (a k-d tree
    # keeps this linear in the pixels however many sources there are).
    distance, nearest = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([xx.ravel(), yy.ravel()]), distance_upper_bound=radius * (1 + 1e-9)
    )
    inside = np.isfinite(distance)
    cut = np.nan_to_num(image[y0:y1, x0:x1]).ravel()
    return np.bincount(nearest[inside], weights=cut[inside], minlength=len(x))


def _orientation(wcs, shape):
    """``pixel_scale`` (arcsec/pix), ``north_angle`` (deg) and ``mirrored`` of a celestial WCS.

    Measured at the image centre. Empty for a WCS without sky axes.
    """
    x0, y0 = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    centre, step_x, step_y = (wcs.pixel_to_world(x0 + dx, y0 + dy) for dx, dy in
                              ((0, 0), (1, 0), (0, 1)))
    if not isinstance(centre, SkyCoord):
        return {}
    # Local Jacobian d(east, north)/d(x, y) in arcsec/pix, from the offsets
    # of one pixel along x and y, over which the projection is linear.
    jac = np.empty((2, 2))
    for col, step in enumerate((step_x, step_y)):
        pa = centre.position_angle(step).to_value(u.rad)  # east of north
        sep = centre.separation(step).to_value(u.arcsec)
        jac[:, col] = sep * np.sin(pa), sep * np.cos(pa)
    det = np.linalg.det(jac)
    north = np.linalg.solve(jac, [0.0, 1.0])  # pixel direction of north
    return {
        "pixel_scale": float(np.sqrt(abs(det))) * u.arcsec / u.pix,
        "north_angle": float(np.degrees(np.arctan2(north[1], north[0])) % 360.0) * u.deg,
        # On the sky as seen from Earth (east left of north up) +x runs
        # west, so d(east)/dx < 0 and det < 0.
        "mirrored": bool(det > 0),
    }


def _image_noise(data, bad):
    """Robust standard deviation of the good pixels, checked to be a noise."""
    if bad.all():
        raise ValueError("every pixel is masked or not finite: no noise can be estimated")
    noise = robust_std(data, mask=bad)
    # A sparse sky model is exactly 0 almost everywhere; its MAD is 0 or
    # round-off, and an S/N from it would be meaningless.
    if not noise > _MIN_NOISE_FRACTION * np.max(np.abs(data[~bad])):
        raise ValueError(
            f"the robust noise estimate of the image is {noise:g}, as for a sparse "
            "sky model without noise; pass the per-pixel noise with noise="
        )
    return noise


def _measure(data, noise, bad, segm, wcs, unit, meta):
    """QTable of the sources of ``segm`` (empty, with all columns, if None)."""
    table = QTable(meta=meta)
    if segm is None:
        x = y = flux = flux_err = peak = a = b = theta = np.zeros(0)
    else:
        # Plain floats in, units attached below: photutils then has no unit
        # to check on each of data, error and its outputs.
        cat = SourceCatalog(
            np.where(bad, 0.0, data), segm, error=np.where(bad, 0.0, noise), mask=bad
        )
        x, y = cat.x_centroid, cat.y_centroid
        flux, flux_err, peak = cat.segment_flux, cat.segment_flux_err, cat.max_value
        a, b = cat.semimajor_axis.to_value(u.pix), cat.semiminor_axis.to_value(u.pix)
        # photutils 3 gives [0, 360) deg; an axis is defined only modulo 180.
        theta = cat.orientation.to_value(u.deg) % 180.0
    unit = 1.0 if unit is None else unit
    table["id"] = np.arange(1, len(x) + 1)
    table["x"], table["y"] = np.asarray(x, float), np.asarray(y, float)
    if wcs is not None:
        table["sky_centroid"] = wcs.pixel_to_world(table["x"], table["y"])
    table["flux"] = np.asarray(flux, float) * unit
    table["flux_err"] = np.asarray(flux_err, float) * unit
    table["peak"] = np.asarray(peak, float) * unit
    table["snr"] = np.asarray(flux, float) / np.asarray(flux_err, float)  # noise > 0 in segments
    table["a"] = np.asarray(a, float) * u.pix
    table["b"] = np.asarray(b, float) * u.pix
    table["theta"] = np.asarray(theta, float) * u.deg
    return table


def _found_in(sample, positions, noise, bad, radius, *detection):
    """Whether a detection in ``sample`` lies within ``radius`` px of each position."""
    bad = bad | ~np.isfinite(sample)
    segm = _segment(sample, noise, bad, *detection)
    if segm is None:
        return np.zeros(len(positions), bool)
    # Intensity-weighted centroids, negatives clipped as in SourceCatalog;
    # bincount over the labelled pixels beats ndimage.center_of_mass here.
    pixels = np.flatnonzero(segm.data)
    labels = segm.data.flat[pixels]
    weights = np.clip(sample.flat[pixels], 0.0, None)
    y, x = np.divmod(pixels, sample.shape[1])
    total = np.bincount(labels, weights)
    xy = np.column_stack([np.bincount(labels, weights * x), np.bincount(labels, weights * y)])
    xy = xy[total > 0] / total[total > 0, None]  # also drops the unused label 0
    if len(xy) == 0:
        return np.zeros(len(positions), bool)
    distance, _ = cKDTree(xy).query(positions, distance_upper_bound=radius)
    return np.isfinite(distance)


@dataclass(frozen=True)
class Match:
    """One-to-one match between a found and a true catalog (see `match`).

    Attributes
    ----------
    found_index, truth_index : `~numpy.ndarray` of int
        Rows of ``found`` and of ``truth`` paired with each other (the
        true positives), in increasing order of ``found_index``.
    separation : `~astropy.units.Quantity`
        Distance of each pair, in the unit of the ``radius`` given to
        `match` (pix for a pixel radius).
    false_positives : `~numpy.ndarray` of int
        Rows of ``found`` left unmatched, in increasing order.
    false_negatives : `~numpy.ndarray` of int
        Rows of ``truth`` left unmatched, in increasing order.
    """

    found_index: np.ndarray
    truth_index: np.ndarray
    separation: u.Quantity
    false_positives: np.ndarray
    false_negatives: np.ndarray

    @property
    def tp(self):
        """Number of matched pairs (true positives)."""
        return len(self.found_index)

    @property
    def fp(self):
        """Number of unmatched found sources (false positives)."""
        return len(self.false_positives)

    @property
    def fn(self):
        """Number of unmatched true sources (false negatives)."""
        return len(self.false_negatives)

    @property
    def truth_matched(self):
        """Bool array over the rows of ``truth``: True where it was matched."""
        matched = np.zeros(self.tp + self.fn, bool)
        matched[self.truth_index] = True
        return matched

    def to_table(self):
        """The pairs as a `~astropy.table.QTable`.

        Its columns are ``found_index``, ``truth_index`` and ``separation``.
        """
        return QTable(
            [self.found_index, self.truth_index, self.separation],
            names=["found_index", "truth_index", "separation"],
        )


def _pix(column):
    """Plain float array of a pixel column (float or Quantity in pix)."""
    if isinstance(column, u.Quantity):
        return column.to_value(u.pix)
    return np.asarray(column, dtype=float)


def _column(table, name, what):
    if name not in table.colnames:
        raise ValueError(f"the {what} table has no {name!r} column")
    return table[name]


def _sky(table, what):
    if "sky_centroid" not in table.colnames or not isinstance(table["sky_centroid"], SkyCoord):
        raise ValueError(
            f"an angular radius needs sky positions, but the {what} table has no "
            "'sky_centroid' SkyCoord column (find_sources adds it when the image has "
            "a WCS); give the radius in pixels to match on 'x' and 'y'"
        )
    return table["sky_centroid"]


def match(found, truth, radius):
    """Match two catalogs one-to-one within a radius (Hungarian algorithm).

    Among all one-to-one pairings of ``found`` with ``truth`` sources whose
    distance is at most ``radius``, the one with the most pairs is chosen
    and, among those, the one of least total distance
    (`scipy.optimize.linear_sum_assignment`). Unlike greedy nearest-neighbour
    matching, a source is not taken by a neighbour that has an alternative,
    and the result does not depend on the order of the rows.

    Parameters
    ----------
    found, truth : `~astropy.table.Table`
        The catalogs, e.g. from `find_sources` and of the true sources. For
        a pixel radius they need ``x`` and ``y`` columns (0-based pixels,
        float or Quantity in pix), for an angular one a ``sky_centroid``
        `~astropy.coordinates.SkyCoord` column. Either may be empty.
    radius : float or `~astropy.units.Quantity`
        Largest distance of a pair: in pixels (float or Quantity in pix),
        or an angle (e.g. ``0.5 * u.arcsec``) to match on the sky.

    Returns
    -------
    match : `Match`
        Matched rows (``found_index``, ``truth_index``, ``separation`` in
        the unit of ``radius``), the unmatched rows (``false_positives`` of
        ``found``, ``false_negatives`` of ``truth``) and their counts
        ``tp``, ``fp`` and ``fn``.

    Notes
    -----
    The full ``len(found) x len(truth)`` distance matrix is built, which is
    meant for per-image catalogs (up to a few thousand sources).
    """
    if isinstance(radius, u.Quantity) and radius.unit.physical_type == "angle":
        unit, on_sky = radius.unit, True
    elif isinstance(radius, u.Quantity) and radius.unit != u.pix:
        raise u.UnitsError(f"radius must be in pix or an angle, not {radius.unit}")
    else:
        unit, on_sky = u.pix, False
    radius = u.Quantity(radius, unit).value
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")

    if on_sky:
        a, b = _sky(found, "found"), _sky(truth, "truth")
        dist = a[:, np.newaxis].separation(b[np.newaxis, :]).to_value(unit)
    else:
        a = np.column_stack([_pix(_column(found, c, "found")) for c in "xy"])
        b = np.column_stack([_pix(_column(truth, c, "truth")) for c in "xy"])
        dist = np.hypot(*(a[:, np.newaxis, :] - b[np.newaxis, :, :]).transpose(2, 0, 1))
    dist = dist.reshape(len(found), len(truth))
    near = dist <= radius  # False for NaN positions

    # Only rows and columns with a candidate take part.
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    found_index = truth_index = np.zeros(0, int)
    if len(rows):
        sub, ok = dist[np.ix_(rows, cols)], near[np.ix_(rows, cols)]
        # A pair beyond the radius costs more than any set of pairs within
        # it, so the assignment first maximises the number of pairs.
        big = (min(sub.shape) + 1) * sub[ok].max() + 1.0
        r, c = linear_sum_assignment(np.where(ok, sub, big))
        keep = ok[r, c]
        found_index, truth_index = rows[r[keep]], cols[c[keep]]
    return Match(
        found_index=found_index,
        truth_index=truth_index,
        separation=dist[found_index, truth_index] * unit,
        false_positives=np.setdiff1d(np.arange(len(found)), found_index),
        false_negatives=np.setdiff1d(np.arange(len(truth)), truth_index),
    )


def _meta(meta, key, default=None):
    """``meta[key]``, also as the upper-case key that FITS makes of short names."""
    return meta.get(key, meta.get(key.upper(), default))


def _scale(pixel_scale, meta):
    """Pixel scale in arcsec/pix from the keyword or the catalog's meta.

    Either may be an angle, an angle per pixel or a float in arcsec/pix (as
    in catalogs written before their meta had units).
    """
    if pixel_scale is None:
        pixel_scale = _meta(meta, "pixel_scale")
        if pixel_scale is None:
            raise ValueError(
                "the pixel scale is unknown: the catalog's meta has no 'pixel_scale' "
                "(find_sources stores it when the image has a WCS); pass pixel_scale= "
                "or wcs="
            )
    if isinstance(pixel_scale, u.Quantity):
        if (pixel_scale.unit * u.pix).physical_type == "angle":  # angle / pix
            pixel_scale = pixel_scale * u.pix
        return pixel_scale.to_value(u.arcsec)
    return float(pixel_scale)


def to_regions(catalog, *, shape="ellipse", wcs=None, pixel_scale=None):
    """Regions of a catalog's sources on the sky, for DS9, CARTA or CASA.

    Parameters
    ----------
    catalog : `~astropy.table.Table`
        A catalog from `find_sources`, or any table with ``sky_centroid``
        (`~astropy.coordinates.SkyCoord`) and, for ellipses and circles,
        ``a``, ``b`` (standard deviations along the major and minor axes,
        pix) and ``theta`` (major axis counter-clockwise from +x, deg).
        With ``wcs`` given, ``x`` and ``y`` (0-based pixels) replace
        ``sky_centroid``.
    shape : {'ellipse', 'circle', 'point'}, optional
        'ellipse': the source's FWHM ellipse (axes ``2 sqrt(2 ln 2)`` times
        ``a`` and ``b``); 'circle': the circle of the same area (radius
        ``sqrt(2 ln 2 a b)``, half the FWHM of the mean sigma); 'point': the
        centroid alone, drawn as a '+'.
    wcs : `~astropy.wcs.WCS`, optional
        The image's WCS. Each region is then mapped from pixels to the sky
        exactly at its own position (`regions.EllipsePixelRegion.to_sky`),
        for any rotation, flip or non-square pixels.
    pixel_scale : float or `~astropy.units.Quantity`, optional
        Used without ``wcs``: the angular size of a pixel (angle or
        angle/pix; a float is in arcsec/pix). By default the
        ``pixel_scale`` in the catalog's meta, set by `find_sources`.

    Returns
    -------
    regions : `regions.Regions`
        One `~regions.EllipseSkyRegion`, `~regions.CircleSkyRegion` or
        `~regions.PointSkyRegion` per row, with the source ``id`` as its
        ``text`` and ``label`` meta (shown by DS9 and CASA respectively).
        ``regions.write('cat.reg', format='ds9')`` or ``format='crtf'``
        writes them out.

    Raises
    ------
    ValueError
        If the catalog has no sky positions (and no ``wcs`` is given), or
        the pixel scale of an ellipse or circle is unknown.

    Notes
    -----
    Without ``wcs``, the catalog's ``north_angle`` and ``mirrored`` meta
    (from `find_sources`; by default north up and not mirrored, the usual
    orientation of radio images) turn ``theta`` into the `regions` sky
    angle, which is measured counter-clockwise from the longitude axis
    (west) as seen on the sky, so that it equals the pixel angle for an
    image with north up and east left. This uses one pixel scale and
    orientation for the whole image; pass ``wcs`` for wide fields. The meta
    may hold Quantities (as `find_sources` writes it) or plain floats in
    arcsec/pix and deg, and its keys may be upper-case (as read from FITS).
    """
    from regions import (
        CirclePixelRegion, CircleSkyRegion, EllipsePixelRegion, EllipseSkyRegion, PixCoord,
        PointPixelRegion, PointSkyRegion, Regions,
    )

    if shape not in ("ellipse", "circle", "point"):
        raise ValueError(f"shape must be 'ellipse', 'circle' or 'point', not {shape!r}")
    n = len(catalog)
    ids = catalog["id"] if "id" in catalog.colnames else np.arange(1, n + 1)
    metas = [{"text": str(i), "label": str(i)} for i in ids]
    visual = {"symbol": "+"} if shape == "point" else {}
    if shape != "point":
        a = _pix(_column(catalog, "a", "catalog")) * FWHM_PER_SIGMA
        b = _pix(_column(catalog, "b", "catalog")) * FWHM_PER_SIGMA
        theta = u.Quantity(_column(catalog, "theta", "catalog"), u.deg).value

    if wcs is not None:
        if getattr(wcs, "naxis", 2) > 2:
            wcs = wcs.celestial
        centres = PixCoord(_pix(_column(catalog, "x", "catalog")),
                           _pix(_column(catalog, "y", "catalog")))
        if shape == "ellipse":
            pixel = [EllipsePixelRegion(centres[i], a[i], b[i], angle=theta[i] * u.deg)
                     for i in range(n)]
        elif shape == "circle":
            pixel = [CirclePixelRegion(centres[i], np.sqrt(a[i] * b[i]) / 2) for i in range(n)]
        else:
            pixel = [PointPixelRegion(centres[i]) for i in range(n)]
        sky = [region.to_sky(wcs) for region in pixel]
        for region, meta in zip(sky, metas):
            region.meta.update(meta)
            region.visual.update(visual)
        return Regions(sky)

    if "sky_centroid" not in catalog.colnames or not isinstance(catalog["sky_centroid"], SkyCoord):
        raise ValueError(
            "to_regions needs sky positions: the catalog has no 'sky_centroid' SkyCoord "
            "column (find_sources adds it when the image has a WCS); pass wcs="
        )
    centres = catalog["sky_centroid"]
    if shape == "point":
        return Regions([PointSkyRegion(centres[i], meta=metas[i], visual=visual)
                        for i in range(n)])
    scale = _scale(pixel_scale, catalog.meta) * u.arcsec
    if shape == "circle":
        radius = np.sqrt(a * b) / 2 * scale
        return Regions([CircleSkyRegion(centres[i], radius[i], meta=metas[i]) for i in range(n)])
    north = u.Quantity(_meta(catalog.meta, "north_angle", 90.0), u.deg).value
    # The sky angle of an axis at theta on the pixel grid; on the sky seen
    # from Earth +x is west (sky angle 0) when north is up.
    if _meta(catalog.meta, "mirrored", False):
        angle = (north - theta + 90.0) % 360.0
    else:
        angle = (theta - north + 90.0) % 360.0
    return Regions([
        EllipseSkyRegion(centres[i], a[i] * scale, b[i] * scale, angle=angle[i] * u.deg,
                         meta=metas[i])
        for i in range(n)
    ])
