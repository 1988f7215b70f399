"""Tests of `radiorecon.metrics` on hand-made cases."""

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import NDData
from astropy.table import QTable
from scipy import stats
from skimage.metrics import structural_similarity

from radiorecon import metrics
from radiorecon.catalog import match


def catalog(x, y, flux=None, unit=None):
    table = QTable({"x": np.asarray(x, float), "y": np.asarray(y, float)})
    if flux is not None:
        table["flux"] = np.asarray(flux, float) * (unit if unit is not None else 1)
    return table


# Found: f0 (10, 10), f1 (20, 20), f2 (30, 30), f3 (80, 80).
# Truth: t0 (10.5, 10), t1 (20, 21), t2 (50, 50).
# Within 1.5 px: f0-t0 (0.5 px) and f1-t1 (1.0 px). So TP = 2, FP = 2
# (f2, f3), FN = 1 (t2): purity = 2/4 = 0.5, completeness = 2/3,
# F1 = 2 * 2 / (2 * 2 + 2 + 1) = 4/7 (= 2 * 0.5 * 2/3 / (0.5 + 2/3)).
FOUND = catalog([10, 20, 30, 80], [10, 20, 30, 80], flux=[1.1, 1.9, 5.0, 7.0])
TRUTH = catalog([10.5, 20, 50], [10, 21, 50], flux=[1.0, 2.0, 3.0])


def test_known_catalog_pair():
    scores = metrics.score_catalog(FOUND, TRUTH, 1.5)
    assert (scores["n_found"], scores["n_true"]) == (4, 3)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 1)
    assert scores["purity"] == pytest.approx(0.5)
    assert scores["completeness"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(4 / 7)  # the harmonic mean of 1/2 and 2/3
    # Matched fluxes, pair by pair: (1.1, 1.0) and (1.9, 2.0).
    np.testing.assert_allclose(scores["flux_found"], [1.1, 1.9])
    np.testing.assert_allclose(scores["flux_true"], [1.0, 2.0])
    # R^2 = 1 - (0.1^2 + 0.1^2) / (0.5^2 + 0.5^2) = 1 - 0.02 / 0.5 = 0.96;
    # two points are always perfectly correlated.
    assert scores["flux_r2"] == pytest.approx(0.96)
    assert scores["flux_r"] == pytest.approx(1.0)
    assert list(scores["match"].false_positives) == [2, 3]
    # No flux_err column: the matched errors are unknown.
    assert np.isnan(scores["flux_err"]).all() and len(scores["flux_err"]) == 2


def test_matched_flux_errors_cover_the_true_fluxes():
    found = FOUND.copy()
    found["flux_err"] = [0.2, 0.06, 9.0, 9.0]
    scores = metrics.score_catalog(found, TRUTH, 1.5)
    np.testing.assert_allclose(scores["flux_err"], [0.2, 0.06])  # of the matched f0 and f1
    # |1.1 - 1.0| = 0.1 is within 1 sigma (0.2); |1.9 - 2.0| = 0.1 only within 2 (0.12).
    c = metrics.coverage(scores["flux_found"], scores["flux_err"], scores["flux_true"])
    assert (c[1.0], c[2.0], c["n"]) == (0.5, 1.0, 2)


def test_detection_scores_by_hand():
    assert metrics.detection_scores(2, 2, 1) == pytest.approx(
        {"purity": 0.5, "completeness": 2 / 3, "f1": 4 / 7})
    assert metrics.detection_scores(3, 0, 0) == {"purity": 1.0, "completeness": 1.0, "f1": 1.0}
    # Nothing found, nothing to find: vacuously perfect.
    assert metrics.detection_scores(0, 0, 0) == {"purity": 1.0, "completeness": 1.0, "f1": 1.0}
    # Spurious detections on an empty image.
    assert metrics.detection_scores(0, 3, 0) == {"purity": 0.0, "completeness": 1.0, "f1": 0.0}
    # Nothing found on an image with sources.
    assert metrics.detection_scores(0, 0, 3) == {"purity": 1.0, "completeness": 0.0, "f1": 0.0}
    assert metrics.detection_scores(0, 2, 3) == {"purity": 0.0, "completeness": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match=">= 0"):
        metrics.detection_scores(1, -1, 0)


@pytest.mark.parametrize(
    "found, truth, expected",
    [
        # Empty truth: every detection is false.
        (FOUND, TRUTH[:0], dict(tp=0, fp=4, fn=0, purity=0.0, completeness=1.0, f1=0.0)),
        # Nothing found: every true source is missed.
        (FOUND[:0], TRUTH, dict(tp=0, fp=0, fn=3, purity=1.0, completeness=0.0, f1=0.0)),
        # Both empty.
        (FOUND[:0], TRUTH[:0], dict(tp=0, fp=0, fn=0, purity=1.0, completeness=1.0, f1=1.0)),
    ],
)
def test_score_catalog_edge_cases(found, truth, expected):
    scores = metrics.score_catalog(found, truth, 1.5)
    assert {key: scores[key] for key in expected} == expected
    assert np.isnan(scores["flux_r2"]) and np.isnan(scores["flux_r"])
    assert len(scores["flux_found"]) == len(scores["flux_true"]) == 0


def test_score_catalog_flux_units_and_columns():
    found = catalog([0, 10, 20], [0, 0, 0], flux=[1.0, 2.0, 3.5], unit=u.mJy / u.pix)
    truth = catalog([0, 10, 20], [0, 0, 0], flux=[1.0, 2.0, 3.0], unit=u.mJy)
    # The sum of Jy/pixel values is a flux: Jy/pix compares with Jy.
    found["flux_err"] = [0.1, 0.2, 0.3] * u.uJy / u.pix
    scores = metrics.score_catalog(found, truth, 1.0)
    assert scores["flux_found"].unit == u.mJy
    # Errors come in the unit of the found fluxes: Jy/pix sums compare with Jy too.
    assert scores["flux_err"].unit == u.mJy
    np.testing.assert_allclose(scores["flux_err"].value, [1e-4, 2e-4, 3e-4])
    # R^2 = 1 - 0.5^2 / (1 + 0 + 1) = 0.875.
    assert scores["flux_r2"] == pytest.approx(0.875)
    found["flux"] = found["flux"].value * u.Jy / u.beam
    with pytest.raises(u.UnitConversionError, match="beam"):
        metrics.score_catalog(found, truth, 1.0)
    scores = metrics.score_catalog(found, truth, 1.0, flux=None)
    assert scores["tp"] == 3 and np.isnan(scores["flux_r2"]) and len(scores["flux_err"]) == 0
    with pytest.raises(ValueError, match="flux=None"):
        metrics.score_catalog(found, truth["x", "y"], 1.0)


def test_r_squared_and_pearson_against_numpy_and_scipy():
    true = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    measured = np.array([1.2, 1.8, 3.3, 3.9, 5.1])
    # By hand: SS_res = 0.04 + 0.04 + 0.09 + 0.01 + 0.81 = 0.99; mean 3.2,
    # SS_tot = 4.84 + 1.44 + 0.04 + 0.64 + 7.84 = 14.8.
    assert metrics.r_squared(measured, true) == pytest.approx(1 - 0.99 / 14.8)
    expected = 1 - np.sum((measured - true) ** 2) / np.sum((true - true.mean()) ** 2)
    assert metrics.r_squared(measured, true) == pytest.approx(expected)
    assert metrics.pearson_r(measured, true) == pytest.approx(stats.pearsonr(measured, true)[0])
    assert metrics.pearson_r(measured, true) == pytest.approx(np.corrcoef(measured, true)[0, 1])
    # A scale error: perfect correlation, but R^2 < 1 and even negative.
    assert metrics.pearson_r(3 * true, true) == pytest.approx(1.0)
    assert metrics.r_squared(3 * true, true) < 0
    assert metrics.pearson_r(-true, true) == pytest.approx(-1.0)
    # Units: measured is converted to true's unit.
    assert metrics.r_squared(measured * 1e3 * u.mJy, true * u.Jy) == pytest.approx(expected)
    # Undefined cases.
    assert np.isnan(metrics.r_squared([1.0], [1.0]))
    assert np.isnan(metrics.r_squared([1.0, 2.0], [3.0, 3.0]))
    assert np.isnan(metrics.pearson_r([1.0, 1.0], [1.0, 2.0]))
    assert np.isnan(metrics.pearson_r([], []))
    with pytest.raises(ValueError, match="measured"):
        metrics.r_squared([1.0, 2.0], [1.0])


# Truth: 0 except 2 at (0, 0), range 2; the prediction also has 1 at (1, 1).
TRUE_IMAGE = np.zeros((8, 8))
TRUE_IMAGE[0, 0] = 2.0
PRED_IMAGE = TRUE_IMAGE.copy()
PRED_IMAGE[1, 1] = 1.0


def test_mse_and_psnr_by_hand():
    # MSE = 1^2 / 64; PSNR = 10 log10(2^2 / (1/64)) = 10 log10(256).
    assert metrics.mse(PRED_IMAGE, TRUE_IMAGE) == pytest.approx(1 / 64)
    assert metrics.psnr(PRED_IMAGE, TRUE_IMAGE) == pytest.approx(10 * np.log10(256))
    assert metrics.psnr(PRED_IMAGE, TRUE_IMAGE, data_range=4.0) == pytest.approx(
        10 * np.log10(1024))
    # Identical images.
    assert metrics.mse(TRUE_IMAGE, TRUE_IMAGE) == 0
    assert metrics.psnr(TRUE_IMAGE, TRUE_IMAGE) == np.inf
    # Masking the differing pixel (here, or as NaN, or through NDData).
    mask = np.zeros((8, 8), bool)
    mask[1, 1] = True
    assert metrics.mse(PRED_IMAGE, TRUE_IMAGE, mask=mask) == 0
    nan = PRED_IMAGE.copy()
    nan[1, 1] = np.nan
    assert metrics.mse(nan, TRUE_IMAGE) == 0
    assert metrics.mse(NDData(PRED_IMAGE, mask=mask), TRUE_IMAGE) == 0
    assert metrics.mse(np.ma.array(PRED_IMAGE, mask=mask), TRUE_IMAGE) == 0
    # Only (1, 1) and (0, 1) left: errors 1 and 0, MSE 1/2.
    mask[0, 1] = True
    assert metrics.mse(PRED_IMAGE, TRUE_IMAGE, mask=~mask) == pytest.approx(1 / 2)
    # No pixel left.
    assert np.isnan(metrics.mse(PRED_IMAGE, TRUE_IMAGE, mask=np.ones((8, 8), bool)))


def test_image_metrics_units():
    pred = NDData(PRED_IMAGE * 1e3, unit=u.mJy / u.pix)
    true = NDData(TRUE_IMAGE, unit=u.Jy / u.pix)
    assert metrics.mse(pred, true) == pytest.approx(1 / 64)  # in (Jy/pix)^2
    assert metrics.psnr(pred, true, data_range=4000 * u.mJy / u.pix) == pytest.approx(
        10 * np.log10(1024))
    assert metrics.mse(PRED_IMAGE * u.Jy, TRUE_IMAGE * u.Jy) == pytest.approx(1 / 64)
    with pytest.raises(u.UnitConversionError):
        metrics.mse(PRED_IMAGE * u.m, TRUE_IMAGE * u.Jy)
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(PRED_IMAGE[:4], TRUE_IMAGE)
    with pytest.raises(ValueError, match="2-D"):
        metrics.mse(PRED_IMAGE[0], TRUE_IMAGE[0])


def test_empty_truth_has_no_default_range():
    # An empty true sky: the range is 0, so PSNR and SSIM are undefined
    # unless a data range is given.
    empty = np.zeros((16, 16))
    pred = empty.copy()
    pred[8, 8] = 0.5
    assert np.isnan(metrics.psnr(pred, empty)) and np.isnan(metrics.ssim(pred, empty))
    assert np.isnan(metrics.psnr(empty, empty))
    # MSE = 0.25 / 256; PSNR = 10 log10(1 / (0.25 / 256)) = 10 log10(1024).
    assert metrics.psnr(pred, empty, data_range=1.0) == pytest.approx(10 * np.log10(1024))
    assert metrics.ssim(empty, empty, data_range=1.0) == pytest.approx(1.0)
    assert metrics.ssim(pred, empty, data_range=1.0) < 1


def test_ssim():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(32, 32))
    truth[10:20, 10:20] += 5
    noisy = truth + 0.3 * rng.normal(size=truth.shape)
    assert metrics.ssim(truth, truth) == pytest.approx(1.0)
    value = metrics.ssim(noisy, truth)
    assert 0 < value < 1
    # The same as scikit-image with the truth's range when nothing is masked.
    expected = structural_similarity(truth, noisy, data_range=np.ptp(truth))
    assert value == pytest.approx(expected)
    assert metrics.ssim(noisy, truth, win_size=5) == pytest.approx(
        structural_similarity(truth, noisy, data_range=np.ptp(truth), win_size=5))
    # Masked pixels do not count: corrupting only them changes nothing
    # outside their windows, and they are left out of the mean.
    mask = np.zeros(truth.shape, bool)
    mask[:, :6] = True
    corrupted = noisy.copy()
    corrupted[:, :6] = 100.0
    assert metrics.ssim(corrupted, truth, mask=mask) == pytest.approx(
        metrics.ssim(noisy, truth, mask=mask))
    assert metrics.ssim(corrupted, truth, mask=mask) > metrics.ssim(corrupted, truth)
    scores = metrics.image_scores(noisy, truth)
    assert scores == pytest.approx({"mse": metrics.mse(noisy, truth),
                                    "psnr": metrics.psnr(noisy, truth), "ssim": value})


def test_completeness_by_snr_by_hand():
    # Five true sources; those with S/N 4, 12 and 60 were found.
    truth_snr = np.array([2.0, 4.0, 8.0, 12.0, 60.0])
    matched = np.array([False, True, False, True, True])
    table = metrics.completeness_by_snr(matched, truth_snr, [0, 5, 10, 50, 100, 200])
    assert table.colnames == ["snr_min", "snr_max", "n_true", "n_found", "completeness"]
    assert list(table["n_true"]) == [2, 1, 1, 1, 0]
    assert list(table["n_found"]) == [1, 0, 1, 1, 0]
    np.testing.assert_array_equal(table["completeness"], [0.5, 0.0, 1.0, 1.0, np.nan])
    np.testing.assert_array_equal(table["snr_min"], [0, 5, 10, 50, 100])
    # Values outside the edges are not counted; the last edge is included.
    table = metrics.completeness_by_snr(matched, truth_snr, [4, 12])
    assert list(table["n_true"]) == [3] and list(table["n_found"]) == [2]
    # A Match gives the matched true sources.
    m = match(FOUND, TRUTH, 1.5)  # t0, t1 matched, t2 missed
    table = metrics.completeness_by_snr(m, [10.0, 3.0, 30.0], [0, 20, 40])
    assert list(table["completeness"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="S/N"):
        metrics.completeness_by_snr(m, [1.0, 2.0], [0, 20])


def test_summarize_micro_and_per_image():
    one = metrics.score_catalog(FOUND, TRUTH, 1.5)  # TP 2, FP 2, FN 1
    empty = metrics.score_catalog(FOUND[:0], TRUTH[:0], 1.5)  # all 0, scores 1
    perfect = metrics.score_catalog(TRUTH, TRUTH, 1.5)  # TP 3
    rows = [one, empty, perfect]
    for row, psnr in zip(rows, [20.0, np.nan, 30.0]):
        row.update(psnr=psnr, image=7)  # int entries are left out
    summary = metrics.summarize(rows)
    assert summary["n_images"] == 3
    assert (summary["tp"], summary["fp"], summary["fn"]) == (5, 2, 1)
    assert (summary["n_found"], summary["n_true"]) == (7, 6)
    # Micro: purity 5/7, completeness 5/6, F1 = 10 / (10 + 2 + 1).
    assert summary["purity"] == pytest.approx(5 / 7)
    assert summary["completeness"] == pytest.approx(5 / 6)
    assert summary["f1"] == pytest.approx(10 / 13)
    # Per image: purity 0.5, 1, 1 -> mean 5/6, sample std sqrt(1/12).
    assert summary["purity_mean"] == pytest.approx(5 / 6)
    assert summary["purity_std"] == pytest.approx(np.std([0.5, 1, 1], ddof=1))
    assert summary["purity_n"] == 3
    assert summary["f1_mean"] == pytest.approx((4 / 7 + 2) / 3)
    # NaN values are left out: PSNR of 2 images; flux R^2 of the 2 with pairs.
    assert summary["psnr_mean"] == pytest.approx(25.0)
    assert summary["psnr_std"] == pytest.approx(np.std([20, 30], ddof=1))
    assert summary["psnr_n"] == 2 and summary["flux_r2_n"] == 2
    assert summary["flux_r2_mean"] == pytest.approx((0.96 + 1.0) / 2)
    # Pooled fluxes: (1.1, 1.0), (1.9, 2.0), then 1, 2, 3 exactly.
    measured, true = [1.1, 1.9, 1.0, 2.0, 3.0], [1.0, 2.0, 1.0, 2.0, 3.0]
    assert summary["flux_r2"] == pytest.approx(metrics.r_squared(measured, true))
    assert summary["flux_r"] == pytest.approx(stats.pearsonr(measured, true)[0])
    assert "image_mean" not in summary and "tp_mean" not in summary

    # One value: std undefined. Summaries tabulate.
    single = metrics.summarize([one])
    assert single["purity_mean"] == 0.5 and np.isnan(single["purity_std"])
    table = QTable(rows=[summary, single])
    assert len(table) == 2 and table["f1"][1] == pytest.approx(4 / 7)


def test_summarize_a_table_of_scalars():
    rows = [metrics.detection_scores(*counts) | {"tp": counts[0], "fp": counts[1],
                                                  "fn": counts[2]}
            for counts in [(1, 1, 0), (0, 0, 2)]]
    summary = metrics.summarize(QTable(rows=rows))
    assert summary["purity"] == pytest.approx(0.5)  # 1 / (1 + 1)
    assert summary["completeness"] == pytest.approx(1 / 3)  # 1 / (1 + 2)
    assert summary["completeness_mean"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert "flux_r2" not in summary
    assert metrics.summarize([]) == {"n_images": 0}


def test_coverage_counts_errors_within_k_sigma():
    from radiorecon.metrics import coverage

    truth = np.zeros(10)
    pred = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.0, 0.9, -3.0, 1.0, 2.0])
    out = coverage(pred, np.ones(10), truth)
    assert out[1.0] == pytest.approx(0.5) and out[2.0] == pytest.approx(0.8) and out["n"] == 10
    mask = np.zeros(10, bool)
    mask[:4] = True
    assert coverage(pred, np.ones(10), truth, mask=mask)[1.0] == pytest.approx(0.5)
    q = coverage(pred * u.mJy, np.ones(10) * u.mJy, truth * u.Jy)
    assert q[1.0] == pytest.approx(0.5)
    # Calibrated Gaussian errors cover 68% and 95%.
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, 20000)
    g = coverage(rng.normal(0, sigma), sigma, np.zeros(20000))
    assert g[1.0] == pytest.approx(0.683, abs=0.01) and g[2.0] == pytest.approx(0.954, abs=0.01)
    with pytest.raises(ValueError, match="shapes differ"):
        coverage(np.zeros(3), np.ones(2), np.zeros(3))


def test_reliability_bins_probabilities():
    from radiorecon.metrics import reliability

    p = np.array([0.1, 0.1, 0.5, 0.9, 1.0, 1.0])
    ok = np.array([False, True, True, True, True, False])
    table = reliability(p, ok, bins=[0, 0.5, 1])
    assert list(table["n"]) == [2, 4]
    assert table["true_positive_rate"][0] == pytest.approx(0.5)
    assert table["true_positive_rate"][1] == pytest.approx(0.75)
    assert table["mean_probability"][1] == pytest.approx(0.85)
    empty = reliability(np.zeros(0), np.zeros(0, bool))
    assert np.all(empty["n"] == 0) and np.all(np.isnan(empty["true_positive_rate"]))
    with pytest.raises(ValueError):
        reliability([0.1, 0.2], [True])


def test_bootstrap_f1():
    # Two images: one perfect (2 of 2 found), one a miss (0 of 2, 2 false).
    counts = [[2, 0, 0], [0, 2, 2]]
    out = metrics.bootstrap_f1(counts, n_boot=4000, seed=1)
    assert out["value"] == pytest.approx(0.5)
    # Resamples hold both images (F1 0.5), two perfect (1) or two misses (0).
    assert out["low"] == 0.0 and out["high"] == 1.0
    assert out["std"] == pytest.approx(np.sqrt(0.125), rel=0.05)
    same = metrics.bootstrap_f1(counts, reference=counts, seed=1)
    assert same == {"value": 0.0, "std": 0.0, "low": 0.0, "high": 0.0}
    # Paired: a method that finds one more source in every image is better in every resample.
    better = metrics.bootstrap_f1([[3, 0, 0], [1, 2, 1]], reference=[[2, 0, 1], [0, 2, 2]], seed=1)
    assert better["value"] > 0 and better["low"] > 0
    with pytest.raises(ValueError, match="reference counts have shape"):
        metrics.bootstrap_f1(counts, reference=[[1, 0, 0]])
