"""Calibrated uncertainty: one scale on the standard deviation, found on a calibration split.

A learned method's spread (the standard deviation of its samples, or of its
own error model) need not be the size of its errors: the shipped STAR's
was 25-80x too small. `calibrate_uncertainty` predicts the images of a
simulated data set, compares the estimates with the apparent sky (the true
sky times the primary beam, the reference of `radiorecon.benchmark`) on
source pixels, and finds the one factor ``s`` on the standard deviation for
which the 1-sigma coverage is that of a Gaussian, 0.683: ``s`` is the
0.683 quantile of ``|error| / std`` over those pixels. Whether the 2-sigma
coverage then comes out near 0.954 says whether the errors' shape is
Gaussian; the report gives both, before and after. With heavy-tailed
errors, ``match=(1, 2)`` trades the one against the other (see
`calibrate_uncertainty`). `uncertainty_coverage` measures the same on
held-out images.

`~radiorecon.Reconstructor.calibrate_uncertainty` keeps the scale in the
model (`~radiorecon.Reconstructor.uncertainty_scale`), which `predict`
applies and records (``RRUSCALE``). Errors that every sample makes (a
missed faint source) no scale covers: with ``floor=True`` a standard
deviation added in quadrature is chosen with it
(`~radiorecon.Reconstructor.uncertainty_floor`, ``RRUFLOOR``), and
`calibrate_flux_errors` does the same for catalog flux errors, in units of
the dirty image's noise (`~radiorecon.Reconstructor.flux_error_floor`,
``RRFFLOOR``).

The detection threshold of a model's catalogs is calibrated the same way:
`calibrate_threshold` detects sources in the predictions of a calibration
split at every threshold of `CALIBRATION_GRID` and takes the lowest whose
pooled purity reaches `TARGET_PURITY`;
`~radiorecon.Reconstructor.calibrate_threshold` keeps it as the model's
`~radiorecon.Reconstructor.catalog_threshold`, the default of ``predict
--catalog``, the demo and the benchmark.
"""

import contextlib
import dataclasses
import math

import numpy as np
import astropy.units as u
from astropy.wcs.utils import proj_plane_pixel_scales

from . import metrics, modelfile
from ._validate import check_int, check_seed
from .exceptions import CapabilityError
from ._noise import robust_std
from .result import std_array

__all__ = ["CalibrationReport", "calibrate_uncertainty", "uncertainty_coverage", "gaussian_coverage",
           "apparent_sky", "apparent_sources", "source_mask", "SOURCE_FRACTION", "ThresholdReport",
           "calibrate_threshold", "detection_curve", "choose_threshold", "CALIBRATION_GRID", "TARGET_PURITY",
           "DEBLEND_LIMIT", "FluxErrorReport", "calibrate_flux_errors", "DetectionReport",
           "calibrate_detection_probability", "fit_detection_probability"]

#: Pixels whose apparent sky exceeds this fraction of its image's maximum
#: are source pixels (here and in `radiorecon.benchmark`'s coverage).
SOURCE_FRACTION = 0.1

#: Detection thresholds searched by `calibrate_threshold` and the benchmark's
#: calibration, in units of the dirty image's robust noise. It reaches far
#: below a dirty image's useful thresholds because a network's estimate of a
#: faint source is shrunk towards the empty sky it is most likely to be,
#: while its background is empty: such a model reaches a purity of 0.9
#: near 1 sigma, where the dirty image's purity is 0.
CALIBRATION_GRID = np.round(np.arange(0.25, 8.0 + 1e-9, 0.25), 2)

#: Deblend a map's detections only when there are at most this many
#: (`~radiorecon.catalog.find_sources`'s ``deblend``): the low thresholds of
#: the grid find a thousand noise peaks in a 512x512 dirty image, whose
#: purity is near 0 however they are split.
DEBLEND_LIMIT = 100

#: Pooled purity a calibrated threshold must reach on the calibration images.
TARGET_PURITY = 0.9


def apparent_sky(data, i):
    """The sky a model of image ``i`` of a simulated data set should give: true sky x primary beam, Jy/pixel."""
    true_sky = data.sky(i)
    return u.Quantity(true_sky.data, true_sky.unit).to_value(_JY_PIX) * np.asarray(data.primary_beam, float)


def apparent_sources(data, i):
    """The true sources of image ``i`` of a simulated data set, with apparent fluxes (``flux * pb_gain``, Jy)."""
    from astropy.table import QTable

    truth = data.truth
    truth = QTable(truth[truth["image_id"] == i])
    truth["flux"] = (truth["flux"] * truth["pb_gain"]).to(u.Jy)
    return truth


def source_mask(sky):
    """The source pixels of an apparent sky (above `SOURCE_FRACTION` of its maximum); none if it is empty."""
    top = np.max(sky)
    return sky > SOURCE_FRACTION * top if top > 0 else np.zeros(np.shape(sky), bool)



def gaussian_coverage(k):
    """Fraction of a Gaussian within ``k`` standard deviations of its mean (0.683 for 1, 0.954 for 2)."""
    return math.erf(k / math.sqrt(2))

_JY_PIX = u.Jy / u.pix


@dataclasses.dataclass(frozen=True)
class CalibrationReport:
    """What `calibrate_uncertainty` found.

    Attributes
    ----------
    scale : float
        The factor to apply to the method's standard deviation
        (`~radiorecon.Reconstructor.uncertainty_scale`) for ``n_samples``;
        it replaces the model's scale for that number at the time.
    before, after : dict
        Coverage on the calibration images with the model's calibration at
        the time and with ``scale`` and ``floor``: ``{k: fraction}`` for
        each level ``k`` (in standard deviations), as
        `radiorecon.metrics.coverage` gives it.
    n_images : int
        Images predicted.
    n_pixels : int
        Source pixels the scale was found on.
    n_samples : int
        Samples per prediction.
    floor : float
        The standard deviation added in quadrature, in the model's
        normalised units (`~radiorecon.Reconstructor.uncertainty_floor`);
        0 unless it was asked for.
    """

    scale: float
    before: dict
    after: dict
    n_images: int
    n_pixels: int
    n_samples: int
    floor: float = 0.0


def _indices(data, n_images, images):
    if n_images is not None and images is not None:
        raise ValueError("Give n_images or images, not both")
    if images is None:
        n = len(data) if n_images is None else min(check_int(n_images, "n_images"), len(data))
        images = range(n)
    images = [check_int(i, "images", minimum=0) for i in images]
    if not images:
        raise ValueError("No images to calibrate on")
    return images


def _source_pixels(rec, data, *, n_samples, n_images, images, seed, progress):
    """Estimate, standard deviation and apparent sky (Jy/pixel) on the source pixels of the images."""
    from tqdm.auto import tqdm

    if isinstance(data, str):
        from .simulate import load_dataset

        data = load_dataset(data)
    n_samples = check_int(n_samples, "n_samples")
    seed = check_seed(seed)
    if "draws" in rec.capabilities and n_samples < 2:
        raise ValueError(f"Backend {rec.backend_name!r} gives its spread from samples: use n_samples > 1")
    if "draws" not in rec.capabilities and "std" not in rec.capabilities:
        raise CapabilityError(f"Backend {rec.backend_name!r} gives no uncertainty to calibrate")
    indices = _indices(data, n_images, images)
    parts = []
    for i in tqdm(indices, desc="calibrate", disable=not progress, unit="image"):
        sky = apparent_sky(data, i)
        sources = source_mask(sky)
        if not sources.any():  # an empty field has no source pixels
            continue
        psf = data.psf(i, full=True) if "needs_psf" in rec.capabilities else None
        result = rec.predict(data.image(i), psf=psf, n_samples=n_samples,
                             seed=None if seed is None else seed + i, progress=False)
        try:
            model = u.Quantity(result.data, result.unit).to_value(_JY_PIX)
        except u.UnitConversionError:
            raise ValueError(
                f"Backend {rec.backend_name!r} predicts in {result.unit}, not a sky model in Jy/pixel"
            ) from None
        parts.append((model[sources], std_array(result, _JY_PIX)[sources], sky[sources]))
    if not parts:
        raise ValueError("The images hold no sources: nothing to calibrate on")
    estimate, std, sky = (np.concatenate(p) for p in zip(*parts))
    return estimate, std, sky, len(indices)


def uncertainty_coverage(rec, data, *, n_samples, n_images=None, images=None, seed=0, levels=(1, 2),
                         progress=True):
    """Coverage of source pixels by a model's uncertainty on a simulated data set.

    Parameters
    ----------
    rec : `~radiorecon.Reconstructor`
        A model whose predictions have an uncertainty (``draws`` or ``std``);
        its `~radiorecon.Reconstructor.uncertainty_scale` is applied.
    data : `~radiorecon.simulate.SimulatedDataset` or str
        A simulated data set (or its directory). The reference is the
        apparent sky (sky times primary beam, Jy/pixel); source pixels are
        those above `SOURCE_FRACTION` of their image's maximum.
    n_samples : int
        Samples per prediction (at least 2 for backends that draw).
    n_images : int, optional
        Use the first ``n_images`` images (default all).
    images : sequence of int, optional
        Use these images instead (e.g. ``range(8, 16)`` for a held-out half).
    seed : int
        Image ``i`` is predicted with seed ``seed + i``, as in the benchmark.
    levels : sequence of float
        Multiples of the standard deviation.
    progress : bool
        Show a progress bar over images.

    Returns
    -------
    dict
        ``{k: fraction}`` for each level and ``"n"``, the number of source
        pixels (`radiorecon.metrics.coverage`).
    """
    estimate, std, sky, _ = _source_pixels(rec, data, n_samples=n_samples, n_images=n_images, images=images,
                                           seed=seed, progress=progress)
    return metrics.coverage(estimate, std, sky, k=levels)


def calibrate_uncertainty(rec, data, *, n_samples, n_images=None, images=None, seed=0, levels=(1, 2),
                          match=(1,), floor=False, progress=True):
    """Find the scale (and floor) on a model's standard deviation that give Gaussian coverage.

    By default the scale makes the 1-sigma coverage of source pixels 0.683:
    it is that quantile of ``|estimate - sky| / std`` over them (to within
    one pixel). With several levels in ``match`` it makes the largest miss
    ``|coverage(k) - gaussian_coverage(k)| / sqrt(g (1 - g))`` over them
    smallest: each miss in units of the spread of a coverage fraction ``g``,
    so that 0.07 at 1 sigma weighs about as much as 0.03 at 2 sigma.

    One scale cannot match two levels when the errors are not spread like
    the samples. A method that misses a faint source predicts 0 there in
    every sample: no scale covers that error. With ``floor=True`` the
    standard deviation becomes ``sqrt((scale * std)**2 + floor**2)``, and
    both are chosen (on a grid, refined once) for the levels in ``match``:
    the floor is what the model cannot see, the same everywhere. The model
    is not changed: `~radiorecon.Reconstructor.calibrate_uncertainty` also
    keeps the scale and floor.

    Parameters
    ----------
    rec, data, n_samples, n_images, images, seed, levels, progress
        As for `uncertainty_coverage`. Use images the model was not trained
        on, and check the result on others.
    match : sequence of float
        The levels (in standard deviations) whose coverage the scale is
        chosen for.
    floor : bool
        Also choose a floor (else it is 0: a calibration without one
        replaces a model's floor).

    Returns
    -------
    `CalibrationReport`

    Raises
    ------
    ValueError
        If the backend draws and ``n_samples < 2``, ``match`` holds no
        positive level, the images hold no sources, or (without ``floor``)
        the standard deviation is zero on every source pixel with an error.
    CapabilityError
        If the backend gives no uncertainty.
    """
    match = [float(k) for k in match]
    if not match or min(match) <= 0:
        raise ValueError(f"match must hold positive levels, not {match!r}")
    # The method's own spread: the model's calibration is set aside while predicting.
    n_samples = check_int(n_samples, "n_samples")
    saved = (modelfile.for_sample_count(rec.uncertainty_scale, n_samples),
             modelfile.for_sample_count(rec.uncertainty_floor, n_samples))
    with _set_aside(rec, uncertainty_scale=1.0, uncertainty_floor=0.0):
        estimate, std, sky, n = _source_pixels(rec, data, n_samples=n_samples, n_images=n_images, images=images,
                                               seed=seed, progress=progress)
    good = np.isfinite(estimate) & np.isfinite(std) & np.isfinite(sky)
    estimate, std, sky = estimate[good], std[good], sky[good]
    error = np.abs(estimate - sky)
    # Normalised units to the Jy/pixel of the source pixels.
    unit = u.Unit(rec.units.get("target") or _JY_PIX)
    to_jy_pix = rec.normalisation.scale * (unit.to(_JY_PIX) if unit.is_equivalent(_JY_PIX) else 1.0)
    before_std = np.hypot(saved[0] * std, saved[1] * to_jy_pix)
    if floor:
        factor, added = _best_scale_and_floor(error, std, match)
    else:
        # Zero spread: covered only without error (as metrics.coverage counts it).
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(std > 0, error / std, np.where(error > 0, np.inf, 0.0))
        factor, added = _best_factor(np.sort(ratio), match), 0.0
    return CalibrationReport(
        scale=factor,
        before=metrics.coverage(estimate, before_std, sky, k=levels),
        after=metrics.coverage(estimate, np.hypot(factor * std, added), sky, k=levels),
        n_images=n,
        n_pixels=int(error.size),
        n_samples=n_samples,
        floor=added / to_jy_pix,
    )


def _miss(error, total, match):
    """Largest miss of Gaussian coverage over the levels, each in units of a fraction's spread.

    ``total`` holds one standard deviation per pixel in each row (or is one row).
    """
    miss = 0.0
    for k in match:
        g = gaussian_coverage(k)
        covered = np.mean(error <= k * total, axis=-1)
        miss = np.maximum(miss, np.abs(covered - g) / math.sqrt(g * (1 - g)))
    return miss


def _best_scale_and_floor(error, std, match, steps=61):
    """The factor on ``std`` and the floor (same unit) whose quadrature sum best matches Gaussian coverage."""
    positive = error[error > 0]
    if not positive.size:
        return 1.0, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = error / std
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    # Floors span the errors themselves, and 0; factors the ratios of errors
    # to the spread (1 if the samples never spread: it then changes nothing).
    lo, hi = np.quantile(positive, [0.001, 0.999]) / max(match) * [1, 4]
    floors = np.concatenate([[0.0], np.geomspace(lo, hi, steps)])
    factors = np.array([1.0])
    if ratio.size:
        lo, hi = np.quantile(ratio, [0.001, 0.999]) / max(match) * [1, 4]
        factors = np.geomspace(lo, hi, steps)
    for _ in range(2):  # a grid, then a finer one around its best
        miss = np.array([_miss(error, np.hypot(k * std, floors[:, None]), match) for k in factors])
        i, j = np.unravel_index(np.argmin(miss), miss.shape)
        k, f = factors[i], floors[j]
        factors, floors = _around(factors, i), _around(floors, j)
    return float(k), float(f)


def _around(grid, i, n=21):
    """A grid of ``n`` points between the neighbours of ``grid[i]``."""
    return np.unique(np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], n))


def _best_factor(ratios, match):
    """The factor on the std whose coverage of sorted ``ratios`` (``|error| / std``) best matches a Gaussian's."""
    # Coverage at level k steps where the scaled std reaches a ratio: the
    # candidates are the ratios divided by each k, finite and positive.
    candidates = np.unique(np.concatenate([ratios / k for k in match]))
    candidates = candidates[np.isfinite(candidates) & (candidates > 0)]
    miss = np.zeros(len(candidates))
    for k in match:
        g = gaussian_coverage(k)
        covered = np.searchsorted(ratios, k * candidates, side="right") / len(ratios)
        miss = np.maximum(miss, np.abs(covered - g) / math.sqrt(g * (1 - g)))
    if not len(candidates):
        raise ValueError(
            "No scale on the standard deviation changes the coverage: the spread is zero on every source pixel "
            "with an error"
        )
    return float(candidates[np.argmin(miss)])


@dataclasses.dataclass
class ThresholdReport:
    """What `calibrate_threshold` found.

    Attributes
    ----------
    threshold : float
        The detection threshold, in units of the dirty image's robust noise
        (`~radiorecon.Reconstructor.catalog_threshold`).
    purity : float
        Pooled purity of the calibration images' detections at it.
    reached : bool
        Whether it reaches the target purity (if no threshold of the grid
        does, the one of highest purity is taken).
    target_purity : float
    curve : `~astropy.table.QTable`
        The purity-completeness curve of the calibration images
        (`detection_curve`).
    n_images : int
    n_samples : int
    """

    threshold: float
    purity: float
    reached: bool
    target_purity: float
    curve: object
    n_images: int
    n_samples: int


def detection_curve(grid, counts):
    """A purity-completeness curve: thresholds and the pooled counts (rows of tp, fp, fn) at each.

    Returns
    -------
    `~astropy.table.QTable`
        ``threshold``, ``tp``, ``fp``, ``fn``, ``purity``, ``completeness``.
    """
    from astropy.table import QTable

    counts = np.asarray(counts)
    scores = [metrics.detection_scores(*c) for c in counts]
    return QTable([np.asarray(grid, float), counts[:, 0], counts[:, 1], counts[:, 2],
                   [s["purity"] for s in scores], [s["completeness"] for s in scores]],
                  names=["threshold", "tp", "fp", "fn", "purity", "completeness"])


def choose_threshold(curve, target_purity=TARGET_PURITY):
    """The lowest threshold of a `detection_curve` whose purity reaches the target, else the purest.

    Returns
    -------
    dict
        ``threshold``, the ``purity`` reached there and ``reached``
        (whether it meets the target).
    """
    purity = np.asarray(curve["purity"], float)
    ok = np.flatnonzero(purity >= target_purity)
    # np.argmax takes the lowest threshold among equal purities: the most complete.
    k = int(ok[0]) if ok.size else int(np.argmax(purity))
    return {"threshold": float(curve["threshold"][k]), "purity": float(purity[k]), "reached": bool(ok.size)}


def calibrate_threshold(rec, data, *, n_samples=1, n_images=None, images=None, seed=0,
                        target_purity=TARGET_PURITY, grid=CALIBRATION_GRID, progress=True):
    """Find the detection threshold at which a model's catalogs reach a purity, on a calibration split.

    Each image is predicted (seed ``seed + i``) and its sources detected in
    the sky model seen through the clean beam, against the dirty image's
    robust noise (`radiorecon.catalog.find_sources_in_model`, as the
    benchmark's significance protocol does) at every threshold of
    ``grid``; detections are matched to the apparent true sources within
    one clean-beam FWHM and counted over all images.

    Parameters
    ----------
    rec : `~radiorecon.Reconstructor`
        A model whose output is a sky model (Jy/pixel).
    data : `~radiorecon.simulate.SimulatedDataset` or str
    n_samples : int
        Samples per prediction (the threshold holds for this number).
    n_images, images
        The first ``n_images`` images, or these indices. Use images the
        model was not trained on.
    seed : int
    target_purity : float
        Purity to reach, in (0, 1].
    grid : sequence of float
        Thresholds to try (noise units), increasing.
    progress : bool

    Returns
    -------
    `ThresholdReport`

    Raises
    ------
    ValueError
        If ``target_purity`` is outside (0, 1], the grid is empty, or the
        backend predicts no sky model.
    """
    from .catalog import find_sources_in_model

    if not 0 < target_purity <= 1:
        raise ValueError(f"target_purity must be in (0, 1], not {target_purity!r}")
    grid = np.asarray(grid, float)
    if grid.ndim != 1 or not grid.size or not np.all(grid > 0):
        raise ValueError("grid must be a non-empty sequence of positive thresholds")
    if isinstance(data, str):
        from .simulate import load_dataset

        data = load_dataset(data)
    n_samples = check_int(n_samples, "n_samples")
    seed = check_seed(seed)
    indices = _indices(data, n_images, images)
    counts = np.zeros((len(grid), 3), np.int64)
    for i, result, beam, noise, fwhm_px in _predictions(rec, data, indices, n_samples=n_samples, seed=seed,
                                                        progress=progress, desc="calibrate threshold",
                                                        return_samples=False):
        truth = apparent_sources(data, i)
        for k, t in enumerate(grid):
            found = find_sources_in_model(result, threshold=t, beam=beam, noise=noise, deblend=DEBLEND_LIMIT)
            score = metrics.score_catalog(found, truth, fwhm_px, flux=None)
            counts[k] += [score["tp"], score["fp"], score["fn"]]
    curve = detection_curve(grid, counts)
    chosen = choose_threshold(curve, target_purity)
    return ThresholdReport(target_purity=float(target_purity), curve=curve, n_images=len(indices),
                           n_samples=n_samples, **chosen)


@contextlib.contextmanager
def _set_aside(rec, **values):
    """Give ``rec`` these attribute values while predicting, and its own back after."""
    saved = {name: getattr(rec, name) for name in values}
    for name, value in values.items():
        setattr(rec, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(rec, name, value)


def _catalog_setup(rec, data, *, n_samples, threshold, n_images, images, seed):
    """Checked ``(data, n_samples, threshold, seed, indices)`` of a catalog calibration.

    ``threshold`` None is the model's (`radiorecon.catalog.default_threshold`).
    """
    from .catalog import _check_threshold, default_threshold

    if isinstance(data, str):
        from .simulate import load_dataset

        data = load_dataset(data)
    threshold = default_threshold(rec) if threshold is None else _check_threshold(threshold)
    return (data, check_int(n_samples, "n_samples"), threshold, check_seed(seed),
            _indices(data, n_images, images))


def _predictions(rec, data, indices, *, n_samples, seed, progress, desc, return_samples):
    """Predict each image of a simulated data set: yields ``(i, result, beam, noise, fwhm_px)``.

    Image ``i`` is predicted with seed ``seed + i``; ``noise`` is the dirty
    image's robust noise (Jy/beam) and ``fwhm_px`` the beam's major axis
    in pixels, for `radiorecon.catalog.find_sources_in_model` and
    `radiorecon.metrics.score_catalog`.
    """
    from tqdm.auto import tqdm

    for i in tqdm(indices, desc=desc, disable=not progress, unit="image"):
        dirty = data.image(i)
        psf = data.psf(i, full=True) if "needs_psf" in rec.capabilities else None
        result = rec.predict(dirty, psf=psf, n_samples=n_samples, seed=None if seed is None else seed + i,
                             return_samples=return_samples, progress=False)
        if result.unit is None or not result.unit.is_equivalent(_JY_PIX):
            raise ValueError(f"Backend {rec.backend_name!r} predicts in {result.unit}, not a sky model in Jy/pixel")
        beam = data.beam(i)
        noise = robust_std(dirty.data, mask=dirty.mask) * dirty.unit.to(u.Jy / u.beam)
        fwhm_px = float((beam.major / (proj_plane_pixel_scales(dirty.wcs)[1] * u.deg)).decompose())
        yield i, result, beam, noise, fwhm_px


def _scored_catalogs(rec, data, indices, *, n_samples, threshold, seed, progress, desc, flux=True):
    """The catalog of each prediction at ``threshold``, scored: yields ``(found, score, noise)``.

    With the samples when ``n_samples > 1`` (for flux errors and detection
    probabilities); ``score`` is `radiorecon.metrics.score_catalog`
    against the apparent sources, with fluxes unless ``flux`` is False.
    """
    from .catalog import find_sources_in_model

    for i, result, beam, noise, fwhm_px in _predictions(rec, data, indices, n_samples=n_samples, seed=seed,
                                                        progress=progress, desc=desc,
                                                        return_samples=n_samples > 1):
        found = find_sources_in_model(result, threshold=threshold, beam=beam, noise=noise, deblend=DEBLEND_LIMIT)
        yield found, metrics.score_catalog(found, apparent_sources(data, i), fwhm_px,
                                           flux="flux" if flux else None), noise


@dataclasses.dataclass(frozen=True)
class FluxErrorReport:
    """What `calibrate_flux_errors` found.

    Attributes
    ----------
    floor : float
        The flux error added in quadrature to each catalog flux error, in
        units of the dirty image's noise (Jy per Jy/beam:
        `~radiorecon.Reconstructor.flux_error_floor`).
    threshold : float
        The detection threshold (S/N) of the catalogs it was found on.
    before, after : dict
        Coverage of the true fluxes of the matched sources by their flux
        errors with the model's floor at the time and with ``floor``:
        ``{k: fraction}`` for each level and ``"n"``, the number of sources.
    n_images : int
    n_samples : int
    """

    floor: float
    threshold: float
    before: dict
    after: dict
    n_images: int
    n_samples: int


def calibrate_flux_errors(rec, data, *, n_samples=1, threshold=None, n_images=None, images=None, seed=0,
                          levels=(1, 2), match=(1,), progress=True):
    """Find the flux error, in units of the noise, that makes catalog flux errors cover the true fluxes.

    A catalog's ``flux_err`` (`~radiorecon.catalog.find_sources_in_model`)
    is the spread of a source's flux over the samples, times the model's
    `~radiorecon.Reconstructor.uncertainty_scale`. A method that shrinks
    faint sources does so in every sample, and one run has no spread at
    all; the data themselves bound how well a flux is known. This adds
    ``floor * noise`` in quadrature (``noise``: the dirty image's, Jy/beam,
    the flux error of a point source in it) and chooses ``floor`` so that
    the coverage of the matched sources' true apparent fluxes at the
    levels in ``match`` is as near a Gaussian's as one floor makes it (by
    default 0.683 at 1 sigma; with several levels, the largest miss, as
    for `calibrate_uncertainty`). The model is not
    changed: `~radiorecon.Reconstructor.calibrate_flux_errors` also keeps
    the floor.

    Parameters
    ----------
    rec : `~radiorecon.Reconstructor`
        A model predicting a sky model in Jy/pixel, with its
        ``uncertainty_scale`` as it will be used.
    data : `~radiorecon.simulate.SimulatedDataset` or str
        Simulated images the model was not trained on.
    n_samples : int
        Draws per prediction, as the catalogs will be made.
    threshold : float, optional
        Detection threshold (S/N); by default the model's
        (`~radiorecon.catalog.default_threshold`).
    n_images, images, seed, levels, progress
        As for `calibrate_uncertainty`.
    match : sequence of float
        The levels whose coverage the floor is chosen for.

    Returns
    -------
    `FluxErrorReport`

    Raises
    ------
    ValueError
        If ``match`` holds no positive level, the backend predicts no sky
        model, or no detection matches a true source.
    """
    match = [float(k) for k in match]
    if not match or min(match) <= 0:
        raise ValueError(f"match must hold positive levels, not {match!r}")
    data, n_samples, threshold, seed, indices = _catalog_setup(
        rec, data, n_samples=n_samples, threshold=threshold, n_images=n_images, images=images, seed=seed)
    saved = modelfile.for_sample_count(rec.flux_error_floor, n_samples)
    found_flux, spread, true_flux, noises = [], [], [], []
    with _set_aside(rec, flux_error_floor=0.0):
        for _, score, noise in _scored_catalogs(rec, data, indices, n_samples=n_samples, threshold=threshold,
                                                seed=seed, progress=progress, desc="calibrate flux errors"):
            found_flux.append(u.Quantity(score["flux_found"], u.Jy).value)
            spread.append(np.nan_to_num(u.Quantity(score["flux_err"], u.Jy).value))  # one run: no spread
            true_flux.append(u.Quantity(score["flux_true"], u.Jy).value)
            noises.append(np.full(len(score["flux_found"]), noise))
    found_flux, spread, true_flux, noises = (np.concatenate(a) for a in (found_flux, spread, true_flux, noises))
    if not found_flux.size:
        raise ValueError(f"No source found at S/N {threshold:g} matches a true one: no flux errors to calibrate")
    error = np.abs(found_flux - true_flux) / noises
    spread = spread / noises
    # Floors span the errors themselves, and 0.
    grid = np.concatenate([[0.0], np.geomspace(*np.quantile(error[error > 0], [0.001, 0.999]) / max(match)
                                               * [1, 4], 121)]) if np.any(error > 0) else np.zeros(1)
    for _ in range(2):  # a grid, then a finer one around its best
        miss = _miss(error, np.hypot(spread, grid[:, None]), match)
        # Coverage of a few dozen sources steps: of the floors that tie,
        # the middle one, not the smallest.
        best = np.flatnonzero(miss == miss.min())
        j = int(best[len(best) // 2])
        floor = float(grid[j])
        grid = _around(grid, j)
    return FluxErrorReport(
        floor=floor, threshold=threshold,
        before=metrics.coverage(error, np.hypot(spread, saved), np.zeros_like(error), k=levels),
        after=metrics.coverage(error, np.hypot(spread, floor), np.zeros_like(error), k=levels),
        n_images=len(indices), n_samples=n_samples,
    )


def fit_detection_probability(snr, fraction, real):
    """Coefficients of ``p = fraction**c / (1 + exp(-(a + b ln(snr))))`` fitted to whether detections are real.

    The maximum-likelihood fit of `calibrate_detection_probability`, on
    detections already made.

    Parameters
    ----------
    snr : array-like
        Each detection's S/N (> 0).
    fraction : array-like
        The fraction of the samples in which it is found (in (0, 1]; 1 for
        one run).
    real : array-like of bool
        Whether it matches a true source.

    Returns
    -------
    list of float
        ``[a, b, c]``, or ``[a, b]`` (``c`` = 1) when every fraction is the
        same, which says nothing about ``c``.
    """
    from scipy.optimize import minimize

    x = np.log(np.asarray(snr, float))
    log_fraction = np.log(np.maximum(np.asarray(fraction, float), 1e-12))
    real = np.asarray(real, bool)
    with_c = np.ptp(log_fraction) > 0 if log_fraction.size else False

    def loss(p):
        c = p[2] if with_c else 1.0
        # log p = c log fraction - log(1 + e^-z); log(1 - p) computed stably.
        log_p = c * log_fraction - np.logaddexp(0.0, -(p[0] + p[1] * x))
        ll = np.where(real, log_p, np.log1p(-np.minimum(np.exp(log_p), 1 - 1e-12)))
        prior = p[0] ** 2 + p[1] ** 2 + ((c - 1.0) ** 2 if with_c else 0.0)
        return -np.sum(ll) + 0.5 * prior / 100.0

    start = np.array([0.0, 1.0, 1.0] if with_c else [0.0, 1.0])
    # A negative power would make rarer detections likelier real: c >= 0 is
    # a bound of the fit, so that a and b are the best ones for the c kept
    # (clipping c after the fit left the probabilities too low throughout:
    # by 0.1 on average for the shipped DDPM's 5 draws).
    bounds = [(None, None), (None, None), (0.0, None)][: start.size]
    fit = minimize(loss, start, method="Nelder-Mead", bounds=bounds,
                   options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000 * start.size})
    return [float(v) for v in fit.x]


@dataclasses.dataclass(frozen=True)
class DetectionReport:
    """What `calibrate_detection_probability` found.

    Attributes
    ----------
    coefficients : list of float
        ``[a, b, c]`` of ``p = fraction**c / (1 + exp(-(a + b ln(S/N))))``,
        or ``[a, b]`` (``c`` = 1) where the fractions do not vary
        (`~radiorecon.Reconstructor.detection_calibration`).
    threshold : float
        The detection threshold (S/N) of the catalogs.
    before, after : float
        The largest reliability error (`radiorecon.metrics.reliability_error`,
        bins of 10 detections or more) of the fraction of samples alone (1
        for one run) and of the calibrated probability, on the calibration
        detections.
    n_detections, n_images, n_samples : int
    """

    coefficients: list
    threshold: float
    before: float
    after: float
    n_detections: int
    n_images: int
    n_samples: int


def calibrate_detection_probability(rec, data, *, n_samples=1, threshold=None, n_images=None, images=None, seed=0,
                                    progress=True):
    """Fit the probability that a detection is real, from its S/N, on a simulated calibration split.

    A catalog's ``detection_probability`` is by default the fraction of the
    samples in which a source is found. Samples that agree (STAR's styles
    barely change its sky) give 1 to every detection, real or not. This
    fits ``p = fraction**c / (1 + exp(-(a + b ln(S/N))))`` to whether each
    detection of the model's catalogs matches a true source (maximum
    likelihood, with a weak Gaussian prior of width 10 on ``a``, ``b`` and
    ``c - 1``, so that a split where every detection is real still gives
    finite values), so that detections given ``p`` are real a fraction
    ``p`` of the time. ``c`` says how much the fraction of samples tells:
    draws that disagree too often about real sources give ``c < 1``. It is
    fitted only where the fractions differ (not for one run, or samples
    that always agree: then the coefficients are ``[a, b]``).

    Parameters
    ----------
    rec, data, n_samples, threshold, n_images, images, seed, progress
        As for `calibrate_flux_errors`.

    Returns
    -------
    `DetectionReport`

    Raises
    ------
    ValueError
        If the backend predicts no sky model, or nothing is detected.
    """
    from astropy.table import Table

    from .catalog import calibrated_probability

    data, n_samples, threshold, seed, indices = _catalog_setup(
        rec, data, n_samples=n_samples, threshold=threshold, n_images=n_images, images=images, seed=seed)
    snr, fraction, real = [], [], []
    with _set_aside(rec, detection_calibration=None):
        for found, score, _ in _scored_catalogs(rec, data, indices, n_samples=n_samples, threshold=threshold,
                                                seed=seed, progress=progress, flux=False,
                                                desc="calibrate detection probability"):
            ok = np.zeros(len(found), bool)
            ok[score["match"].found_index] = True
            snr.append(np.asarray(found["snr"], float))
            fraction.append(np.asarray(found["detection_probability"], float)
                            if "detection_probability" in found.colnames else np.ones(len(found)))
            real.append(ok)
    snr, fraction, real = (np.concatenate(a) for a in (snr, fraction, real))
    if not snr.size:
        raise ValueError(f"Nothing is detected at S/N {threshold:g}: no detection probability to calibrate")
    coefficients = fit_detection_probability(snr, fraction, real)
    calibrated = calibrated_probability(Table({"snr": snr, "detection_probability": fraction}), coefficients)
    return DetectionReport(
        coefficients=coefficients, threshold=threshold,
        before=metrics.reliability_error(fraction, real), after=metrics.reliability_error(calibrated, real),
        n_detections=int(snr.size), n_images=len(indices), n_samples=n_samples,
    )
