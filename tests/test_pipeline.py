"""The prediction pipeline: images of any size together, seeds per image, units, memory."""

import warnings

import numpy as np
import pytest
import torch
import astropy.units as u

from radiorecon import Backend, Prediction, Reconstructor, pipeline, registry
from radiorecon.exceptions import RadioreconWarning
from radiorecon.seeding import Draws, stream_seed

from conftest import gaussian_psf


@pytest.fixture(scope="module")
def star():
    return Reconstructor.pretrained("star", device="cpu")


@pytest.fixture
def conv(pairs):
    dirty, sky = pairs
    return Reconstructor("test-conv").fit(dirty, sky, epochs=1, batch_size=8, seed=0, progress=False)


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for ny, nx in shapes:
        image = rng.normal(0, 5e-5, (ny, nx)).astype(np.float32)
        # A source of the shipped models' beam (FWHM ~9 pixels): narrower
        # features are noise to them, and their sky model is empty there.
        yy, xx = np.mgrid[:ny, :nx]
        image += 1e-3 * np.exp(-((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2) / (2 * 4.0**2))
        images.append(image * u.Jy / u.beam)
    return images


def test_images_of_different_sizes_predict_together(star):
    a, b = _images([(32, 32), (48, 40)])
    psf = gaussian_psf((64, 64))
    for rec, kwargs in [(star, {}), (Reconstructor("clean", niter=50), {"psf": psf})]:
        both = rec.predict([a, b], progress=False, **kwargs)
        assert [r.data.shape for r in both] == [(32, 32), (48, 40)]
        # Each equals its prediction alone: different sizes never share a batch.
        np.testing.assert_array_equal(both[1].data, rec.predict(b, progress=False, **kwargs).data)


@pytest.mark.parametrize("name", ["conv", "star"])
def test_an_image_draws_do_not_depend_on_neighbours_or_batch_size(name, conv, star):
    rec = {"conv": conv, "star": star}[name]
    shape = (32, 32)
    a, b, c = _images([shape] * 3, seed=3)
    alone = rec.predict(a, n_samples=6, seed=5, return_samples=True, progress=False)
    listed = rec.predict([a, b, c], n_samples=6, seed=5, batch_size=2, return_samples=True, progress=False)
    np.testing.assert_allclose(listed[0].samples, alone.samples, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(listed[0].uncertainty.array, alone.uncertainty.array, rtol=1e-5, atol=1e-9)
    # The same image at another position is another random stream.
    assert not np.allclose(listed[1].samples, rec.predict(b, n_samples=6, seed=5, return_samples=True,
                                                           progress=False).samples)
    # A different seed, different draws.
    other = rec.predict(a, n_samples=6, seed=6, return_samples=True, progress=False)
    assert not np.allclose(other.samples, alone.samples)


def test_draws_give_one_stream_per_sample_and_row():
    draws = Draws([[stream_seed(1, 0, k), stream_seed(1, 1, k)] for k in range(3)])
    x = draws.randn(4)
    assert x.shape == (3, 2, 4)
    again = Draws([[stream_seed(1, 1, 2)]]).randn(4)
    torch.testing.assert_close(x[2, 1], again[0, 0])
    assert stream_seed(1, 0, 0) != stream_seed(1, 0, 1) != stream_seed(2, 0, 0)


def test_too_many_samples_are_refused_before_any_work(conv, monkeypatch):
    called = []
    monkeypatch.setattr(type(conv.backend), "predict", lambda *a, **k: called.append(1))
    with pytest.raises(MemoryError, match=r"10000000000 samples .* GiB"):
        conv.predict(_images([(32, 32)])[0], n_samples=10**10, progress=False)
    assert not called


@pytest.mark.parametrize("seed, error", [(1.5, TypeError), (-1, ValueError), (2**64, ValueError),
                                         (True, TypeError), ("7", TypeError)])
def test_bad_seeds_are_refused(conv, seed, error):
    with pytest.raises(error, match="seed"):
        conv.predict(_images([(32, 32)])[0], seed=seed, progress=False)


def test_the_largest_seeds_train_and_predict(pairs):
    dirty, sky = pairs
    rec = Reconstructor("test-conv").fit(dirty[:8], sky[:8], epochs=2, batch_size=4, seed=2**63 - 1, progress=False)
    rec.predict(dirty[0], n_samples=2, seed=2**63 - 1, progress=False)


def test_counts_are_checked_alike(conv):
    image = _images([(32, 32)])[0]
    with pytest.raises(TypeError, match="n_samples must be an integer"):
        conv.predict(image, n_samples=True, progress=False)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        conv.predict(image, batch_size=2.0, progress=False)


def test_unit_warning_points_at_the_caller(star):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        star.predict(np.zeros((32, 32), np.float32) + np.eye(32, dtype=np.float32) * 1e-4, progress=False)
    ours = [w for w in caught if issubclass(w.category, RadioreconWarning)]
    assert ours and ours[0].filename == __file__


class _FilterBackend(Backend):
    """A smoothing filter: its output is an image in the input's unit, not a model."""

    capabilities = {"reconstruct"}

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        out = torch.nn.functional.avg_pool2d(inputs[:, None], 3, 1, 1)[:, 0]
        return Prediction(mean=out, extras={"residual": inputs - out}, units={"estimate": "input",
                                                                            "residual": "input"},
                          meta=[{"a long key name": 1.5, "Filtered": True}] * inputs.shape[0])


def test_declared_units_are_attached_and_meta_becomes_cards(tmp_path):
    registry.register_backend("test-filter", _FilterBackend, force=True)
    try:
        image = _images([(16, 16)])[0].to(u.mJy / u.beam)
        result = Reconstructor("test-filter").predict(image, progress=False)
    finally:
        registry.unregister_backend("test-filter")
    assert result.unit == u.mJy / u.beam  # not relabelled mJy/pixel
    assert result.extras["residual"].unit == u.mJy / u.beam
    assert result.meta["a long key name"] == 1.5 and result.meta["FILTERED"] is True
    result.write(tmp_path / "filtered.fits")


@pytest.mark.parametrize("meta, error, match", [
    ({"RRSEED": 5}, ValueError, "card the front door writes"),
    ({"bmaj": 3.0}, ValueError, "card the front door writes"),
    ({"CRPIX1": 3.0}, ValueError, "card the front door writes"),
    ({"iterations": float("nan")}, ValueError, "finite numbers only"),
    ({"note": "caf\u00e9"}, ValueError, "printable ASCII"),
    ({"beam": [1, 2]}, TypeError, "numbers, booleans or strings"),
])
def test_backend_meta_cannot_overwrite_or_break_the_header(meta, error, match):
    x = torch.zeros(1, 4, 4)
    with pytest.raises(error, match=match):
        Prediction(mean=x, meta=[meta])


def test_undeclared_extra_units_are_refused():
    x = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match=r"Declare the unit of the extra map\(s\) \['residual'\]"):
        Prediction(mean=x, extras={"residual": x})
    with pytest.raises(ValueError, match="use one of"):
        Prediction(mean=x, units={"estimate": "Jy"})


def test_backends_of_the_old_contract_are_told_what_changed():
    with pytest.raises(TypeError, match="declare 'draws' if predict"):
        type("Old", (Backend,), {"capabilities": {"reconstruct", "uncertainty"}})

    def predict(self, inputs, *, n_samples=1, psf=None):
        return Prediction(mean=inputs)

    with pytest.raises(TypeError, match=r"Old.predict\(\) does not take draws="):
        type("Old", (Backend,), {"capabilities": {"reconstruct"}, "predict": predict})

    def predict_draws(self, inputs, *, n_samples=1, psf=None, draws=None):
        return Prediction(mean=inputs)

    with pytest.raises(TypeError, match=r"declares 'deblend' but its predict\(\) does not take positions="):
        type("Blind", (Backend,), {"capabilities": {"reconstruct", "deblend"}, "predict": predict_draws})


def test_large_images_go_through_in_tiles_that_match_the_whole(star, monkeypatch):
    shapes = []
    real = type(star.backend).predict

    def spy(self, inputs, **kwargs):
        shapes.append(tuple(inputs.shape))
        return real(self, inputs, **kwargs)

    image = _images([(232, 200)], seed=4)[0]
    whole = star.predict(image, progress=False, threads=1).data
    monkeypatch.setattr(type(star.backend), "predict", spy)
    monkeypatch.setattr(type(star.backend), "max_tile_shape", (192, 192))
    tiled = star.predict(image, batch_size=2, progress=False, threads=1).data
    # Two or more tiles a side, each smaller than the image, on the model's grid.
    grid = star.backend.tile_multiple
    assert grid == 16  # 4x4 pixel blocks, then two halvings in the U-Net
    assert shapes and all(s[1] % grid == 0 and s[2] % grid == 0 and s[1] < 232 and s[2] < 200 for s in shapes)
    assert sum(s[0] for s in shapes) >= 4
    np.testing.assert_allclose(tiled, whole, atol=1e-3 * np.abs(whole).max())


def test_result_header_carries_the_standard_beam_cards(cube_file):
    result = Reconstructor("test-smooth").predict(cube_file, progress=False)
    assert result.meta["BMAJ"] == pytest.approx(0.89 / 3600)
    assert result.meta["BMIN"] == pytest.approx(0.82 / 3600) and result.meta["BPA"] == pytest.approx(30.0)
    assert result.meta["RRBMAJ"] == result.meta["BMAJ"]


def test_empty_inputs_are_refused_clearly(conv, pairs):
    with pytest.raises(ValueError, match=r"holds no pixels \(shape \(0, 32, 32\)\)"):
        conv.predict(np.zeros((0, 32, 32), np.float32), progress=False)
    with pytest.raises(ValueError, match="No training inputs given"):
        Reconstructor("test-conv").fit(np.zeros((0, 32, 32)), np.zeros((0, 32, 32)), progress=False)
    assert conv.predict([], progress=False) == []


def test_blank_pixels_are_blank_in_every_map():
    image = _images([(24, 24)])[0]
    image[:3, :3] = np.nan
    result = Reconstructor("clean", niter=20).predict(image, psf=gaussian_psf((48, 48)), progress=False)
    for key in ("residual", "restored", "rms"):
        assert np.isnan(result.extras[key][:3, :3]).all() and np.isfinite(result.extras[key][5:, 5:]).all()


@pytest.mark.parametrize("aggregate", ["median", "mean"])
def test_samples_are_reduced_band_by_band_as_they_are_stitched(conv, aggregate):
    image = _images([(100, 90)], seed=5)[0]
    jobs = pipeline.make_jobs([image], [None], conv.backend, conv.normalisation, conv.units.get("input"))
    assert len(jobs[0].tiler) > 4  # several rows of tiles, so several bands

    def run(**kwargs):
        return pipeline.run(jobs, conv.backend, "test-conv", n_samples=5, batch_size=3, seed=2, device="cpu",
                            progress=False, **kwargs)[0]

    kept = run()  # every sample kept, reduced afterwards
    streamed = run(aggregate=aggregate, return_samples=False)
    assert kept["estimate"] is None and kept["samples"].shape == (5, 100, 90)
    assert streamed["samples"] is None  # never held for the whole image
    reduce = np.median if aggregate == "median" else np.mean
    np.testing.assert_array_equal(streamed["estimate"], reduce(kept["samples"], axis=0))
    np.testing.assert_array_equal(streamed["std"], kept["samples"].std(axis=0, ddof=1))


def test_the_memory_check_counts_a_band_per_sample_not_the_image(conv, monkeypatch):
    image = _images([(320, 320)], seed=6)[0]
    jobs = pipeline.make_jobs([image], [None], conv.backend, conv.normalisation, conv.units.get("input"))
    # 50 samples of the whole image in float32 take 20 MB; their bands of one tile's height, a tenth of it.
    monkeypatch.setattr("radiorecon.runtime.available_memory", lambda: 40 * 2**20)
    pipeline.check_sample_memory(jobs, 50, return_samples=False)
    with pytest.raises(MemoryError, match="50 samples of 1 image"):
        pipeline.check_sample_memory(jobs, 50, return_samples=True)


def test_input_units_of_a_model_trained_on_skies():
    assert pipeline.input_units({"input": "Jy / beam", "target": "Jy / pix"}) == u.Jy / u.beam
    # Skies alone (unpaired): their per-beam counterpart for dirty images, then the skies' own unit.
    assert pipeline.input_units({"input": None, "target": "mJy / pix"}) == (u.mJy / u.beam, u.mJy / u.pix)
    assert pipeline.input_units({"input": None, "target": "K"}) == (u.K,)
    assert pipeline.input_units({"input": None, "target": None}) == ()
    image = np.ones((4, 4), np.float32) * u.mJy / u.pix
    _, data, _, unit = pipeline.read_input(image, "image", (u.Jy / u.beam, u.Jy / u.pix), stacklevel=1)
    assert unit == u.Jy / u.pix and data[0, 0] == pytest.approx(1e-3)
    # Without a unit, as it is: no dirty image's unit was ever seen to assume.
    _, data, _, unit = pipeline.read_input(np.ones((4, 4)), "image", (u.Jy / u.beam, u.Jy / u.pix), stacklevel=1)
    assert unit is None and data[0, 0] == 1
