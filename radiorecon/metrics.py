"""Scores of reconstructed sky models and their catalogs against the truth.

Two kinds of scores, computed per image and then aggregated over a data set:

* catalog scores (`score_catalog`): sources found in a reconstruction are
  matched one-to-one to the true sources (`radiorecon.catalog.match`),
  giving purity, completeness and F1 (`detection_scores`) and, for the
  matched pairs, how well fluxes are recovered (`r_squared`, `pearson_r`);
  `completeness_by_snr` bins the completeness by true S/N;
* image scores (`image_scores`): `mse`, `psnr` and `ssim` between the
  reconstructed and the true sky model.

A benchmark collects one dict per image and method and aggregates them::

    rows = []
    for found, truth, model, true_model in dataset:
        row = score_catalog(found, truth, radius=1.5)
        row.update(image_scores(model, true_model))
        rows.append(row)
    summary = summarize(rows)  # one dict per method; QTable(rows=[...]) compares them

Empty catalogs. Purity is ``TP / (TP + FP)``, completeness ``TP / (TP + FN)`` and F1 their
harmonic mean, ``2 TP / (2 TP + FP + FN)``. A ratio with nothing to count is
vacuously perfect: purity is 1 when nothing was found (no false detection
was made), completeness is 1 when there was nothing to find (nothing was
missed), and F1 is 1 when both hold. So, on an image without sources, a
method that finds nothing scores 1, 1, 1, and one that finds spurious
sources scores purity 0, completeness 1, F1 0; on an image with sources, a
method that finds nothing scores purity 1, completeness 0, F1 0. Per-image
means over a data set with empty images therefore reward correct silence
and punish hallucination, instead of silently dropping those images (as
NaN would). The micro-averaged scores of `summarize`, from TP, FP and FN
summed over all images, are unaffected by this choice except through FP.
"""

import astropy.units as u
import numpy as np
from astropy.nddata import NDData
from astropy.table import QTable, Table

from .catalog import Match, match

__all__ = [
    "detection_scores",
    "reliability_error",
    "r_squared",
    "pearson_r",
    "mse",
    "psnr",
    "ssim",
    "image_scores",
    "completeness_by_snr",
    "coverage",
    "reliability",
    "score_catalog",
    "summarize",
    "bootstrap_f1",
]

# Counts that `summarize` adds up over images.
_COUNTS = ("n_found", "n_true", "tp", "fp", "fn")


def detection_scores(tp, fp, fn):
    """Purity, completeness and F1 from counts of true and false positives.

    Parameters
    ----------
    tp, fp, fn : int
        Numbers of matched found sources (true positives), unmatched found
        sources (false positives) and unmatched true sources (false
        negatives).

    Returns
    -------
    scores : dict
        ``purity`` = TP / (TP + FP), 1 when TP + FP = 0 (nothing found);
        ``completeness`` = TP / (TP + FN), 1 when TP + FN = 0 (nothing to
        find); ``f1`` = 2 TP / (2 TP + FP + FN), the harmonic mean of the
        two, 1 when all counts are 0 and 0 when either score is 0. All are
        floats in [0, 1]; see the module notes for why empty cases score 1.
    """
    tp, fp, fn = (int(n) for n in (tp, fp, fn))
    if min(tp, fp, fn) < 0:
        raise ValueError(f"counts must be >= 0, got tp={tp}, fp={fp}, fn={fn}")
    return {
        "purity": tp / (tp + fp) if tp + fp else 1.0,
        "completeness": tp / (tp + fn) if tp + fn else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
    }


def _pair(measured, true):
    """Plain float arrays of two equally long value sets, in ``true``'s unit."""
    if isinstance(measured, u.Quantity) and isinstance(true, u.Quantity):
        measured = measured.to_value(true.unit)
        true = true.value
    measured = np.asarray(getattr(measured, "value", measured), float).ravel()
    true = np.asarray(getattr(true, "value", true), float).ravel()
    if measured.shape != true.shape:
        raise ValueError(f"{measured.size} measured values but {true.size} true ones")
    return measured, true


def r_squared(measured, true):
    """Coefficient of determination of measured against true values.

    ``R^2 = 1 - sum((measured - true)^2) / sum((true - mean(true))^2)``:
    the fraction of the variance of the true values that the measurement
    reproduces, taking ``measured = true`` as the model (not a fitted
    line), so it is 1 for a perfect measurement and negative when it is
    worse than quoting the mean true value. The same as
    `sklearn.metrics.r2_score`.

    Parameters
    ----------
    measured, true : array-like or `~astropy.units.Quantity`
        Paired values, e.g. the fluxes of matched sources (if both are
        Quantities, ``measured`` is converted to ``true``'s unit).

    Returns
    -------
    r2 : float
        NaN with fewer than 2 pairs or when the true values are all equal.
    """
    measured, true = _pair(measured, true)
    if len(true) < 2:
        return np.nan
    total = np.sum((true - true.mean()) ** 2)
    if total == 0:
        return np.nan
    return float(1.0 - np.sum((measured - true) ** 2) / total)


def pearson_r(measured, true):
    """Pearson correlation coefficient of measured and true values.

    Parameters
    ----------
    measured, true : array-like or `~astropy.units.Quantity`
        Paired values.

    Returns
    -------
    r : float
        In [-1, 1], as `scipy.stats.pearsonr`; NaN with fewer than 2 pairs
        or when either set is constant. Unlike `r_squared`, it is blind to
        a scale error or an offset.
    """
    measured, true = _pair(measured, true)
    if len(true) < 2:
        return np.nan
    dm, dt = measured - measured.mean(), true - true.mean()
    norm = np.sqrt(np.sum(dm**2) * np.sum(dt**2))
    if norm == 0:
        return np.nan
    return float(np.clip(np.sum(dm * dt) / norm, -1.0, 1.0))


def _image(image, name):
    """Data, unit (or None) and bad-pixel mask of an array, Quantity or NDData."""
    mask = None
    if isinstance(image, NDData):
        data, unit, mask = image.data, image.unit, image.mask
    elif isinstance(image, u.Quantity):
        data, unit = image.value, image.unit
    else:
        data, unit = image, None
        if np.ma.isMaskedArray(image):
            data, mask = image.filled(np.nan), np.ma.getmaskarray(image)
    if isinstance(data, u.Quantity):
        data, unit = data.value, data.unit
    data = np.asarray(data, float)
    if data.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {data.shape}")
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, bool)
    return data, unit, bad


def _images(prediction, truth, mask):
    """Prediction and truth as float arrays in the truth's unit, and the good pixels."""
    pred, pred_unit, pred_bad = _image(prediction, "prediction")
    true, true_unit, true_bad = _image(truth, "truth")
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    if pred_unit is not None and true_unit is not None:
        pred = (pred * pred_unit).to_value(true_unit)
    good = ~(pred_bad | true_bad)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    return pred, true, good, true_unit


def _range(true, good, data_range, unit):
    """The data range of PSNR and SSIM: given, or the truth's max - min over good pixels."""
    if data_range is not None:
        if isinstance(data_range, u.Quantity):
            data_range = data_range.to_value(unit) if unit is not None else data_range.value
        return float(data_range)
    return float(np.ptp(true[good])) if good.any() else np.nan


def mse(prediction, truth, *, mask=None):
    """Mean squared error (squared L2 distance per pixel) of an image.

    Parameters
    ----------
    prediction, truth : `~numpy.ndarray`, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
        2-D images of the same shape. If both have units the prediction is
        converted to the truth's; otherwise values are compared as given.
    mask : bool `~numpy.ndarray`, optional
        True for pixels to leave out, in addition to the images' own masks
        and their non-finite pixels.

    Returns
    -------
    mse : float
        ``mean((prediction - truth)^2)`` over the good pixels, in the square
        of the truth's unit; NaN when no pixel is good.
    """
    pred, true, good, _ = _images(prediction, truth, mask)
    if not good.any():
        return np.nan
    return float(np.mean((pred[good] - true[good]) ** 2))


def psnr(prediction, truth, *, mask=None, data_range=None):
    """Peak signal-to-noise ratio of an image, in dB.

    ``PSNR = 10 log10(data_range^2 / MSE)``, with `mse`.

    Parameters
    ----------
    prediction, truth, mask
        As for `mse`.
    data_range : float or `~astropy.units.Quantity`, optional
        The range of the signal, in the truth's unit. By default the
        truth's ``max - min`` over the good pixels, so that PSNR does not
        depend on the flux scale of the image. Pass one value for a whole
        data set to compare images on a common scale, and to score images
        whose truth is empty.

    Returns
    -------
    psnr : float
        In dB; ``inf`` when the images agree exactly, NaN when the data
        range is 0 (e.g. an empty true sky with the default range) or no
        pixel is good.
    """
    pred, true, good, unit = _images(prediction, truth, mask)
    error = mse(pred, true, mask=~good)
    peak = _range(true, good, data_range, unit)
    if not (peak > 0 and np.isfinite(error)):
        return np.nan
    if error == 0:
        return np.inf
    return float(10.0 * np.log10(peak**2 / error))


def ssim(prediction, truth, *, mask=None, data_range=None, win_size=7):
    """Mean structural similarity of an image (`skimage.metrics.structural_similarity`).

    Parameters
    ----------
    prediction, truth, mask
        As for `mse`.
    data_range : float or `~astropy.units.Quantity`, optional
        As for `psnr`: by default the truth's ``max - min`` over the good
        pixels. It sets the stabilising constants ``C1 = (0.01 R)^2`` and
        ``C2 = (0.03 R)^2``; the images are not rescaled.
    win_size : int, optional
        Side of the uniform sliding window in pixels (odd, scikit-image's
        default 7); the images must be at least this large.

    Returns
    -------
    ssim : float
        The SSIM map averaged over the good pixels at least
        ``(win_size - 1) / 2`` from the edges (scikit-image's mean when no
        pixel is masked); 1 for identical images, at most 1. NaN when the
        data range is 0 or no such pixel is good.

    Notes
    -----
    Bad pixels are set to 0 in both images before filtering, so windows
    next to them see equal zeros there.
    """
    from skimage.metrics import structural_similarity

    pred, true, good, unit = _images(prediction, truth, mask)
    peak = _range(true, good, data_range, unit)
    pad = (win_size - 1) // 2
    inner = np.zeros_like(good)
    inner[pad:good.shape[0] - pad, pad:good.shape[1] - pad] = True
    if not (peak > 0 and (good & inner).any()):
        return np.nan
    _, smap = structural_similarity(
        np.where(good, true, 0.0), np.where(good, pred, 0.0),
        win_size=win_size, data_range=peak, full=True,
    )
    return float(np.mean(smap[good & inner]))


def image_scores(prediction, truth, *, mask=None, data_range=None):
    """`mse`, `psnr` and `ssim` of one image.

    Parameters are as for `psnr`; returns a dict of floats with keys
    ``mse``, ``psnr`` and ``ssim``.
    """
    kwargs = {"mask": mask}
    return {
        "mse": mse(prediction, truth, **kwargs),
        "psnr": psnr(prediction, truth, data_range=data_range, **kwargs),
        "ssim": ssim(prediction, truth, data_range=data_range, **kwargs),
    }


def completeness_by_snr(matched, truth_snr, bins):
    """Completeness of the true sources in bins of their S/N (or any property).

    Parameters
    ----------
    matched : `~radiorecon.catalog.Match` or bool array-like
        Which true sources were found: a `~radiorecon.catalog.Match`, or one
        bool per true source.
    truth_snr : array-like
        The S/N of each true source (e.g. true peak / noise); any other
        property, such as the flux, works the same way.
    bins : array-like or int
        Bin edges, increasing, or a number of equal bins spanning the finite
        values. As for `numpy.histogram`, bins include their lower edge and
        the last one also its upper edge; values outside the edges, or not
        finite, are not counted.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per bin: ``snr_min``, ``snr_max`` (edges), ``n_true`` (true
        sources in the bin), ``n_found`` (of which matched) and
        ``completeness`` (``n_found / n_true``; NaN for a bin without true
        sources, which has nothing to measure, unlike the vacuous 1 of
        `detection_scores` for a whole image).
    """
    snr = np.asarray(getattr(truth_snr, "value", truth_snr), float).ravel()
    if isinstance(matched, Match):
        matched = matched.truth_matched
    matched = np.asarray(matched, bool).ravel()
    if matched.shape != snr.shape:
        raise ValueError(f"{matched.size} matched flags but {snr.size} S/N values")
    finite = np.isfinite(snr)
    edges = np.histogram_bin_edges(snr[finite], bins)
    n_true = np.histogram(snr[finite], edges)[0]
    n_found = np.histogram(snr[finite & matched], edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        completeness = np.where(n_true > 0, n_found / np.maximum(n_true, 1), np.nan)
    return QTable(
        [edges[:-1], edges[1:], n_true, n_found, completeness],
        names=["snr_min", "snr_max", "n_true", "n_found", "completeness"],
    )


def _fluxes(found, truth):
    """Found fluxes in the truth's unit (Jy/pixel sums count as Jy)."""
    if not (isinstance(found, u.Quantity) and isinstance(truth, u.Quantity)):
        return (np.asarray(getattr(found, "value", found), float),
                np.asarray(getattr(truth, "value", truth), float))
    if found.unit.is_equivalent(truth.unit):
        return found.to(truth.unit), truth
    # find_sources sums pixel values in the image's unit: the sum of a
    # Jy/pixel sky model is a flux in Jy.
    if (found.unit * u.pix).is_equivalent(truth.unit):
        return (found * u.pix).to(truth.unit), truth
    raise u.UnitConversionError(
        f"found fluxes in {found.unit} cannot be compared with true fluxes in "
        f"{truth.unit}; convert them first (a Jy/beam sum needs the beam area)"
    )


def score_catalog(found, truth, radius, *, flux="flux"):
    """Detection and flux scores of one image's catalog against the truth.

    Parameters
    ----------
    found, truth : `~astropy.table.Table`
        The found catalog (e.g. from `~radiorecon.catalog.find_sources`)
        and the true sources, as for `~radiorecon.catalog.match`.
    radius : float or `~astropy.units.Quantity`
        Matching radius, in pixels or as an angle (see
        `~radiorecon.catalog.match`).
    flux : str or None, optional
        Name of the flux column in both tables, or None to skip the flux
        scores. If both are Quantities the found fluxes are converted to
        the truth's unit; a found flux in Jy/pix (the sum of a Jy/pixel
        sky model's pixels) counts as Jy.

    Returns
    -------
    scores : dict
        ``n_found``, ``n_true``, ``tp``, ``fp``, ``fn`` (int); ``purity``,
        ``completeness``, ``f1`` (float, `detection_scores`); ``flux_r2``
        and ``flux_r`` (`r_squared` and `pearson_r` of the matched fluxes,
        NaN with fewer than 2 pairs); ``flux_found`` and ``flux_true``
        (the matched fluxes, pair by pair, for pooling by `summarize`);
        ``flux_err`` (the matched found sources' uncertainties, from the
        column named ``flux`` + ``"_err"`` (e.g. ``flux_err``), in the unit of
        ``flux_found``, NaN where the found table has no such column; for
        `coverage` of the true fluxes) and ``match`` (the
        `~radiorecon.catalog.Match`).
    """
    pairs = match(found, truth, radius)
    scores = {"n_found": len(found), "n_true": len(truth),
              "tp": pairs.tp, "fp": pairs.fp, "fn": pairs.fn}
    scores.update(detection_scores(pairs.tp, pairs.fp, pairs.fn))
    if flux is None:
        flux_found = flux_true = flux_err = np.zeros(0)
    else:
        for table, what in ((found, "found"), (truth, "truth")):
            if flux not in table.colnames:
                raise ValueError(f"the {what} table has no {flux!r} column; pass flux=None "
                                 "to skip the flux scores")
        true = truth[flux][pairs.truth_index]
        flux_found, flux_true = _fluxes(found[flux][pairs.found_index], true)
        err = f"{flux}_err"
        flux_err = (_fluxes(found[err][pairs.found_index], true)[0] if err in found.colnames
                    else np.full_like(flux_found, np.nan))
    scores["flux_r2"] = r_squared(flux_found, flux_true)
    scores["flux_r"] = pearson_r(flux_found, flux_true)
    scores["flux_found"], scores["flux_true"], scores["flux_err"] = flux_found, flux_true, flux_err
    scores["match"] = pairs
    return scores


def _is_float(value):
    """Whether ``value`` is a float scalar (or a float Quantity scalar), not a bool or int."""
    value = getattr(value, "value", value)
    return np.ndim(value) == 0 and np.asarray(value).dtype.kind == "f"


def _mean_std(values):
    """Mean, sample standard deviation (ddof=1) and count of the finite values."""
    if any(isinstance(v, u.Quantity) for v in values):
        values = u.Quantity(values)
        unit, values = values.unit, values.value
    else:
        unit, values = None, np.asarray(values, float)
    finite = values[np.isfinite(values)]
    n = len(finite)
    mean = float(finite.mean()) if n else np.nan
    std = float(finite.std(ddof=1)) if n > 1 else np.nan
    if unit is not None:
        mean, std = mean * unit, std * unit
    return mean, std, n


def summarize(scores):
    """Aggregate per-image scores over a data set.

    Parameters
    ----------
    scores : list of dict or `~astropy.table.Table`
        One entry per image, as `score_catalog` returns, optionally updated
        with `image_scores` or further float metrics.

    Returns
    -------
    summary : dict
        ``n_images``; the counts ``n_found``, ``n_true``, ``tp``, ``fp``,
        ``fn`` summed over images, where present; ``purity``,
        ``completeness`` and ``f1`` micro-averaged, i.e.
        `detection_scores` of the summed counts (every source weighs the
        same); ``flux_r2`` and ``flux_r`` of the matched fluxes of all
        images pooled (when the entries have ``flux_found`` and
        ``flux_true``); and, for each float-valued metric ``m`` of the
        entries (``purity``, ``f1``, ``flux_r2``, ``psnr``, ...),
        ``m_mean`` and ``m_std`` (mean and sample standard deviation, ddof
        = 1, over the images where it is finite: NaN where undefined) and
        ``m_n`` (the number of those images). Integer and other entries
        (e.g. an image id or a method name) are left out. Values are
        scalars, so ``QTable(rows=[summarize(a), summarize(b)])``
        tabulates several methods.
    """
    if isinstance(scores, Table):
        scores = [{name: row[name] for name in scores.colnames} for row in scores]
    scores = list(scores)
    summary = {"n_images": len(scores)}
    keys = list(scores[0]) if scores else []
    for key in _COUNTS:
        if scores and all(key in row for row in scores):
            summary[key] = int(sum(int(row[key]) for row in scores))
    if all(key in summary for key in ("tp", "fp", "fn")):
        summary.update(detection_scores(summary["tp"], summary["fp"], summary["fn"]))
    if scores and all("flux_found" in row and "flux_true" in row for row in scores):
        pooled = [_pooled([row[key] for row in scores]) for key in ("flux_found", "flux_true")]
        summary["flux_r2"] = r_squared(*pooled)
        summary["flux_r"] = pearson_r(*pooled)
    for key in keys:
        if key in _COUNTS or not all(key in row and _is_float(row[key]) for row in scores):
            continue
        mean, std, n = _mean_std([row[key] for row in scores])
        summary[f"{key}_mean"], summary[f"{key}_std"], summary[f"{key}_n"] = mean, std, n
    return summary


def _pooled(arrays):
    """Concatenation of per-image value arrays (Quantities in the first one's unit)."""
    units = {getattr(a, "unit", None) for a in arrays if len(a)}
    if any(unit is not None for unit in units):
        unit = next(unit for unit in units if unit is not None)
        return u.Quantity(np.concatenate([u.Quantity(a, unit).value for a in arrays]), unit)
    return np.concatenate([np.asarray(a, float) for a in arrays]) if arrays else np.zeros(0)


def coverage(prediction, std, truth, *, mask=None, k=(1.0, 2.0)):
    """Fraction of pixels (or of any values) whose error lies within ``k`` standard deviations.

    For calibrated Gaussian uncertainties the fractions are 0.683 (1 sigma)
    and 0.954 (2 sigma); smaller fractions mean the uncertainty is too small.

    Parameters
    ----------
    prediction, std, truth : array or `~astropy.units.Quantity`
        Estimate, its one-sigma uncertainty and the true image, same shape
        and unit (or any arrays of values, e.g. the ``flux_found``,
        ``flux_err`` and ``flux_true`` of `score_catalog`).
    mask : bool array, optional
        True where pixels count (e.g. the sources' footprints); default all
        pixels where the three are finite.
    k : sequence of float
        Multiples of ``std``.

    Returns
    -------
    dict
        ``{k: fraction}`` for each ``k``, and ``"n"``: the number of pixels.
    """
    pred = np.asarray(u.Quantity(prediction).value, float)
    unit = getattr(prediction, "unit", None)
    sig = np.asarray(u.Quantity(std, unit).value if unit is not None else std, float)
    true = np.asarray(u.Quantity(truth, unit).value if unit is not None else truth, float)
    if not pred.shape == sig.shape == true.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, std {sig.shape}, truth {true.shape}")
    good = np.isfinite(pred) & np.isfinite(sig) & np.isfinite(true)
    if mask is not None:
        good &= np.asarray(mask, bool)
    err = np.abs(pred[good] - true[good])
    out = {float(kk): (float(np.mean(err <= kk * sig[good])) if good.any() else np.nan) for kk in k}
    out["n"] = int(good.sum())
    return out


def reliability(probability, correct, bins=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)):
    """Detection probability against the fraction of detections that are real.

    For calibrated probabilities, detections given probability ``p`` are
    true positives a fraction ``p`` of the time.

    Parameters
    ----------
    probability : array
        Detection probability of each found source (e.g. the
        ``detection_probability`` column of `~radiorecon.catalog.find_sources`).
    correct : bool array
        Whether each found source matched a true one.
    bins : sequence of float
        Bin edges in [0, 1]; the last bin includes 1.

    Returns
    -------
    `~astropy.table.QTable`
        Per bin: ``p_low``, ``p_high``, ``n``, ``mean_probability`` and
        ``true_positive_rate`` (NaN for empty bins).
    """
    from astropy.table import QTable

    p = np.asarray(probability, float)
    ok = np.asarray(correct, bool)
    if p.shape != ok.shape:
        raise ValueError(f"{p.shape[0] if p.ndim else 0} probabilities but {ok.shape[0] if ok.ndim else 0} flags")
    edges = np.asarray(bins, float)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = index == b
        rows.append((edges[b], edges[b + 1], int(sel.sum()),
                     float(p[sel].mean()) if sel.any() else np.nan,
                     float(ok[sel].mean()) if sel.any() else np.nan))
    return QTable(rows=rows, names=["p_low", "p_high", "n", "mean_probability", "true_positive_rate"])


def reliability_error(probability, correct, *, min_count=10):
    """Largest ``|true-positive rate - mean probability|`` over the `reliability` bins of ``min_count`` or more.

    Bins of fewer detections are too noisy to tell an error of 0.1. NaN if
    no bin holds enough.
    """
    bins = reliability(probability, correct)
    full = np.asarray(bins["n"]) >= min_count
    if not full.any():
        return np.nan
    return float(np.max(np.abs(np.asarray(bins["true_positive_rate"])[full]
                               - np.asarray(bins["mean_probability"])[full])))


def bootstrap_f1(counts, *, reference=None, n_boot=2000, seed=0):
    """Bootstrap over images of the micro-averaged F1 (or of its difference).

    Images are drawn with replacement and the F1 of their summed counts is
    recomputed, ``n_boot`` times; the spread says how much the F1 of a data
    set of this size depends on which images it holds.

    Parameters
    ----------
    counts : array-like
        ``(n_images, 3)`` true positives, false positives and false negatives
        of each image.
    reference : array-like, optional
        The same for another method on the same images: then the statistic
        is F1(counts) - F1(reference), resampled with the *same* images for
        both (a paired bootstrap, much tighter than two separate ones).
    n_boot : int
    seed : int

    Returns
    -------
    dict
        ``value`` (the statistic on all images), ``std`` (its bootstrap
        standard deviation) and ``low``/``high`` (the 2.5 and 97.5
        percentiles).
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    if reference is not None:
        reference = np.asarray(reference, dtype=np.int64).reshape(-1, 3)
        if reference.shape != counts.shape:
            raise ValueError(f"reference counts have shape {reference.shape}, expected {counts.shape}")
    if len(counts) == 0:
        raise ValueError("bootstrap_f1 needs the counts of at least one image")

    def f1(c):
        tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)

    def stat(idx):
        value = f1(counts[idx].sum(axis=-2))
        return value - f1(reference[idx].sum(axis=-2)) if reference is not None else value

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    boot = stat(idx)
    value = float(stat(np.arange(len(counts))))
    low, high = np.percentile(boot, [2.5, 97.5])
    # Identical resamples give exactly zero, not a rounding residue.
    std = float(boot.std(ddof=1)) if np.ptp(boot) > 0 else 0.0
    return {"value": value, "std": std, "low": float(low), "high": float(high)}

