"""The radio-galaxy sky model and the restored-image (LoTSS-like) presets."""

import astropy.units as u
import numpy as np
import pytest

from radiorecon import simulate
from radiorecon.beam import fit_clean_beam
from radiorecon.simulate import galaxies
from radiorecon.simulate.sky import render

NOISELESS = {"noise_rms": 0 * u.uJy / u.beam}
# Sources that fit well inside the 120" LoTSS cut-outs.
FITS = {"size_range": (30, 60) * u.arcsec}
ONLY = {"FRI": (0, 1, 0), "FRII": (0, 0, 1)}


def _arms(row):
    """Lengths (arcsec) of the two arms of a truth row."""
    a = row["arm_ratio"]
    return row["las"].to_value(u.arcsec) * np.array([a, 1.0]) / (1 + a)


def test_galaxies_are_reproducible_and_in_the_truth():
    a = simulate.observe(seed=3, preset="extended", npix=256)
    b = simulate.observe(seed=3, preset="extended", npix=256)
    other = simulate.observe(seed=4, preset="extended", npix=256)
    np.testing.assert_array_equal(a.dirty.data, b.dirty.data)
    np.testing.assert_array_equal(a.sky.data, b.sky.data)
    assert not np.array_equal(a.sky.data, other.sky.data)
    assert list(a.truth["class"]) == list(b.truth["class"])
    assert set(a.truth["class"]) <= set(galaxies.CLASSES)
    for name in galaxies.SOURCE_COLUMNS:
        assert name in a.truth.colnames
    assert a.truth["linear_size"].unit == u.kpc and a.truth["las"].unit == u.arcsec
    extended = a.truth[a.truth["class"] != "compact"]
    assert len(extended)
    # The angular size is the linear size at the redshift (Planck 2018).
    scale = galaxies.kpc_per_arcsec(np.asarray(extended["redshift"]))
    np.testing.assert_allclose(extended["las"].to_value(u.arcsec), extended["linear_size"].to_value(u.kpc) / scale)
    assert (extended["las"] >= 1.5 * u.arcsec).all() and (extended["las"] <= 15 * u.arcsec).all()
    assert np.array_equal(np.bincount(a.components["source"], minlength=len(a.truth)), a.truth["n_components"])


def test_rendered_galaxies_conserve_flux():
    for index in range(6):
        obs = simulate.observe(seed=1, index=index, preset="lotss", **FITS)
        np.testing.assert_allclose(obs.sky.data.sum(), obs.truth["flux"].to_value(u.Jy).sum(), rtol=1e-5)
        np.testing.assert_allclose(obs.components["flux"].sum(), obs.truth["flux"].sum(), rtol=1e-12)


@pytest.mark.parametrize("cls", ["FRI", "FRII"])
def test_fanaroff_riley_classes_peak_where_they_should(cls):
    # Fanaroff & Riley (1974): the brightest emission, at the survey's
    # resolution, lies beyond half the source's extent (FR II) or within it (FR I).
    for index in range(6):
        obs = simulate.observe(seed=2, index=index, preset="lotss", class_fractions=ONLY[cls], **FITS,
                               **NOISELESS)
        row = obs.truth[0]
        assert row["class"] == cls
        y, x = np.unravel_index(np.argmax(obs.dirty.data), obs.dirty.shape)
        distance = np.hypot(x - row["x"], y - row["y"]) * 1.5  # arcsec
        if cls == "FRII":
            assert distance > 0.7 * _arms(row).min()
        else:
            assert distance < 0.3 * _arms(row).min()


def test_components_sum_to_each_source_and_sources_to_the_sky():
    obs = simulate.observe(seed=5, preset="extended", npix=256)
    images = obs.source_images()
    assert images.shape == (len(obs.truth), 256, 256) and images.unit == u.Jy / u.pix
    np.testing.assert_allclose(images.value.sum(0), obs.sky.data, atol=1e-9)
    pixel = 0.1
    for source in range(len(obs.truth)):
        rows = obs.components[obs.components["source"] == source]
        total = sum(render({c: np.atleast_1d(u.Quantity(row[c]).value) for c in ("x", "y", "flux", "fwhm_major",
                                                                               "fwhm_minor", "pa")}, 256, pixel)
                    for row in rows)
        np.testing.assert_allclose(total, images[source].value, atol=1e-9)
    kinds = {"FRI": {"core", "jet"}, "FRII": {"core", "lobe", "hotspot"}, "compact": {"compact"}}
    for source, cls in enumerate(obs.truth["class"]):
        assert set(obs.components["kind"][obs.components["source"] == source]) == kinds[cls]


def test_lotss_noise_and_beam_are_the_presets():
    params = simulate.preset_parameters("lotss")
    assert params["frequency"] == 144 * u.MHz and params["pixel_scale"] == 1.5 * u.arcsec
    noise = np.stack([simulate.observe(np.zeros((80, 80)), seed=0, index=i, preset="lotss").dirty.data
                      for i in range(8)])
    np.testing.assert_allclose(noise.std(), 83e-6, rtol=0.05)
    # Noise correlated by the beam: at a lag of one FWHM (4 px) its
    # correlation is the beam's autocorrelation there, exp(-2 ln 2) = 1/4.
    lag = (noise[:, :, 4:] * noise[:, :, :-4]).mean() / noise.var()
    assert abs(lag - 0.25) < 0.05
    obs = simulate.observe(seed=0, preset="lotss")
    assert obs.beam.major == 6 * u.arcsec and obs.beam.minor == 6 * u.arcsec
    fitted = fit_clean_beam(obs.psf.data, 1.5 * u.arcsec)
    assert abs(fitted.major.to_value(u.arcsec) - 6) < 0.05 and abs(fitted.minor.to_value(u.arcsec) - 6) < 0.05
    assert obs.dirty.meta["NOISERMS"] == pytest.approx(83e-6)
    # A point source of S Jy peaks at S Jy/beam in a restored image.
    sky = np.zeros((80, 80))
    sky[40, 40] = 1e-3
    peak = simulate.observe(sky, seed=0, preset="lotss", **NOISELESS).dirty.data
    assert peak.max() == pytest.approx(1e-3, rel=1e-5) and peak[40, 40] == peak.max()


def test_galaxy_peak_snr_is_the_measured_peak():
    for index in range(4):
        noisy = simulate.observe(seed=7, index=index, preset="lotss", **FITS)
        clean = simulate.observe(seed=7, index=index, preset="lotss", **FITS, **NOISELESS)
        measured = clean.dirty.data.max() / 83e-6
        assert noisy.truth["peak_snr"][0] == pytest.approx(measured, rel=0.1)


def test_extended_preset_end_to_end(tmp_path):
    pairs = simulate.SimulatedPairs(3, preset="extended", seed=0, npix=64, placement_radius=2 * u.arcsec)
    dirty, sky = pairs[0]
    assert dirty.shape == sky.shape == (64, 64) and dirty.dtype == np.float32
    data = simulate.make_dataset(3, preset="extended", seed=0, npix=64, placement_radius=2 * u.arcsec,
                                 out=tmp_path / "ext", progress=False)
    np.testing.assert_array_equal(data[0][0], dirty)
    np.testing.assert_array_equal(data[0][1], sky)
    truth = data.truth
    assert "class" in truth.colnames and set(truth["class"]) <= set(galaxies.CLASSES)
    obs = simulate.observe(seed=0, index=1, preset="extended", npix=64, placement_radius=2 * u.arcsec)
    rows = truth[truth["image_id"] == 1]
    assert list(rows["class"]) == list(obs.truth["class"])
    np.testing.assert_allclose(rows["las"].to_value(u.arcsec), obs.truth["las"].to_value(u.arcsec))
    for i in range(3):
        np.testing.assert_allclose(data.source_images(i).sum(0), data.sky(i).data, atol=1e-9)


def test_lotss_data_set_keeps_one_beam_psf(tmp_path):
    data = simulate.make_dataset(2, preset="lotss", seed=0, out=tmp_path / "lotss", progress=False)
    assert data.beam(0).major == 6 * u.arcsec
    assert data.psf(1, full=True).shape == (160, 160)
    assert data.primary_beam.min() == 1


@pytest.mark.parametrize(("overrides", "error", "match"), [
    ({"class_fractions": (1, 1)}, ValueError, "class_fractions.*3 non-negative"),
    ({"class_fractions": (0, 0, 0)}, ValueError, "class_fractions"),
    ({"redshift_range": (2, 1)}, ValueError, "redshift_range.*min <= max"),
    ({"sky_model": "blobs"}, ValueError, "sky_model.*'gaussian', 'radio-galaxies'"),
    ({"imaging": "restored", "sefd": 3000 * u.Jy}, ValueError, "restored.*not sefd"),
    ({"array": None}, ValueError, "imaging='dirty' needs an array"),
    ({"linear_size_range": (1, 2) * u.kpc, "class_fractions": (0, 1, 0), "empty_fraction": 0},
     ValueError, "no linear size in 1-2 kpc.*size_range"),
])
def test_bad_galaxy_parameters(overrides, error, match):
    with pytest.raises(error, match=match):
        simulate.observe(seed=0, preset="extended", npix=64, **overrides)


def test_restoring_beam_must_be_sampled():
    with pytest.raises(ValueError, match="restoring_beam .* under two pixels"):
        simulate.observe(seed=0, preset="lotss", restoring_beam=2 * u.arcsec)
    with pytest.raises(ValueError, match="no visibilities"):
        simulate.observe(seed=0, preset="lotss", method="visibility")
