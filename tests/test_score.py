"""The score backend: EDM maths and samplers against exact Gaussian denoisers, training, files, sampling."""

import math

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.nddata import NDData
from astropy.stats import mad_std
from astropy.table import QTable

from radiorecon import Reconstructor, registry
from radiorecon.backends.score import ScoreBackend, SkyImages
from radiorecon.exceptions import InputError, RadioreconWarning
from radiorecon.score_sampling import (
    edm_loss_weight,
    edm_preconditioning,
    edm_sigmas,
    gaussian_posterior_mean,
    sample_edm,
    sample_posterior,
    transfer_function,
)
from radiorecon.simulate import SimulatedPairs, observe

MEAN, STD = 0.3, 0.5
TINY = {"base_channels": 8, "channel_mult": [1, 2], "steps": 4, "posterior_steps": 4}


def exact_denoiser(mean, std):
    """``E[x0 | x0 + sigma eps]`` for data ~ N(mean, std**2) per pixel."""

    def denoise(x, sigma):
        return (std**2 * x + sigma**2 * mean) / (std**2 + sigma**2)

    return denoise


def ode_draws(steps, heun, n=20000, **kwargs):
    sigmas = edm_sigmas(steps)
    z = torch.randn(n, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    return sample_edm(exact_denoiser(MEAN, STD), float(sigmas[0]) * z, sigmas, heun=heun,
                      noise=lambda: torch.randn(n, generator=g), **kwargs)


def test_edm_schedule():
    s = edm_sigmas(25)
    assert len(s) == 26 and s[-1] == 0
    assert float(s[0]) == pytest.approx(80) and float(s[-2]) == pytest.approx(0.002)
    assert torch.all(s[1:] < s[:-1])
    # rho = 7: the levels crowd towards sigma_min (half of them below 1.6).
    assert float(s[12]) == pytest.approx((80 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)
    assert edm_sigmas(1).tolist() == [80.0, 0.0]
    with pytest.raises(ValueError, match="steps must be an integer of at least 1"):
        edm_sigmas(0)


def test_edm_preconditioning_and_weight():
    c_skip, c_out, c_in, c_noise = edm_preconditioning(torch.tensor([0.5, 2.0]), 0.5)
    assert c_skip.tolist() == pytest.approx([0.5, 0.25 / 4.25])
    assert c_out.tolist() == pytest.approx([0.25 / math.sqrt(0.5), 1.0 / math.sqrt(4.25)])
    assert c_in.tolist() == pytest.approx([1 / math.sqrt(0.5), 1 / math.sqrt(4.25)])
    assert c_noise.tolist() == pytest.approx([math.log(0.5) / 4, math.log(2.0) / 4])
    w = edm_loss_weight(torch.tensor([0.5, 2.0]), 0.5)
    assert (w * c_out**2).tolist() == pytest.approx([1.0, 1.0])  # every level weighs alike


@pytest.mark.parametrize("steps", [18, 50])
def test_ode_samplers_match_gaussian_data(steps):
    heun, euler = ode_draws(steps, True), ode_draws(steps, False)
    for x in (heun, euler):
        assert float(x.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(heun.std()) == pytest.approx(STD, rel=0.07 if steps == 18 else 0.02)
    # Heun's second order beats Euler at equal steps.
    assert abs(float(heun.std()) - STD) < 0.5 * abs(float(euler.std()) - STD)
    assert abs(float(ode_draws(200, True).std()) - STD) < 0.01


def test_stochastic_churn_matches_gaussian_data():
    x = ode_draws(50, True, s_churn=40, s_tmin=0.05, s_tmax=50)
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(x.std()) == pytest.approx(STD, rel=0.05)
    # The churn draws noise: the result differs from the deterministic ODE's.
    assert not torch.allclose(x, ode_draws(50, True))


def sampled_psf(n=8):
    """A dirty beam of a few sampled uv cells: real, sidelobes, non-negative transfer function."""
    weights = np.zeros((n, n))
    for u, v in [(0, 0), (1, 0), (0, 2), (1, 1), (3, 1)]:
        weights[u, v] = weights[-u, -v] = 1.0
    psf = np.fft.fftshift(np.fft.ifft2(weights).real)
    return psf / psf.max()


def test_transfer_function_of_a_sampled_psf():
    psf = torch.from_numpy(sampled_psf())
    t = transfer_function(psf, (8, 8))
    assert float(t.min()) >= 0 and int((t > 1e-9).sum()) == 9  # the cells sampled, each once
    with pytest.raises(ValueError, match="the PSF is"):
        transfer_function(psf, (8, 10))


def test_posterior_sampler_on_a_gaussian_prior():
    """Gaussian prior and dirty-image likelihood: the posterior mean and covariance are closed-form."""
    n, noise_std, k = 8, 0.3, 4000
    psf = sampled_psf(n)
    # The PSF as a matrix: circular convolution about its centre.
    a = np.array([np.roll(np.roll(psf, i - n // 2, 0), j - n // 2, 1).ravel() for i in range(n) for j in range(n)])
    rng = np.random.default_rng(0)
    sky = MEAN + STD * rng.standard_normal(n * n)
    noise = noise_std * np.real(np.linalg.cholesky(a + 1e-9 * np.eye(n * n)) @ rng.standard_normal(n * n))
    dirty = a @ sky + noise
    # Precision of the prior plus A^T C^-1 A, with C = noise_std^2 A.
    cov = np.linalg.inv(np.eye(n * n) / STD**2 + a / noise_std**2)
    mean = cov @ (MEAN / STD**2 + dirty / noise_std**2)

    g = torch.Generator().manual_seed(0)
    draws = sample_posterior(
        exact_denoiser(MEAN, STD),
        torch.from_numpy(dirty.reshape(1, n, n)).float().expand(k, n, n),
        torch.from_numpy(psf).float().expand(k, n, n),
        torch.full((k,), noise_std),
        edm_sigmas(40),
        noise=lambda: torch.randn(k, n, n, generator=g),
    ).reshape(k, -1).double().numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.abs(draws.mean(0) - mean).max() < 4 * sd.max() / np.sqrt(k)
    assert np.allclose(draws.std(0), sd, rtol=0.06)
    # The data are used: sampled modes are pulled from the prior towards the sky.
    assert sd.max() < STD and np.mean((draws.mean(0) - sky) ** 2) < 0.9 * np.mean((MEAN - sky) ** 2)
    assert np.abs(np.cov(draws.T) - cov).max() < 0.1 * STD**2


def test_gaussian_posterior_mean_keeps_unsampled_modes_at_the_prior():
    prior = torch.full((1, 8, 8), 2.0)
    zero_psf_transfer = torch.zeros(1, 8, 8)
    out = gaussian_posterior_mean(prior, 0.1, torch.randn(1, 8, 8), zero_psf_transfer, torch.ones(1, 1, 1))
    assert torch.allclose(out, prior)


@pytest.fixture(scope="module")
def skies():
    return SkyImages(SimulatedPairs(16, preset="lotss", crop=16, seed=0))


@pytest.fixture(scope="module")
def fitted(skies):
    return Reconstructor(ScoreBackend(**TINY)).fit(skies, epochs=2, batch_size=8, seed=0, progress=False)


def test_sky_images_view(skies):
    assert len(skies) == 16 and skies[0].shape == (16, 16) and skies.units["target"] == "Jy / pix"
    assert skies[3].min() >= 0 and skies[3].max() > 0  # noise-free skies, not dirty images
    # A prior over skies holds for any array, at the skies' resolution.
    assert skies.domain == {"preset": "lotss", "beam_major_arcsec": None, "beam_minor_arcsec": None,
                            "pixel_scale_arcsec": 1.5, "noise_jy_beam": None}


def test_a_prior_warns_of_dirty_images_with_other_pixels_not_another_beam(fitted):
    assert fitted.domain["pixel_scale_arcsec"] == 1.5
    # filterwarnings = error: a warning here fails the test (a beam 5x the preset's does not matter).
    lotss = observe(preset="lotss", seed=0, npix=32, restoring_beam=30 * u.arcsec)
    fitted.predict(lotss.dirty, psf=lotss.psf, progress=False)
    alma = observe(seed=0, npix=32)
    with pytest.warns(RadioreconWarning, match='pixels 0.1".*against unknown beam, pixels 1.5" \\(preset lotss\\)'):
        fitted.predict(alma.dirty, psf=alma.psf, progress=False)


def test_training_lowers_the_loss_and_is_seeded(skies):
    backend = ScoreBackend(**TINY, learning_rate=3e-3)
    rec = Reconstructor(backend).fit(skies, epochs=8, batch_size=16, seed=1, progress=False)
    losses = [h["loss"] for h in rec.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # The same seed draws the same noise levels and noise: a shorter run retraces the start.
    again = Reconstructor(ScoreBackend(**TINY, learning_rate=3e-3)).fit(skies, epochs=2, batch_size=16, seed=1,
                                                                         progress=False)
    assert [h["loss"] for h in again.history] == losses[:2]
    # The EMA is not the trained network itself.
    assert not all(torch.equal(p, q) for p, q in zip(backend.ema.parameters(), backend.net.parameters()))


def test_flux_conditioned_prior_draws_skies_of_the_given_flux(fitted):
    import astropy.units as u

    # Centred Gaussian sources whose total flux spans 0.5-20 Jy.
    y, x = np.mgrid[:16, :16] - 7.5
    blob = np.exp(-(x**2 + y**2) / 8.0)
    amps = np.exp(np.random.default_rng(0).uniform(np.log(0.5), np.log(20), 256))
    skies = (amps[:, None, None] * blob / blob.sum()).astype(np.float32) * u.Jy / u.pix
    backend = ScoreBackend(**{**TINY, "steps": 8}, flux_condition=True, learning_rate=3e-3, ema_decay=0.9)
    rec = Reconstructor(backend).fit(skies, epochs=12, batch_size=32, seed=0, progress=False)

    def median_flux(**kwargs):
        s = rec.sample(16, shape=(16, 16), seed=1, progress=False, device="cpu", **kwargs)
        return float(np.median(s.data.sum(axis=(1, 2))))

    faint, bright = median_flux(flux=1 * u.Jy), median_flux(flux=10000 * u.mJy)
    assert bright > 2.5 * faint  # an ignored condition would give the same skies
    assert faint < median_flux() < bright  # without flux=: the unconditional prior, between them
    for bad, match in ((1.0, "must be a Quantity"), (1 * u.s, "cannot be a total"),
                       ([1, 2, 3] * u.Jy, "one value or 16"), (-1 * u.Jy, "finite and non-negative, got -1.0 Jy")):
        with pytest.raises(InputError, match=match):
            rec.sample(16, shape=(16, 16), flux=bad, progress=False)
    with pytest.raises(InputError, match="not conditioned on flux"):
        fitted.sample(2, shape=(16, 16), flux=1 * u.Jy, progress=False)
    with pytest.raises(ValueError, match="condition_dropout"):
        ScoreBackend(**TINY, flux_condition=True, condition_dropout=1.0)


@pytest.fixture
def score_name():
    """The name ``score``, registered for this test if the installed metadata lacks its entry point."""
    if "score" in registry.available_backends():
        yield "score"
        return
    registry.register_backend("score", ScoreBackend)
    yield "score"
    registry.unregister_backend("score")


def test_model_file_round_trip(fitted, tmp_path, score_name):
    path = tmp_path / "score.rrm"
    fitted.backend_name = score_name  # as Reconstructor("score") names it
    fitted.save(path)
    back = Reconstructor.load(path, device="cpu")
    assert back.backend_name == fitted.backend_name and back.config == fitted.config
    for p, q in zip(fitted.backend.ema.parameters(), back.backend.ema.parameters()):
        assert torch.equal(p, q)
    a = fitted.sample(2, shape=(16, 16), seed=4, progress=False, device="cpu")
    b = back.sample(2, shape=(16, 16), seed=4, progress=False, device="cpu")
    np.testing.assert_array_equal(a.data, b.data)


def test_sample_is_nddata_with_unit_and_reproducible(fitted):
    a = fitted.sample(3, shape=(16, 24), seed=7, batch_size=2, progress=False, device="cpu")
    assert isinstance(a, NDData) and a.data.shape == (3, 16, 24) and str(a.unit) == "Jy / pix"
    assert np.isfinite(a.data).all()
    np.testing.assert_array_equal(a.data, fitted.sample(3, shape=(16, 24), seed=7, batch_size=2, progress=False,
                                                        device="cpu").data)
    # Each image has its own random stream: the batch changes only rounding.
    b = fitted.sample(3, shape=(16, 24), seed=7, batch_size=3, progress=False, device="cpu")
    np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-6)
    c = fitted.sample(3, shape=(16, 24), seed=8, progress=False, device="cpu")
    assert not np.array_equal(a.data, c.data)


@pytest.mark.parametrize("sampler", ["euler", "stochastic"])
def test_other_samplers(fitted, sampler):
    backend = fitted.backend
    out = backend.sample(2, shape=(8, 8), sampler=sampler, steps=3)
    assert out.shape == (2, 8, 8) and torch.isfinite(out).all()
    calls = []
    real = backend.denoise
    backend.denoise = lambda x, s, **kw: calls.append(s) or real(x, s, **kw)
    try:
        backend.sample(1, shape=(8, 8), sampler=sampler, steps=3)
    finally:
        del backend.denoise
    assert len(calls) == {"euler": 3, "stochastic": 5}[sampler]


def test_predict_posterior_draws(fitted):
    rng = np.random.default_rng(0)
    psf = np.fft.fftshift(np.fft.ifft2(np.pad(np.ones((5, 5)), ((0, 15), (0, 15)))).real)
    psf = np.roll(psf, (2, 2), (0, 1)) / psf.max()
    dirty = (np.roll(psf, (3, -2), (0, 1)) * 5e-3 + 1e-4 * rng.standard_normal((20, 20))).astype(np.float32)
    out = fitted.predict(dirty, psf=psf, n_samples=3, seed=2, progress=False, device="cpu", return_samples=True)
    assert out.data.shape == (20, 20) and out.uncertainty is not None and np.isfinite(out.data).all()
    again = fitted.predict(dirty, psf=psf, n_samples=3, seed=2, progress=False, device="cpu")
    np.testing.assert_array_equal(out.data, again.data)
    assert fitted.backend.network_evaluations(3) == 3 * (2 * TINY["posterior_steps"] - 1)
    # The posterior ODE may start below sigma_max; at sigma_max it is the default schedule.
    try:
        fitted.set_params(posterior_sigma_max=fitted.config["sigma_max"])
        same = fitted.predict(dirty, psf=psf, n_samples=3, seed=2, progress=False, device="cpu")
        fitted.set_params(posterior_sigma_max=5.0)
        lower = fitted.predict(dirty, psf=psf, n_samples=3, seed=2, progress=False, device="cpu")
    finally:
        fitted.set_params(posterior_sigma_max=None)
    np.testing.assert_array_equal(same.data, out.data)
    assert not np.allclose(lower.data, out.data)


def test_bad_inputs(fitted):
    with pytest.raises(InputError, match=r"shape \(16, 17\) must be divisible by 2"):
        fitted.sample(1, shape=(16, 17), progress=False, device="cpu")
    with pytest.raises(ValueError, match="Unknown sampler 'dpm'; choose among"):
        fitted.set_params(sampler="dpm")
    with pytest.raises(ValueError, match="Unknown sampler 'dpm'"):
        fitted.backend.sample(1, shape=(8, 8), sampler="dpm")
    with pytest.raises(ValueError, match="steps must be an integer of at least 1, not 0"):
        fitted.set_params(steps=0)
    with pytest.raises(ValueError, match="posterior_steps must be an integer"):
        ScoreBackend(posterior_steps=1.5)
    with pytest.raises(ValueError, match=r"posterior_sigma_max \(0.001\) must be above sigma_min"):
        ScoreBackend(posterior_sigma_max=0.001)
    with pytest.raises(ValueError, match="posterior_sigma_max must be null or a positive number, not True"):
        ScoreBackend(posterior_sigma_max=True)
    with pytest.raises(ValueError, match="sigma_min .* must be below sigma_max"):
        ScoreBackend(sigma_min=600.0)
    with pytest.raises(InputError, match="Cannot measure the noise"):
        fitted.predict(np.zeros((16, 16), np.float32) + 1e-3 * np.eye(16, dtype=np.float32),
                       psf=np.ones((16, 16)), progress=False, device="cpu")
    assert fitted.config["sampler"] == "heun" and fitted.config["steps"] == TINY["steps"]


def test_registered_as_score():
    assert registry.backend_info("score")["origin"].startswith("distribution radiorecon")
    rec = Reconstructor("score", **TINY)
    assert isinstance(rec.backend, ScoreBackend) and rec.backend_name == "score"
    assert {"sample", "reconstruct", "draws", "needs_psf"} <= rec.capabilities and "paired" not in rec.capabilities


def test_sample_takes_settings_for_the_call_and_has_a_wcs(fitted):
    steps, sampler = fitted.config["steps"], fitted.config["sampler"]
    a = fitted.sample(2, shape=(16, 16), seed=4, progress=False, device="cpu", steps=3, sampler="euler")
    assert fitted.config["steps"] == steps and fitted.config["sampler"] != "euler"  # for this call only
    b = fitted.sample(2, shape=(16, 16), seed=4, progress=False, device="cpu")
    assert not np.array_equal(a.data, b.data)
    fitted.set_params(steps=3, sampler="euler")
    try:
        np.testing.assert_array_equal(fitted.sample(2, shape=(16, 16), seed=4, progress=False, device="cpu").data,
                                      a.data)
    finally:
        fitted.set_params(steps=steps, sampler=sampler)
    with pytest.raises(ValueError, match="cannot change"):
        fitted.sample(1, shape=(16, 16), progress=False, base_channels=4)
    # Pixels of the training domain's size, at RA 0, Dec 0.
    domain = fitted.domain
    fitted.domain = {"pixel_scale_arcsec": 1.5}
    try:
        w = fitted.sample(1, shape=(16, 24), seed=1, progress=False, device="cpu").wcs
    finally:
        fitted.domain = domain
    assert w.naxis == 3 and w.wcs.ctype[2] == "SAMPLE"
    assert np.allclose(np.abs(w.celestial.wcs.cdelt) * 3600, 1.5) and np.allclose(w.celestial.wcs.crpix, [13, 9])
    with pytest.raises(InputError, match="celestial"):
        fitted.sample(1, shape=(16, 16), progress=False, wcs="nope")


def test_cli_sample_writes_a_cube(fitted, tmp_path, score_name, capsys, monkeypatch):
    from astropy.io import fits

    from radiorecon.cli import main

    monkeypatch.setattr(fitted, "backend_name", score_name)
    monkeypatch.setattr(fitted, "domain", {"preset": "lotss", "beam_major_arcsec": 6.0, "beam_minor_arcsec": 6.0,
                                           "pixel_scale_arcsec": 1.5, "noise_jy_beam": 8.3e-5})
    model = tmp_path / "prior.rrm"
    fitted.save(model)
    out = tmp_path / "skies.fits"
    args = ["sample", str(model), "3", "-o", str(out), "--shape", "16", "16", "--steps", "2", "--sampler", "euler",
            "--seed", "5", "--no-progress", "--device", "cpu"]
    assert main(args) == 0 and "3 images of 16x16" in capsys.readouterr().out
    with fits.open(out) as hdul:
        cube, header = hdul[0].data, hdul[0].header
    assert cube.shape == (3, 16, 16) and header["CTYPE3"] == "SAMPLE" and header["CTYPE1"] == "RA---SIN"
    expected = fitted.sample(3, shape=(16, 16), steps=2, sampler="euler", seed=5, progress=False, device="cpu")
    np.testing.assert_allclose(cube, expected.data, rtol=1e-6)
    assert main(args) == 1 and "exists" in capsys.readouterr().err


def test_prior_trained_on_jy_per_pixel_skies_takes_jy_per_beam_dirty_images(skies):
    import astropy.units as u

    # Sky images as a user has them: NDData in Jy/pixel, not a data set that declares its units.
    images = [NDData(skies[i], unit="Jy/pixel") for i in range(8)]
    rec = Reconstructor(ScoreBackend(**TINY)).fit(images, epochs=1, batch_size=8, seed=0, progress=False)
    assert rec.units == {"input": None, "target": "Jy / pix"}  # skies are targets: no dirty images were seen
    rng = np.random.default_rng(1)
    psf = np.zeros((16, 16))
    psf[8, 8] = 1.0
    dirty = skies[9] + 1e-4 * rng.standard_normal((16, 16)).astype(np.float32)
    out = rec.predict(dirty * u.Jy / u.beam, psf=psf, n_samples=2, seed=3, progress=False, device="cpu")
    assert out.unit == u.Jy / u.pix and np.isfinite(out.data).all()
    # mJy/beam is converted to the Jy/beam of the skies' scale, not taken as it is.
    milli = rec.predict(dirty * 1e3 * u.mJy / u.beam, psf=psf, n_samples=2, seed=3, progress=False, device="cpu")
    assert milli.unit == u.Jy / u.pix
    np.testing.assert_allclose(milli.data, out.data, rtol=1e-4, atol=1e-6 * np.abs(out.data).max())
    with pytest.raises(u.UnitConversionError, match="cannot be converted to Jy / beam or Jy / pix"):
        rec.predict(dirty * u.K, psf=psf, progress=False, device="cpu")


def test_shipped_generator_draws_radio_sources_like_its_training_cut_outs():
    rec = Reconstructor.pretrained("score-lotss")
    assert rec.origin == "pretrained:score-lotss"
    skies = rec.sample(8, shape=(80, 80), steps=10, seed=0, progress=False)
    assert skies.unit == u.Jy / u.pix
    assert skies.wcs.celestial.proj_plane_pixel_scales()[0].to_value(u.arcsec) == pytest.approx(1.5)
    data = np.asarray(skies.data)
    # Each lotss cut-out holds one source of 5-100 mJy within 6" (4 pixels) of the centre. The
    # 12-epoch generator draws such a source most of the time, and sometimes a faint field.
    assert 3e-3 < np.median(data.sum(axis=(1, 2))) < 0.1
    peaks = [np.unravel_index(np.argmax(image), image.shape) for image in data]
    central = [max(abs(y - 40), abs(x - 40)) < 16 and image.max() > 1000 * mad_std(image)
               for image, (y, x) in zip(data, peaks)]
    assert sum(central) >= 4


@pytest.mark.parametrize("array", ["C43-1", "C43-5"])
def test_shipped_prior_reconstructs_a_source_seen_by_two_arrays(array):
    # One prior, no retraining, for two arrays with beams several times apart. The source's peak
    # is 36 (C43-1) and 10 (C43-5) times the noise.
    rec = Reconstructor.pretrained("score")
    source = QTable({"x": [35.0], "y": [30.0], "flux": [2.0e-3], "fwhm_major": [0.6], "fwhm_minor": [0.5],
                     "pa": [0.0]})
    obs = observe(source, seed=3, array=array, npix=64)
    out = rec.predict(obs.dirty, psf=obs.psf, n_samples=2, seed=0, progress=False)
    model, sky = np.asarray(out.data), np.asarray(obs.sky.data)
    y, x = np.unravel_index(np.argmax(model), model.shape)
    assert max(abs(y - 30), abs(x - 35)) <= 2
    assert np.corrcoef(model.ravel(), sky.ravel())[0, 1] > 0.6
    assert np.all(np.asarray(out.uncertainty.array) >= 0)
