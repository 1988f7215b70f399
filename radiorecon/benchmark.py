"""Benchmarks of reconstruction methods in the form of the published tables.

Every method is scored the same way on a simulated data set
(`radiorecon.simulate.make_dataset`):

- The reference is the *apparent* sky, the true sky times the primary beam,
  which is what the dirty image encodes; true fluxes are compared as
  ``flux * pb_gain``.
- Sources are detected with `radiorecon.catalog.find_sources_in_model`: in
  the method's sky model convolved with the clean beam (Jy/beam), at ``threshold`` times
  the robust noise of the dirty image, so that point-like models (CLEAN
  components) and smooth ones (networks) meet the same detector. The *truth
  limit* row does this with the true sky: no method can beat it. The *dirty*
  row detects in the dirty image itself, and a method that returns a
  restored image (``extras["restored"]``, as CLEAN does) is detected there,
  as astronomers do with CLEAN.
- Found sources are matched one-to-one to true ones within one clean-beam
  FWHM (`radiorecon.catalog.match`); fluxes are measured in an aperture of
  one FWHM radius on the sky model, pixels near two detections going to the
  nearer one (on the dirty image, divided by the same aperture on the PSF).
- Image metrics (L2, PSNR, SSIM; `radiorecon.metrics`) compare the sky model
  with the apparent sky, in Jy/pixel.

These rows are the ``"significance"`` protocol: what a source must reach to
stand out of the dirty image's noise. Each method is also scored with the
``"published"`` protocol, as the papers this package follows score theirs:
`published_catalog` runs photutils on the sky model itself (on a restored
image for a method that has one) with a threshold taken from that image's own
sigma-clipped statistics, the reference is the same detection on the
apparent sky, and found sources are matched one-to-one within 3 pixels. The
two measure different things: the first how faint a source a method
recovers, the second how clean and sparse its sky model is where the sky is
empty (a faint texture there becomes spurious sources).

With a *calibration split* (``calibration=``) the significance threshold
of each row is not the user's but chosen on images kept apart from the
test images: the lowest of `~radiorecon.calibration.CALIBRATION_GRID` at
which the detections of all calibration images, pooled, reach a purity of
`~radiorecon.calibration.TARGET_PURITY`. The
test images are then scored at that threshold (protocol ``"significance
(calibrated)"``), and over the whole grid for a purity-completeness curve,
from the same predictions. At the grid's lowest thresholds a dirty image
holds a thousand noise peaks; an image's detections are deblended only up
to `~radiorecon.calibration.DEBLEND_LIMIT` of them, which saves a second
per image and threshold and leaves purity near 0 there either way.
"""

import collections
import contextlib
import warnings

import numpy as np
import astropy.units as u
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable, vstack
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
from photutils.utils import NoDetectionsWarning
from scipy.signal import fftconvolve

from . import metrics
from ._validate import check_int
from .exceptions import InputError
from .beam import beam_kernel
from .calibration import (
    CALIBRATION_GRID, DEBLEND_LIMIT, TARGET_PURITY, apparent_sky, apparent_sources, choose_threshold, detection_curve,
    source_mask,
)
from .catalog import DEFAULT_THRESHOLD, default_threshold, find_sources_in_model, model_catalog
from ._noise import robust_std
from .pipeline import is_per_beam
from .result import Reconstruction, std_array
from .tiling import center_psf

__all__ = ["run_benchmark", "published_catalog", "to_markdown", "plot_report", "completeness_table", "COLUMNS",
           "SNR_BINS", "RELIABILITY_MIN_COUNT"]

_JY_PIX = u.Jy / u.pix

#: Columns of the benchmark table, in order.
COLUMNS = ["method", "protocol", "n_samples", "threshold", "purity", "completeness", "f1", "f1_err", "f1_std",
           "fp_per_image", "flux_r2", "l2", "psnr", "ssim", "coverage_1sigma", "coverage_2sigma",
           "flux_coverage_1sigma", "flux_coverage_2sigma", "reliability_max_error",
           "network_runs", "seconds_per_image", "n_images"]

#: Matching radius of the published protocol, pix (the papers match within 3 pixels).
PUBLISHED_RADIUS = 3.0

#: Fewest detections in a bin of `radiorecon.metrics.reliability` (bins 0.2 wide) for
#: ``reliability_max_error`` to count it: the true-positive rate of 10 detections is
#: uncertain by up to 0.16, of fewer too much to tell an error of 0.1.
RELIABILITY_MIN_COUNT = 10

#: Edges of the true peak-S/N bins of the completeness table at the calibrated threshold.
SNR_BINS = np.array([0.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, np.inf])


def published_catalog(image, *, nsigma=3.0, floor=1e-3, npixels=5, deblend=True):
    """Sources of an image detected as the papers detect them in their sky models.

    photutils is run on the image itself, with no noise map: pixels above
    ``median + nsigma * std`` of the image's sigma-clipped statistics
    (`~astropy.stats.sigma_clipped_stats`, clipped at 3 sigma), but at
    least ``floor`` times its peak, in groups of ``npixels`` connected
    pixels (8-connectivity), deblended. On a sky model that is empty where
    the sky is empty the clipped statistics are those of the empty pixels
    (a standard deviation of 0) and the floor decides; a faint texture in
    the background becomes sources wherever it rises above the threshold
    over ``npixels`` or more pixels (a texture over the whole background
    also raises the threshold, through its clipped spread).

    Parameters
    ----------
    image : array-like
        2-D image, plain floats (e.g. a sky model in Jy/pixel); non-finite
        pixels are masked.
    nsigma : float, optional
        Threshold above the clipped median, in clipped standard deviations.
    floor : float, optional
        Lowest threshold, as a fraction of the image's peak: an image
        whose clipped standard deviation is 0 is not detected down to its
        round-off.
    npixels : int, optional
        Fewest connected pixels of a source.
    deblend : bool, optional
        Split blended sources (`~photutils.segmentation.deblend_sources`).

    Returns
    -------
    catalog : `~astropy.table.QTable`
        ``x``, ``y`` (centroids, 0-based pixels), ``flux`` (sum of the
        source's pixels, in the image's unit times pixel: Jy for a Jy/pixel
        image) and ``peak``, one row per source; ``meta["threshold"]`` is
        the threshold applied, in the image's unit.
    """
    data = np.asarray(image, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"the image must be 2-D, not of shape {data.shape}")
    bad = ~np.isfinite(data)
    x = y = flux = peak = np.zeros(0)
    threshold = np.nan
    if not bad.all():
        data = np.where(bad, 0.0, data)
        _, median, std = sigma_clipped_stats(data, mask=bad, sigma=3.0)
        threshold = max(median + nsigma * std, floor * data[~bad].max())
        # photutils reports empty maps and its deblending fallbacks as
        # warnings: ordinary outcomes here (errors under filterwarnings=error).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            segm = detect_sources(data, threshold, npixels, mask=bad)
            if segm is not None and deblend:
                segm = deblend_sources(data, segm, npixels, progress_bar=False)
        if segm is not None:
            cat = SourceCatalog(data, segm, mask=bad)
            x, y, flux, peak = cat.x_centroid, cat.y_centroid, cat.segment_flux, cat.max_value
    table = QTable([np.asarray(c, float) for c in (x, y, flux, peak)], names=["x", "y", "flux", "peak"])
    table.meta["threshold"] = float(threshold)
    return table


def run_benchmark(data, methods, *, n_images=None, threshold=5.0, seed=0, progress=True, calibration=None,
                  cache=None):
    """Score methods on a simulated data set.

    Parameters
    ----------
    data : `radiorecon.simulate.SimulatedDataset` or str
        The data set (or its directory).
    methods : list of tuple
        ``(label, reconstructor, n_samples)`` for each row. Rows of the
        same reconstructor with several sample counts share its draws: each
        image is predicted once, with the largest count, and a row of fewer
        samples (two or more) takes the first of them, the draws a
        prediction of that many would make
        (`~radiorecon.Reconstructor.reusing_predictions`); its
        ``seconds_per_image`` is NaN.
    n_images : int, optional
        Use the first ``n_images`` test images (all by default): the images
        of the data set not in the calibration split, in order.
    threshold : float, ``"default"`` or a sequence of them
        Detection threshold in units of the dirty image's robust noise;
        several give rows for each, from the same predictions.
        ``"default"`` scores each row at the threshold its catalogs use by
        default (`radiorecon.catalog.default_threshold`: a model's
        calibrated ``catalog_threshold``, else 5), as ``radiorecon predict
        --catalog`` and the demo do.
    seed : int
        Image ``i`` is predicted with seed ``seed + i``: same seed, same table.
    progress : bool
        Show a progress bar over images.
    calibration : int or sequence of int, optional
        A calibration split, never scored as a test image: an int ``K`` for
        the last ``K`` images of the data set, or the indices of its images.
        Each row's significance threshold is chosen on it (the lowest of
        `~radiorecon.calibration.CALIBRATION_GRID` whose pooled purity
        reaches `~radiorecon.calibration.TARGET_PURITY`;
        the one of highest purity if none does) and the test images are
        scored at it, as one more row per method.
    cache : str or path-like, optional
        A directory where each method's predictions are kept on disk
        (`~radiorecon.Reconstructor.reusing_predictions` with ``cache``):
        the same call again, after an interruption or with more rows, reads
        the predictions it has and makes only the others, and gives the
        same table. A prediction read from it reports the seconds it took
        when it was made (so those rows' times may come from another run).

    Returns
    -------
    table : `~astropy.table.QTable`
        With `COLUMNS`: one row per method and threshold, plus ``truth
        limit`` and ``dirty`` (``protocol`` ``"significance"``), then one
        per method of the ``"published"`` protocol (`published_catalog` on
        the sky model, or its restored image, against the same on the
        apparent sky; ``threshold`` NaN, as each image sets its own; the
        ``truth limit`` is its reference, F1 1). ``fp_per_image`` is the
        mean number of spurious detections per image. For methods with an uncertainty,
        ``coverage_1sigma`` and ``coverage_2sigma`` are the fractions of
        source pixels (where the apparent sky exceeds a tenth of its image's
        maximum) whose error lies within 1 and 2 standard deviations
        (`radiorecon.metrics.coverage`; 0.683 and 0.954 when calibrated).
        For methods whose catalogs have flux errors (``flux_err`` of
        `~radiorecon.catalog.find_sources_in_model`: the spread of the
        samples' aperture fluxes, so two or more samples, and a model's
        calibrated flux error floor),
        ``flux_coverage_1sigma`` and ``flux_coverage_2sigma`` are the
        fractions of the row's matched sources, all test images pooled,
        whose found flux lies within 1 and 2 ``flux_err`` of the true
        apparent flux (NaN without flux errors, as in the ``published``
        rows); ``reliability_max_error`` is the largest
        ``|true-positive rate - mean detection_probability|`` over the bins
        of `radiorecon.metrics.reliability` holding at least
        `RELIABILITY_MIN_COUNT` of the row's detections (NaN without
        ``detection_probability``, from samples or a model's
        ``detection_calibration``, or without such a bin): at most 0.1 for
        a reliable detection probability.
        ``f1_err`` is the bootstrap standard deviation of ``f1`` over
        images (`radiorecon.metrics.bootstrap_f1`, seeded by ``seed``);
        ``f1_std`` the spread of the per-image F1. With ``calibration``, the
        rows of protocol ``"significance (calibrated)"`` follow those of
        ``"significance"``, each at its own calibrated ``threshold``, and
        ``meta["calibration"]`` holds the split (``images``), the
        ``target_purity`` and, per row label, the ``threshold``, the pooled
        ``purity`` it reached on the calibration images and ``reached``
        (False: no threshold of the grid reached the target, and the one of
        highest purity was taken).
    examples : dict
        For the first image: ``dirty``, ``truth`` (the apparent sky,
        Jy/pixel), ``sources`` (its true sources, with apparent fluxes) and
        ``results`` (per method label, the `~radiorecon.Reconstruction`); ``fluxes``, per row label,
        the matched (true, measured) flux pairs over all images (at the
        first threshold); ``counts``, per ``(label, threshold)``, and
        ``published``, per label (the published protocol), the ``(n_images,
        3)`` true positives, false positives and false negatives of each
        image; ``calibration``, per ``(label, threshold)``
        of a sampling method, the arrays ``(detection_probability,
        is_true_positive)`` of all its detections, for
        `radiorecon.metrics.reliability`; ``recovered``, per ``(label,
        threshold)``, the arrays ``(peak_snr, matched)`` of all true
        sources, for `radiorecon.metrics.completeness_by_snr`. With
        ``calibration``, the keys ``(label, "calibrated")`` of ``counts``,
        ``calibration`` and ``recovered`` are those of the calibrated rows,
        ``curves`` holds per label the purity-completeness curve of the test
        images over `~radiorecon.calibration.CALIBRATION_GRID` (a `~astropy.table.QTable` of
        ``threshold``, ``tp``, ``fp``, ``fn``, ``purity``, ``completeness``,
        counts pooled over images; ``calibration_curves`` the same on the
        calibration images) and ``completeness_by_snr`` per label the
        completeness of the test images' true sources in bins `SNR_BINS`
        of their true peak S/N at the calibrated threshold. For
        `plot_report`.
    """
    from tqdm.auto import tqdm

    if isinstance(data, str):
        from .simulate import load_dataset

        data = load_dataset(data)
    test, calib = _split(len(data), n_images, calibration)
    thresholds = [_threshold(t) for t in (np.ravel(threshold).tolist() if np.ndim(threshold) else [threshold])]
    defaults = {"truth limit": DEFAULT_THRESHOLD, "dirty": DEFAULT_THRESHOLD,
                **{label: default_threshold(rec) for label, rec, _ in methods}}

    def row_threshold(label, key):
        return chosen[label]["threshold"] if key == "calibrated" else defaults[label] if key == "default" else key

    # Row keys: the user's thresholds, then the calibrated one (per label).
    keys = thresholds + (["calibrated"] if calib else [])
    grid = CALIBRATION_GRID if calib else np.zeros(0)
    labels = ["truth limit", "dirty"] + [m[0] for m in methods]
    rows = {(label, key): [] for label in labels for key in keys}
    # tp, fp, fn over the threshold grid, summed over each split's images.
    curve = {split: {label: np.zeros((len(grid), 3), np.int64) for label in labels}
             for split in ("calibration", "test")}
    chosen = {}
    published = {label: [] for label in labels}
    cover = {label: np.zeros(3) for label in labels}  # within 1 sigma, within 2 sigma, pixels
    examples = {"fluxes": {label: [] for label in labels}, "results": {}, "calibration": {}, "recovered": {}}
    rows_of = collections.Counter(id(rec) for _, rec, _ in methods)
    # Models whose outputs are kept while an image is scored: those of
    # several rows, and with a cache every model (kept on disk too).
    shared = list({id(rec): rec for _, rec, _ in methods if cache is not None or rows_of[id(rec)] > 1}.values())
    # Calibration images first: each row's threshold is fixed before any
    # test image is scored at it.
    for i in tqdm(calib + test, desc="benchmark", disable=not progress, unit="image"):
        is_test = i in test
        if is_test and calib and not chosen:
            chosen = {label: choose_threshold(detection_curve(grid, c))
                      for label, c in curve["calibration"].items()}
        dirty = data.image(i)
        psf = np.asarray(data.psf(i).data)
        sky = apparent_sky(data, i)
        to_jy_beam = dirty.unit.to(u.Jy / u.beam)
        wcs = dirty.wcs
        beam = data.beam(i)
        pixel = proj_plane_pixel_scales(wcs)[1] * u.deg
        kernel = beam_kernel(beam, pixel)
        fwhm_px = float((beam.major / pixel).decompose())
        noise = robust_std(dirty.data, mask=dirty.mask) * to_jy_beam
        truth = apparent_sources(data, i)
        sources = source_mask(sky)
        reference = published_catalog(sky) if is_test else None
        # Jy/beam of the clean beam to Jy/pixel, so that the published
        # protocol's sums are fluxes (its detection does not depend on scale).
        beam_area = kernel.sum()

        def score(label, catalog, image, model=None, seconds=None, runs=0, n_samples=1, detections=None):
            # ``detections``: the same detections without per-sample columns,
            # all the curve needs (a catalog with samples detects in each).
            for k, t in enumerate(grid):
                found = metrics.score_catalog((detections or catalog)(t), truth, fwhm_px, flux=None)
                curve["test" if is_test else "calibration"][label][k] += [found["tp"], found["fp"], found["fn"]]
            if not is_test:
                return
            images = metrics.image_scores(model, sky) if model is not None else {}
            # (The truth limit's image is the reference itself: not detected twice.)
            found = reference if image is sky else published_catalog(image)
            pub = metrics.score_catalog(found, reference, PUBLISHED_RADIUS)
            pub.update(images, seconds=np.nan if seconds is None else float(seconds), runs=runs,
                       n_samples=n_samples)
            published[label].append(pub)
            for key in keys:
                found = catalog(row_threshold(label, key))
                row = metrics.score_catalog(found, truth, fwhm_px)
                row.update(images)
                row["seconds"] = np.nan if seconds is None else float(seconds)
                row["runs"], row["n_samples"] = runs, n_samples
                if "detection_probability" in found.colnames:
                    tp = np.zeros(len(found), bool)
                    tp[row["match"].found_index] = True
                    probabilities = examples["calibration"].setdefault((label, key), ([], []))
                    probabilities[0].append(np.asarray(found["detection_probability"], float))
                    probabilities[1].append(tp)
                rows[(label, key)].append(row)
                recovered = examples["recovered"].setdefault((label, key), ([], []))
                recovered[0].append(np.asarray(truth["peak_snr"], float))
                recovered[1].append(row["match"].truth_matched)
                if key == thresholds[0]:
                    examples["fluxes"][label].append((row["flux_true"], row["flux_found"]))

        smooth = fftconvolve(sky, kernel, mode="same")
        score("truth limit", lambda t: model_catalog(smooth, wcs, noise, t, sky, fwhm_px, deblend=DEBLEND_LIMIT),
              sky)
        dirty_data = np.nan_to_num(np.asarray(dirty.data, float)) * to_jy_beam
        score("dirty", lambda t: model_catalog(dirty_data, wcs, noise, t, dirty_data, fwhm_px, psf=psf,
                                               deblend=DEBLEND_LIMIT),
              dirty_data / beam_area)
        if i == test[0]:
            examples.update(dirty=dirty, truth=sky, sources=truth)
        # A model in several rows draws once per image, for its largest sample
        # count; its rows with fewer samples take the first of those draws (the
        # same draws: each comes from its own seeded stream), and their
        # seconds are not measured.
        drawn = {}
        with contextlib.ExitStack() as stack:
            for rec in shared:
                stack.enter_context(rec.reusing_predictions(cache=cache))
            for label, rec, n_samples in sorted(methods, key=lambda m: -m[2]):
                reused = 1 < n_samples <= drawn.get(id(rec), 0)
                drawn[id(rec)] = max(n_samples, drawn.get(id(rec), 0))
                needs_psf = "needs_psf" in rec.capabilities
                result = rec.predict(dirty, psf=data.psf(i, full=True) if needs_psf else None,
                                     n_samples=n_samples, seed=seed + i, progress=False,
                                     return_samples=n_samples > 1)
                # The time of the call that made these outputs (with a cache,
                # perhaps in an earlier run), not of reading them.
                made = rec._last_run[0]
                elapsed = np.nan if reused or made is None else made
                if result.wcs is None:
                    result.wcs = wcs
                runs = rec.backend.network_evaluations(n_samples)
                if is_per_beam(result.unit):
                    # A filtered image (the matched filter), not a sky model:
                    # detected in itself, against its own noise.
                    filtered = _jy_beam(u.Quantity(result.data, result.unit), to_jy_beam)
                    own = std_array(result, u.Jy / u.beam)
                    own = float(np.nanmedian(own)) if own is not None else robust_std(filtered)
                    response = _point_response(rec, data, i, dirty)
                    score(label, lambda t: model_catalog(filtered, wcs, own, t, filtered, fwhm_px, psf=response,
                                                         deblend=DEBLEND_LIMIT),
                          filtered / beam_area, None, elapsed, runs, n_samples)
                    if i == test[0]:
                        examples["results"][label] = result
                    continue
                model = np.nan_to_num(_in_jy_pix(result.data, result.unit))
                sigma = std_array(result, _JY_PIX)
                if is_test and sigma is not None and sources.any():
                    c = metrics.coverage(model, sigma, sky, mask=sources)
                    cover[label] += [c[1.0] * c["n"], c[2.0] * c["n"], c["n"]]
                catalog = lambda t: find_sources_in_model(  # noqa: E731
                    result, threshold=t, beam=beam, noise=noise, deblend=DEBLEND_LIMIT)
                # As astronomers do with CLEAN, the published protocol looks at
                # a restored image where the method makes one.
                restored = result.extras.get("restored")
                image = model if restored is None else _jy_beam(restored, to_jy_beam) / beam_area
                lean = None
                if result.samples is not None:
                    bare = Reconstruction(result.data, uncertainty=result.uncertainty, mask=result.mask, wcs=result.wcs,
                                          meta=result.meta, unit=result.unit)
                    lean = lambda t: find_sources_in_model(  # noqa: E731
                        bare, threshold=t, beam=beam, noise=noise, deblend=DEBLEND_LIMIT)
                score(label, catalog, image, model, elapsed, runs, n_samples, lean)
                if i == test[0]:
                    examples["results"][label] = result
    for name in ("calibration", "recovered"):
        examples[name] = {
            key: (np.concatenate(a) if a else np.zeros(0), np.concatenate(b) if b else np.zeros(0, bool))
            for key, (a, b) in examples[name].items()
        }
    table = QTable(names=COLUMNS, dtype=[str, str, int] + [float] * 16 + [int, float, int])
    examples["counts"], examples["published"] = {}, {}
    # Rows of the significance protocol at each threshold, then those of the
    # published one, whose threshold comes from each image (NaN here).
    groups = [("significance", key, {label: rows[(label, key)] for label in labels}, examples["counts"])
              for key in thresholds]
    if calib:
        groups.append(("significance (calibrated)", "calibrated", {label: rows[(label, "calibrated")]
                                                                  for label in labels}, examples["counts"]))
    groups.append(("published", np.nan, published, examples["published"]))
    for protocol, key, by_label, all_counts in groups:
        for label, runs in by_label.items():
            t = np.nan if protocol == "published" else row_threshold(label, key)
            counts = np.array([[r["tp"], r["fp"], r["fn"]] for r in runs], dtype=np.int64)
            all_counts[label if protocol == "published" else (label, key)] = counts
            f1_err = metrics.bootstrap_f1(counts, seed=seed)["std"]
            s = metrics.summarize([{k: v for k, v in r.items() if k != "match"} for r in runs])
            seconds = [r["seconds"] for r in runs]
            c1, c2, npx = cover[label]
            detections = examples["calibration"].get((label, key)) if protocol != "published" else None
            table.add_row([
                label, protocol, runs[0]["n_samples"], t, s["purity"], s["completeness"], s["f1"], f1_err,
                s.get("f1_std", np.nan), counts[:, 1].mean(), s.get("flux_r2", np.nan),
                s.get("mse_mean", np.nan), s.get("psnr_mean", np.nan), s.get("ssim_mean", np.nan),
                c1 / npx if npx else np.nan, c2 / npx if npx else np.nan, *_flux_coverage(runs),
                np.nan if detections is None else _reliability_error(*detections), runs[0]["runs"],
                float(np.median(seconds)) if np.isfinite(seconds).any() else np.nan, len(runs),
            ])
    table.meta.update(threshold=thresholds, seed=seed, reference="apparent sky (sky x primary beam)",
                      match_radius={"significance": "1 clean-beam FWHM", "published": f"{PUBLISHED_RADIUS:g} pix"})
    if calib:
        table.meta["calibration"] = {"images": calib, "target_purity": TARGET_PURITY, "thresholds": chosen}
        examples["curves"] = {label: detection_curve(grid, c) for label, c in curve["test"].items()}
        examples["calibration_curves"] = {label: detection_curve(grid, c)
                                          for label, c in curve["calibration"].items()}
        examples["completeness_by_snr"] = {
            label: metrics.completeness_by_snr(examples["recovered"][(label, "calibrated")][1],
                                               examples["recovered"][(label, "calibrated")][0], SNR_BINS)
            for label in labels
        }
    return table, examples


def _threshold(value):
    """A row threshold: ``"default"`` or a positive float."""
    if isinstance(value, str) and value == "default":
        return value
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = np.nan
    if not (np.isfinite(t) and t > 0):
        raise InputError(f'threshold must be a positive S/N (such as 5) or "default", not {value!r}')
    return t


def _split(n_total, n_images, calibration):
    """Test and calibration image indices (lists of int, disjoint) of a data set of ``n_total`` images."""
    if calibration is None:
        calib = []
    elif np.ndim(calibration) == 0:
        k = check_int(calibration, "calibration", minimum=1, maximum=n_total - 1)
        calib = list(range(n_total - k, n_total))
    else:
        calib = [check_int(int(i) if isinstance(i, np.integer) else i, "calibration image", minimum=0,
                           maximum=n_total - 1) for i in calibration]
        if not calib or len(set(calib)) != len(calib):
            raise InputError(f"the calibration images must be distinct and at least one, not {list(calibration)}")
    taken = set(calib)
    available = [i for i in range(n_total) if i not in taken]
    n = len(available) if n_images is None else int(n_images)
    if n < 1 or not available:
        raise InputError("The data set holds no test images")
    if n > len(available):
        # Never score a calibration image as a test image.
        raise InputError(f"{n} test images and a calibration split of {len(calib)} need {n + len(calib)} images; "
                         f"the data set holds {n_total}: pass fewer n_images or a smaller calibration split")
    return available[:n], calib


def _flux_coverage(runs):
    """Fractions of the matched sources of all images whose ``flux_err`` covers the true flux at 1 and 2 sigma.

    NaN, NaN when no matched source has a finite flux error.
    """
    within, n = np.zeros(2), 0
    for run in runs:
        c = metrics.coverage(run["flux_found"], run["flux_err"], run["flux_true"])
        if c["n"]:
            within += [c[1.0] * c["n"], c[2.0] * c["n"]]
            n += c["n"]
    return tuple(within / n) if n else (np.nan, np.nan)


def _reliability_error(probability, correct):
    """Largest ``|true-positive rate - mean probability|`` over bins of at least `RELIABILITY_MIN_COUNT` detections."""
    return metrics.reliability_error(probability, correct, min_count=RELIABILITY_MIN_COUNT)


def _point_response(rec, data, i, dirty):
    """A method's output for a 1 Jy point source at the centre, peak 1: what its sources look like.

    For a linear filter this is its point-spread function; flux apertures
    are divided by its share, as they are by the PSF's for the dirty image.
    """
    psf = np.asarray(data.psf(i).data, dtype=float)
    point = center_psf(psf, np.shape(dirty.data)) * dirty.unit
    response = rec.predict(point, psf=data.psf(i, full=True), progress=False).data
    response = np.nan_to_num(np.asarray(response, dtype=float))
    return response / response.max()


def _jy_beam(values, to_jy_beam):
    """Plain float array of a map in a flux per beam (a Quantity, or plain in the dirty image's unit)."""
    if isinstance(values, u.Quantity):
        return np.nan_to_num(values.to_value(u.Jy / u.beam))
    return np.nan_to_num(np.asarray(values, dtype=float)) * to_jy_beam


def _in_jy_pix(values, unit):
    """Plain float array of ``values`` in ``unit`` (None: Jy/pixel) converted to Jy/pixel."""
    return np.asarray(values, dtype=float) * (1.0 if unit is None else unit.to(_JY_PIX))


def _plot_panels(table, examples, path):
    """``panels.png`` of `plot_report`: each map of the first test image on its own sky axes."""
    from astropy.nddata import NDData
    from matplotlib.figure import Figure

    from .catalog import find_sources
    from .io import get_beam
    from .visualization import legend_handles, plot_catalog, plot_image

    dirty = examples["dirty"]
    first = table[table["protocol"] == "significance"]
    # Each row's first threshold ("default" differs between rows).
    thresholds = dict(zip(first["method"][::-1], first["threshold"][::-1]))
    truth = examples.get("sources")
    panels = [(dirty, "Dirty image", "image", None),
              (NDData(examples["truth"], wcs=dirty.wcs, unit=_JY_PIX, meta=dirty.meta), "Apparent true sky", "image",
               None)]
    for label, result in examples["results"].items():
        threshold = float(thresholds[label])
        if is_per_beam(result.unit):
            # A filtered image, detected against its own noise (as run_benchmark scores it).
            catalog = find_sources(result, threshold=threshold)
        else:
            catalog = find_sources_in_model(result, dirty, threshold)
        restored = result.extras.get("restored")
        shown = result if restored is None else NDData(restored, wcs=result.wcs, unit=getattr(restored, "unit", None),
                                                         meta=result.meta)
        panels.append((shown, f"{label}{' (restored)' if restored is not None else ''}, {threshold:g} sigma", "image",
                       catalog))
        sigma = std_array(result)
        # A missing or constant uncertainty has nothing to show (a blank or one-colour panel).
        if sigma is not None and np.ptp(np.broadcast_to(sigma, result.data.shape)[np.isfinite(sigma)]) > 0:
            panels.append((NDData(np.broadcast_to(sigma, result.data.shape), wcs=result.wcs, unit=result.unit,
                                  meta=result.meta), f"{label}: uncertainty", "uncertainty", None))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.4 * cols, 3.4 * rows + 0.6), layout="constrained")
    # Found sources match true ones within one clean-beam FWHM, as in the table.
    fwhm_px = float((get_beam(dirty).major / (proj_plane_pixel_scales(dirty.wcs)[1] * u.deg)).decompose())
    probabilities = False
    for k, (image, title, kind, catalog) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1, projection=image.wcs.celestial)
        plot_image(image, ax, title=title, kind=kind, size=np.shape(dirty.data)[0] // 2)
        if catalog is not None:
            # Counts in the title and one legend for all panels: nothing drawn over the sources.
            found = plot_catalog(ax, catalog, truth=truth, radius=fwhm_px, legend=False)
            counts = (f"{len(catalog)} detected" if found is None
                      else f"{found.tp} true, {found.fp} spurious, {found.fn} missed")
            ax.set_title(f"{title}\n{counts}", fontsize=11)
            probabilities |= "detection_probability" in catalog.colnames
    if len(panels) > 2:
        fig.legend(handles=legend_handles(truth=truth is not None, probability=probabilities),
                   loc="outside lower center", ncols=4, fontsize=11)
    fig.suptitle("First test image; detections at each row's first threshold", fontsize=14)
    fig.savefig(path, dpi=150)


def completeness_table(table, examples):
    """Completeness per true peak-S/N bin at each row's calibrated threshold, all rows in one table.

    Parameters
    ----------
    table, examples
        As returned by `run_benchmark` with a calibration split.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``method``, ``threshold`` (the calibrated one, in units of the dirty
        image's noise), then the columns of
        `radiorecon.metrics.completeness_by_snr` for the bins `SNR_BINS`.
    """
    chosen = table.meta["calibration"]["thresholds"]
    parts = []
    for label, bins in examples["completeness_by_snr"].items():
        part = QTable(bins)
        part.add_column([label] * len(part), name="method", index=0)
        part.add_column(np.full(len(part), chosen[label]["threshold"]), name="threshold", index=1)
        parts.append(part)
    return vstack(parts)


def to_markdown(table):
    """The benchmark table as a Markdown table (numbers to 3-4 significant digits)."""
    def fmt(value):
        if isinstance(value, (str, np.str_)):
            return str(value)
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        return "—" if np.isnan(value) else (f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.4g}")

    lines = ["| " + " | ".join(table.colnames) + " |", "|" + "---|" * len(table.colnames)]
    for row in table:
        lines.append("| " + " | ".join(fmt(row[c]) for c in table.colnames) + " |")
    return "\n".join(lines)


def plot_report(table, examples, out):
    """Write ``panels.png`` (sky maps of the first test image), ``fluxes.png`` and more.

    ``panels.png`` shows, on sky axes with colour bars, the beam and a scale
    bar (`radiorecon.visualization`), the dirty image, the apparent true
    sky and each method's sky model (its restored image for a method that
    makes one, as CLEAN does) with its detections at its first threshold
    marked against the truth (matched, spurious, missed), followed by its
    uncertainty where it has one that varies over the image.

    With a calibration split (``examples["curves"]``) also ``curves.png``:
    each row's purity-completeness curve on the test images over
    `~radiorecon.calibration.CALIBRATION_GRID`, its calibrated threshold marked.

    With a sampling method (``examples["calibration"]``) also
    ``reliability.png``: the reliability diagram of ``detection_probability``,
    the observed fraction of true positives against the mean predicted
    probability in each bin of `radiorecon.metrics.reliability`, one line
    per method, with its detections per bin; the diagonal (reliable) and a
    band of +-0.1 around it. Detections at the calibrated thresholds where
    there are any, else at the first threshold.

    The figures are drawn with `matplotlib.figure.Figure` alone, so this
    works without a display and leaves the user's backend and pyplot state
    untouched.
    """
    from matplotlib.figure import Figure

    _plot_panels(table, examples, f"{out}/panels.png")

    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.subplots()
    for label, pairs in examples["fluxes"].items():
        true = np.concatenate([u.Quantity(t, u.Jy).to_value(u.mJy) for t, _ in pairs] or [[]])
        found = np.concatenate([u.Quantity(f, u.Jy).to_value(u.mJy) for _, f in pairs] or [[]])
        ax.scatter(true, found, s=6, label=label, alpha=0.6)
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k:", lw=1)
    ax.set_xlabel("true apparent flux (mJy)")
    ax.set_ylabel("measured flux (mJy)")
    ax.legend(fontsize=8)
    fig.savefig(f"{out}/fluxes.png", dpi=110)

    _plot_reliability(table, examples, f"{out}/reliability.png")
    if "curves" not in examples:
        return
    chosen = table.meta["calibration"]["thresholds"]
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.subplots()
    for label, curve in examples["curves"].items():
        (line,) = ax.plot(curve["completeness"], curve["purity"], ".-", ms=3, label=label)
        k = int(np.argmin(np.abs(curve["threshold"] - chosen[label]["threshold"])))
        ax.plot(curve["completeness"][k], curve["purity"][k], "o", mfc="none", color=line.get_color())
    ax.axhline(TARGET_PURITY, color="k", ls=":", lw=1)
    ax.set_xlabel("completeness (test images)")
    ax.set_ylabel("purity (test images)")
    ax.set_title("thresholds %g-%g sigma; circles: calibrated" % (CALIBRATION_GRID[0], CALIBRATION_GRID[-1]),
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(f"{out}/curves.png", dpi=110)


def _plot_reliability(table, examples, path):
    """``reliability.png`` of `plot_report`; nothing without detection probabilities."""
    from matplotlib.figure import Figure

    key = "calibrated" if "curves" in examples else table.meta["threshold"][0]
    detections = {label: arrays for (label, k), arrays in examples["calibration"].items()
                  if k == key and len(arrays[0])}
    if not detections:
        return
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.fill_between([0, 1], [-0.1, 0.9], [0.1, 1.1], color="0.85", lw=0, label="±0.1")
    for label, (probability, correct) in detections.items():
        bins = metrics.reliability(probability, correct)
        bins = bins[bins["n"] > 0]
        (line,) = ax.plot(bins["mean_probability"], bins["true_positive_rate"], "o-", ms=4, label=label)
        for p, rate, n in zip(bins["mean_probability"], bins["true_positive_rate"], bins["n"]):
            ax.annotate(str(n), (p, rate), xytext=(3, 3), textcoords="offset points", fontsize=7,
                        color=line.get_color())
    # Room for the points on the edges and their counts.
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("mean detection_probability in bin")
    ax.set_ylabel("fraction of true positives (test images)")
    named = {"calibrated": "calibrated thresholds", "default": "each row's default threshold"}
    where = named[key] if isinstance(key, str) else f"{key:g} sigma"
    ax.set_title(f"Reliability of detections at {where}; numbers: detections per bin", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
