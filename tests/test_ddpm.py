"""The conditional DDPM backend: training, samplers, seeds, model files, set_params."""

import json

import astropy.units as u
import numpy as np
import pytest
import torch

from radiorecon import Reconstructor
from radiorecon.backends.ddpm import DdpmBackend
from radiorecon.nn import square_symmetry
from radiorecon.simulate import SimulatedPairs

TINY = dict(base_channels=8, channel_mult=[1, 2])
JY_BEAM = u.Jy / u.beam


@pytest.fixture(scope="module")
def pairs():
    return SimulatedPairs(16, seed=5, npix=32, placement_radius=1.2 * u.arcsec, flux_range=[0.5, 1.0] * u.mJy)


@pytest.fixture(scope="module")
def trained(pairs):
    rec = Reconstructor("ddpm", steps=6, **TINY)
    rec.fit(pairs, epochs=4, batch_size=8, seed=3, progress=False)
    return rec


def test_sizes_and_presets():
    # The reference U-Net (Ho et al. 2020, as in the papers' code) has 35.7M
    # parameters; ours, of the same shape, has 6 % more (the docstring of
    # DdpmBackend says 37.9M). Exact, so that any change to the architecture shows.
    assert DdpmBackend(preset="paper").parameter_counts()["total"] == 37_914_625
    assert DdpmBackend().parameter_counts()["total"] < 1e6
    with pytest.raises(ValueError, match="Unknown sampler 'heun'"):
        DdpmBackend(sampler="heun")
    with pytest.raises(ValueError, match="steps must be an integer from 1 to timesteps"):
        DdpmBackend(steps=0)
    with pytest.raises(ValueError, match="clip_denoised"):
        DdpmBackend(clip_denoised=[1.0, 0.0])
    with pytest.raises(ValueError, match="Unknown sky_stretch 'log'"):
        DdpmBackend(sky_stretch="log")
    with pytest.raises(ValueError, match="sky_power must be in"):
        DdpmBackend(sky_stretch="power", sky_power=2.0)


def test_training_lowers_the_loss_is_seeded_and_averages_weights(pairs, trained):
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    again = Reconstructor("ddpm", steps=6, **TINY).fit(pairs, epochs=4, batch_size=8, seed=3, progress=False)
    for key, value in trained.backend.state_dict().items():
        torch.testing.assert_close(value, again.backend.state_dict()[key])
    net, ema = trained.backend.net, trained.backend.ema
    assert not any(p.requires_grad for p in ema.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), ema.parameters()))
    assert trained.backend.ema_steps == 8  # 4 epochs x 2 batches


def test_augmentation_moves_pairs_together():
    # On native pixels (B, ny, nx), before the grid is made.
    x = torch.arange(2 * 16.0).reshape(2, 4, 4).repeat(64, 1, 1)
    torch.manual_seed(0)
    a, b = square_symmetry(x, x.clone() * 2)
    torch.testing.assert_close(b, 2 * a)
    seen = {tuple(img.flatten().tolist()) for img in a[::2]}
    assert len(seen) == 8  # all the symmetries of the square
    assert all(sorted(s) == list(range(16)) for s in seen)


def test_sky_normalisation_is_inverted_exactly():
    x = torch.tensor([0.0, 1e-3, 0.5, 3.0, 200.0])
    for kind in ("asinh", "power"):
        b = DdpmBackend(sky_stretch=kind, sky_power=0.25)
        torch.testing.assert_close(b.sky_inverse(b.sky_forward(x)), x, rtol=1e-5, atol=1e-7)
        assert torch.all(torch.diff(b.sky_forward(x)) > 0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_every_sampler_predicts_with_spread_and_seeds(pairs, trained, sampler):
    trained.set_params(sampler=sampler, steps=6)
    dirty = pairs[2][0] * JY_BEAM
    a = trained.predict(dirty, n_samples=4, seed=1, progress=False, return_samples=True)
    b = trained.predict(dirty, n_samples=4, seed=1, progress=False)
    c = trained.predict(dirty, n_samples=4, seed=2, progress=False)
    assert a.data.shape == (32, 32) and a.unit == u.Jy / u.pix
    assert np.isfinite(a.data).all() and (a.data >= 0).all()  # clipped at zero sky
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert a.samples.shape == (4, 32, 32)
    assert np.allclose(a.uncertainty.array, a.samples.std(axis=0, ddof=1))
    assert a.uncertainty.array.max() > 0
    assert sampler in a.meta["RRCONFIG"]
    assert trained.backend.network_evaluations(4) == 24


def test_median_and_mean_aggregation(pairs, trained):
    trained.set_params(sampler="ddim", steps=4)
    dirty = pairs[1][0] * JY_BEAM
    med = trained.predict(dirty, n_samples=5, seed=0, progress=False, return_samples=True)
    mean = trained.predict(dirty, n_samples=5, seed=0, progress=False, aggregate="mean")
    np.testing.assert_allclose(med.data, np.median(med.samples, axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean.data, med.samples.mean(axis=0), rtol=1e-5, atol=1e-12)


def test_set_params_changes_only_sampling(trained):
    with pytest.raises(ValueError, match="base_channels .*cannot change after construction"):
        trained.set_params(base_channels=32)
    with pytest.raises(TypeError, match="Unknown configuration .*: stepz"):
        trained.set_params(stepz=3)
    before = dict(trained.config)
    with pytest.raises(ValueError, match="Unknown sampler"):
        trained.set_params(sampler="euler", steps=3)
    assert trained.config == before  # a refused change leaves nothing half-done
    assert trained.set_params(steps=3) is trained and trained.config["steps"] == 3


def test_model_file_round_trip_keeps_sampling_settings(tmp_path, pairs, trained):
    trained.set_params(sampler="dpm++2m", steps=5)
    path = tmp_path / "ddpm.rrm"
    trained.save(path)
    loaded = Reconstructor.load(path)
    assert loaded.config == trained.config
    dirty = pairs[3][0] * JY_BEAM
    a = trained.predict(dirty, n_samples=3, seed=4, progress=False)
    b = loaded.predict(dirty, n_samples=3, seed=4, progress=False)
    np.testing.assert_array_equal(a.data, b.data)


def test_interrupted_training_resumes_exactly(pairs, tmp_path, monkeypatch):
    straight = Reconstructor("ddpm", **TINY).fit(pairs, epochs=3, batch_size=8, seed=1, progress=False)
    ckpt = tmp_path / "run.ckpt"
    first = Reconstructor("ddpm", **TINY)
    original = DdpmBackend.train_step

    def train_step(self, inputs, targets):
        if len(first.history) == 2:  # Ctrl-C during the third epoch
            raise KeyboardInterrupt
        return original(self, inputs, targets)

    monkeypatch.setattr(DdpmBackend, "train_step", train_step)
    with pytest.raises(KeyboardInterrupt):
        first.fit(pairs, epochs=3, batch_size=8, seed=1, progress=False, checkpoint=ckpt)
    monkeypatch.undo()
    resumed = Reconstructor("ddpm", **TINY).fit(pairs, epochs=3, batch_size=8, seed=1, progress=False, checkpoint=ckpt)
    assert resumed.history == straight.history
    assert resumed.backend.ema_steps == straight.backend.ema_steps == 6
    for key, value in straight.backend.state_dict().items():
        torch.testing.assert_close(resumed.backend.state_dict()[key], value)


def test_shipped_model_reconstructs_a_source():
    from astropy.table import QTable

    from radiorecon import available_pretrained
    from radiorecon.simulate import observe

    assert "ddpm" in available_pretrained()
    rec = Reconstructor.pretrained("ddpm")
    assert rec.fitted and rec.config["sampler"] == "dpm++2m" and rec.config["clip_denoised"] == [0.0, 2.5]
    table = QTable({"x": [30.0], "y": [36.0], "flux": [0.4] * u.mJy,
                    "fwhm_major": [0.3] * u.arcsec, "fwhm_minor": [0.2] * u.arcsec, "pa": [30.0] * u.deg})
    obs = observe(table, seed=7, npix=64)
    out = rec.set_params(steps=10).predict(obs.dirty, n_samples=2, seed=0, progress=False)
    assert out.meta["RRMODEL"] == "pretrained:ddpm"
    peak = np.unravel_index(np.nanargmax(out.data), out.data.shape)
    assert abs(peak[0] - 36) <= 2 and abs(peak[1] - 30) <= 2
    total = np.nansum(out.data[26:46, 20:40]) * 1e3
    assert 0.15 < total < 0.8  # mJy; the apparent flux is about 0.4


def test_unshuffle_stem_trains_and_predicts_every_pixel(pairs):
    rec = Reconstructor("ddpm", steps=4, stem="unshuffle", downsample=4, **TINY)
    net = rec.backend.net
    assert net.stem.in_channels == 32 and net.head[-1].out_channels == 16  # 4x4 blocks: sky + dirty in, noise out
    rec.fit(pairs, epochs=2, batch_size=8, seed=3, progress=False)
    assert rec.history[-1]["loss"] < rec.history[0]["loss"]
    dirty, _ = pairs[1]
    result = rec.predict(dirty[:30, :27] * JY_BEAM, n_samples=2, seed=0, return_samples=True)
    samples = np.asarray(result.samples)
    assert samples.shape == (2, 30, 27) and samples.min() >= 0  # denoised skies are clipped at 0

    # A dead zone empties each draw's faint pixels and keeps the rest. It is
    # in the diffusion data space, asinh(x / softening) / scale with x in
    # units of the input noise (one native pixel per channel of the
    # unshuffled grid), so it removes pixels below softening * sinh(scale *
    # zone) * noise (Jy/pix).
    cut = float(np.median(samples[samples > 0]))
    c = rec.config
    zone = float(np.arcsinh(cut / (rec.normalisation.scale * c["sky_softening"])) / c["sky_scale"])
    rec.set_params(dead_zone=zone)
    zoned = np.asarray(rec.predict(dirty[:30, :27] * JY_BEAM, n_samples=2, seed=0, return_samples=True).samples)
    assert (zoned == 0).sum() > (samples == 0).sum()
    assert np.all(zoned[samples <= 0.999 * cut] == 0)
    np.testing.assert_allclose(zoned[samples > 1.001 * cut], samples[samples > 1.001 * cut], rtol=1e-5)
    for bad in (-0.1, True):
        with pytest.raises(ValueError, match="dead_zone must be a finite number >= 0"):
            rec.set_params(dead_zone=bad)
    assert rec.config["dead_zone"] == zone



def test_data_prediction_trains_and_samples(pairs):
    rec = Reconstructor("ddpm", steps=4, prediction="x0", **TINY)
    rec.fit(pairs, epochs=2, batch_size=8, seed=3, progress=False)
    assert rec.history[-1]["loss"] < rec.history[0]["loss"]
    # The loss is on the clean (stretched) sky: a network that outputs 0
    # scores its mean square, where a noise prediction would score about 1.
    backend = rec.backend
    with torch.no_grad():
        backend.net.head[-1].weight.zero_()
        backend.net.head[-1].bias.zero_()
    x = torch.as_tensor(np.stack([pairs[i][0] for i in range(4)])) / rec.normalisation.scale
    y = torch.as_tensor(np.stack([pairs[i][1] for i in range(4)])) / rec.normalisation.scale
    sky, _ = backend._grid(y, "sum")
    with torch.no_grad():
        loss = float(backend._loss(x, y, augment=False))
    assert loss == pytest.approx(float(backend.sky_forward(sky).pow(2).mean()), rel=1e-5)
    out = rec.predict(pairs[1][0] * JY_BEAM, n_samples=2, seed=0, return_samples=True, progress=False)
    assert np.all(np.isfinite(out.samples)) and out.samples.min() >= 0
    assert json.loads(out.meta["RRCONFIG"])["prediction"] == "x0"
    with pytest.raises(ValueError, match="Unknown prediction 'v'"):
        Reconstructor("ddpm", prediction="v", **TINY)
