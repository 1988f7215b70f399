"""Tests of `radiorecon.catalog.find_sources` on synthetic skies."""

import sys

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from radiorecon.catalog import find_sources
from radiorecon.result import Reconstruction

SHAPE = (96, 96)
SIGMA = 1e-4  # Jy/beam, thermal noise per pixel
FWHM = 3.0  # px
STD = FWHM / (2 * np.sqrt(2 * np.log(2)))
# (x, y, integrated flux in Jy/beam * pix): peaks of 20-50 sigma, well apart.
TRUTH = np.array([[20.3, 30.7, 0.05], [60.0, 70.2, 0.03], [75.6, 18.1, 0.02]])
COLUMNS = ["id", "x", "y", "sky_centroid", "flux", "flux_err", "peak", "snr", "a", "b", "theta"]


def gaussian(x0, y0, flux, shape=SHAPE):
    """Circular Gaussian of total ``flux`` centred on pixel (x0, y0)."""
    y, x = np.indices(shape)
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    return flux / (2 * np.pi * STD**2) * np.exp(-r2 / (2 * STD**2))


def celestial_wcs():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [48.5, 48.5]
    wcs.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def sky(sources=TRUTH, seed=1):
    noise = np.random.default_rng(seed).normal(0.0, SIGMA, SHAPE)
    return noise + sum(gaussian(*src) for src in sources)


def nddata(data, **kwargs):
    return NDData(data, unit=u.Jy / u.beam, wcs=celestial_wcs(), **kwargs)


def match(table, truth):
    """Row index of the detection nearest each true position."""
    xy = np.column_stack([table["x"], table["y"]])
    return np.array([np.argmin(np.hypot(*(xy - t[:2]).T)) for t in truth])


def test_finds_sources_with_positions_fluxes_and_sky_coordinates():
    table = find_sources(nddata(sky()), threshold=5.0)
    assert table.colnames == COLUMNS
    assert len(table) == 3
    assert list(table["id"]) == [1, 2, 3]
    rows = table[match(table, TRUTH)]
    np.testing.assert_allclose(rows["x"], TRUTH[:, 0], atol=0.5)
    np.testing.assert_allclose(rows["y"], TRUTH[:, 1], atol=0.5)

    # The segment holds the pixels above 5 sigma only, i.e. inside the
    # isophote where a Gaussian of peak P falls to 5 sigma, which encloses
    # the fraction 1 - 5 sigma / P of its flux.
    assert rows["flux"].unit == u.Jy / u.beam
    flux, flux_err = rows["flux"].value, rows["flux_err"].value
    peak_truth = TRUTH[:, 2] / (2 * np.pi * STD**2)
    expected = TRUTH[:, 2] * (1 - 5 * SIGMA / peak_truth)
    assert np.all(np.abs(flux - expected) < 3 * flux_err)
    np.testing.assert_allclose(rows["peak"].value, peak_truth, rtol=0.1)
    assert np.all(rows["flux_err"].value > 0)
    np.testing.assert_allclose(rows["snr"], flux / rows["flux_err"].value)
    assert np.all(rows["snr"] > 30)

    true_sky = celestial_wcs().pixel_to_world(TRUTH[:, 0], TRUTH[:, 1])
    assert isinstance(rows["sky_centroid"], SkyCoord)
    assert np.all(rows["sky_centroid"].separation(true_sky) < 0.05 * u.arcsec)

    # Circular sources: a ~ b ~ the Gaussian's sigma, within the segment cut.
    assert rows["a"].unit == u.pix and rows["theta"].unit == u.deg
    assert np.all((rows["a"] > 0.6 * STD * u.pix) & (rows["a"] < 1.2 * STD * u.pix))
    assert np.all(rows["b"] <= rows["a"])
    assert np.all((rows["theta"] >= 0 * u.deg) & (rows["theta"] < 180 * u.deg))

    assert table.meta["noise_method"] == "robust"
    assert table.meta["noise"] == pytest.approx(SIGMA, rel=0.1)
    assert table.meta["threshold"] == 5.0 and table.meta["npixels"] == 5


def test_pure_noise_gives_an_empty_table_with_the_same_columns():
    table = find_sources(nddata(sky(sources=[])), threshold=5.0)
    assert len(table) == 0
    assert table.colnames == COLUMNS
    assert table["flux"].unit == u.Jy / u.beam
    assert table["a"].unit == u.pix and table["theta"].unit == u.deg


def test_masked_and_nan_pixels_are_not_detected():
    data = sky(sources=TRUTH[:2]) + gaussian(75.6, 18.1, 0.05)
    data[50:60, 5:15] = np.nan
    mask = np.zeros(SHAPE, bool)
    mask[10:28, 66:86] = True  # over the bright third source
    table = find_sources(nddata(data, mask=mask))
    assert len(table) == 2
    np.testing.assert_allclose(np.sort(table["x"]), np.sort(TRUTH[:2, 0]), atol=0.5)

    # The same through the ``mask`` argument, on a plain array.
    table = find_sources(np.nan_to_num(data), mask=mask)
    assert len(table) == 2


def test_plain_array_without_wcs_has_no_sky_centroid():
    table = find_sources(sky())
    assert "sky_centroid" not in table.colnames
    assert table.colnames == [c for c in COLUMNS if c != "sky_centroid"]
    assert len(table) == 3
    assert not isinstance(table["flux"], u.Quantity)


def test_quantity_input_and_given_noise():
    table = find_sources(sky() * u.Jy / u.beam, noise=0.1 * u.mJy / u.beam)
    assert len(table) == 3
    assert table["flux"].unit == u.Jy / u.beam
    assert table.meta["noise_method"] == "given"
    assert table.meta["noise"] == pytest.approx(SIGMA)


def test_uncertainty_map_suppresses_sources_where_it_is_large():
    sigma = np.full(SHAPE, SIGMA)
    sigma[60:80, 50:70] = 1.0  # the second source sits here
    sigma[:5, :5] = 0.0  # no usable noise: left out, without 0/0 warnings
    ccd = CCDData(sky(), unit="Jy/beam", uncertainty=StdDevUncertainty(sigma))
    table = find_sources(ccd)
    assert table.meta["noise_method"] == "uncertainty"
    assert "noise" not in table.meta
    assert len(table) == 2
    assert not np.any(np.hypot(table["x"] - 60.0, table["y"] - 70.2) < 5)
    # 1 sigma of the known noise per pixel, summed in quadrature.
    area = (table["flux_err"].value / SIGMA) ** 2
    assert np.all((area > 5) & (area < 100))

    # A variance map is converted to a standard deviation.
    model = Reconstruction(sky(), unit=u.Jy / u.pix, uncertainty=VarianceUncertainty(sigma**2))
    other = find_sources(model)
    np.testing.assert_allclose(other["flux_err"].value, table["flux_err"].value)


PAIR = [[44.0, 48.0, 0.02], [48.0, 48.0, 0.02]]  # 4 px apart, FWHM 3 px: one island


def test_blended_pair_is_deblended():
    data = sky(sources=PAIR)
    assert len(find_sources(data, deblend=False)) == 1
    table = find_sources(data)
    assert len(table) == 2
    np.testing.assert_allclose(np.sort(table["x"]), [44.0, 48.0], atol=0.5)


def test_without_scikit_image_blends_stay_whole_with_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.warns(AstropyUserWarning, match="scikit-image"):
        table = find_sources(sky(sources=PAIR))
    assert len(table) == 1
    np.testing.assert_allclose(table["x"], 46.0, atol=0.5)


def test_detection_probability_from_samples():
    rng = np.random.default_rng(5)
    steady = gaussian(30.0, 40.0, 0.02)
    flicker = gaussian(70.0, 60.0, 0.05)
    samples = rng.normal(0.0, SIGMA, (10,) + SHAPE) + steady
    samples[:3] += flicker
    model = Reconstruction(
        samples.mean(axis=0), unit=u.Jy / u.pix, wcs=celestial_wcs(), samples=samples
    )
    table = find_sources(model, noise=SIGMA * u.Jy / u.pix)
    assert table.colnames == COLUMNS + ["detection_probability"]
    assert len(table) == 2
    by_x = table[np.argsort(table["x"])]
    np.testing.assert_allclose(by_x["detection_probability"], [1.0, 0.3])
    assert table.meta["match_radius"] == 2.0

    # A single sample carries no spread: no probability column.
    single = Reconstruction(samples[0], unit=u.Jy / u.pix, samples=samples[:1])
    assert "detection_probability" not in find_sources(single, noise=SIGMA).colnames


def test_noiseless_sky_model_asks_for_noise():
    model = Reconstruction(gaussian(48.0, 48.0, 0.01) * (np.hypot(*np.indices(SHAPE) - 48) < 4),
                           unit=u.Jy / u.pix)
    with pytest.raises(ValueError, match="noise="):
        find_sources(model)
    assert len(find_sources(model, noise=SIGMA)) == 1
