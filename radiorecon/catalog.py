"""Source catalogs from sky models and images, built on `photutils.segmentation`."""

import warnings

import astropy.units as u
import numpy as np
from astropy.nddata import NDData, StdDevUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable
from astropy.utils.exceptions import AstropyUserWarning
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
from photutils.utils import NoDetectionsWarning
from scipy.spatial import cKDTree

__all__ = ["find_sources"]

# A noise below this fraction of the peak is round-off, not thermal noise: no
# interferometric image reaches a dynamic range of 1e7.
_MIN_NOISE_FRACTION = 1e-7


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
        sigma = image.uncertainty
        if sigma is not None:
            # Variance and inverse-variance maps convert; the noise is a std.
            if not isinstance(sigma, StdDevUncertainty):
                sigma = sigma.represent_as(StdDevUncertainty)
            sigma_unit = sigma.unit if sigma.unit is not None else (unit or u.one)
            sigma = _values(u.Quantity(sigma.array, sigma_unit), unit, "uncertainty")
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
    """Segmentation image of the S/N map (None if empty) and whether it was deblended.

    Deblending needs scikit-image only once a segment has several peaks, so
    its absence shows up here as an ImportError.
    """
    if bad.all():
        return None, deblend
    # Dividing only the good pixels keeps 0/0 and x/0 from warning.
    snr = np.divide(data, noise, out=np.zeros(data.shape), where=~bad)
    # photutils reports empty maps and deblending-mode fallbacks as warnings;
    # both are ordinary outcomes here (and errors under filterwarnings=error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        segm = detect_sources(snr, threshold, npixels, connectivity=connectivity, mask=bad)
        if segm is not None and deblend:
            try:
                segm = deblend_sources(
                    snr, segm, npixels, connectivity=connectivity, progress_bar=False
                )
            except ImportError:
                return segm, False
    return segm, deblend


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
        Detection threshold in units of the per-pixel noise (S/N).
    npixels : int, optional
        Minimum number of connected pixels above ``threshold`` in a source.
    deblend : bool, optional
        Whether to split blended sources with multi-thresholding.
    noise : float, `~numpy.ndarray` or `~astropy.units.Quantity`, optional
        Per-pixel noise (scalar or map) in the image's unit, used when the
        image has no uncertainty. By default it is the sigma-clipped,
        MAD-based standard deviation of the unmasked pixels.
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
        'given' or 'robust') and, for a scalar noise, ``noise`` (float, in
        the image's unit). An empty table with these columns is returned
        when nothing is detected.

    Raises
    ------
    ValueError
        If the robust noise estimate is zero, as for a sparse sky model
        without noise: pass ``noise=`` then.

    Notes
    -----
    ``flux_err`` adds the pixel noise in quadrature, as if pixels were
    independent; in a dirty image, whose noise is correlated over the beam,
    it underestimates the true error.
    """
    data, unit, bad, wcs, sigma = _unpack(image, mask)
    bad = bad | ~np.isfinite(data)
    if sigma is not None:
        method, noise = "uncertainty", sigma
    elif noise is not None:
        method, noise = "given", _values(noise, unit, "noise")
    else:
        method, noise = "robust", _robust_noise(data, bad)
    meta = {"threshold": threshold, "npixels": npixels, "noise_method": method}
    if np.ndim(noise) == 0:
        meta["noise"] = float(noise)
    noise = np.broadcast_to(noise, data.shape)
    # Pixels without a usable noise have no S/N; leave them out.
    bad = bad | ~(np.isfinite(noise) & (noise > 0))

    segm, deblended = _segment(data, noise, bad, threshold, npixels, connectivity, deblend)
    if deblend and not deblended:
        warnings.warn(
            "scikit-image is not installed, so blended sources were not split; "
            "install it, or pass deblend=False",
            AstropyUserWarning,
        )
    deblend = deblended  # samples must be segmented as the image was
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
        table.meta["match_radius"] = match_radius
    return table


def _robust_noise(data, bad):
    """Sigma-clipped MAD standard deviation of the good pixels, checked to be > 0."""
    if bad.all():
        raise ValueError("every pixel is masked or not finite: no noise can be estimated")
    noise = sigma_clipped_stats(data, mask=bad, stdfunc="mad_std")[2]
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
    segm, _ = _segment(sample, noise, bad, *detection)
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
