"""Tests of `radiorecon.catalog`: find_sources on synthetic skies, match and to_regions."""

import itertools

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.table import QTable
from astropy.wcs import WCS
from regions import (
    CircleSkyRegion, EllipseSkyRegion, PointSkyRegion, Regions,
)

from radiorecon.catalog import Match, find_sources, find_sources_in_model, to_regions
from radiorecon.catalog import match as match_catalogs
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
    assert table.meta["noise"].unit == u.Jy / u.beam
    assert table.meta["noise"].value == pytest.approx(SIGMA, rel=0.1)
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
    assert table.meta["noise"].to_value(u.Jy / u.beam) == pytest.approx(SIGMA)


@pytest.mark.parametrize("noise", [0.0, -SIGMA, np.nan, np.inf, 0.0 * u.Jy / u.beam])
def test_unusable_noise_is_refused(noise):
    # Each used to give an empty catalog (every pixel left out) or noise-free S/N.
    with pytest.raises(ValueError, match="noise must be positive and finite"):
        find_sources(nddata(sky()), noise=noise)


def test_unusable_noise_map_is_refused():
    with pytest.raises(ValueError, match="no positive, finite pixel"):
        find_sources(sky(), noise=np.zeros(SHAPE))
    with pytest.raises(ValueError, match="negative pixels"):
        find_sources(sky(), noise=np.full(SHAPE, -SIGMA))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        find_sources(sky(), noise=np.ones(3))
    # Zero or NaN pixels of a map are left out, as for an uncertainty.
    noise = np.full(SHAPE, SIGMA)
    noise[:, 50:] = np.nan
    assert np.all(find_sources(sky(), noise=noise)["x"] < 50)


@pytest.mark.parametrize("threshold", [np.nan, 0.0, -5.0, np.inf])
def test_unusable_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold must be a positive, finite S/N"):
        find_sources(sky(), threshold=threshold)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"threshold": "5"}, TypeError, "threshold must be a number"),
    ({"threshold": True}, TypeError, "threshold must be a number"),
    ({"threshold": 5 * u.Jy}, TypeError, "threshold must be a number"),
    ({"npixels": 0}, ValueError, "npixels must be at least 1"),
    ({"npixels": 2.5}, TypeError, "npixels must be an integer"),
    ({"connectivity": 6}, ValueError, "connectivity must be 4 or 8"),
])
def test_bad_detection_parameters_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        find_sources(sky(), **kwargs)


def test_robust_noise_is_the_shared_estimator():
    from radiorecon._noise import robust_std

    data = sky()
    mask = np.zeros(SHAPE, bool)
    mask[:10] = True
    data[:10] = 1e3  # masked junk must not count
    table = find_sources(nddata(data, mask=mask))
    assert table.meta["noise"].to_value(u.Jy / u.beam) == robust_std(data[10:])
    assert robust_std(data, mask=mask) == robust_std(data[10:])
    assert robust_std(np.full(4, np.nan)) == 0.0


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


def test_deblend_limit_splits_only_maps_of_few_sources():
    lone = [[20.0, 80.0, 0.02]]
    # The pair and a lone source: two islands, deblended into three sources
    # when two are allowed, left as two islands when one is.
    data = sky(sources=PAIR + lone)
    assert len(find_sources(data, deblend=2)) == 3
    assert len(find_sources(data, deblend=1)) == 2
    assert len(find_sources(data, deblend=np.bool_(True))) == 3
    with pytest.raises(TypeError, match="deblend"):
        find_sources(data, deblend="yes")
    with pytest.raises(ValueError, match="deblend"):
        find_sources(data, deblend=0)


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
    assert table.meta["match_radius"] == 2.0 * u.pix

    # A single sample carries no spread: no probability column.
    single = Reconstruction(samples[0], unit=u.Jy / u.pix, samples=samples[:1])
    assert "detection_probability" not in find_sources(single, noise=SIGMA).colnames


def test_noiseless_sky_model_asks_for_noise():
    model = Reconstruction(gaussian(48.0, 48.0, 0.01) * (np.hypot(*np.indices(SHAPE) - 48) < 4),
                           unit=u.Jy / u.pix)
    with pytest.raises(ValueError, match="noise="):
        find_sources(model)
    assert len(find_sources(model, noise=SIGMA)) == 1


# --- find_sources: orientation meta -------------------------------------------------


def test_celestial_wcs_orientation_is_stored_in_meta():
    table = find_sources(nddata(sky()))
    assert table.meta["pixel_scale"].unit == u.arcsec / u.pix
    assert table.meta["pixel_scale"].value == pytest.approx(0.1, rel=1e-6)
    assert table.meta["north_angle"].unit == u.deg
    assert table.meta["north_angle"].value == pytest.approx(90.0, abs=1e-6)
    assert table.meta["mirrored"] is False
    assert "pixel_scale" not in find_sources(sky()).meta  # no WCS, no orientation


# --- match --------------------------------------------------------------------------


def xy_table(x, y=None, **columns):
    x = np.asarray(x, float)
    return QTable({"x": x, "y": np.zeros_like(x) if y is None else np.asarray(y, float),
                   **columns})


def test_match_beats_greedy_nearest_neighbour():
    # f0's nearest true source is t0 (0.4 px), but t0 is f1's only one
    # within 1 px; f0 also reaches t1 (0.8 px). Greedy matching pairs f0-t0
    # and leaves f1 alone (1 match); the best assignment has 2:
    # f0-t1 and f1-t0, 0.8 px each.
    found = xy_table([0.0, 1.2])
    truth = xy_table([0.4, -0.8])
    m = match_catalogs(found, truth, 1.0)
    assert isinstance(m, Match)
    assert list(m.found_index) == [0, 1] and list(m.truth_index) == [1, 0]
    np.testing.assert_allclose(m.separation.to_value(u.pix), [0.8, 0.8])
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.false_positives.size == m.false_negatives.size == 0
    pairs = m.to_table()
    assert pairs.colnames == ["found_index", "truth_index", "separation"]
    assert pairs["separation"].unit == u.pix


def test_match_minimises_total_distance_among_maximal_matchings():
    # All four pairs are within 2 px: f0-t0 + f1-t1 = 0.1 + 0.1 beats
    # f0-t1 + f1-t0 = 0.9 + 1.1.
    m = match_catalogs(xy_table([0.0, 1.0]), xy_table([0.1, 0.9]), 2.0)
    assert list(m.truth_index) == [0, 1]
    np.testing.assert_allclose(m.separation.value, [0.1, 0.1])


def brute_force(dist, radius):
    """(number of pairs, total distance) of the best partial one-to-one matching."""
    n, k = dist.shape
    best = (0, 0.0)
    for size in range(1, min(n, k) + 1):
        for rows in itertools.combinations(range(n), size):
            for cols in itertools.permutations(range(k), size):
                d = dist[rows, cols]
                if np.all(d <= radius):
                    best = max(best, (size, -d.sum()))
    return best[0], -best[1]


@pytest.mark.parametrize("seed", range(8))
def test_match_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    found = xy_table(*rng.uniform(0, 4, (2, 5)))
    truth = xy_table(*rng.uniform(0, 4, (2, 4)))
    m = match_catalogs(found, truth, 1.5)
    dist = np.hypot(found["x"][:, None] - truth["x"], found["y"][:, None] - truth["y"])
    n, total = brute_force(dist, 1.5)
    assert m.tp == n
    assert m.separation.value.sum() == pytest.approx(total)
    assert m.fp == 5 - n and m.fn == 4 - n
    assert set(m.false_positives) == set(range(5)) - set(m.found_index)
    assert set(m.false_negatives) == set(range(4)) - set(m.truth_index)


def test_match_radius_is_inclusive_and_respected():
    found, truth = xy_table([0.0, 10.0]), xy_table([1.5, 11.5 + 1e-9])
    m = match_catalogs(found, truth, 1.5 * u.pix)  # a Quantity in pix works too
    assert list(m.found_index) == [0] and list(m.truth_index) == [0]
    assert list(m.false_positives) == [1] and list(m.false_negatives) == [1]
    assert match_catalogs(found, truth, 1.4).tp == 0
    assert match_catalogs(found, truth, 0.0).tp == 0


def test_match_in_arcsec_on_the_sky():
    wcs = celestial_wcs()  # 0.1 arcsec pixels
    found = xy_table([10.0, 40.0, 70.0], [10.0, 40.0, 70.0])
    truth = xy_table([40.0, 10.9, 90.0], [41.2, 10.0, 90.0])
    for table in (found, truth):
        table["sky_centroid"] = wcs.pixel_to_world(table["x"], table["y"])
    truth["sky_centroid"] = truth["sky_centroid"].transform_to("galactic")  # any frame
    m = match_catalogs(found, truth, 0.15 * u.arcsec)
    assert list(m.found_index) == [0, 1] and list(m.truth_index) == [1, 0]
    assert m.separation.unit == u.arcsec
    np.testing.assert_allclose(m.separation.value, [0.09, 0.12], rtol=1e-5)
    assert list(m.false_positives) == [2] and list(m.false_negatives) == [2]
    # The same sources in pixels.
    in_pixels = match_catalogs(found, truth, 1.5)
    assert list(in_pixels.truth_index) == list(m.truth_index)
    # Radius in mas: separations come back in mas.
    assert match_catalogs(found, truth, 100 * u.mas).separation.unit == u.mas


def test_match_needs_sky_positions_for_an_angular_radius():
    found = find_sources(sky())  # no WCS: no sky_centroid
    with pytest.raises(ValueError, match="sky_centroid"):
        match_catalogs(found, found, 0.2 * u.arcsec)
    with pytest.raises(u.UnitsError, match="pix or an angle"):
        match_catalogs(found, found, 1 * u.m)
    with pytest.raises(ValueError, match=">= 0"):
        match_catalogs(found, found, -1.0)
    with pytest.raises(ValueError, match="no 'x' column"):
        match_catalogs(found, QTable({"y": [1.0]}), 1.0)


@pytest.mark.parametrize("radius", [2.0, 0.2 * u.arcsec])
def test_match_with_empty_tables(radius):
    table = find_sources(nddata(sky()))
    empty = find_sources(nddata(sky(sources=[])))
    assert len(table) == 3 and len(empty) == 0
    m = match_catalogs(empty, table, radius)
    assert (m.tp, m.fp, m.fn) == (0, 0, 3) and list(m.false_negatives) == [0, 1, 2]
    m = match_catalogs(table, empty, radius)
    assert (m.tp, m.fp, m.fn) == (0, 3, 0) and list(m.false_positives) == [0, 1, 2]
    m = match_catalogs(empty, empty, radius)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0)
    assert len(m.to_table()) == 0 and m.truth_matched.shape == (0,)


def test_match_of_a_catalog_with_itself_and_truth_matched():
    table = find_sources(nddata(sky()))
    m = match_catalogs(table, table[::-1], 0.5)
    assert m.tp == 3 and list(m.truth_index) == [2, 1, 0]
    assert np.all(m.separation == 0) and m.truth_matched.all()


# --- to_regions ---------------------------------------------------------------------


def rotated_wcs(rotation=0.0, mirrored=False):
    """celestial_wcs rotated by ``rotation`` deg, optionally with east to the right."""
    wcs = celestial_wcs()
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    wcs.wcs.pc = [[c, -s], [s, c]]
    if mirrored:
        wcs.wcs.cdelt = [0.1 / 3600, 0.1 / 3600]
    return wcs


def ellipse_catalog(wcs):
    """Hand-made catalog of three ellipses, with find_sources' orientation meta."""
    table = QTable({"id": [1, 2, 3], "x": [30.0, 50.0, 70.0], "y": [40.0, 20.0, 60.0]})
    table["sky_centroid"] = wcs.pixel_to_world(table["x"], table["y"])
    table["a"] = [3.0, 2.0, 1.5] * u.pix
    table["b"] = [1.0, 1.5, 1.5] * u.pix
    table["theta"] = [20.0, 100.0, 170.0] * u.deg
    # The meta find_sources stores for this WCS.
    table.meta.update(find_sources(NDData(sky(), wcs=wcs)).meta)
    return table


@pytest.mark.parametrize("rotation, mirrored", [(0, False), (35, False), (-120, False),
                                                (0, True), (35, True)])
@pytest.mark.parametrize("use_wcs", [False, True])
def test_ellipse_round_trip_through_the_sky(rotation, mirrored, use_wcs):
    wcs = rotated_wcs(rotation, mirrored)
    table = ellipse_catalog(wcs)
    assert table.meta["mirrored"] is mirrored
    # North on the pixel grid, independently: from the centre to a point 1" north.
    centre = wcs.pixel_to_world(47.5, 47.5)
    north = wcs.world_to_pixel(centre.directional_offset_by(0 * u.deg, 1 * u.arcsec))
    expected = np.degrees(np.arctan2(north[1] - 47.5, north[0] - 47.5)) % 360
    assert table.meta["north_angle"].to_value(u.deg) == pytest.approx(expected, abs=1e-4)
    regions = to_regions(table, wcs=wcs if use_wcs else None)
    assert isinstance(regions, Regions) and len(regions) == 3
    fwhm = 2 * np.sqrt(2 * np.log(2))
    for row, region in zip(table, regions):
        assert isinstance(region, EllipseSkyRegion)
        assert region.meta["text"] == region.meta["label"] == str(row["id"])
        np.testing.assert_allclose(region.width.to_value(u.arcsec), fwhm * row["a"].value * 0.1,
                                   rtol=1e-4)
        back = region.to_pixel(wcs)
        assert back.center.x == pytest.approx(row["x"], abs=1e-6)
        assert back.center.y == pytest.approx(row["y"], abs=1e-6)
        assert back.width == pytest.approx(fwhm * row["a"].value, rel=1e-4)
        assert back.height == pytest.approx(fwhm * row["b"].value, rel=1e-4)
        if row["a"] != row["b"]:  # a circle has no orientation
            diff = (back.angle.to_value(u.deg) - row["theta"].value + 90) % 180 - 90
            assert abs(diff) < 1e-3


def test_ellipse_sky_angle_convention():
    # North up, east left: the regions sky angle equals theta, measured from
    # the longitude axis; the major axis' position angle (east of north) is
    # the sky angle - 90 deg. Check it against the WCS directly.
    wcs = celestial_wcs()
    table = ellipse_catalog(wcs)
    for row, region in zip(table, to_regions(table)):
        assert region.angle.to_value(u.deg) == pytest.approx(row["theta"].value)
        t = np.radians(row["theta"].value)
        tip = wcs.pixel_to_world(row["x"] + np.cos(t), row["y"] + np.sin(t))
        pa = row["sky_centroid"].position_angle(tip).to_value(u.deg)
        diff = pa - (region.angle.to_value(u.deg) - 90)
        assert (diff + 180) % 360 - 180 == pytest.approx(0, abs=1e-3)
    # theta = 90 (along +y): the major axis points north.
    table["theta"] = 90 * u.deg
    assert to_regions(table)[0].angle.to_value(u.deg) == pytest.approx(90)


def test_to_regions_of_found_sources():
    # An elongated source (sigma 3 and 1.2 px, major axis at 30 deg from +x)
    # on a rotated WCS: the sky ellipse maps back onto it.
    wcs = rotated_wcs(40)
    y, x = np.indices(SHAPE)
    t = np.radians(30)
    dx, dy = x - 48.0, y - 40.0
    u1, u2 = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
    data = sky(sources=[]) + 0.01 * np.exp(-0.5 * ((u1 / 3.0) ** 2 + (u2 / 1.2) ** 2))
    table = find_sources(NDData(data, unit=u.Jy / u.beam, wcs=wcs))
    assert len(table) == 1
    (region,) = to_regions(table)
    back = region.to_pixel(wcs)
    assert back.angle.to_value(u.deg) == pytest.approx(30.0, abs=1.0)
    assert back.center.x == pytest.approx(48.0, abs=0.1)
    assert back.width == pytest.approx(table["a"][0].value * 2 * np.sqrt(2 * np.log(2)), rel=1e-3)


def test_circles_points_and_pixel_scale_keyword():
    table = ellipse_catalog(celestial_wcs())
    circles = to_regions(table, shape="circle")
    assert all(isinstance(r, CircleSkyRegion) for r in circles)
    # Same area as the FWHM ellipse: r = FWHM(sqrt(a b)) / 2.
    expected = np.sqrt(2 * np.log(2) * table["a"].value * table["b"].value) * 0.1
    np.testing.assert_allclose([r.radius.to_value(u.arcsec) for r in circles], expected,
                               rtol=1e-5)
    points = to_regions(table, shape="point")
    assert all(isinstance(r, PointSkyRegion) for r in points)
    assert points[1].center.separation(table["sky_centroid"][1]) < 1e-9 * u.arcsec

    del table.meta["pixel_scale"]
    with pytest.raises(ValueError, match="pixel_scale="):
        to_regions(table)
    assert len(to_regions(table, shape="point")) == 3  # points need no scale
    for scale in (0.2, 0.2 * u.arcsec, 0.2 * u.arcsec / u.pix, 200 * u.mas / u.pix):
        region = to_regions(table, pixel_scale=scale)[0]
        assert region.width.to_value(u.arcsec) == pytest.approx(
            2 * np.sqrt(2 * np.log(2)) * 3.0 * 0.2)
    with pytest.raises(ValueError, match="shape"):
        to_regions(table, shape="box")


def test_to_regions_needs_sky_positions():
    table = find_sources(sky())
    with pytest.raises(ValueError, match="sky_centroid"):
        to_regions(table)
    # With the WCS, pixel positions do.
    regions = to_regions(table, wcs=celestial_wcs())
    assert len(regions) == 3
    assert regions[0].center.separation(celestial_wcs().pixel_to_world(
        table["x"][0], table["y"][0])) < 1e-6 * u.arcsec


def test_empty_catalog_gives_no_regions(tmp_path):
    table = find_sources(nddata(sky(sources=[])))
    regions = to_regions(table)
    assert isinstance(regions, Regions) and len(regions) == 0
    regions.write(tmp_path / "empty.reg", format="ds9")
    assert len(Regions.read(tmp_path / "empty.reg", format="ds9")) == 0


@pytest.mark.parametrize("fmt, tolerance", [("ds9", 1e-4), ("crtf", 0.01)])
@pytest.mark.parametrize("shape", ["ellipse", "circle", "point"])
def test_regions_files_round_trip(tmp_path, fmt, tolerance, shape):
    # DS9 stores degrees to 8 decimals (3.6e-5 arcsec), CRTF FK5 degrees to 6.
    table = ellipse_catalog(rotated_wcs(25))
    regions = to_regions(table, shape=shape)
    path = tmp_path / f"sources.{fmt}"
    regions.write(path, format=fmt)
    with pytest.raises(OSError):
        regions.write(path, format=fmt)
    regions.write(path, format=fmt, overwrite=True)
    back = Regions.read(path, format=fmt)
    assert len(back) == 3
    label = "text" if fmt == "ds9" else "label"
    for region, read in zip(regions, back):
        assert type(read) is type(region)
        assert str(read.meta[label]) == region.meta["text"]
        assert region.center.separation(read.center) < tolerance * u.arcsec
        if shape == "ellipse":
            for attr in ("width", "height"):
                assert getattr(read, attr).to_value(u.arcsec) == pytest.approx(
                    getattr(region, attr).to_value(u.arcsec), abs=tolerance)
            diff = (read.angle - region.angle).to_value(u.deg)
            assert (diff + 90) % 180 - 90 == pytest.approx(0, abs=1e-5)
        elif shape == "circle":
            assert read.radius.to_value(u.arcsec) == pytest.approx(
                region.radius.to_value(u.arcsec), abs=tolerance)


def assert_same_regions(regions, others):
    assert len(regions) == len(others) > 0
    for region, other in zip(regions, others):
        assert other.angle.to_value(u.deg) == pytest.approx(region.angle.to_value(u.deg))
        assert other.width.to_value(u.arcsec) == pytest.approx(region.width.to_value(u.arcsec))
        assert other.center.separation(region.center) < 1e-6 * u.arcsec


def test_catalog_meta_keeps_its_units_in_ecsv(tmp_path):
    wcs = rotated_wcs(35, mirrored=True)
    table = find_sources(NDData(sky(), unit=u.Jy / u.beam, wcs=wcs))
    path = tmp_path / "catalog.ecsv"
    table.write(path)
    text = path.read_text()
    for unit in ("arcsec / pix", "deg", "Jy / beam"):
        assert f"{{unit: {unit}}}" in text
    back = QTable.read(path)
    for key in ("pixel_scale", "north_angle", "noise"):
        assert back.meta[key].unit == table.meta[key].unit
        assert back.meta[key].value == pytest.approx(table.meta[key].value)
    assert back.meta["mirrored"] is True
    assert_same_regions(to_regions(table), to_regions(back))


@pytest.mark.filterwarnings("ignore:Keyword name:astropy.io.fits.verify.VerifyWarning")
@pytest.mark.parametrize("fmt", ["ascii.ecsv", "fits"])
def test_to_regions_of_a_catalog_with_plain_float_meta(tmp_path, fmt):
    # Catalogs written before the meta had units hold floats in arcsec/pix
    # and deg; FITS also upper-cases short keys (MIRRORED).
    wcs = rotated_wcs(35, mirrored=True)
    table = find_sources(NDData(sky(), unit=u.Jy / u.beam, wcs=wcs))
    old = table.copy()
    old.meta = {key: getattr(value, "value", value) for key, value in table.meta.items()}
    path = tmp_path / f"catalog.{fmt.split('.')[-1]}"
    old.write(path, format=fmt)
    back = QTable.read(path, format=fmt)
    assert not any(isinstance(value, u.Quantity) for value in back.meta.values())
    assert_same_regions(to_regions(table), to_regions(back))


# A sky model in Jy/pixel: point sources seen through a 0.5" (5 px) beam, with
# a dirty-image noise of 1e-4 Jy/beam, so S/N = flux / 1e-4.
POINTS = [(20, 30, 2e-3), (60, 70, 1e-3), (75, 18, 5e-4)]


def point_model(points=POINTS):
    data = np.zeros(SHAPE)
    for x, y, flux in points:
        data[y, x] = flux
    return data


def model_header():
    header = celestial_wcs().to_header()
    header["BMAJ"] = header["BMIN"] = 0.5 / 3600
    header["BPA"] = 0.0
    return header


def test_find_sources_in_model_detects_through_the_beam():
    from radio_beam import Beam

    beam = Beam(0.5 * u.arcsec)
    model = NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs())
    table = find_sources_in_model(model, threshold=3, beam=beam, noise=1e-4)
    assert len(table) == 3 and table.meta["detected_in"] == "the model convolved with the clean beam"
    order = match(table, np.array(POINTS))
    # All of a point's flux lies in its one-FWHM aperture; its restored peak is its flux.
    np.testing.assert_allclose(table["flux"][order].to_value(u.Jy), [2e-3, 1e-3, 5e-4], rtol=1e-6)
    np.testing.assert_allclose(table["snr"][order], [20, 10, 5], rtol=1e-3)
    assert np.isnan(table["flux_err"]).all()  # no samples, no flux error
    assert table.meta["beam_fwhm_pix"].to_value(u.pix) == pytest.approx(5.0)
    # The faint source drops out at S/N 6.
    assert len(find_sources_in_model(model, threshold=6, beam=beam, noise=1e-4 * u.Jy / u.beam)) == 2
    # Beam and noise from the dirty image: its BMAJ/BMIN/BPA and robust noise.
    rng = np.random.default_rng(0)
    dirty = CCDData(rng.normal(0, 1e-4, SHAPE), unit=u.Jy / u.beam, wcs=celestial_wcs(), meta=model_header())
    same = find_sources_in_model(model, dirty, threshold=3)
    assert len(same) == 3 and same.meta["noise"].to_value(u.Jy / u.beam) == pytest.approx(1e-4, rel=0.05)


def test_find_sources_in_model_with_samples():
    from radio_beam import Beam

    samples = [point_model(POINTS if k < 3 else POINTS[:2]) * (1 + 0.1 * k) for k in range(5)]
    model = Reconstruction(np.median(samples, axis=0), unit=u.Jy / u.pix, wcs=celestial_wcs(),
                           samples=np.array(samples))
    table = find_sources_in_model(model, threshold=3, beam=Beam(0.5 * u.arcsec), noise=1e-4)
    order = match(table, np.array(POINTS))
    np.testing.assert_allclose(table["detection_probability"][order], [1, 1, 0.6])
    spread = np.std([2e-3 * (1 + 0.1 * k) for k in range(5)], ddof=1)
    assert table["flux_err"][order[0]].to_value(u.Jy) == pytest.approx(spread)


def test_find_sources_in_model_says_what_is_missing():
    from radio_beam import Beam

    model = NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs())
    with pytest.raises(ValueError, match="No clean beam"):
        find_sources_in_model(model, noise=1e-4)
    with pytest.raises(ValueError, match="No noise level"):
        find_sources_in_model(model, beam=Beam(0.5 * u.arcsec))
    with pytest.raises(ValueError, match="no WCS"):
        find_sources_in_model(NDData(point_model()), beam=Beam(0.5 * u.arcsec), noise=1e-4)
    with pytest.raises(ValueError, match="must be 2-D"):
        find_sources_in_model(np.zeros((2, 4, 4)), beam=Beam(0.5 * u.arcsec), noise=1e-4)
    for noise in (0.0, -1e-4, np.nan, np.inf, 0 * u.mJy / u.beam):
        with pytest.raises(ValueError, match="noise must be a positive, finite number"):
            find_sources_in_model(model, beam=Beam(0.5 * u.arcsec), noise=noise)
    for threshold in (np.nan, 0.0, -3.0, np.inf):
        with pytest.raises(ValueError, match="threshold must be a positive, finite S/N"):
            find_sources_in_model(model, beam=Beam(0.5 * u.arcsec), noise=1e-4, threshold=threshold)
    blank = CCDData(np.zeros(SHAPE), unit=u.Jy / u.beam, wcs=celestial_wcs(), meta=model_header())
    with pytest.raises(ValueError, match="robust noise is 0"):
        find_sources_in_model(model, blank)


def in_unit(catalog):
    """The catalog's numbers in fixed units, for comparing catalogs made from different units."""
    return {
        "x": np.asarray(catalog["x"]), "y": np.asarray(catalog["y"]),
        "flux": catalog["flux"].to_value(u.Jy), "peak": catalog["peak"].to_value(u.Jy / u.beam),
        "snr": np.asarray(catalog["snr"]), "noise": catalog.meta["noise"].to_value(u.Jy / u.beam),
    }


def assert_same_catalog(catalog, reference):
    assert len(catalog) == len(reference) > 0
    got, expected = in_unit(catalog), in_unit(reference)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, err_msg=key)


def test_find_sources_in_model_converts_units():
    from radio_beam import Beam

    noise = np.random.default_rng(0).normal(0, 1e-4, SHAPE)
    model = NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs())
    dirty = CCDData(noise, unit=u.Jy / u.beam, wcs=celestial_wcs(), meta=model_header())
    reference = find_sources_in_model(model, dirty, threshold=3)
    assert len(reference) == 3
    # The same dirty image in mJy/beam: the threshold and S/N do not change.
    dirty_mjy = CCDData(noise * 1e3, unit=u.mJy / u.beam, wcs=celestial_wcs(), meta=model_header())
    assert_same_catalog(find_sources_in_model(model, dirty_mjy, threshold=3), reference)
    # The same model in mJy/pixel: fluxes come out in Jy, not 1000x too high.
    model_mjy = NDData(point_model() * 1e3, unit=u.mJy / u.pix, wcs=celestial_wcs())
    assert_same_catalog(find_sources_in_model(model_mjy, dirty_mjy, threshold=3), reference)
    # Noise as a Quantity in any flux per beam.
    beam = Beam(0.5 * u.arcsec)
    given = find_sources_in_model(model_mjy, beam=beam, noise=0.1 * u.mJy / u.beam)
    assert_same_catalog(given, find_sources_in_model(model, beam=beam, noise=1e-4))
    # Samples and a restored image are in the model's unit.
    samples = np.array([point_model() * (1 + 0.1 * k) for k in range(3)])
    draws = Reconstruction(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs(), samples=samples)
    draws_mjy = Reconstruction(point_model() * 1e3, unit=u.mJy / u.pix, wcs=celestial_wcs(),
                               samples=samples * 1e3)
    expected = find_sources_in_model(draws, beam=beam, noise=1e-4)
    got = find_sources_in_model(draws_mjy, beam=beam, noise=1e-4)
    assert_same_catalog(got, expected)
    np.testing.assert_allclose(got["flux_err"].to_value(u.Jy), expected["flux_err"].to_value(u.Jy))
    np.testing.assert_array_equal(got["detection_probability"], expected["detection_probability"])
    # A calibrated model's flux errors carry its uncertainty scale, as its std does.
    draws.meta["RRUSCALE"] = 4.0
    scaled = find_sources_in_model(draws, beam=beam, noise=1e-4)
    np.testing.assert_allclose(scaled["flux_err"], 4.0 * expected["flux_err"])
    np.testing.assert_array_equal(scaled["flux"], expected["flux"])
    from scipy.signal import fftconvolve
    from radiorecon.beam import beam_kernel

    restored = fftconvolve(point_model(), beam_kernel(beam, 0.1 * u.arcsec), mode="same") + noise
    cleaned = Reconstruction(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs(),
                             extras={"restored": restored})
    expected = find_sources_in_model(cleaned, beam=beam, noise=1e-4)
    assert expected.meta["detected_in"] == "the method's restored image" and len(expected) == 3
    for extra in (restored * 1e3, restored * 1e3 * u.mJy / u.beam):
        cleaned_mjy = Reconstruction(point_model() * 1e3, unit=u.mJy / u.pix, wcs=celestial_wcs(),
                                     extras={"restored": extra})
        assert_same_catalog(find_sources_in_model(cleaned_mjy, beam=beam, noise=1e-4), expected)


def test_find_sources_in_model_assumes_jy_for_unitless_inputs_with_a_warning():
    from radiorecon.exceptions import RadioreconWarning

    noise = np.random.default_rng(0).normal(0, 1e-4, SHAPE)
    dirty = CCDData(noise, unit=u.Jy / u.beam, wcs=celestial_wcs(), meta=model_header())
    reference = find_sources_in_model(NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs()),
                                      dirty, threshold=3)
    bare = NDData(point_model(), wcs=celestial_wcs())
    with pytest.warns(RadioreconWarning, match="the sky model has no unit; assuming Jy / pix"):
        assert_same_catalog(find_sources_in_model(bare, dirty, threshold=3), reference)
    bare_dirty = NDData(noise, wcs=celestial_wcs(), meta=model_header())
    model = NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs())
    with pytest.warns(RadioreconWarning, match="the dirty image has no unit; assuming Jy / beam"):
        assert_same_catalog(find_sources_in_model(model, bare_dirty, threshold=3), reference)


def test_find_sources_in_model_refuses_wrong_units():
    from radio_beam import Beam

    beam = Beam(0.5 * u.arcsec)
    restored = NDData(point_model(), unit=u.Jy / u.beam, wcs=celestial_wcs())
    with pytest.raises(u.UnitConversionError, match="the sky model is in Jy / beam, not a flux per pixel"):
        find_sources_in_model(restored, beam=beam, noise=1e-4)
    model = NDData(point_model(), unit=u.Jy / u.pix, wcs=celestial_wcs())
    with pytest.raises(u.UnitConversionError, match="noise is in Jy, not a flux per beam"):
        find_sources_in_model(model, beam=beam, noise=1e-4 * u.Jy)
    dirty = CCDData(np.ones(SHAPE), unit=u.Jy / u.pix, wcs=celestial_wcs(), meta=model_header())
    with pytest.raises(u.UnitConversionError, match="the dirty image is in Jy / pix"):
        find_sources_in_model(model, dirty)
