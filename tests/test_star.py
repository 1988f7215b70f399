"""The STAR backend: training, style sampling, generation, model files."""

import json

import astropy.units as u
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astropy.nddata import CCDData

from radiorecon import Reconstructor, available_pretrained
from radiorecon.backends.star import _CONTENT_LOSSES, StarBackend
from radiorecon.exceptions import CapabilityError
from radiorecon.simulate import SimulatedPairs, observe

TINY = dict(base_channels=8, style_base_channels=4, channel_mult=[1, 2])


JY_BEAM, JY_PIX = u.Jy / u.beam, u.Jy / u.pix


@pytest.fixture(scope="module")
def pairs():
    return SimulatedPairs(16, seed=5, npix=32, placement_radius=1.2 * u.arcsec, flux_range=[0.5, 1.0] * u.mJy)


@pytest.fixture(scope="module")
def trained(pairs):
    rec = Reconstructor("star", **TINY)
    rec.fit(pairs, epochs=3, batch_size=8, seed=3, progress=False)
    return rec


def test_presets_and_sizes():
    # The papers' networks have 13.9M (encoder) and 11.0M (decoder)
    # parameters. Widths come in steps of one base channel (27 gives 13.14M
    # and 10.74M, 29 gives 14.79M and 12.39M); 28 is the nearest for the
    # encoder. Exact counts, so that any change to the architecture shows.
    paper = StarBackend(preset="paper").parameter_counts()
    assert (paper["encoder"], paper["decoder"]) == (13_947_448, 11_548_657)
    only = StarBackend(preset="only-mse").config
    assert only["dcor_weight"] == 0 and not only["two_branches"] and not only["two_to_one"]
    assert StarBackend(preset="dcor", dcor_weight=0.5).config["dcor_weight"] == 0.5
    with pytest.raises(ValueError, match="Unknown preset 'papr'.*paper"):
        StarBackend(preset="papr")
    with pytest.raises(TypeError, match="Unknown configuration"):
        StarBackend(dcor=1)


def test_training_lowers_every_fitting_loss_and_is_seeded(pairs, trained):
    first, last = trained.history[0], trained.history[-1]
    fitting = {"content", "composite", "branch2", "style"}
    # The regularisers start at their minimum (freshly initialised styles are
    # near the prior and independent of the content) and are traded against
    # the fit, so they need not fall; they must stay in range.
    regularisers = {"dcor", "kl"}
    assert set(first) == fitting | regularisers | {"epoch"}
    for key in fitting:
        assert last[key] < first[key], key
    for logs in trained.history:
        assert 0 <= logs["dcor"] <= 1 and logs["kl"] >= 0
    again = Reconstructor("star", **TINY).fit(pairs, epochs=3, batch_size=8, seed=3, progress=False)
    for key, value in trained.backend.state_dict().items():
        torch.testing.assert_close(value, again.backend.state_dict()[key])


def test_ablation_switches_drop_their_losses(pairs):
    rec = Reconstructor("star", preset="only-mse", **TINY).fit(pairs, epochs=1, batch_size=8, seed=0, progress=False)
    assert set(rec.history[0]) == {"content", "epoch"}
    rec = Reconstructor("star", preset="dcor", **TINY).fit(pairs, epochs=1, batch_size=8, seed=0, progress=False)
    assert set(rec.history[0]) == {"content", "composite", "dcor", "kl", "epoch"}


def test_dcor_term_needs_four_images(trained):
    # The bias-corrected estimator is defined from 4 samples; a short last
    # batch of 3 trains without the term instead of failing.
    gen = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(4, 32, 32, generator=gen), torch.rand(4, 32, 32, generator=gen)
    assert "dcor" not in trained.backend.evaluate_step(inputs[:3], targets[:3])
    assert 0 <= trained.backend.evaluate_step(inputs, targets)["dcor"] <= 1


def test_adversarial_terms_train_discriminators(pairs):
    rec = Reconstructor("star", adversarial_weight=0.01, **TINY)
    assert "discriminators" in rec.backend.modules()
    rec.fit(pairs, epochs=1, batch_size=8, seed=0, progress=False)
    assert {"adversarial", "discriminator"} <= set(rec.history[0])


def test_direct_prediction_is_deterministic_and_styles_spread(pairs, trained):
    dirty = pairs[0][0] * JY_BEAM
    one = trained.predict(dirty, seed=1, progress=False)
    two = trained.predict(dirty, seed=2, progress=False)
    np.testing.assert_array_equal(one.data, two.data)  # the mean style: no randomness
    assert one.uncertainty is None
    many = trained.predict(dirty, n_samples=5, seed=1, progress=False, return_samples=True)
    assert many.samples.shape == (5, 32, 32)
    assert np.all(many.uncertainty.array >= 0) and many.uncertainty.array.max() > 0
    again = trained.predict(dirty, n_samples=5, seed=1, progress=False)
    np.testing.assert_array_equal(many.data, again.data)
    # Every chunk of samples is a draw: batch_size 1 must not fall back to the direct estimate.
    small = trained.predict(dirty, n_samples=3, seed=1, batch_size=1, progress=False, return_samples=True)
    assert not np.allclose(small.samples[0], small.samples[1])


def test_composite_style_sampling_reads_the_content_again(pairs, trained):
    dirty = pairs[0][0] * JY_BEAM
    direct = trained.predict(dirty, progress=False).data
    content = trained.predict(dirty, n_samples=4, seed=1, progress=False, return_samples=True).samples
    spread = {}
    try:
        trained.set_params(style_sampling="composite")
        assert np.array_equal(trained.predict(dirty, progress=False).data, direct)  # one run: the mean style
        for temperature in (0.0, 1.0, 20.0):
            trained.set_params(style_temperature=temperature)
            samples = trained.predict(dirty, n_samples=4, seed=1, progress=False, return_samples=True).samples
            spread[temperature] = float(samples.std(axis=0).mean())
            if temperature == 0:
                # Every draw is the mean style: the image it gives is read the same way each time, and
                # that image is not the dirty one (with "content" sampling these would all be the direct sky).
                np.testing.assert_allclose(samples, np.broadcast_to(samples[0], samples.shape), atol=1e-9)
                assert not np.allclose(samples[0], direct)
        again = trained.predict(dirty, n_samples=4, seed=1, progress=False, return_samples=True).samples
        assert np.array_equal(samples, again)  # seeded
        with pytest.raises(ValueError, match="style_sampling must be one of"):
            trained.set_params(style_sampling="decoder")
    finally:
        trained.set_params(style_sampling="content", style_temperature=1.0)
    assert not np.allclose(samples, content)
    # The further the styles stray, the more the images made with them, and the skies read from them, differ.
    assert spread[0.0] == pytest.approx(0.0, abs=1e-12) and spread[20.0] > spread[1.0] > 0


def test_prediction_inverts_the_normalisations(pairs, trained, monkeypatch):
    # A content net that returns its (binned) input as the normalised sky
    # must give back the input's flux: predict undoes the sky stretch, the
    # binning and the front door's scaling, so outputs are in the targets' unit.
    backend = trained.backend
    bins = backend.config["downsample"] ** 2  # the input is averaged over bins, a sky summed
    monkeypatch.setattr(backend, "content", lambda x, style: backend.sky_forward(x * bins))
    # A compact positive source, well inside the image so that no flux
    # depends on how edges are padded.
    yy, xx = np.mgrid[:32, :32]
    image = 1e-2 * np.exp(-((yy - 15.3) ** 2 + (xx - 16.6) ** 2) / (2 * 2.0**2))
    out = trained.predict(image * JY_BEAM, progress=False)
    assert out.unit.to_string() == "Jy / pix"
    assert out.data.shape == image.shape
    assert np.sum(out.data) == pytest.approx(np.sum(image), rel=1e-4)


def test_generate_gives_dirty_images(pairs, trained):
    dirty, sky = pairs[2]
    dirty, sky = dirty * JY_BEAM, sky * JY_PIX
    gen = trained.generate(sky, n=4, seed=0)
    assert gen.data.shape == (4, 32, 32)
    assert gen.unit.to_string() == "Jy / beam"
    assert not np.allclose(gen.data[0], gen.data[1])  # a new style each
    np.testing.assert_array_equal(gen.data, trained.generate(sky, n=4, seed=0).data)
    like = trained.generate(sky, n=1, like=dirty, seed=0)
    assert like.data.shape == (1, 32, 32) and like.meta["RRLIKE"]
    with pytest.raises(ValueError, match="like= has shape"):
        trained.generate(sky, like=np.zeros((16, 16)) * JY_BEAM)
    with pytest.raises(ValueError, match="n must be at least 1, not 0"):
        trained.generate(sky, n=0)
    for bad in (True, 1.5):
        with pytest.raises(TypeError, match="n must be an integer"):
            trained.generate(sky, n=bad)
    with pytest.raises(CapabilityError, match="generate"):
        Reconstructor("clean").generate(sky)


def test_generate_in_batches_with_mask_and_sample_axis(pairs, trained):
    dirty, sky = pairs[2]
    sky = sky.copy()
    sky[0, :3] = np.nan
    obs = observe(seed=1, npix=32)
    sky = CCDData(sky, unit=JY_PIX, wcs=obs.dirty.wcs)
    gen = trained.generate(sky, n=5, like=dirty * JY_BEAM, seed=2, batch_size=2, progress=False)
    assert gen.data.shape == (5, 32, 32)
    assert np.isnan(gen.data[:, 0, :3]).all() and gen.mask[:, 0, :3].all() and not gen.mask[:, 1:].any()
    # Styles drawn around the image's own style differ from draw to draw, even
    # with batches of 1 (a backend call for one draw gives the image's own style).
    assert not np.allclose(gen.data[3, 1:], gen.data[4, 1:])
    single = trained.generate(sky, n=2, like=dirty * JY_BEAM, seed=2, batch_size=1, progress=False)
    assert not np.allclose(single.data[0, 1:], single.data[1, 1:])
    assert gen.wcs.naxis == 3 and gen.wcs.wcs.ctype[2] == "SAMPLE"
    first = gen[0]
    assert first.data.shape == (32, 32) and first.wcs.pixel_n_dim == 2
    assert first.wcs.world_axis_physical_types == obs.dirty.wcs.world_axis_physical_types


def test_sky_normalisation_is_inverted_exactly(trained):
    x = torch.tensor([0.0, 1e-3, 0.5, 3.0, 200.0])[None, None, None, :]
    back = trained.backend.sky_inverse(trained.backend.sky_forward(x))
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-7)


def test_model_file_round_trip(tmp_path, pairs, trained):
    path = tmp_path / "star.rrm"
    trained.save(path)
    loaded = Reconstructor.load(path)
    assert loaded.config == trained.config
    dirty = pairs[3][0] * JY_BEAM
    a = trained.predict(dirty, n_samples=3, seed=4, progress=False)
    b = loaded.predict(dirty, n_samples=3, seed=4, progress=False)
    np.testing.assert_array_equal(a.data, b.data)
    doc = json.loads(json.dumps(loaded.backend.config))
    assert doc["sky_softening"] == trained.config["sky_softening"]


def test_shipped_model_reconstructs_a_source():
    assert "star" in available_pretrained()
    rec = Reconstructor.pretrained("star")
    assert rec.fitted and rec.origin == "pretrained:star"
    import astropy.units as u
    from astropy.table import QTable

    table = QTable({"x": [256.0], "y": [270.0], "flux": [0.4] * u.mJy,
                    "fwhm_major": [0.6] * u.arcsec, "fwhm_minor": [0.5] * u.arcsec, "pa": [30.0] * u.deg})
    obs = observe(table, seed=7)
    out = rec.predict(obs.dirty, n_samples=3, seed=0, progress=False)
    assert out.meta["RRMODEL"] == "pretrained:star"
    peak = np.unravel_index(np.nanargmax(out.data), out.data.shape)
    assert abs(peak[0] - 270) <= 3 and abs(peak[1] - 256) <= 3
    total = np.nansum(out.data[250:290, 236:276]) * 1e3
    assert 0.15 < total < 0.8  # mJy; the apparent flux is 0.4 x 0.98


def test_unknown_pretrained_name():
    with pytest.raises(ValueError, match="No pretrained model 'stra'.*Did you mean 'star'"):
        Reconstructor.pretrained("stra")


def test_batches_too_small_for_the_dcor_term_are_refused(pairs):
    with pytest.raises(ValueError, match="batch_size=2 is too small.*at least 4"):
        Reconstructor("star", **TINY).fit(pairs, epochs=1, batch_size=2, progress=False)
    assert Reconstructor("star", dcor_weight=0.0).backend.min_batch_size == 1


def test_unshuffle_stem_is_lossless_and_nonnegative_output_is_exactly_empty(pairs, tmp_path):
    config = dict(TINY, stem="unshuffle", downsample=4, nonnegative=True, content_loss="l1")
    backend = StarBackend(**config)
    # Every pixel becomes a channel of a grid cell and comes back: no loss,
    # whatever the image size (padded to the grid, cropped back).
    x = torch.randn(2, 37, 30, generator=torch.Generator().manual_seed(1))
    grid, size = backend._to_grid(x, "mean")
    assert grid.shape == (2, 16, 40 // 4, 32 // 4)
    torch.testing.assert_close(backend._from_grid(grid, size, "mean"), x, rtol=0, atol=0)

    rec = Reconstructor("star", **config).fit(pairs, epochs=3, batch_size=8, seed=3, progress=False)
    assert rec.history[-1]["content"] < rec.history[0]["content"]
    dirty, _ = pairs[0]
    model = rec.predict(dirty * JY_BEAM, n_samples=3, seed=1).data
    # Non-negative, and exactly 0 where the network sees nothing (not a
    # faint floor): with a plain output no pixel would be exactly 0.
    assert model.min() >= 0 and (model == 0).mean() > 0.1
    rec.save(tmp_path / "u.rrm")
    again = Reconstructor.load(tmp_path / "u.rrm")
    assert again.backend.config["stem"] == "unshuffle"
    np.testing.assert_array_equal(again.predict(dirty * JY_BEAM).data, rec.predict(dirty * JY_BEAM).data)


@pytest.mark.parametrize("isolate", [False, True])
def test_isolated_content_learns_from_the_true_sky_alone(pairs, isolate):
    # Only the composite and dCor terms: they reach the content net unless it is isolated.
    backend = StarBackend(**TINY, content_weight=0.0, kl_weight=0.0, two_branches=False, two_to_one=False,
                          isolate_content=isolate)
    x = torch.as_tensor(np.stack([pairs[i][0] for i in range(4)])) / 5e-5
    y = torch.as_tensor(np.stack([pairs[i][1] for i in range(4)])) / 5e-5
    total, losses, _ = backend._losses(x, y)
    assert {"composite", "dcor"} <= set(losses)
    total.backward()
    content = [p.grad for p in backend.content_net.parameters()]
    style = [p.grad for p in backend.style_encoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in style)  # the style still learns
    if isolate:
        assert all(g is None or g.abs().sum() == 0 for g in content)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in content)


@pytest.mark.parametrize("empty, best", [(0.9, 0.0), (0.6, 0.7)])
def test_l1_plus_mse_keeps_unlikely_sources_at_exactly_zero(empty, best):
    # A pixel empty with probability `empty`, else of normalised intensity 2:
    # the constant estimate minimising the loss over many such skies.
    target = torch.zeros(1000)
    target[int(empty * 1000):] = 2.0
    estimates = torch.linspace(0, 2, 201)
    loss = _CONTENT_LOSSES["l1+mse"]
    costs = torch.stack([loss(torch.full_like(target, e), target) for e in estimates])
    assert estimates[costs.argmin()].item() == pytest.approx(best, abs=0.011)
    # MSE alone puts the floor at the mean, 2 (1 - empty).
    mse = torch.stack([F.mse_loss(torch.full_like(target, e), target) for e in estimates])
    assert estimates[mse.argmin()].item() == pytest.approx(2 * (1 - empty), abs=0.011)


@pytest.mark.parametrize("bad", [dict(stem="pixel"), dict(content_loss="huber")])
def test_unknown_stem_or_content_loss(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        StarBackend(**TINY, **bad)


def test_nonnegative_content_passes_gradients_through_the_clip():
    backend = StarBackend(**TINY, nonnegative=True)
    net = backend.content_net
    with torch.no_grad():
        net.head[-1].bias.fill_(-10.0)  # every output below 0: clipped to exactly 0
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    content = backend.content(x, torch.zeros(2, 1, 16, 16))
    assert torch.all(content == 0)
    # A source where the output is clipped still pulls the output up (a plain ReLU would give no gradient).
    torch.nn.functional.l1_loss(content, torch.ones_like(content)).backward()
    assert net.head[-1].bias.grad.item() < 0


def test_dead_zone_changes_on_a_trained_model(pairs, tmp_path):
    config = dict(TINY, stem="unshuffle", downsample=4, nonnegative=True, content_loss="l1+mse")
    rec = Reconstructor("star", **config).fit(pairs, epochs=1, batch_size=8, seed=3, progress=False)
    dirty, _ = pairs[0]
    plain = rec.predict(dirty * JY_BEAM).data
    positive = plain[plain > 0]
    cut = float(np.median(positive))
    # A dead zone in normalised units: the pixel values it removes are those
    # below softening * noise * sinh(dead_zone), in Jy/pix.
    scale = rec.normalisation.scale * rec.config["sky_softening"]
    dz = float(np.arcsinh(cut / scale))
    rec.set_params(dead_zone=dz)
    zoned = rec.predict(dirty * JY_BEAM).data
    assert (zoned == 0).sum() > (plain == 0).sum()
    assert np.all(zoned[plain <= 0.999 * cut] == 0)
    np.testing.assert_allclose(zoned[plain > 1.001 * cut], plain[plain > 1.001 * cut], rtol=1e-5)
    assert json.loads(rec.predict(dirty * JY_BEAM).meta["RRCONFIG"])["dead_zone"] == dz
    draws = rec.predict(dirty * JY_BEAM, n_samples=3, seed=2, return_samples=True).samples
    assert np.all((draws == 0) | (np.abs(draws) > 0.999 * cut))
    # Training does not see it: the same losses with or without.
    x = torch.as_tensor(np.stack([pairs[i][0] for i in range(4)])) / rec.normalisation.scale
    y = torch.as_tensor(np.stack([pairs[i][1] for i in range(4)])) / rec.normalisation.scale
    losses = []
    for zone in (0.0, dz):
        rec.set_params(dead_zone=zone)
        torch.manual_seed(0)
        losses.append(rec.backend._losses(x, y)[1])
    assert losses[0] == losses[1]
    rec.save(tmp_path / "dz.rrm")
    assert Reconstructor.load(tmp_path / "dz.rrm").config["dead_zone"] == dz
    for bad in (-0.1, "0.1", True):
        with pytest.raises(ValueError, match="dead_zone must be a finite number >= 0"):
            rec.set_params(dead_zone=bad)
    with pytest.raises(TypeError, match="JSON"):  # NaN cannot be stored in a model file
        rec.set_params(dead_zone=float("nan"))
    assert rec.config["dead_zone"] == dz


def test_fine_tuning_keeps_the_normalisation_at_a_new_learning_rate(pairs, trained, tmp_path):
    trained.save(tmp_path / "base.rrm")
    rec = Reconstructor.load(tmp_path / "base.rrm")
    before = {k: v.clone() for k, v in rec.backend.state_dict().items()}
    # Louder fields: a fresh fit would measure another scale.
    louder = SimulatedPairs(8, seed=6, npix=32, placement_radius=1.2 * u.arcsec,
                            flux_range=[0.5, 1.0] * u.mJy, noise_rms=150 * u.uJy)
    with pytest.raises(ValueError, match="base_channels .*cannot change"):
        rec.set_params(base_channels=4)
    rec.set_params(learning_rate=1e-4)
    rec.fit(louder, epochs=1, batch_size=8, seed=4, progress=False, warm_start=True)
    assert rec.normalisation == trained.normalisation
    assert rec.backend.optimizers["optimizer"].param_groups[0]["lr"] == 1e-4
    assert len(rec.history) == len(trained.history) + 1
    assert any(not torch.equal(before[k], v) for k, v in rec.backend.state_dict().items())
    # Data in other units than the networks learned in are refused, before any step.
    milli = [CCDData(pairs[i][0] * 1e3, unit="mJy/beam") for i in range(8)]
    targets = [CCDData(pairs[i][1], unit="Jy/pix") for i in range(8)]
    with pytest.raises(u.UnitsError, match="inputs were in Jy / beam; these are in mJy / beam"):
        rec.fit(milli, targets, epochs=1, batch_size=8, seed=4, progress=False, warm_start=True)
    # Without warm_start the same call trains fresh networks in a scale of its own.
    fresh = Reconstructor.load(tmp_path / "base.rrm").fit(louder, epochs=1, batch_size=8, seed=4, progress=False)
    assert fresh.normalisation.scale > 1.2 * trained.normalisation.scale
