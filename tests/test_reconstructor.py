import logging

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

import radiorecon
from radiorecon import Reconstruction, Reconstructor
from radiorecon.exceptions import CapabilityError, InputError, NotFittedError, RadioreconWarning

import _backends
from conftest import celestial_header, gaussian_psf


@pytest.fixture
def conv(pairs):
    dirty, sky = pairs
    return Reconstructor("test-conv").fit(dirty, sky, epochs=3, batch_size=8, seed=0, progress=False)


def test_fit_learns_and_records_history(pairs):
    dirty, sky = pairs
    rec = Reconstructor("test-conv", learning_rate=0.05)
    rec.fit(dirty[:20], sky[:20], epochs=6, batch_size=4, seed=0, progress=False,
            validation=(dirty[20:], sky[20:]))
    assert [h["epoch"] for h in rec.history] == [1, 2, 3, 4, 5, 6]
    assert rec.history[-1]["mse"] < rec.history[0]["mse"]
    assert "val_mse" in rec.history[-1]
    # The scale is the robust noise of the inputs, here near the injected 0.05.
    assert 0.04 < rec.scale < 0.08


def test_fit_is_reproducible_with_a_seed(pairs):
    dirty, sky = pairs
    a = Reconstructor("test-conv").fit(dirty, sky, epochs=2, batch_size=5, seed=11, progress=False)
    b = Reconstructor("test-conv").fit(dirty, sky, epochs=2, batch_size=5, seed=11, progress=False)
    c = Reconstructor("test-conv").fit(dirty, sky, epochs=2, batch_size=5, seed=12, progress=False)
    assert np.array_equal(a.backend.net.weight.detach(), b.backend.net.weight.detach())
    assert not np.array_equal(a.backend.net.weight.detach(), c.backend.net.weight.detach())


def test_interrupted_training_resumes_exactly(pairs, tmp_path, monkeypatch):
    dirty, sky = pairs
    straight = Reconstructor("test-conv").fit(dirty, sky, epochs=4, batch_size=5, seed=5, progress=False)

    ckpt = tmp_path / "run.ckpt"
    first = Reconstructor("test-conv")
    original = _backends.ConvBackend.train_step

    def train_step(self, inputs, targets):
        if len(first.history) == 2:  # Ctrl-C during the third epoch
            raise KeyboardInterrupt
        return original(self, inputs, targets)

    monkeypatch.setattr(_backends.ConvBackend, "train_step", train_step)
    with pytest.raises(KeyboardInterrupt):
        first.fit(dirty, sky, epochs=4, batch_size=5, seed=5, progress=False, checkpoint=ckpt)
    monkeypatch.undo()
    assert ckpt.exists()

    resumed = Reconstructor("test-conv").fit(
        dirty, sky, epochs=4, batch_size=5, seed=5, progress=False, checkpoint=ckpt
    )
    assert resumed.history[:2] == straight.history[:2]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert np.array_equal(resumed.backend.net.weight.detach(), straight.backend.net.weight.detach())
    assert resumed.history == straight.history
    assert Reconstructor.load(ckpt).fitted


def test_checkpoint_of_another_config_is_refused(pairs, tmp_path):
    dirty, sky = pairs
    ckpt = tmp_path / "run.ckpt"
    Reconstructor("test-conv").fit(dirty, sky, epochs=1, progress=False, checkpoint=ckpt)
    with pytest.raises(radiorecon.exceptions.ModelFileError, match=r"checkpoint of backend.*\(learning_rate differ\)"):
        Reconstructor("test-conv", learning_rate=0.01).fit(dirty, sky, epochs=2, progress=False, checkpoint=ckpt)


def test_checkpoint_from_before_a_config_key_existed_resumes(pairs, tmp_path):
    from radiorecon import modelfile

    dirty, sky = pairs
    ckpt = tmp_path / "run.ckpt"
    Reconstructor("test-conv").fit(dirty, sky, epochs=1, progress=False, checkpoint=ckpt)
    doc, tensors = modelfile.load(ckpt)
    del doc["config"]["noise"]  # as written by a version without that key (its default now)
    modelfile.save(ckpt, doc, tensors, overwrite=True)
    resumed = Reconstructor("test-conv").fit(dirty, sky, epochs=2, progress=False, checkpoint=ckpt)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    with pytest.raises(radiorecon.exceptions.ModelFileError, match=r"\(learning_rate differ\)"):
        Reconstructor("test-conv", learning_rate=0.01).fit(dirty, sky, epochs=3, progress=False, checkpoint=ckpt)
    # A prediction setting does not change training: the constructor's value is kept.
    other = Reconstructor("test-conv", noise=0.3).fit(dirty, sky, epochs=3, progress=False, checkpoint=ckpt)
    assert [h["epoch"] for h in other.history] == [1, 2, 3] and other.config["noise"] == 0.3


def test_fit_argument_checks(pairs):
    dirty, sky = pairs
    with pytest.raises(CapabilityError, match="'clean' cannot be trained"):
        Reconstructor("clean").fit(dirty)
    with pytest.raises(ValueError, match="give targets"):
        Reconstructor("test-conv").fit(dirty)
    with pytest.raises(ValueError, match="unpaired images: give inputs only"):
        Reconstructor("test-prior").fit(sky, dirty)
    with pytest.raises(ValueError, match="24 training inputs but 3 targets"):
        Reconstructor("test-conv").fit(dirty, sky[:3])
    with pytest.raises(ValueError, match="share one shape"):
        Reconstructor("test-conv").fit([dirty[0], dirty[1][:10]], [sky[0], sky[1]])
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        Reconstructor("test-conv").fit(dirty, sky, epochs=0)


def test_fit_accepts_a_dataset_of_pairs(pairs):
    dirty, sky = pairs

    class Pairs:
        units = {"input": "Jy / beam", "target": "Jy / pix"}

        def __len__(self):
            return len(dirty)

        def __getitem__(self, i):
            return dirty[i], sky[i]

    rec = Reconstructor("test-conv").fit(Pairs(), epochs=1, progress=False, seed=0)
    assert rec.units == {"input": "Jy / beam", "target": "Jy / pix"}
    sky_model = rec.predict(dirty[0] * u.Jy / u.beam, progress=False)
    assert sky_model.unit == u.Jy / u.pix


def test_data_loading_workers_train_the_same_weights(tmp_path):
    import os
    import pickle

    from radiorecon.simulate import SimulatedPairs

    class Simulated:
        """Simulated pairs that note which process made each."""

        units = SimulatedPairs.units

        def __init__(self, n, seed):
            self.pairs = SimulatedPairs(n, seed=seed, npix=32, placement_radius=1.0 * u.arcsec)

        def __len__(self):
            return len(self.pairs)

        def __getitem__(self, i):
            (tmp_path / str(os.getpid())).touch()
            return self.pairs[i]

    pairs = Simulated(4, seed=1)
    # Worker processes started by spawn (macOS, Windows) get the data set pickled.
    assert np.array_equal(pickle.loads(pickle.dumps(pairs.pairs))[3][0], pairs.pairs[3][0])
    fit = dict(epochs=1, batch_size=2, seed=0, progress=False, validation=Simulated(2, seed=2))
    alone = Reconstructor("test-conv").fit(pairs, workers=0, **fit)
    assert {p.name for p in tmp_path.iterdir()} == {str(os.getpid())}
    helped = Reconstructor("test-conv").fit(pairs, workers=2, **fit)
    assert len(list(tmp_path.iterdir())) > 1  # the workers simulated
    for key, value in alone.backend.state_dict().items():
        assert np.array_equal(helped.backend.state_dict()[key], value), key
    assert helped.history == alone.history
    with pytest.raises(ValueError, match="workers must be at least 0"):
        Reconstructor("test-conv").fit(pairs, workers=-1)


def test_predict_before_fit_and_capability_errors(pairs):
    dirty, _ = pairs
    with pytest.raises(NotFittedError, match="needs training: call fit"):
        Reconstructor("test-conv").predict(dirty[0])
    with pytest.raises(CapabilityError, match="needs the PSF"):
        Reconstructor("clean").predict(dirty[0])
    with pytest.raises(CapabilityError, match="cannot draw samples.*'sample'"):
        Reconstructor("clean").sample(2)
    with pytest.raises(CapabilityError, match="does not draw samples"):
        Reconstructor("test-smooth").predict(dirty[0], n_samples=5)
    with pytest.raises(CapabilityError, match="cannot reconstruct"):
        Reconstructor("test-prior").predict(dirty[0])
    with pytest.raises(ValueError, match="aggregate must be one of"):
        Reconstructor("test-smooth").predict(dirty[0], aggregate="mode")
    with pytest.raises(ValueError, match="n_samples must be at least 1"):
        Reconstructor("test-smooth").predict(dirty[0], n_samples=0)
    with pytest.raises(TypeError, match="Unknown configuration"):
        Reconstructor("clean", gian=0.2)


def test_uncertainty_from_samples(conv, pairs):
    dirty, _ = pairs
    result = conv.predict(dirty[0], n_samples=40, seed=1, progress=False, return_samples=True)
    assert isinstance(result, Reconstruction)
    assert isinstance(result.uncertainty, StdDevUncertainty)
    assert result.samples.shape == (40, 32, 32)
    np.testing.assert_allclose(result.data, np.median(result.samples, axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.uncertainty.array, result.samples.std(axis=0, ddof=1), rtol=1e-5)
    # The backend adds noise of 0.1 (normalised units) = 0.1 * scale in data units.
    assert np.median(result.uncertainty.array) == pytest.approx(0.1 * conv.scale, rel=0.15)
    assert result.meta["RRNSAMP"] == 40 and result.meta["RRUNCERT"] == "std of 40 samples"
    mean = conv.predict(dirty[0], n_samples=40, seed=1, aggregate="mean", progress=False)
    np.testing.assert_allclose(mean.data, result.samples.mean(axis=0), rtol=1e-5, atol=1e-7)


def test_seeded_prediction_is_repeatable(conv, pairs):
    dirty, _ = pairs
    a = conv.predict(dirty[0], n_samples=3, seed=9, progress=False)
    b = conv.predict(dirty[0], n_samples=3, seed=9, progress=False)
    c = conv.predict(dirty[0], n_samples=3, seed=10, progress=False)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_no_uncertainty_is_said_not_invented(pairs, caplog):
    dirty, _ = pairs
    with caplog.at_level(logging.INFO, logger="radiorecon"):
        result = Reconstructor("test-smooth").predict(dirty[0], progress=False)
    assert result.uncertainty is None
    assert result.meta["RRUNCERT"].startswith("none: backend test-smooth gives no uncertainty")
    assert "no uncertainty" in caplog.text
    one = Reconstructor("test-conv").fit(dirty, pairs[1], epochs=1, progress=False)
    assert one.predict(dirty[0], progress=False).uncertainty is None


def test_output_carries_wcs_unit_mask_and_provenance(cube_file):
    result = Reconstructor("test-smooth").predict(str(cube_file), seed=4, progress=False)
    assert result.data.shape == (64, 64)
    assert result.unit == u.Jy / u.pix
    assert isinstance(result.wcs, WCS) and result.wcs.naxis == 2
    expected = WCS(fits.getheader(cube_file)).celestial.pixel_to_world(10, 20)
    assert result.wcs.pixel_to_world(10, 20).separation(expected).arcsec < 1e-6
    assert result.mask[:3, :3].all() and result.mask.sum() == 9
    assert np.isnan(result.data[:3, :3]).all() and np.isfinite(result.data[3:, 3:]).all()
    meta = result.meta
    assert meta["RRBACKND"] == "test-smooth" and meta["RRVERS"] == radiorecon.__version__
    assert meta["RRSEED"] == 4 and meta["RRAGGR"] == "median" and meta["OBJECT"] == "COSMOS-test"
    assert meta["RRBMAJ"] == pytest.approx(0.89 / 3600)
    assert "RRDATE" in meta and "RRCONFIG" in meta


def test_all_input_kinds_and_lists(cube_file, request):
    rec = Reconstructor("test-smooth")
    reference = rec.predict(str(cube_file), progress=False).data
    hdul = fits.open(cube_file)
    request.addfinalizer(hdul.close)
    header = hdul[0].header
    plane = hdul[0].data[0, 0]
    ccd = CCDData(plane, unit="Jy/beam", wcs=WCS(header).celestial, meta={"BMAJ": 1e-4})
    inputs = [cube_file, hdul, hdul[0], ccd, NDData(plane, unit="Jy/beam"), plane * u.Jy / u.beam, plane]
    results = rec.predict(inputs, progress=False, batch_size=3)
    assert isinstance(results, list) and len(results) == len(inputs)
    for result in results:
        np.testing.assert_allclose(result.data, reference, equal_nan=True, rtol=1e-6, atol=1e-9)
    assert results[-1].unit is None  # a bare array has no unit to claim
    assert results[3].unit == u.Jy / u.pix


def test_units_are_converted_to_the_training_unit(conv, pairs):
    dirty, _ = pairs
    conv.units = {"input": "Jy / beam", "target": "Jy / pix"}
    in_jy = conv.predict(dirty[0] * u.Jy / u.beam, seed=0, progress=False)
    in_mjy = conv.predict(dirty[0] * 1000 * u.mJy / u.beam, seed=0, progress=False)
    np.testing.assert_allclose(in_jy.data, in_mjy.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(u.UnitConversionError, match="cannot be converted to Jy / beam"):
        conv.predict(dirty[0] * u.K, progress=False)
    with pytest.warns(RadioreconWarning, match="no unit; assuming"):
        conv.predict(dirty[0], progress=False)


def test_point_source_on_a_tile_boundary_keeps_flux_and_position():
    # 48-pixel tiles with overlap: a 150 x 101 image needs 4 x 3 tiles.
    image = np.zeros((150, 101), np.float32)
    image[47, 40] = 5.0
    image[100, 49] = 3.0
    rec = Reconstructor("test-smooth")
    result = rec.predict(image, progress=False)
    from radiorecon.tiling import Tiler

    tiler = Tiler(image.shape, (48, 48), 1)
    edges = {y + 47 for y, _ in tiler.starts} | {y for y, _ in tiler.starts}
    assert len(tiler) > 4 and (47 in edges or 48 in edges)
    from scipy.ndimage import convolve

    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    np.testing.assert_allclose(result.data, convolve(image, kernel, mode="constant"), atol=1e-6)
    for (y, x), flux in (((47, 40), 5.0), ((100, 49), 3.0)):
        stamp = result.data[y - 3 : y + 4, x - 3 : x + 4]
        assert stamp.sum() == pytest.approx(flux, rel=1e-5)
        yy, xx = np.mgrid[y - 3 : y + 4, x - 3 : x + 4]
        assert (stamp * yy).sum() / stamp.sum() == pytest.approx(y, abs=1e-4)
        assert (stamp * xx).sum() / stamp.sum() == pytest.approx(x, abs=1e-4)


def test_small_and_non_square_images_are_padded(conv):
    image = np.random.default_rng(1).normal(size=(20, 45)).astype(np.float32)
    result = conv.predict(image, seed=0, progress=False)
    assert result.data.shape == (20, 45)


def test_blank_image_is_refused():
    with pytest.raises(ValueError, match="Every pixel of the image is blank"):
        Reconstructor("test-smooth").predict(np.full((8, 8), np.nan))


def test_psf_of_any_size_reaches_the_backend():
    psf = gaussian_psf((64, 64), 2.0)
    yy, xx = np.mgrid[:64, :64]
    dirty = np.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / (2 * 2.0**2))
    rec = Reconstructor("clean", niter=200, threshold=0.0)
    for shape in [(64, 64), (40, 40), (128, 96)]:
        p = gaussian_psf(shape, 2.0) * 7.0  # any peak: the front door normalises it
        model = rec.predict(dirty, psf=p, progress=False)
        assert model.data.sum() == pytest.approx(1.0, rel=0.02)
        assert np.unravel_index(np.argmax(model.data), model.data.shape) == (30, 34)
    with pytest.raises(ValueError, match="2 PSFs for 1 images"):
        rec.predict([dirty], psf=[psf, psf])


def test_sample_from_unpaired_prior():
    rng = np.random.default_rng(0)
    skies = rng.normal(2.0, 0.5, size=(50, 16, 16)).astype(np.float32)
    rec = Reconstructor("test-prior").fit(skies, epochs=1, progress=False, seed=0)
    draws = rec.sample(200, seed=1, progress=False)
    assert draws.data.shape == (200, 16, 16)
    assert draws.data.mean() == pytest.approx(2.0, abs=0.02)
    assert draws.data.std() == pytest.approx(0.5, rel=0.05)
    again = rec.sample(200, seed=1, progress=False)
    np.testing.assert_array_equal(draws.data, again.data)
    assert rec.sample(2, shape=(8, 12), progress=False).data.shape == (2, 8, 12)


def test_per_source_components():
    image = np.zeros((20, 30), np.float32)
    image[5, 3] = 1.0
    image[12, 25] = 2.0
    result = Reconstructor("test-split").predict(image, progress=False)
    assert result.components.shape == (2, 20, 30)
    np.testing.assert_allclose(result.components.sum(axis=0), result.data)
    assert result.components[0][5, 3] == 1.0 and result.components[1][12, 25] == 2.0
    with pytest.raises(ValueError, match="deblends whole images"):
        Reconstructor("test-split").predict(np.zeros((70, 70)), progress=False)


def test_components_carry_the_model_unit_and_the_mask():
    image = np.zeros((20, 30), np.float32)
    image[5, 3], image[12, 25], image[0, 0] = 1.0, 2.0, np.nan
    result = Reconstructor("test-split").predict(image * u.Jy / u.beam, progress=False)
    assert result.components.unit == u.Jy / u.pix and result.components.shape == (2, 20, 30)
    assert np.isnan(result.components[:, 0, 0]).all()  # blank in the input, blank in every component
    assert result.components[1, 12, 25] == 2.0 * u.Jy / u.pix
    assert result[2:8, 1:5].components.shape == (2, 6, 4)  # slices keep their components


def test_positions_only_for_deblending_backends():
    with pytest.raises(CapabilityError, match="cannot take source positions: it does not declare the 'deblend'"):
        Reconstructor("test-smooth").predict(np.zeros((16, 16)), positions=[(3, 4)], progress=False)
    # Positions are pixels of the whole image: a deblending backend's image is not cut into tiles.
    with pytest.raises(InputError, match=r"deblends whole images of at most \(32, 32\) pixels, not in tiles"):
        Reconstructor("test-split").predict(np.zeros((70, 70)), positions=[(3, 4)], progress=False)


def test_device_choice():
    rec = Reconstructor("test-smooth")
    rec.predict(np.ones((8, 8)), device="auto", progress=False)
    import torch

    assert rec.backend.device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Unknown device"):
        rec.predict(np.ones((8, 8)), device="abacus")


def test_backend_instance_and_repr():
    from _backends import SmoothBackend

    rec = Reconstructor(SmoothBackend())
    assert rec.backend_name == "test-smooth"
    assert "test-smooth" in repr(rec) and "fitted" in repr(rec)
    with pytest.raises(TypeError, match="backend name or a Backend instance"):
        Reconstructor(42)


def test_progress_bars_show_and_hide(pairs, capsys, monkeypatch):
    dirty, sky = pairs
    rec = Reconstructor("test-conv")
    rec.fit(dirty, sky, epochs=1, batch_size=4, progress=True)
    monkeypatch.setattr("radiorecon.pipeline.PROGRESS_DELAY", 3600)  # however slow the machine
    rec.predict(list(dirty[:3]), batch_size=1, progress=True)
    err = capsys.readouterr().err
    # A quick prediction stays silent; the bar counts tiles once it shows.
    assert "epoch 1/1" in err and "predict" not in err
    monkeypatch.setattr("radiorecon.pipeline.PROGRESS_DELAY", 0)
    rec.predict(dirty[0], n_samples=4, batch_size=2, progress=True)
    # One image, one tile: the bar counts its draws, two backend calls of two.
    err = capsys.readouterr().err
    assert "predict: 100%" in err and "4/4" in err and "draw/s" in err
    rec.fit(dirty, sky, epochs=1, batch_size=4, progress=False)
    rec.predict(list(dirty[:3]), batch_size=1, progress=False)
    assert capsys.readouterr().err == ""


def test_training_is_logged(pairs, caplog):
    dirty, sky = pairs
    with caplog.at_level(logging.INFO, logger="radiorecon"):
        Reconstructor("test-conv").fit(dirty, sky, epochs=1, progress=False)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # fit's device="auto"
    assert f"training test-conv on 24 images on {device}" in caplog.text


def test_result_converts_to_ccddata(cube_file):
    sky = Reconstructor("test-smooth").predict(cube_file, progress=False)
    ccd = CCDData(sky)
    assert ccd.unit == u.Jy / u.pix and ccd.wcs.naxis == 2
    np.testing.assert_array_equal(ccd.mask, sky.mask)
    assert ccd.header["RRBACKND"] == "test-smooth"


def test_clean_gets_a_psf_twice_the_image_and_cleans_a_corner_source():
    # A PSF with far sidelobes; the source sits in a corner of a 64^2 image.
    n = 128
    yy, xx = np.mgrid[:n, :n] - n // 2
    psf = np.exp(-(xx**2 + yy**2) / 8.0) + 0.2 * np.cos(xx / 2.0) * np.exp(-(xx**2 + yy**2) / 5000.0)
    psf /= psf[n // 2, n // 2]
    dirty = psf[n // 2 - 6 : n // 2 + 58, n // 2 - 6 : n // 2 + 58]  # source at (6, 6)
    result = Reconstructor("clean", niter=3000, threshold=0.0, gain=0.2).predict(dirty, psf=psf, progress=False)
    assert np.nansum(result.data[3:10, 3:10]) == pytest.approx(1.0, rel=0.01)
    assert np.abs(result.extras["residual"][40:, 40:]).max() < 0.01  # far sidelobes removed too


def test_deterministic_backend_refuses_several_samples():
    psf = gaussian_psf((32, 32))
    with pytest.raises(CapabilityError, match="does not draw samples"):
        Reconstructor("clean").predict(psf, psf=psf, n_samples=3, progress=False)


def test_stack_and_psf_list_checks(conv, pairs):
    dirty, _ = pairs
    results = conv.predict(dirty[:3], progress=False)
    assert isinstance(results, list) and len(results) == 3
    with pytest.raises(ValueError, match="one PSF for every image"):
        Reconstructor("clean").predict([dirty[0], dirty[1]], psf=[dirty[0], None])


def test_samples_come_in_chunks_and_stay_seeded(conv, pairs):
    dirty, _ = pairs
    a = conv.predict(dirty[0], n_samples=7, batch_size=3, seed=2, progress=False, return_samples=True)
    b = conv.predict(dirty[0], n_samples=7, batch_size=3, seed=2, progress=False, return_samples=True)
    assert a.samples.shape == (7, 32, 32)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_peak_scale_for_noise_free_training():
    skies = np.zeros((10, 16, 16), np.float32)
    skies[:, 8, 8] = 4.0
    skies += 1e-9
    rec = Reconstructor("test-prior")
    rec.backend.input_scale = "peak"
    rec.fit(skies, epochs=1, progress=False)
    assert rec.scale == pytest.approx(4.0, rel=1e-6)


def test_rms_scale_for_sparse_skies():
    from radiorecon.normalisation import Normalisation

    skies = np.zeros((5, 16, 16))
    skies[:, 8, 8] = [1.0, 2.0, 4.0, 8.0, 16.0]  # rms: value / 16
    skies[0] = 0.0  # an empty sky has no scale and is left out
    assert Normalisation.fit(list(skies), "rms") == Normalisation(np.median([2.0, 4.0, 8.0, 16.0]) / 16, "rms")
    with pytest.raises(ValueError, match=r"Unknown input_scale 'max': use one of \['noise', 'peak', 'rms'\]"):
        Normalisation.fit(list(skies), "max")


def test_malformed_beam_cards_warn_instead_of_failing(tmp_path):
    header = celestial_header(16, 16)
    header["BMAJ"] = "abc"
    path = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.ones((16, 16), np.float32), header).writeto(path)
    with pytest.warns(RadioreconWarning, match="Ignoring the input's beam"):
        result = Reconstructor("test-smooth").predict(path, progress=False)
    assert "RRBMAJ" not in result.meta


def test_a_slice_of_the_result_can_be_written(cube_file, tmp_path):
    from radiorecon.io import write_result

    sky = Reconstructor("test-smooth").predict(cube_file, progress=False)
    part = sky[10:20, 5:30]
    write_result(part, tmp_path / "part.fits")
    back = CCDData.read(tmp_path / "part.fits")
    assert back.shape == (10, 25)
    assert back.wcs.pixel_to_world(0, 0).separation(sky.wcs.pixel_to_world(5, 10)).arcsec < 1e-6
