import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable

from radiorecon import simulate
from radiorecon.exceptions import InputError
from radiorecon.beam import fit_clean_beam
from radiorecon.simulate import sky as skymod
from radiorecon.simulate.uv import earth_rotation_uvw, enu_to_xyz, hour_angles, xyz_to_uvw

NO_NOISE = 0 * u.uJy / u.beam
PIXEL = 0.1 * u.arcsec
# Small images for the data-set tests: sources near the centre of 64² px.
SMALL = dict(npix=64, placement_radius=2 * u.arcsec, field_radius=0.3 * u.deg)


def _acf(image, lags):
    """Normalised autocorrelation of an image at (dy, dx) lags, by FFT (periodic)."""
    x = image - image.mean()
    power = np.abs(np.fft.fft2(x)) ** 2
    acf = np.fft.ifft2(power).real
    return np.array([acf[dy, dx] for dy, dx in lags]) / acf[0, 0]


@pytest.fixture(scope="module")
def default_empty():
    """The default preset at 512², on an empty sky."""
    return simulate.observe(np.zeros((512, 512)), seed=11)


# -- the reference recipe -----------------------------------------------------


def test_default_preset_beam_and_noise(default_empty):
    r = default_empty
    # Taran et al. (2023) quote a 0.89" x 0.82" synthesized beam: within 5 %.
    beam = fit_clean_beam(r.psf.data, PIXEL)
    assert beam.major.to_value(u.arcsec) == pytest.approx(0.89, rel=0.05)
    assert beam.minor.to_value(u.arcsec) == pytest.approx(0.82, rel=0.05)
    assert r.dirty.meta["BMAJ"] == pytest.approx(beam.major.to_value(u.deg))
    # An empty sky is all noise: its rms is the published 45-60 uJy/beam.
    rms = r.dirty.data.std() * 1e6
    assert 45 < rms < 60
    assert r.noise_rms.to_value(u.uJy / u.beam) == pytest.approx(50)
    assert r.psf.data.max() == pytest.approx(1.0) and r.psf.data[256, 256] == pytest.approx(1.0)
    assert r.dirty.unit == u.Jy / u.beam and r.sky.unit == u.Jy / u.pix
    assert r.dirty.data.dtype == np.float32 and r.dirty.shape == (512, 512)
    assert len(r.truth) == 0


def test_wcs_and_header_round_trip(tmp_path):
    from radiorecon.io import get_beam, read_image, write_result

    r = simulate.observe(seed=3)
    # The phase centre is pixel (256, 256), inside 1 deg of COSMOS.
    x, y = r.dirty.wcs.world_to_pixel(r.phase_center)
    assert (float(x), float(y)) == pytest.approx((256, 256), abs=1e-6)
    cosmos = simulate.observe(seed=3, field_radius=0 * u.deg).phase_center
    assert r.phase_center.separation(cosmos).deg < 1.0
    assert r.dirty.wcs.wcs.ctype[0] == "RA---SIN" and r.dirty.wcs.wcs.cdelt[0] < 0
    # Catalog positions agree with the pixel positions through the WCS.
    xs, ys = r.dirty.wcs.world_to_pixel(r.truth["sky_centroid"])
    np.testing.assert_allclose(xs, r.truth["x"], atol=1e-6)
    np.testing.assert_allclose(ys, r.truth["y"], atol=1e-6)
    path = tmp_path / "dirty.fits"
    write_result(r.dirty, path)
    back = read_image(path)
    assert back.unit == u.Jy / u.beam
    assert get_beam(back).major.to_value(u.arcsec) == pytest.approx(r.beam.major.to_value(u.arcsec))
    np.testing.assert_array_equal(back.data, r.dirty.data)


def test_phase_centre_and_sky_inputs():
    from astropy.coordinates import SkyCoord
    from astropy.nddata import CCDData

    centre = SkyCoord("05h00m00s -30d00m00s")
    r = simulate.observe(np.zeros((64, 64)), npix=64, phase_center=centre, seed=1)
    assert r.phase_center.separation(centre).arcsec < 1e-6
    south = simulate.observe(np.zeros((64, 64)), npix=64, declination=-30 * u.deg, seed=1)
    assert abs(south.phase_center.dec.deg + 30) <= 1.0
    # Near the zenith the north-south baselines are not foreshortened: a
    # narrower beam than the default preset's 0.82" minor axis.
    assert south.beam.minor < 0.78 * u.arcsec
    image = np.zeros((64, 64))
    image[30, 34] = 1e-3
    for sky in (image * u.Jy / u.pix, CCDData(image * 1000, unit="mJy / pix"), image * u.Jy):
        got = simulate.observe(sky, npix=64, seed=1, noise_rms=NO_NOISE)
        assert got.sky.data[30, 34] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="Jy/pixel, not Jy / beam"):
        simulate.observe(image * u.Jy / u.beam, npix=64)
    # Components by sky position.
    table = QTable({"sky_centroid": r.dirty.wcs.pixel_to_world([20], [40]), "flux": [0.2] * u.mJy,
                    "fwhm_major": [0.5] * u.arcsec, "fwhm_minor": [0.4] * u.arcsec, "pa": [30] * u.deg})
    got = simulate.observe(table, npix=64, phase_center=centre, seed=1)
    assert (got.truth["x"][0], got.truth["y"][0]) == pytest.approx((20, 40))
    assert got.sky.data.sum() == pytest.approx(2e-4, rel=1e-5)


def test_truth_catalog_columns():
    r = simulate.observe(seed=5, n_sources=(3, 3), empty_fraction=0.0)
    t = r.truth
    assert len(t) == 3
    assert t["flux"].unit == u.Jy and t["fwhm_major"].unit == u.arcsec and t["pa"].unit == u.deg
    assert np.all((t["flux"] >= 0.05 * u.mJy) & (t["flux"] <= 0.5 * u.mJy))
    assert np.all(t["fwhm_major"] >= t["fwhm_minor"]) and np.all(t["fwhm_minor"] >= 0.4 * u.arcsec)
    offset = np.hypot(t["x"] - 256, t["y"] - 256) * 0.1
    assert np.all(offset <= 11.43)
    np.testing.assert_allclose(t["pb_gain"], np.exp(-4 * np.log(2) * (offset / r.dirty.meta["PBFWHM"]) ** 2))
    assert np.all(t["peak_snr"] > 0)
    # A 0.5 mJy source cannot peak above its flux.
    assert np.all(t["peak_snr"] * 50e-6 <= t["flux"].to_value(u.Jy) * t["pb_gain"] + 1e-12)


# -- fast path against the visibility path ------------------------------------


def test_fast_path_equals_visibility_path_without_noise():
    kwargs = dict(seed=21, n_sources=(5, 5), empty_fraction=0.0, noise_rms=NO_NOISE)
    fast = simulate.observe(method="image", **kwargs)
    slow = simulate.observe(method="visibility", **kwargs)
    np.testing.assert_array_equal(fast.sky.data, slow.sky.data)
    peak = np.abs(slow.dirty.data).max()
    # The gridder's accuracy is 1e-5; the noise is 50 uJy, ~10 % of a peak.
    assert np.abs(fast.dirty.data - slow.dirty.data).max() < 1e-4 * peak


LAGS = [(0, 4), (4, 0), (0, 8), (8, 0), (6, 6), (5, -5), (0, 16)]


@pytest.fixture(scope="module")
def fast_noise():
    """Mean noise autocorrelation and rms of 10 empty default-preset images (fast path)."""
    empty = np.zeros((512, 512))
    images = [simulate.observe(empty, seed=s, field_radius=0 * u.deg).dirty.data for s in range(10)]
    return np.mean([_acf(x, LAGS) for x in images], axis=0), [x.std() for x in images]


def test_fast_path_noise_matches_visibility_noise(fast_noise):
    empty = np.zeros((512, 512))
    slow = [simulate.observe(empty, seed=s, field_radius=0 * u.deg, method="visibility").dirty.data
            for s in range(10, 15)]
    # Same rms (each within 5 % of the requested 50 uJy/beam) ...
    np.testing.assert_allclose(fast_noise[1], 50e-6, rtol=0.05)
    np.testing.assert_allclose([x.std() for x in slow], 50e-6, rtol=0.05)
    # ... and the same correlation: one image's autocorrelation scatters by
    # ~0.02 at these lags, so the difference of the means scatters by ~0.011.
    np.testing.assert_allclose(fast_noise[0], np.mean([_acf(x, LAGS) for x in slow], axis=0), atol=0.045)


def test_noise_is_correlated_like_the_psf(fast_noise, default_empty):
    # For natural weights and equal visibility noise, the noise covariance
    # is the PSF itself.
    psf = default_empty.psf.data
    expected = [psf[256 + dy, 256 + dx] for dy, dx in LAGS]
    np.testing.assert_allclose(fast_noise[0], expected, atol=0.03)  # scatter ~0.007
    assert fast_noise[0][0] > 0.4  # half a beam away: far from white noise
    white = np.random.default_rng(0).standard_normal((512, 512))
    assert np.abs(_acf(white, LAGS)).max() < 0.02


# -- sources -------------------------------------------------------------------


def test_point_source_appears_at_its_position_with_the_right_peak():
    table = QTable({"x": [300.0], "y": [200.0], "flux": [1.0] * u.mJy})
    r = simulate.observe(table, seed=2, noise_rms=NO_NOISE)
    gain = r.truth["pb_gain"][0]
    assert 0.3 < gain < 0.9
    assert np.unravel_index(np.argmax(r.dirty.data), r.dirty.shape) == (200, 300)
    # A point source at a pixel centre peaks at flux x gain (PSF peak 1), to 0.1 %.
    assert r.dirty.data[200, 300] == pytest.approx(1e-3 * gain, rel=1e-3)
    assert r.truth["peak_snr"][0] == np.inf
    noisy = simulate.observe(table, seed=2)
    assert noisy.dirty.data[200, 300] == pytest.approx(1e-3 * gain, abs=4 * 50e-6)
    assert noisy.truth["peak_snr"][0] == pytest.approx(1e-3 * gain / 50e-6)


def test_visibilities_follow_the_sign_convention():
    # A source 3 px east (x smaller) and 2 px north of the phase centre.
    table = QTable({"x": [253.0], "y": [258.0], "flux": [2.0] * u.mJy})
    r = simulate.observe(table, seed=1, noise_rms=NO_NOISE, primary_beam=False, return_uv=True)
    lam = (r.frequency[0]).to(u.m, u.spectral()).value
    uu, vv = r.uvw[:, 0].value / lam, r.uvw[:, 1].value / lam
    dl = np.radians(0.1 / 3600)
    expected = 2e-3 * np.exp(-2j * np.pi * (uu * 3 * dl + vv * 2 * dl))
    np.testing.assert_allclose(r.visibilities[:, 0], expected, atol=1e-7)


def test_sky_pixels_sum_to_catalog_fluxes():
    r = simulate.observe(seed=8, n_sources=(5, 5), empty_fraction=0.0, min_separation=3 * u.arcsec)
    assert r.sky.data.sum() == pytest.approx(r.truth["flux"].sum().to_value(u.Jy), rel=1e-5)
    for row in r.truth:  # each source alone, within its 3" neighbourhood
        x, y = int(round(row["x"])), int(round(row["y"]))
        box = r.sky.data[y - 14 : y + 15, x - 14 : x + 15]
        assert box.sum() == pytest.approx(row["flux"].to_value(u.Jy), rel=1e-3)


@pytest.mark.parametrize("pa", [0.0, 35.0, 90.0])
def test_gaussian_is_integrated_over_pixels(pa):
    # 0.4" x 0.3" on 0.1" pixels: the image's second moments are those of
    # the Gaussian plus the pixel's own 1/12 px², as for an exact integral,
    # less the 1/(12 * 16) px² that the 4 x 4 midpoint rule misses.
    comps = {"x": [32.3], "y": [31.6], "flux": [1.0], "fwhm_major": [0.4], "fwhm_minor": [0.3], "pa": [pa]}
    comps = {k: np.array(v) for k, v in comps.items()}
    image = skymod.render(comps, 64, 0.1).astype(float)
    assert image.sum() == pytest.approx(1.0, rel=1e-6)
    yy, xx = np.mgrid[:64, :64]
    mx, my = (image * xx).sum(), (image * yy).sum()
    assert (mx, my) == pytest.approx((32.3, 31.6), abs=1e-3)
    cov = np.cov(np.vstack([xx.ravel() - mx, yy.ravel() - my]), aweights=image.ravel(), bias=True)
    s_maj, s_min = 4 / 2.3548200450309493, 3 / 2.3548200450309493
    t = np.radians(pa)
    major, minor = np.array([-np.sin(t), np.cos(t)]), np.array([np.cos(t), np.sin(t)])  # in pixels
    exact = s_maj**2 * np.outer(major, major) + s_min**2 * np.outer(minor, minor) + np.eye(2) / 12
    np.testing.assert_allclose(cov, exact - np.eye(2) / (12 * 16), atol=1e-5)
    np.testing.assert_allclose(cov, exact, rtol=4e-3, atol=1e-5)


def test_sky_options():
    rng = np.random.default_rng(0)
    p = simulate.resolve_parameters(n_sources=(4, 4), empty_fraction=0.0, point_fraction=1.0,
                                    flux_distribution="power-law", flux_index=-1.5)
    comps = skymod.draw_components(rng, p, 512, 0.1)
    assert np.all(comps["fwhm_major"] == 0) and np.all(comps["x"] == np.rint(comps["x"]))
    assert np.all((comps["flux"] >= 0.05e-3) & (comps["flux"] <= 0.5e-3))
    empty = simulate.resolve_parameters(empty_fraction=1.0)
    assert len(skymod.draw_components(rng, empty, 512, 0.1)["x"]) == 0
    # ~10 % of the default preset's images are empty.
    p = simulate.resolve_parameters()
    n_empty = sum(len(skymod.draw_components(rng, p, 512, 0.1)["x"]) == 0 for _ in range(2000))
    assert 150 < n_empty < 250
    log = simulate.resolve_parameters(flux_distribution="log-uniform", n_sources=(5, 5), empty_fraction=0.0)
    fluxes = np.concatenate([skymod.draw_components(rng, log, 512, 0.1)["flux"] for _ in range(400)])
    # Log-uniform: half the sources below the geometric mean of the range.
    assert np.mean(fluxes < np.sqrt(0.05e-3 * 0.5e-3)) == pytest.approx(0.5, abs=0.04)
    with pytest.raises(ValueError, match="could not place"):
        simulate.observe(seed=1, n_sources=(5, 5), empty_fraction=0.0, min_separation=20 * u.arcsec)


# -- weighting and noise -------------------------------------------------------


def test_uniform_weighting_narrows_the_beam_and_raises_the_noise():
    # The same visibility noise (from the SEFD) for both weightings.
    common = dict(sky=np.zeros((512, 512)), seed=4, sefd=3500 * u.Jy, field_radius=0 * u.deg)
    natural = simulate.observe(**common)
    uniform = simulate.observe(weighting="uniform", **common)
    briggs = simulate.observe(weighting="briggs", robust=0.0, **common)
    area = lambda r: (r.beam.major * r.beam.minor).to_value(u.arcsec**2)  # noqa: E731
    assert area(uniform) < area(briggs) < area(natural)
    assert natural.noise_rms < briggs.noise_rms < uniform.noise_rms
    assert uniform.dirty.data.std() > 1.2 * natural.dirty.data.std()
    for r in (natural, uniform):
        assert r.dirty.data.std() == pytest.approx(r.noise_rms.to_value(u.Jy / u.beam), rel=0.05)


def test_radiometer_equation():
    # sigma = SEFD / (eta sqrt(2 n_pol dnu t)); natural weighting over M
    # visibilities gives sigma / sqrt(M) in the image.
    sigma = simulate.visibility_noise(3500 * u.Jy, 1.875 * u.GHz, 10 * u.s, efficiency=0.88, n_pol=2)
    assert sigma.to_value(u.Jy) == pytest.approx(3500 / (0.88 * np.sqrt(4 * 1.875e9 * 10)))
    r = simulate.observe(np.zeros((512, 512)), seed=1, sefd=3500 * u.Jy, field_radius=0 * u.deg)
    m = 43 * 42 // 2 * 120
    assert r.noise_rms.to_value(u.Jy / u.beam) == pytest.approx(sigma.to_value(u.Jy) / np.sqrt(m))


def test_several_channels():
    r = simulate.observe(np.zeros((128, 128)), seed=1, npix=128, n_channels=4, bandwidth=7.5 * u.GHz,
                         return_uv=True)
    assert r.frequency.shape == (4,) and r.visibilities.shape == (43 * 42 // 2 * 120, 4)
    np.testing.assert_allclose(np.diff(r.frequency.to_value(u.GHz)), 1.875)
    assert r.frequency.mean().to_value(u.GHz) == pytest.approx(230)
    assert r.dirty.data.std() == pytest.approx(50e-6, rel=0.1)


# -- Earth-rotation synthesis ----------------------------------------------------


def test_east_west_baseline_at_the_pole_traces_a_circle():
    enu = [[100.0, 0.0, 0.0]] * u.m
    xyz = enu_to_xyz(enu, 90 * u.deg)
    h = np.linspace(0, 24, 13) * u.hourangle
    uvw = xyz_to_uvw(xyz, h, 90 * u.deg)[:, 0].to_value(u.m)
    np.testing.assert_allclose(np.hypot(uvw[:, 0], uvw[:, 1]), 100.0)
    np.testing.assert_allclose(uvw[:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(uvw[:, 0], 100 * np.cos(h.to_value(u.rad)), atol=1e-9)  # u = b cos H


def test_uvw_against_the_direction_of_the_source():
    # w is the baseline projected on the source direction, which in the
    # local frame follows from the altitude and azimuth of the source.
    rng = np.random.default_rng(3)
    enu = rng.uniform(-500, 500, (20, 3)) * u.m
    lat, dec = np.radians(-23.0229), np.radians(-40.0)
    for h in np.radians([-30.0, -5.0, 0.0, 12.0, 45.0]):
        uvw = xyz_to_uvw(enu_to_xyz(enu, lat * u.rad), h * u.rad, dec * u.rad).to_value(u.m)
        alt = np.arcsin(np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(h))
        az = np.arctan2(-np.cos(dec) * np.sin(h),
                        np.sin(dec) * np.cos(lat) - np.cos(dec) * np.sin(lat) * np.cos(h))
        s = np.array([np.cos(alt) * np.sin(az), np.cos(alt) * np.cos(az), np.sin(alt)])  # east, north, up
        np.testing.assert_allclose(uvw[:, 2], enu.to_value(u.m) @ s, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(uvw, axis=1), np.linalg.norm(enu.value, axis=1))


def test_hour_angles_and_tracks():
    ha = hour_angles(0 * u.hourangle, 20 * u.min, 10 * u.s)
    assert len(ha) == 120
    assert ha.mean().value == pytest.approx(0, abs=1e-12)
    assert np.diff(ha).to_value(u.arcsec).mean() == pytest.approx(10 * 15.0410686, rel=1e-6)
    ranged = hour_angles([-1, 1] * u.hourangle, integration=60 * u.s)
    assert len(ranged) == 119 and abs(ranged[0].value) < 1
    table = simulate.load_array("C43-3")
    pos = np.column_stack([table[c] for c in ("x", "y", "z")])
    uvw = earth_rotation_uvw(pos, latitude=-23 * u.deg, declination=2 * u.deg, hour_angle=ha)
    assert uvw.shape == (903 * 120, 3) and uvw.unit == u.m


def test_user_uv_points():
    # One east-west baseline of 1e5 wavelengths: fringes along x only.
    r = simulate.observe(np.zeros((64, 64)), uvw=np.array([[1e5, 0.0]]), npix=64, primary_beam=False,
                         noise_rms=NO_NOISE)
    psf = r.psf.data
    assert psf[32 + 7, 32] == pytest.approx(1.0, abs=1e-4)
    assert psf[32, 32 + 5] == pytest.approx(np.cos(2 * np.pi * 1e5 * 5 * np.radians(0.1 / 3600)), abs=1e-4)
    metres = simulate.observe(np.zeros((64, 64)), uvw=[[1e5 * 299792458 / 230e9, 0.0, 0.0]] * u.m, npix=64,
                              primary_beam=False, noise_rms=NO_NOISE)
    np.testing.assert_allclose(metres.psf.data, psf, atol=1e-5)


def test_arrays():
    assert "alma_cycle5_3" in simulate.available_arrays()
    table = simulate.load_array("C43-3")
    assert len(table) == 43 and table.meta["name"] == "alma_cycle5_3"
    assert table["diameter"].unit == u.m
    own = QTable({"x": [0.0, 100.0, 0.0] * u.m, "y": [0.0, 0.0, 150.0] * u.m, "z": [0.0, 0.0, 0.0] * u.m})
    r = simulate.observe(np.zeros((64, 64)), array=own, npix=64, dish_diameter=12 * u.m,
                         pixel_scale=0.5 * u.arcsec)
    assert r.dirty.shape == (64, 64)


# -- data sets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    return simulate.make_dataset(12, seed=7, out=out, workers=1, progress=False, shard_size=4, **SMALL)


def test_dataset_contents(dataset):
    ds = dataset
    assert len(ds) == 12
    dirty, sky = ds[5]
    assert dirty.shape == sky.shape == (64, 64) and dirty.dtype == sky.dtype == np.float32
    assert dirty.flags.writeable
    assert ds.units == {"input": "Jy / beam", "target": "Jy / pix"}
    assert u.Unit(ds.units["input"]) == u.Jy / u.beam and u.Unit(ds.units["target"]) == u.Jy / u.pix
    np.testing.assert_array_equal(ds[-1][0], ds[11][0])
    with pytest.raises(IndexError):
        ds[12]
    # Image i is observe(seed=seed, index=i).
    one = simulate.observe(seed=7, index=5, **SMALL)
    np.testing.assert_array_equal(one.dirty.data, dirty)
    # Pairs hold the apparent sky (what the dirty image shows) unless asked for the true one.
    np.testing.assert_allclose(sky, one.sky.data * one.primary_beam, rtol=1e-6)
    true_sky = simulate.load_dataset(ds.path, target="sky")
    np.testing.assert_array_equal(true_sky[5][1], one.sky.data)
    with pytest.raises(ValueError, match="target must be"):
        simulate.load_dataset(ds.path, target="true")
    np.testing.assert_array_equal(ds.psf(5).data, one.psf.data)
    assert ds.psf(5, full=True).shape == (128, 128)
    image = ds.image(5)
    assert image.unit == u.Jy / u.beam and image.meta["BMAJ"] == pytest.approx(one.dirty.meta["BMAJ"])
    assert image.wcs.wcs.crval == pytest.approx(one.dirty.wcs.wcs.crval)
    assert ds.sky(5).unit == u.Jy / u.pix
    truth = ds.truth
    mine = truth[truth["image_id"] == 5]
    np.testing.assert_allclose(mine["flux"], one.truth["flux"])
    # Every image's pixels sum to its sources' fluxes.
    for i in range(len(ds)):
        fluxes = truth["flux"][truth["image_id"] == i].to_value(u.Jy)
        assert true_sky[i][1].sum() == pytest.approx(fluxes.sum(), rel=1e-5, abs=1e-9)
    assert ds.config["seed"] == 7 and ds.config["parameters"]["npix"] == 64
    assert ds.parameters["placement_radius"] == 2 * u.arcsec
    reopened = simulate.load_dataset(ds.path)
    np.testing.assert_array_equal(reopened[3][0], ds[3][0])


def test_dataset_does_not_depend_on_workers(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(simulate.dataset, "_IN_PROCESS_PIXELS", 0)  # a pool even for this small job
    other = simulate.make_dataset(12, seed=7, out=tmp_path / "two", workers=2, progress=False, shard_size=4,
                                  **SMALL)
    for i in range(12):
        np.testing.assert_array_equal(other[i][0], dataset[i][0])
        np.testing.assert_array_equal(other[i][1], dataset[i][1])
    np.testing.assert_array_equal(other.truth["peak_snr"], dataset.truth["peak_snr"])


def test_dataset_resumes_after_a_lost_shard(tmp_path):
    out = tmp_path / "ds"
    kwargs = dict(seed=9, out=out, workers=1, progress=False, shard_size=3, **SMALL)
    ds = simulate.make_dataset(7, **kwargs)
    before = [ds[i] for i in range(7)]
    kept = os.path.getmtime(out / "shards" / "dirty_00000.npy")
    for kind in ("dirty", "truth"):  # as if interrupted while writing shard 1
        os.remove(out / "shards" / f"{kind}_00001.npy")
    (out / "shards" / ".0123456789ab.tmp.dirty_00001.npy").write_bytes(b"partial")
    os.remove(out / "truth.ecsv")
    with pytest.raises(ValueError, match="incomplete"):
        simulate.load_dataset(out)
    again = simulate.make_dataset(7, **kwargs)
    for i in range(7):
        np.testing.assert_array_equal(again[i][0], before[i][0])
        np.testing.assert_array_equal(again[i][1], before[i][1])
    assert os.path.getmtime(out / "shards" / "dirty_00000.npy") == kept
    assert not any(".tmp." in name for name in os.listdir(out / "shards"))


def test_dataset_refuses_mismatches_and_protects_directories(tmp_path):
    out = tmp_path / "ds"
    simulate.make_dataset(2, seed=1, out=out, workers=1, progress=False, **SMALL)
    with pytest.raises(ValueError, match="differs in: seed"):
        simulate.make_dataset(2, seed=2, out=out, workers=1, progress=False, **SMALL)
    with pytest.raises(ValueError, match="noise_rms"):
        simulate.make_dataset(2, seed=1, out=out, workers=1, progress=False, noise_rms=30 * u.uJy, **SMALL)
    replaced = simulate.make_dataset(2, seed=2, out=out, workers=1, progress=False, overwrite=True, **SMALL)
    assert replaced.config["seed"] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a radiorecon simulated data set"):
        simulate.make_dataset(2, seed=1, out=foreign, workers=1, progress=False, **SMALL)
    simulate.make_dataset(2, seed=1, out=foreign, workers=1, progress=False, overwrite=True, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="no simulated data set"):
        simulate.load_dataset(tmp_path)


def _files(directory):
    """Every file under ``directory``: relative path -> contents."""
    return {os.path.relpath(os.path.join(root, name), directory): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(directory) for name in names}


def test_overwrite_removes_only_the_data_sets_own_files(tmp_path):
    out = tmp_path / "ds"
    kwargs = dict(workers=1, progress=False, shard_size=1, **SMALL)
    simulate.make_dataset(4, seed=1, out=out, **kwargs)
    (out / "notes.txt").write_text("keep me")
    (out / "results").mkdir()
    (out / "results" / "config.json").write_text('{"lr": 0.1}')
    replaced = simulate.make_dataset(2, seed=2, out=out, overwrite=True, **kwargs)
    assert replaced.config["seed"] == 2 and len(replaced) == 2
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "results" / "config.json").read_text() == '{"lr": 0.1}'
    # The old data set's shards 2 and 3 are gone with it.
    assert sorted(os.listdir(out / "shards")) == [f"{kind}_0000{k}.npy" for kind in ("dirty", "sky", "truth")
                                                  for k in (0, 1)]
    # A file of the user's in the data set's shards folder: nothing is removed.
    (out / "shards" / "mine.txt").write_text("mine")
    before = _files(out)
    with pytest.raises(InputError, match=r"not part of one \(shards.mine\.txt\)"):
        simulate.make_dataset(2, seed=3, out=out, overwrite=True, **kwargs)
    assert _files(out) == before


def test_overwrite_refuses_a_directory_of_someone_elses_files(tmp_path):
    user = tmp_path / "user"
    (user / "shards").mkdir(parents=True)
    (user / "config.json").write_text('{"lr": 0.1}')
    (user / "shards" / "part-0.csv").write_text("1,2")
    before = _files(user)
    kwargs = dict(seed=1, out=user, workers=1, progress=False, **SMALL)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="config.json is not the config.json of a radiorecon simulated"):
            simulate.make_dataset(2, overwrite=overwrite, **kwargs)
        assert _files(user) == before
    os.remove(user / "config.json")
    with pytest.raises(InputError, match=r"named like a simulated data set's .*\(shards.part-0\.csv\)"):
        simulate.make_dataset(2, overwrite=True, **kwargs)
    (user / "shards" / "part-0.csv").unlink()
    (user / "images.ecsv").write_text("my table")
    with pytest.raises(InputError, match=r"\(images\.ecsv\)"):
        simulate.make_dataset(2, overwrite=True, **kwargs)
    assert (user / "images.ecsv").read_text() == "my table"
    (user / "config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(InputError, match="config.json is not the config.json of a simulated data set"):
        simulate.load_dataset(user)


def test_damaged_files_are_named_and_remade(tmp_path):
    out = tmp_path / "ds"
    kwargs = dict(seed=4, out=out, workers=1, progress=False, shard_size=2, **SMALL)
    ds = simulate.make_dataset(6, **kwargs)
    before = [ds[i] for i in range(6)]
    shards = out / "shards"
    raw = (shards / "dirty_00001.npy").read_bytes()
    (shards / "dirty_00001.npy").write_bytes(raw[: len(raw) // 2])  # truncated
    (shards / "sky_00000.npy").write_bytes(b"not an array" * 50)  # garbage
    np.save(shards / "dirty_00002.npy", np.zeros((2, 64, 64)))  # float64
    np.save(shards / "sky_00002.npy", np.zeros((3, 64, 64), np.float32))  # one image too many
    ds = simulate.load_dataset(out)
    for read, name, match in [
        (lambda: ds[2], "dirty_00001.npy", "bytes where"),
        (lambda: ds[0], "sky_00000.npy", "not a readable array"),
        (lambda: ds.image(4), "dirty_00002.npy", r"\(2, 64, 64\) float64 array where a \(2, 64, 64\) float32"),
        (lambda: ds[5], "sky_00002.npy", r"\(3, 64, 64\) float32 array where a \(2, 64, 64\)"),
    ]:
        with pytest.raises(InputError, match=name + ".*" + match + ".*call make_dataset again"):
            read()
    os.remove(out / "primary_beam.npy")
    with pytest.raises(InputError, match="primary_beam.npy is missing"):
        ds.primary_beam
    # As the messages say, the same call again remakes what is damaged.
    again = simulate.make_dataset(6, **kwargs)
    for i in range(6):
        np.testing.assert_array_equal(again[i][0], before[i][0])
        np.testing.assert_array_equal(again[i][1], before[i][1])


def test_small_jobs_run_in_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import astropy.units as u
        from radiorecon import simulate

        ds = simulate.make_dataset(3, seed=1, out={str(tmp_path / "ds")!r}, workers=2, shard_size=1,
                                   progress=False, npix=64, placement_radius=2 * u.arcsec)
        print(len(ds), "images")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3 images"


def test_a_pool_started_by_an_unguarded_script_explains_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate.dataset, "_IN_PROCESS_PIXELS", 0)
    kwargs = dict(seed=1, workers=2, shard_size=1, progress=False, **SMALL)
    # In a worker that re-runs an unguarded script (multiprocessing marks it
    # as inheriting while it imports the script), make_dataset stops before
    # touching the directory.
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(RuntimeError, match=r"called by a worker process .* `if __name__ == \"__main__\":`"):
        simulate.make_dataset(2, out=tmp_path / "child", **kwargs)
    assert not (tmp_path / "child").exists()
    monkeypatch.undo()
    # In the calling process, the workers die as they start (here, they run
    # a main module that exits at once); the error says why that may be.
    monkeypatch.setattr(simulate.dataset, "_IN_PROCESS_PIXELS", 0)
    main = tmp_path / "main.py"
    main.write_text("raise SystemExit(1)\n")
    fake = type(sys)("__main__")
    fake.__file__, fake.__spec__ = str(main), None
    monkeypatch.setitem(sys.modules, "__main__", fake)
    with pytest.raises(RuntimeError, match=r"worker process of make_dataset died .* `if __name__ =="):
        simulate.make_dataset(2, out=tmp_path / "parent", **kwargs)


def test_export_fits(dataset, tmp_path):
    from radiorecon.io import get_beam, read_image

    paths = dataset.export_fits(tmp_path / "fits", indices=[5, -1])
    assert [os.path.basename(p) for p in paths] == [
        f"{i:06d}.{kind}.fits" for i in (5, 11) for kind in ("dirty", "psf", "sky")]
    dirty, psf, sky = (read_image(p) for p in paths[:3])
    assert dirty.unit == u.Jy / u.beam and sky.unit == u.Jy / u.pix
    assert dirty.data.shape == sky.data.shape == (64, 64) and psf.data.shape == (128, 128)
    np.testing.assert_array_equal(dirty.data, dataset[5][0])
    np.testing.assert_array_equal(sky.data, dataset.sky(5).data)
    np.testing.assert_array_equal(psf.data, dataset.psf(5, full=True).data)
    assert psf.data[64, 64] == pytest.approx(1.0) and psf.data.max() == pytest.approx(1.0)
    for image, centre in ((dirty, 32), (psf, 64), (sky, 32)):
        assert list(image.wcs.wcs.ctype) == ["RA---SIN", "DEC--SIN"]
        # The phase centre is at the centre pixel of each.
        np.testing.assert_allclose(image.wcs.world_to_pixel(dataset.wcs(5).pixel_to_world(32, 32)), centre)
    assert get_beam(dirty).major.to_value(u.arcsec) == pytest.approx(dataset.beam(5).major.to_value(u.arcsec))
    # Nothing is replaced without overwrite=True, and nothing is written.
    stamp = os.path.getmtime(paths[0])
    with pytest.raises(FileExistsError, match=r"000011\.dirty\.fits and 2 other"):
        dataset.export_fits(tmp_path / "fits", indices=[0, 11])
    assert not (tmp_path / "fits" / "000000.dirty.fits").exists()
    dataset.export_fits(tmp_path / "fits", indices=[5], overwrite=True)
    assert os.path.getmtime(paths[0]) >= stamp


def test_cli_simulate_writes_fits(tmp_path, capsys):
    from radiorecon.cli import main

    out, fits = tmp_path / "ds", tmp_path / "fits"
    assert main(["simulate", "2", str(out), "--seed", "5", "--workers", "1", "--no-progress", "--fits", str(fits),
                 "--set", "npix=64", "--set", 'placement_radius="2 arcsec"']) == 0
    assert f"wrote 2 images to {out}" in capsys.readouterr().out
    assert sorted(os.listdir(fits)) == [f"00000{i}.{kind}.fits" for i in (0, 1) for kind in ("dirty", "psf", "sky")]
    # Refused before simulating anything.
    assert main(["simulate", "2", str(tmp_path / "other"), "--fits", str(fits), "--no-progress"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_dataset_progress_bar(tmp_path, capsys):
    simulate.make_dataset(2, seed=1, out=tmp_path / "ds", workers=1, progress=True, **SMALL)
    assert "simulating" in capsys.readouterr().err
    simulate.make_dataset(2, seed=1, out=tmp_path / "ds", workers=1, progress=False, **SMALL)
    assert capsys.readouterr().err == ""


def test_dataset_trains_a_reconstructor(dataset):
    from radiorecon import Reconstructor

    rec = Reconstructor("test-conv").fit(dataset, epochs=1, batch_size=4, seed=0, progress=False)
    assert rec.fitted and rec.units == dataset.units
    assert len(rec.history) == 1


def test_dataset_is_a_torch_dataset(dataset):
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    dirty, sky = next(iter(loader))
    assert dirty.shape == sky.shape == (5, 64, 64) and dirty.dtype == torch.float32


# -- bad inputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"preset": "vla-a"}, ValueError, "available presets: alma-cycle5-c43-3"),
        ({"array": "C43-42"}, ValueError, "alma_cycle5_1, alma_cycle5_2"),
        ({"noise_rms": -5 * u.uJy}, ValueError, "noise_rms .* must be >= 0"),
        ({"frequency": 230}, TypeError, "frequency .* needs a unit"),
        ({"frequency": 230 * u.m}, TypeError, "units of GHz"),
        ({"npix": 511}, ValueError, "even and at least 32"),
        ({"weighting": "superuniform"}, ValueError, "'natural', 'uniform', 'briggs'"),
        ({"resolution": 1}, TypeError, "unknown simulation parameter.*valid ones: array"),
        ({"pixel_scale": 1 * u.arcsec}, ValueError, "too coarse for the longest baseline"),
        ({"sefd": 3000 * u.Jy, "noise_rms": 40 * u.uJy}, ValueError, "not both"),
        ({"flux_range": (0.5, 0.05) * u.mJy}, ValueError, "min <= max"),
        ({"seed": -1}, ValueError, "seed must be at least 0, not -1"),
        ({"seed": 2**63}, ValueError, "seed must be at most"),
        ({"seed": 1.5}, TypeError, "seed must be None or a non-negative integer"),
        ({"index": True}, TypeError, "index must be an integer"),
        ({"index": -1}, ValueError, "index must be at least 0"),
        ({"n_pol": True}, TypeError, "n_pol .* must be an integer"),
        ({"n_pol": 3}, ValueError, "n_pol .* must be at most 2"),
        ({"n_channels": 2.0}, TypeError, "n_channels .* must be an integer"),
        ({"n_sources": (1.0, 3)}, TypeError, "n_sources .* minimum must be an integer"),
        ({"n_sources": (3, 1)}, ValueError, "n_sources .* maximum must be at least 3"),
    ],
)
def test_bad_inputs_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate.observe(**kwargs)


def test_bad_dataset_inputs(tmp_path):
    for kwargs, error, match in [
        (dict(n=0), ValueError, "n must be at least 1"),
        (dict(n=True), TypeError, "n must be an integer"),
        (dict(n=2, seed=-3), ValueError, "seed must be at least 0"),
        (dict(n=2, workers=0), ValueError, "workers must be at least 1"),
        (dict(n=2, workers=1.5), TypeError, "workers must be an integer"),
        (dict(n=2, shard_size=0), ValueError, "shard_size must be at least 1"),
    ]:
        with pytest.raises(error, match=match):
            simulate.make_dataset(out=tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"\(64, 64\) array"):
        simulate.observe(np.zeros((32, 32)), npix=64)
    with pytest.raises(ValueError, match="sky table needs"):
        simulate.observe(QTable({"flux": [1.0] * u.mJy}), npix=64)
    assert simulate.available_presets()[0] == simulate.DEFAULT_PRESET == "alma-cycle5-c43-3"
    assert simulate.preset_parameters()["noise_rms"] == 50 * u.uJy / u.beam


def test_simulated_pairs_equal_the_written_data_set(dataset):
    pairs = simulate.SimulatedPairs(12, seed=7, **SMALL)
    assert len(pairs) == 12 and pairs.units == dataset.units
    for i in (0, 5, -1):
        dirty, sky = pairs[i]
        np.testing.assert_array_equal(dirty, dataset[i][0])
        np.testing.assert_allclose(sky, dataset[i][1], rtol=1e-6)
    np.testing.assert_array_equal(simulate.SimulatedPairs(12, seed=7, target="sky", **SMALL)[3][1],
                                  dataset.sky(3).data)
    with pytest.raises(IndexError):
        pairs[12]
    with pytest.raises(TypeError):
        pairs[1.5]
    for bad in (dict(n=0), dict(n=3, seed=-1), dict(n=3, target="x")):
        with pytest.raises(ValueError):
            simulate.SimulatedPairs(**bad)
    for bad in (dict(n=True), dict(n=3, seed=None), dict(n=3, seed=2.0)):
        with pytest.raises(TypeError):
            simulate.SimulatedPairs(**bad)
    assert "12 pairs of 64" in repr(pairs)


def test_cache_record_tells_apart_parameters_that_differ_inside_a_long_array():
    from radiorecon.simulate.stream import _canonical

    a = np.linspace(0, 1, 3000) * u.m
    b = a.copy()
    b[1500] += 1e-9 * u.m  # numpy's printing would show both as the same summary
    assert str(a) == str(b) and _canonical({"uvw": a}) != _canonical({"uvw": b})
    assert _canonical({"uvw": a}) == _canonical({"uvw": a.copy()})


def test_cached_pairs_are_simulated_once_and_read_back_bit_for_bit(tmp_path, monkeypatch):
    import torch

    plain = [simulate.SimulatedPairs(6, seed=7, crop=32, **SMALL)[i] for i in range(6)]
    cached = simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "c", **SMALL)
    # Filled by data-loader processes (the maps are reopened in each) ...
    loader = torch.utils.data.DataLoader(cached, batch_size=2, num_workers=2)
    for (dirty, sky), i in zip(loader, range(0, 6, 2)):
        np.testing.assert_array_equal(dirty[1].numpy(), plain[i + 1][0])
    # ... and read back by a later run with the same settings, simulating nothing.
    monkeypatch.setattr("radiorecon.simulate.stream.simulate_image", lambda *a, **k: pytest.fail("simulated"))
    again = simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "c", **SMALL)
    for i in range(6):
        for a, b in zip(again[i], plain[i]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="other settings.*seed"):
        simulate.SimulatedPairs(6, seed=8, crop=32, cache=tmp_path / "c", **SMALL)
    with pytest.raises(ValueError, match="other settings.*parameters_sha256"):
        simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "c", **{**SMALL, "npix": 96})
    # A second maker (another process that found no cache a moment before) leaves the first's pairs alone.
    again._make_cache(again._cache_record())
    assert np.load(tmp_path / "c" / "made.npy").all() and not list(tmp_path.glob(".c.*"))
    np.testing.assert_array_equal(simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "c", **SMALL)[2][0],
                                  plain[2][0])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "other", **SMALL)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    (tmp_path / "c" / "made.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="damaged SimulatedPairs cache"):
        simulate.SimulatedPairs(6, seed=7, crop=32, cache=tmp_path / "c", **SMALL)
