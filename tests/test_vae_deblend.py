import math

import astropy.units as u
import numpy as np
import pytest
import torch

from radiorecon import Reconstructor, registry
from radiorecon.catalog import deblended_catalog
from radiorecon.backends.vae_deblend import (
    VaeDeblendBackend, calibrate_flux_errors, laplace_errors, map_deblend, place, source_moments,
)
from radiorecon.exceptions import CapabilityError, InputError
from radiorecon.instrument import Instrument
from radiorecon.simulate.blends import blended_scenes, blendedness, isolated_stamps

from conftest import gaussian_psf

TINY = dict(stamp_size=16, latent_dim=4, base_channels=4, channel_mult=[1, 2], flow_transforms=2,
            flow_hidden=[16], vae_steps=12, learning_rate=3e-3, flow_learning_rate=3e-3, max_iterations=30)


@pytest.fixture(scope="module", autouse=True)
def registered():
    registry.register_backend("vae-deblend", VaeDeblendBackend, force=True)
    yield
    registry.unregister_backend("vae-deblend")


@pytest.fixture(scope="module")
def stamps():
    return isolated_stamps(32, preset="extended", stamp_size=16, seed=3, pixel_scale=0.3 * u.arcsec)


@pytest.fixture(scope="module")
def trained(stamps):
    return Reconstructor(VaeDeblendBackend(**TINY)).fit(stamps, epochs=6, batch_size=8, seed=1, progress=False)


# -- the instrument ---------------------------------------------------------


def test_instrument_adjoint():
    gen = torch.Generator().manual_seed(0)
    psf = torch.rand(2, 24, 20, generator=gen, dtype=torch.float64)  # not symmetric: a real test of the flip
    pb = torch.rand(12, 10, generator=gen, dtype=torch.float64)
    op = Instrument(psf, (12, 10), primary_beam=pb)
    x, y = (torch.randn(2, 12, 10, generator=gen, dtype=torch.float64) for _ in range(2))
    lhs = (op.forward(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_instrument_convolves_without_wrapping():
    psf = torch.arange(1.0, 1 + 16 * 16, dtype=torch.float64).reshape(16, 16)
    op = Instrument(psf, (8, 8))
    x = torch.zeros(8, 8, dtype=torch.float64)
    x[0, 7] = 1.0  # a corner: any wrap-around would show on the opposite side
    # The PSF's peak pixel (8, 8) lands on the source, the rest around it, cut at the edges.
    assert torch.allclose(op.forward(x), psf[8:16, 1:9])


def test_whitening_gives_unit_white_noise():
    psf = torch.from_numpy(gaussian_psf((128, 128), sigma=2.0))
    op = Instrument(psf, (64, 64), noise="restored")
    white = torch.randn(20, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = 3.0 * torch.fft.irfft2(torch.fft.rfft2(white) * op.noise_power.sqrt(), s=(64, 64))
    assert abs(noise.std().item() / 3.0 - 1.0) < 0.05  # noise_power is normalised to the pixel variance
    assert (noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.var() > 0.8  # beam-correlated
    # Whitened: the same power at every frequency the likelihood keeps, about 1 on average.
    power = torch.fft.rfft2(op.whiten(noise, 3.0)).abs().pow(2).mean(0) / 64**2
    kept = op.inverse_amplitude > 0
    low, high = power[:4, :4], power[kept & (op.noise_power < 0.05 * op.noise_power.max())]
    assert abs(power[kept].mean().item() - 1.0) < 0.1
    assert abs(low.mean().item() - 1.0) < 0.3 and abs(high.mean().item() - 1.0) < 0.1
    assert torch.all(power[~kept] < 1e-20)


# -- the flow ---------------------------------------------------------------


def test_flow_density_is_the_change_of_variables():
    backend = VaeDeblendBackend(**TINY)
    torch.manual_seed(0)
    backend.reset_parameters()
    z = torch.randn(3, 4, dtype=torch.float64)
    backend.flow.double()
    normal = torch.distributions.Normal(0.0, 1.0)
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda v: backend.flow.transform(v), zi)
        expected = normal.log_prob(backend.flow.transform(zi)).sum() + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(backend.log_prior(zi[None])[0], expected, atol=1e-10)


def test_flow_learns_a_known_gaussian():
    torch.manual_seed(0)
    backend = VaeDeblendBackend(**{**TINY, "latent_dim": 2})
    mean, cov = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    target = torch.distributions.MultivariateNormal(mean, cov)
    opt = torch.optim.Adam(backend.flow.parameters(), lr=2e-2)
    for _ in range(80):
        z = target.sample((128,))
        loss = -backend.log_prior(z).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = target.sample((1000,))
    with torch.no_grad():
        gap = (target.log_prob(z) - backend.log_prior(z)).mean().item()  # KL(target || flow) >= 0
    assert 0 <= gap < 0.05


# -- the MAP and its errors, with an analytic source model -------------------


def _gaussian_decoder(size=15):
    """Latents (log flux, dx, dy, log width) to Gaussian stamps: a known source model."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64) - size // 2,
                            torch.arange(size, dtype=torch.float64) - size // 2, indexing="ij")

    def decode(z):
        f, dx, dy, s = (z[:, i, None, None] for i in range(4))
        g = torch.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * torch.exp(2 * s)))
        return torch.exp(f) * g / g.sum(dim=(-2, -1), keepdim=True)

    return decode


def _wide_prior(z):
    return -0.5 * (z / 10.0).pow(2).sum(1)


def test_map_recovers_two_overlapping_sources_within_their_errors():
    decode = _gaussian_decoder()
    truth = torch.tensor([[math.log(6.0), 0.3, -0.2, math.log(1.5)], [math.log(3.0), -0.4, 0.1, math.log(2.0)]],
                         dtype=torch.float64)
    xy = [(13, 16), (18, 15)]  # 5 pixels apart: their light overlaps
    shape, n, sigma = (32, 32), 12, 0.02
    psf = torch.from_numpy(gaussian_psf((64, 64), sigma=1.2))
    op = Instrument(psf, shape, noise="restored")
    clean = op.forward(place(decode(truth), xy, shape).sum(0))
    gen = torch.Generator().manual_seed(2)
    white = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    noise = op.forward(white)  # beam-convolved noise ...
    noise = sigma * noise / noise.std()  # ... of pixel rms sigma
    images = clean + noise
    z0 = truth.repeat(n, 1) + 0.3 * torch.randn(2 * n, 4, generator=gen, dtype=torch.float64)
    ops = [op] * n
    result = map_deblend(images, [xy] * n, decode, _wide_prior, z0, ops, torch.full((n,), sigma, dtype=torch.float64),
                         max_iterations=100, tolerance=1e-9)
    assert result.converged
    flux = torch.stack([c.sum(dim=(-2, -1)) for c in result.components])  # (n, 2)
    all_errors = torch.stack([
        laplace_errors(result.latents[2 * i : 2 * i + 2], decode, _wide_prior, images[i], op, sigma, xy,
                       pixel_std=False)[0] for i in range(n)
    ])  # (n, 2, 6)
    errors = all_errors[..., 0]
    true_flux = torch.tensor([6.0, 3.0], dtype=torch.float64)
    pulls = (flux - true_flux) / errors
    assert (pulls.abs() < 3.5).all()
    # The Laplace errors describe the scatter of the estimates over noise realisations.
    assert 0.7 < pulls.std().item() < 1.3
    assert (errors.std(0) / errors.mean(0) < 0.1).all()  # about the same error for every realisation
    assert (flux.mean(0) - true_flux).abs().max() < 3 * errors.mean(0).max() / math.sqrt(n) + 1e-3
    # The shape errors too: the semi-major axis (the analytic sources are round).
    inside = torch.ones(2, *shape, dtype=torch.float64)
    grid = torch.arange(32.0, dtype=torch.float64)[None].repeat(2, 1)
    a = torch.stack([source_moments(c, grid, grid, inside)[:, 3] for c in result.components])
    a_pulls = (a - torch.tensor([1.5, 2.0], dtype=torch.float64)) / all_errors[..., 3]
    assert (a_pulls.abs() < 3.5).all() and 0.6 < a_pulls.std().item() < 1.5


def test_map_keeps_the_best_latents_when_a_step_overflows():
    decode = _gaussian_decoder()
    xy = [(16, 16)]
    op = Instrument(None, (32, 32), noise="white")
    image = place(decode(torch.tensor([[math.log(5.0), 0.0, 0.0, 0.5]], dtype=torch.float64)), xy, (32, 32)).sum(0)
    z0 = torch.tensor([[math.log(4.0), 0.0, 0.0, 0.5]], dtype=torch.float64)
    sigma = torch.tensor([0.01], dtype=torch.float64)
    # A step of 1000 in log-flux overflows exp(): the loss becomes inf, then NaN.
    result = map_deblend(image[None], [xy], decode, _wide_prior, z0, [op], sigma, optimizer="adam",
                         learning_rate=1000.0, max_iterations=3)
    assert torch.isfinite(result.latents).all() and torch.isfinite(result.loss).all()
    assert not result.converged
    # The first step already overflowed: the best point seen is the start.
    assert torch.equal(result.latents, z0)


# -- data -------------------------------------------------------------------


def test_blendedness_of_known_configurations():
    g = gaussian_psf((16, 16), sigma=1.0)
    apart = np.zeros((2, 16, 40))
    apart[0, :, :16], apart[1, :, 24:] = g, g
    assert np.allclose(blendedness(apart), 0.0, atol=1e-12)
    # A source and a copy at half its brightness on top of it: the copy owns a third of the light.
    assert np.allclose(blendedness(np.stack([g, 0.5 * g])), [1 / 3, 2 / 3])
    with pytest.raises(ValueError, match=r"\(n_sources, ny, nx\)"):
        blendedness(g)


def test_stamps_and_scenes():
    stamps = isolated_stamps(3, preset="extended", stamp_size=16, seed=3, pixel_scale=0.3 * u.arcsec)
    assert stamps.shape == (3, 16, 16) and (stamps >= 0).all() and (stamps.sum(axis=(1, 2)) > 0).all()
    assert np.array_equal(stamps, isolated_stamps(3, preset="extended", stamp_size=16, seed=3,
                                                  pixel_scale=0.3 * u.arcsec))
    scenes = blended_scenes(2, preset="lotss", npix=32, n_sources=(2, 2), separation=(3, 5), seed=0)
    assert scenes.images.shape == (2, 32, 32) and scenes.psf.shape == (2, 64, 64)
    for sources, xy, b in zip(scenes.sources, scenes.positions, scenes.blendedness):
        assert sources.shape == (2, 32, 32) and xy.shape == (2, 2)
        assert 3 <= np.hypot(*(xy[0] - xy[1])) <= 5 + 1  # rounded to pixel centres
        assert ((b > 0) & (b < 1)).all()
    with pytest.raises(ValueError, match="do not fit stamps"):
        isolated_stamps(1, preset="extended", stamp_size=16)  # 0.1" pixels: 1.5" sources fill 15 of them


# -- training, model files and the front door --------------------------------


def test_two_stage_fit_lowers_both_losses(trained):
    history = trained.history
    vae, flow = history[:3], history[3:]  # 4 steps per epoch, 12 VAE steps
    assert all("reconstruction" in h and "flow_nll" not in h for h in vae)
    assert all("flow_nll" in h and "reconstruction" not in h for h in flow)
    assert vae[-1]["reconstruction"] < vae[0]["reconstruction"]
    assert flow[-1]["flow_nll"] < flow[0]["flow_nll"]


def test_two_stage_fit_resumes_exactly(stamps, trained, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    first = Reconstructor(VaeDeblendBackend(**TINY))
    original = VaeDeblendBackend.train_step

    def train_step(self, inputs, targets):
        if len(first.history) == 4:  # interrupted in the flow stage
            raise KeyboardInterrupt
        return original(self, inputs, targets)

    monkeypatch.setattr(VaeDeblendBackend, "train_step", train_step)
    with pytest.raises(KeyboardInterrupt):
        first.fit(stamps, epochs=6, batch_size=8, seed=1, progress=False, checkpoint=ckpt)
    monkeypatch.undo()
    resumed = Reconstructor(VaeDeblendBackend(**TINY)).fit(stamps, epochs=6, batch_size=8, seed=1, progress=False,
                                                          checkpoint=ckpt)
    assert resumed.history == trained.history
    for name, value in trained.backend.state_dict().items():
        assert torch.equal(value, resumed.backend.state_dict()[name]), name


def test_flow_fits_draws_of_the_posterior_or_its_means(stamps):
    x = torch.from_numpy(np.asarray(stamps[:8], np.float32) / float(np.max(stamps)))
    means = VaeDeblendBackend(**TINY, flow_latents="mean")
    assert means._flow_loss(x).item() == means._flow_loss(x).item()
    draws = VaeDeblendBackend(**TINY)  # the default: draws of q(z|x), seeded by torch's generator
    draws.load_state_dict(means.state_dict())
    torch.manual_seed(3)
    first = draws._flow_loss(x).item()
    assert first != draws._flow_loss(x).item()
    torch.manual_seed(3)
    assert draws._flow_loss(x).item() == first
    with pytest.raises(ValueError, match="flow_latents must be 'sample' or 'mean'"):
        VaeDeblendBackend(**TINY, flow_latents="median")


def test_a_new_prior_trains_the_flow_alone(stamps, trained):
    torch.manual_seed(0)
    backend = trained.backend.with_new_prior(flow_latents="mean")
    assert backend.config["vae_steps"] == 0 and backend.config["flow_latents"] == "mean"
    vae = {k: v.clone() for k, v in trained.backend.state_dict().items() if not k.startswith("flow.")}
    z = torch.randn(5, 4)
    with torch.no_grad():
        untrained = backend.log_prior(z)
    backend.set_config(flow_learning_rate=2e-3)  # a training rate may change on trained networks
    refit = Reconstructor(backend).fit(stamps, epochs=2, batch_size=8, seed=1, progress=False, warm_start=True)
    assert all("flow_nll" in h and "reconstruction" not in h for h in refit.history)
    assert refit.backend.optimizers["flow"].param_groups[0]["lr"] == 2e-3
    for name, value in vae.items():
        assert torch.equal(refit.backend.state_dict()[name], value), name
    with torch.no_grad():
        assert not torch.equal(refit.backend.log_prior(z), untrained)
    with pytest.raises(ValueError, match="latent_dim.*cannot change"):
        trained.backend.with_new_prior(latent_dim=8)


def test_model_file_round_trip_keeps_the_flow(trained, tmp_path):
    trained.save(tmp_path / "m.rrmodel")
    loaded = Reconstructor.load(tmp_path / "m.rrmodel", device="cpu")
    assert loaded.backend.config == trained.backend.config
    z = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(loaded.backend.log_prior(z), trained.backend.log_prior(z))
        assert torch.equal(loaded.backend.decode(z), trained.backend.decode(z))


@pytest.fixture(scope="module")
def scene():
    return blended_scenes(1, preset="extended", npix=32, n_sources=(2, 2), separation=(4, 6), seed=1,
                          pixel_scale=0.3 * u.arcsec, flux_range=(2, 5) * u.mJy)


def test_predict_deblends_through_the_front_door(trained, scene):
    xy = scene.positions[0].tolist()
    image = scene.images[0] * u.Jy / u.beam
    result = trained.predict(image, psf=scene.psf[0], positions=xy, progress=False, device="cpu")
    # The positions given reached the backend: they are the stamp centres it used.
    assert [(result.meta["DBX1"], result.meta["DBY1"]), (result.meta["DBX2"], result.meta["DBY2"])] == [
        tuple(int(round(v)) for v in p) for p in xy]
    assert result.unit == u.Jy / u.pix
    assert result.components.shape == (2, 32, 32) and result.components.unit == u.Jy / u.pix
    np.testing.assert_allclose(result.components.sum(0).value, result.data,
                               atol=1e-6 * np.abs(result.data).max())
    assert np.isfinite(result.uncertainty.array).all() and (result.uncertainty.array > 0).any()
    assert result.extras["residual"].unit == u.Jy / u.beam
    assert result.meta["DBNSRC"] == 2 and result.meta["DBNITER"] >= 1
    table = deblended_catalog(result)
    assert len(table) == 2 and table["flux"].unit == u.Jy
    assert np.all(table["flux_err"] > 0) and np.isfinite(table["blendedness"]).all()
    np.testing.assert_allclose(table["flux"].value, result.components.sum(axis=(1, 2)).value, rtol=1e-5)
    # One list per image for a list of images; the second image gets its own positions.
    # In one batch, each image is still deblended on its own: the same result as alone.
    both = trained.predict([image, image], psf=scene.psf[0], positions=[xy, xy[:1]], batch_size=2,
                           progress=False, device="cpu")
    assert [len(r.components) for r in both] == [2, 1]
    assert (both[1].meta["DBX1"], both[1].meta["DBY1"]) == (result.meta["DBX1"], result.meta["DBY1"])
    np.testing.assert_allclose(both[0].data, result.data, rtol=1e-4, atol=1e-6 * float(np.abs(result.data).max()))


def test_flux_model_error_widens_flux_errors_in_quadrature(trained, scene, tmp_path):
    xy = scene.positions[0].tolist()
    image = scene.images[0] * u.Jy / u.beam
    plain = deblended_catalog(trained.predict(image, psf=scene.psf[0], positions=xy, progress=False))
    path = tmp_path / "m.rrm"
    trained.save(path)
    widened = Reconstructor.load(path)
    widened.backend.set_config(flux_model_error=0.25)
    table = deblended_catalog(widened.predict(image, psf=scene.psf[0], positions=xy, progress=False))
    np.testing.assert_allclose(table["flux"].value, plain["flux"].value, rtol=1e-6)
    expected = np.hypot(plain["flux_err"].value, 0.25 * plain["flux"].value)
    np.testing.assert_allclose(table["flux_err"].value, expected, rtol=1e-5)
    np.testing.assert_array_equal(table["x_err"], plain["x_err"])  # the other errors are the Laplace ones
    with pytest.raises(ValueError, match="flux_model_error must be a non-negative number"):
        widened.backend.set_config(flux_model_error=-0.1)


def test_calibrate_flux_errors_recovers_an_injected_model_error():
    rng = np.random.default_rng(5)
    true = rng.uniform(5, 50, 4000)
    # Noise of 1 (what the Laplace errors say) and a 10 % error of the source model.
    flux = true * (1 + 0.1 * rng.standard_normal(4000)) + rng.standard_normal(4000)
    err = np.ones(4000)
    f = calibrate_flux_errors(flux, err, true)
    assert 0.08 < f < 0.12
    covered = np.abs(flux - true) < np.hypot(err, f * flux)
    assert covered.mean() == pytest.approx(0.6827, abs=0.01)
    # Errors that already cover need nothing added.
    assert calibrate_flux_errors(true + rng.standard_normal(4000), 2 * err, true) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        calibrate_flux_errors(flux, err[:3], true)


def test_front_door_names_bad_positions(trained, scene):
    image, psf = scene.images[0] * u.Jy / u.beam, scene.psf[0]

    def predict(data, positions):
        return trained.predict(data, psf=psf, positions=positions, progress=False, device="cpu")

    with pytest.raises(InputError, match=r"position \(40, 3\) lies outside the image's 32 x 32 pixels"):
        predict(image, [(10, 12), (40, 3)])
    with pytest.raises(InputError, match=r"position \(nan, 3.0\) is not finite"):
        predict(image, [(10, 12), (np.nan, 3)])
    with pytest.raises(InputError, match=r"position \(-1, 5\) of image 1 lies outside"):
        predict([image, image], [[(10, 12)], [(-1, 5)]])
    with pytest.raises(InputError, match=r"one such list per image \(2 here\)"):
        predict([image, image], [[(10, 12)]])
    with pytest.raises(InputError, match="positions must be a non-empty list of pixel"):
        predict(image, [])


def test_deblended_catalog_measures_known_components():
    from astropy.wcs import WCS

    from radiorecon import Reconstruction

    yy, xx = np.mgrid[:40, :50]
    # An elongated source along +x (sigma 3 by 1.5 pixels) and a round one (sigma 2).
    one = 2.0 * np.exp(-((xx - 15) ** 2 / (2 * 3.0**2) + (yy - 20) ** 2 / (2 * 1.5**2)))
    two = 1.0 * np.exp(-((xx - 35) ** 2 + (yy - 22) ** 2) / (2 * 2.0**2))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.cdelt, wcs.wcs.crpix = ["RA---SIN", "DEC--SIN"], [-1e-4, 1e-4], [25, 20]
    meta = {"RRSCALE": 2.0, "DBFE1": 0.5, "DBFE2": 0.25, "DBXE1": 0.1, "DBXE2": 0.2, "DBYE1": 0.3, "DBYE2": 0.4,
            "DBAE1": 0.05, "DBAE2": 0.06, "DBBE1": 0.07, "DBBE2": 0.08, "DBTE1": 1.5, "DBTE2": 90.0}
    result = Reconstruction(one + two, unit=u.mJy / u.pix, wcs=wcs, meta=meta, components=np.stack([one, two]))
    table = deblended_catalog(result)
    assert table.colnames == ["id", "x", "y", "x_err", "y_err", "sky_centroid", "flux", "flux_err", "a", "b",
                              "a_err", "b_err", "theta", "theta_err", "blendedness"]
    assert table["id"].tolist() == [1, 2]
    np.testing.assert_allclose(table["x"], [15, 35], atol=1e-6)
    np.testing.assert_allclose(table["y"], [20, 22], atol=1e-6)
    np.testing.assert_allclose(table["flux"].to_value(u.mJy), [one.sum(), two.sum()])
    np.testing.assert_allclose(table["flux_err"].to_value(u.mJy), [1.0, 0.5])  # normalised units times RRSCALE
    assert table["x_err"].tolist() == [0.1, 0.2] and table["y_err"].tolist() == [0.3, 0.4]
    np.testing.assert_allclose(table["a"], [3.0, 2.0], rtol=1e-4)
    np.testing.assert_allclose(table["b"], [1.5, 2.0], rtol=1e-4)
    assert table["theta"][0].to_value(u.deg) == pytest.approx(0.0, abs=1e-6)  # the major axis along +x
    assert table["sky_centroid"].separation(wcs.pixel_to_world([15, 35], [20, 22])).max() < 1e-6 * u.arcsec
    assert table["a_err"].tolist() == [0.05, 0.06] and table["theta_err"].to_value(u.deg).tolist() == [1.5, 90.0]
    assert (table["blendedness"] < 1e-3).all()  # apart: almost nothing of either under the other
    # The backend's differentiable moments (whose Jacobians give the errors) are the catalog's.
    stamps = torch.from_numpy(np.stack([one, two]))
    grid = torch.arange(50.0, dtype=torch.float64)
    moments = source_moments(stamps[:, :, :40].contiguous(), grid[None, :40].repeat(2, 1),
                             grid[None, :40].repeat(2, 1), torch.ones(2, 40, 40, dtype=torch.float64))
    cut = deblended_catalog(Reconstruction((one + two)[:, :40], unit=u.mJy / u.pix,
                                           components=np.stack([one, two])[:, :, :40]))
    for i, name in enumerate(["flux", "x", "y", "a", "b", "theta"]):
        expected = u.Quantity(cut[name]).value
        got = moments[:, i].numpy() % 180 if name == "theta" else moments[:, i].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="no per-source components"):
        deblended_catalog(Reconstruction(one, unit=u.Jy / u.pix))


def test_bad_inputs_give_clear_errors(trained, stamps):
    backend = trained.backend
    image = torch.zeros(1, 32, 32)
    image[0, 16, 16] = 1.0
    psf = torch.from_numpy(gaussian_psf((64, 64))).float()[None]
    with pytest.raises(InputError, match=r"positions \[\[40, 3\]\] of image 0 lie outside its 32 x 32 pixels"):
        backend.predict(image, psf=psf, positions=[[(40, 3)]])
    with pytest.raises(InputError, match="non-empty list of finite pixel"):
        backend.predict(image, psf=psf, positions=[[]])
    noise = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="no sources found in image 0 above 5.0 times its noise"):
        backend.predict(noise, psf=psf)
    with pytest.raises(CapabilityError, match="pass psf="):
        backend.predict(image, positions=[[(16, 16)]])
    with pytest.raises(InputError, match="stamps of 16 x 16 pixels"):
        Reconstructor(VaeDeblendBackend(**TINY)).fit(np.zeros((4, 20, 20), np.float32), epochs=1, progress=False)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VaeDeblendBackend(likelihood="optical")
    with pytest.raises(InputError, match="positions must be a non-empty list"):
        VaeDeblendBackend(positions=[1, 2, 3])


def test_cli_predict_writes_components_and_the_deblended_catalog(trained, scene, tmp_path, capsys, monkeypatch):
    from astropy.io import fits
    from astropy.table import QTable

    from radiorecon.cli import main

    from conftest import celestial_header

    monkeypatch.setattr(trained, "backend_name", "vae-deblend")
    model, image, psf = tmp_path / "deblend.rrm", tmp_path / "blend.fits", tmp_path / "psf.fits"
    trained.save(model)
    fits.PrimaryHDU(scene.images[0], celestial_header(32, 32)).writeto(image)
    fits.PrimaryHDU(scene.psf[0]).writeto(psf)
    out, catalog = tmp_path / "out.fits", tmp_path / "sources.ecsv"
    args = ["predict", str(model), str(image), "-o", str(out), "--psf", str(psf), "--components", "--catalog",
            str(catalog), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    with fits.open(out) as hdul:
        cube, header = hdul["COMPONENTS"].data, hdul["COMPONENTS"].header
        k = hdul[0].header["DBNSRC"]
    assert cube.shape == (k, 32, 32) and header["CTYPE3"] == "SOURCE" and header["BUNIT"] == "Jy/pixel"
    table = QTable.read(catalog)
    assert len(table) == k and {"flux", "flux_err", "x", "y", "a", "b", "theta", "blendedness",
                                "sky_centroid"} <= set(table.colnames)
    np.testing.assert_allclose(table["flux"].to_value(u.Jy), np.nansum(cube, axis=(1, 2)), rtol=1e-5)


def test_shipped_model_deblends_a_blended_pair():
    from radiorecon import available_pretrained

    assert "vae-deblend" in available_pretrained()
    rec = Reconstructor.pretrained("vae-deblend")
    assert rec.units["target"] == "Jy / pix" and rec.backend.config["flux_model_error"] > 0  # calibrated
    scenes = blended_scenes(1, preset="extended", npix=64, n_sources=(2, 2), separation=(5, 7), seed=12,
                            pixel_scale=0.3 * u.arcsec, flux_range=(1, 4) * u.mJy)
    assert min(scenes.blendedness[0]) > 0.05  # their light overlaps
    image = scenes.images[0] * u.Jy / u.beam
    result = rec.predict(image, psf=scenes.psf[0], positions=scenes.positions[0].tolist(), progress=False)
    assert result.components.unit == u.Jy / u.pix
    table = deblended_catalog(result)
    true = scenes.sources[0].sum(axis=(1, 2))
    flux = table["flux"].to_value(u.Jy)
    # Each source's flux to within a fifth, and within four of its Laplace errors.
    assert np.all(np.abs(flux / true - 1) < 0.2)
    assert np.all(np.abs(flux - true) < 4 * table["flux_err"].to_value(u.Jy))
