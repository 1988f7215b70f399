import numpy as np
import pytest
import astropy.units as u
from radio_beam import Beam
from scipy.signal import fftconvolve

from radiorecon import Reconstructor
from radiorecon.backends.clean import CleanBackend, fit_clean_beam_pixels, hogbom, psf_convolve, restore
from radiorecon.beam import beam_kernel

from conftest import gaussian_psf


def _psf(n):
    # A main lobe with sidelobes, like an interferometer's.
    yy, xx = np.mgrid[:n, :n] - n // 2
    psf = np.exp(-(xx**2 + yy**2) / (2 * 2.5**2)) + 0.2 * np.cos(xx / 3.0) * np.exp(-(xx**2 + yy**2) / 400)
    return psf / psf[n // 2, n // 2]


def _dirty(sky, psf, noise, rng):
    n = sky.shape[0]
    # Odd-sized kernel so that 'same' keeps the PSF peak on the source.
    big = np.pad(psf, ((0, 1), (0, 1)))
    return fftconvolve(sky, big, mode="same") + rng.normal(0, noise, sky.shape)


def test_hogbom_recovers_point_sources():
    rng = np.random.default_rng(0)
    n = 96
    psf = _psf(n)
    sky = np.zeros((n, n))
    sky[30, 40], sky[60, 55] = 1.0, 0.4
    dirty = _dirty(sky, psf, 0.005, rng)
    model, residual, iterations = hogbom(dirty, psf, gain=0.1, niter=2000, threshold=0.02)
    assert iterations < 2000  # stopped at the threshold
    assert np.abs(residual).max() <= 0.02 + 1e-12
    assert model[28:33, 38:43].sum() == pytest.approx(1.0, abs=0.03)
    assert model[58:63, 53:58].sum() == pytest.approx(0.4, abs=0.03)


def test_clean_backend_through_the_front_door():
    rng = np.random.default_rng(1)
    n = 96
    psf = _psf(n)
    sky = np.zeros((n, n))
    sky[48, 48] = 2e-3
    dirty = _dirty(sky, psf, 5e-5, rng) * u.Jy / u.beam
    rec = Reconstructor("clean", niter=500, threshold=3.0)
    result = rec.predict(dirty, psf=psf, progress=False)
    assert result.unit == u.Jy / u.pix
    assert np.nansum(result.data[45:52, 45:52]) == pytest.approx(2e-3, rel=0.05)
    # The residual's local rms is close to the injected noise, in the dirty
    # image's unit; the model's uncertainty is that rms per clean-beam area,
    # in the model's unit (it was once the rms itself, labelled Jy/pixel).
    rms = result.extras["rms"]
    assert rms.unit == u.Jy / u.beam
    assert np.median(rms.value) == pytest.approx(5e-5, rel=0.3)
    major, minor = result.meta["CBMAJPX"], result.meta["CBMINPX"]
    area = np.pi * major * minor / (4 * np.log(2))
    assert area > 5
    np.testing.assert_allclose(result.uncertainty.array, rms.value / area, rtol=1e-6)
    assert result.extras["residual"].shape == (n, n)
    assert result.extras["residual"].unit == u.Jy / u.beam
    assert np.std(result.extras["residual"].value) < 1.5 * 5e-5
    assert result.meta["RRUNCERT"] == "from backend clean"


def test_clean_config_is_validated():
    with pytest.raises(ValueError, match="gain must be in"):
        Reconstructor("clean", gain=0)
    with pytest.raises(ValueError, match="niter must be"):
        Reconstructor("clean", niter=-1)


# -- the complete backend --------------------------------------------------

def _textbook_hogbom(dirty, psf, gain, niter, threshold=0.0, boxes=None):
    """The plain loop, any PSF size, boxes as a boolean search mask (float64)."""
    residual = np.array(dirty, dtype=np.float64)
    model = np.zeros_like(residual)
    ny, nx = residual.shape
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    search = np.ones((ny, nx), bool)
    if boxes is not None:
        search[:] = False
        for y0, y1, x0, x1 in boxes:
            search[max(y0, 0) : y1, max(x0, 0) : x1] = True
    for it in range(niter):
        y, x = np.unravel_index(np.argmax(np.where(search, np.abs(residual), -1)), residual.shape)
        if abs(residual[y, x]) <= threshold:
            return model, residual, it
        flux = gain * residual[y, x]
        model[y, x] += flux
        for yy in range(max(0, y - cy), min(ny, y - cy + psf.shape[0])):
            lo, hi = max(0, x - cx), min(nx, x - cx + psf.shape[1])
            residual[yy, lo:hi] -= flux * psf[yy - y + cy, lo - x + cx : hi - x + cx]
    return model, residual, niter


def _lobe_psf(shape, major=6.0, minor=4.0, pa=30.0, sidelobes=0.15):
    """A PSF whose main lobe is a known Gaussian (FWHM in pixels), with ring sidelobes."""
    beam = Beam(major=major * u.deg, minor=minor * u.deg, pa=pa * u.deg)
    psf = beam_kernel(beam, 1 * u.deg, shape)
    ny, nx = shape
    r = np.hypot(*np.mgrid[:ny, :nx] - np.array([ny // 2, nx // 2])[:, None, None])
    return psf + sidelobes * np.cos(r / 2.0) * (r > 12) * np.exp(-r / 40)


def _fringed_psf(shape, major=5.0, minor=4.0, pa=30.0):
    """A Gaussian main lobe plus fringes, with a non-negative Fourier transform like
    a real PSF (a sampling function), so that CLEAN converges on it."""
    beam = Beam(major=major * u.deg, minor=minor * u.deg, pa=pa * u.deg)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx] - np.array([ny // 2, nx // 2])[:, None, None]
    fringes = np.cos(2 * np.pi * (0.11 * xx + 0.07 * yy)) * np.exp(-(xx**2 + yy**2) / (2 * 12.0**2))
    psf = beam_kernel(beam, 1 * u.deg, shape) + 0.15 * fringes
    return psf / psf[ny // 2, nx // 2]


def _shifted(psf, y, x, shape):
    """The PSF centred on (y, x) in an image of ``shape`` (clipped), as a sky point makes it."""
    sky = np.zeros(shape)
    sky[y, x] = 1.0
    return psf_convolve(sky, psf)


@pytest.mark.parametrize("psf_shape", [(48, 40), (96, 80), (30, 25)])
def test_hogbom_is_the_textbook_loop_for_peaks_anywhere(psf_shape):
    # Sources on the edges and in a corner, a PSF of the image's size, twice
    # it and smaller: the fast loop gives the textbook components and residual.
    rng = np.random.default_rng(5)
    shape = (48, 40)
    psf = _fringed_psf(psf_shape, 4.0, 3.0)
    sky = np.zeros(shape)
    sky[0, 0], sky[47, 20], sky[10, 39], sky[24, 18] = 3.0, -1.5, 2.0, 1.0
    dirty = psf_convolve(sky, psf) + rng.normal(0, 0.01, shape)
    model, residual, it = hogbom(dirty, psf, gain=0.2, niter=150)
    ref_model, ref_residual, ref_it = _textbook_hogbom(dirty, psf, 0.2, 150)
    assert it == ref_it == 150
    np.testing.assert_allclose(model, ref_model, atol=1e-5)
    np.testing.assert_allclose(residual, ref_residual, atol=1e-5)
    # The residual is the dirty image less the components through the PSF.
    np.testing.assert_allclose(residual, dirty - psf_convolve(model, psf), atol=1e-5)
    assert model.dtype == residual.dtype == np.float32


def test_a_psf_twice_the_image_cleans_sidelobes_across_the_image():
    shape = (64, 64)
    big = _lobe_psf((128, 128))
    sky = np.zeros(shape)
    sky[2, 3] = 1.0
    dirty = psf_convolve(sky, big)  # the source's sidelobes reach the far corner
    assert np.abs(dirty[40:, 40:]).max() > 0.02
    # Twice the image's size: the whole image is cleaned.
    model, residual, _ = hogbom(dirty, big, gain=0.5, niter=3)
    assert model[2, 3] == pytest.approx(1 - 0.5**3, rel=1e-6)
    np.testing.assert_allclose(residual, 0.5**3 * dirty, atol=1e-7)
    # The image's size (what CASA writes): rows and columns beyond half an
    # image from the source keep their sidelobes.
    cut = big[32:96, 32:96]
    model, residual, _ = hogbom(dirty, cut, gain=0.5, niter=3)
    assert model[2, 3] == pytest.approx(1 - 0.5**3, rel=1e-6)
    np.testing.assert_allclose(residual[:34, :35], 0.5**3 * dirty[:34, :35], atol=1e-7)
    np.testing.assert_array_equal(residual[34:], dirty[34:].astype(np.float32))
    np.testing.assert_array_equal(residual[:, 35:], dirty[:, 35:].astype(np.float32))


def test_clean_beam_is_fitted_in_pixels():
    psf = _lobe_psf((65, 64), major=6.0, minor=4.0, pa=30.0)
    major, minor, pa = fit_clean_beam_pixels(psf)
    assert major == pytest.approx(6.0, rel=0.01)
    assert minor == pytest.approx(4.0, rel=0.01)
    assert (pa - 30.0 + 90) % 180 - 90 == pytest.approx(0, abs=0.5)
    assert CleanBackend().clean_beam(psf) == pytest.approx((major, minor, pa), rel=1e-4)


def test_restored_point_source_peaks_at_its_flux():
    model = np.zeros((41, 50))
    model[12, 30] = 2.5
    restored = restore(model, 6.0, 4.0, 30.0)
    assert np.unravel_index(np.argmax(restored), restored.shape) == (12, 30)
    assert restored.max() == pytest.approx(2.5, rel=1e-6)
    # The same beam the kernel makes, centred on the component.
    kernel = beam_kernel(Beam(major=6 * u.deg, minor=4 * u.deg, pa=30 * u.deg), 1 * u.deg, (41, 41))
    np.testing.assert_allclose(restored[12, 10:50], 2.5 * kernel[20, :40], atol=1e-6)
    np.testing.assert_allclose(restore(model, 6.0, 4.0, 30.0, np.ones(model.shape)), restored + 1)


def test_front_door_gives_restored_image_and_beam_cards():
    rng = np.random.default_rng(2)
    n, flux, noise = 64, 1e-2, 1e-5
    psf = _lobe_psf((n, n), major=6.0, minor=4.0, pa=30.0, sidelobes=0.0)
    sky = np.zeros((n, n))
    sky[20, 41] = flux
    # Noise correlated by the PSF, as in a real dirty image.
    dirty = psf_convolve(sky + rng.normal(0, noise, (n, n)), psf) * u.Jy / u.beam
    result = Reconstructor("clean", niter=2000, threshold=2.0).predict(dirty, psf=psf, progress=False)
    meta = result.meta
    assert meta["CBMAJPX"] == pytest.approx(6.0, rel=0.02)
    assert meta["CBMINPX"] == pytest.approx(4.0, rel=0.02)
    assert (meta["CBPA"] - 30.0 + 90) % 180 - 90 == pytest.approx(0, abs=1.0)
    assert meta["CLNSTOP"] == "threshold" and 0 < meta["CLNITER"] < 2000
    restored = result.extras["restored"]
    assert restored.unit == u.Jy / u.beam  # the dirty image's unit, as CLEAN restores it
    restored = restored.value
    assert restored.shape == (n, n)
    assert np.unravel_index(np.argmax(restored), restored.shape) == (20, 41)
    assert restored.max() == pytest.approx(flux, rel=0.03)  # Jy/beam of the clean beam
    assert np.nansum(result.data[15:26, 36:47]) == pytest.approx(flux, rel=0.03)  # Jy/pixel
    # Restored = components through the clean beam + residual.
    expected = restore(np.nan_to_num(result.data), meta["CBMAJPX"], meta["CBMINPX"], meta["CBPA"],
                       result.extras["residual"].value)
    np.testing.assert_allclose(restored, expected, atol=1e-7)


def test_mask_keeps_components_in_the_boxes():
    rng = np.random.default_rng(4)
    n = 80
    psf = _fringed_psf((n, n))
    sky = np.zeros((n, n))
    sky[20, 20], sky[60, 55], sky[58, 10] = 1.0, 0.8, 0.6
    dirty = psf_convolve(sky, psf) + rng.normal(0, 0.002, (n, n))
    boxes = [[10, 30, 12, 28], [50, 70, 45, 66], [55, 65, 60, 100]]  # overlapping, one past the edge
    model, residual, it = hogbom(dirty, psf, gain=0.1, niter=400, threshold=0.01, boxes=boxes)
    assert it < 400  # stopped at the threshold
    inside = np.zeros((n, n), bool)
    for y0, y1, x0, x1 in boxes:
        inside[y0:y1, x0:x1] = True
    assert np.all(model[~inside] == 0)
    assert model[18:23, 18:23].sum() == pytest.approx(1.0, abs=0.03)
    assert model[58:63, 53:58].sum() == pytest.approx(0.8, abs=0.03)
    # The source outside the boxes stays in the residual, which is right everywhere.
    assert residual[58, 10] == pytest.approx(0.6, abs=0.05)
    np.testing.assert_allclose(residual, dirty - psf_convolve(model, psf), atol=1e-5)
    assert np.abs(residual[inside]).max() <= 0.01
    ref_model, ref_residual, ref_it = _textbook_hogbom(dirty, psf, 0.1, 400, 0.01, boxes)
    assert it == ref_it
    np.testing.assert_allclose(model, ref_model, atol=1e-5)
    np.testing.assert_allclose(residual, ref_residual, atol=1e-5)
    # Through the front door, from the config.
    rec = Reconstructor("clean", mask=[[10, 30, 12, 28]], threshold=5.0)
    result = rec.predict(dirty, psf=psf, progress=False)
    assert np.nansum(result.data[10:30, 12:28]) == pytest.approx(np.nansum(result.data))
    assert result.extras["residual"][60, 55] == pytest.approx(dirty[60, 55], abs=0.02)


def test_boxes_outside_the_image_are_refused_at_predict():
    psf = _lobe_psf((32, 32))
    with pytest.raises(ValueError, match="No clean box overlaps the 32 x 32 image"):
        hogbom(psf, psf, boxes=[[40, 50, 0, 10]])
    with pytest.raises(ValueError, match="No clean box overlaps"):
        Reconstructor("clean", mask=[[0, 10, 32, 40]]).predict(psf, psf=psf, progress=False)


def test_niter_and_threshold_stop_the_loop():
    psf = _lobe_psf((48, 48))
    dirty = 1.0 * _shifted(psf, 20, 25, (48, 48))
    model, residual, it = hogbom(dirty, psf, gain=0.1, niter=7)
    assert it == 7 and model[20, 25] == pytest.approx(1 - 0.9**7, rel=1e-5)
    model, residual, it = hogbom(dirty, psf, gain=0.1, niter=1000, threshold=0.5)
    # 0.9**6 = 0.53 > 0.5 >= 0.9**7: seven iterations, then the peak is below.
    assert it == 7 and np.abs(residual).max() <= 0.5
    model, residual, it = hogbom(dirty, psf, niter=1000, threshold=1.0)
    assert it == 0 and not model.any()
    np.testing.assert_array_equal(residual, dirty.astype(np.float32))
    model, residual, it = hogbom(dirty, psf, niter=0)
    assert it == 0 and not model.any()
    # Through the front door: the threshold is in units of the robust noise.
    rng = np.random.default_rng(0)
    noisy = dirty * 0.05 + rng.normal(0, 1e-3, dirty.shape)
    stopped = Reconstructor("clean", niter=5).predict(noisy, psf=psf, progress=False)
    assert stopped.meta["CLNITER"] == 5 and stopped.meta["CLNSTOP"] == "niter"
    done = Reconstructor("clean", niter=5000, threshold=4.0).predict(noisy, psf=psf, progress=False)
    assert done.meta["CLNSTOP"] == "threshold" and done.meta["CLNITER"] < 5000
    sigma = 1.4826 * np.median(np.abs(noisy - np.median(noisy)))
    assert np.abs(done.extras["residual"]).max() <= 4.0 * sigma * (1 + 1e-5)


def test_gain_one_removes_a_point_source_in_one_step():
    psf = _lobe_psf((32, 32))
    dirty = 0.7 * _shifted(psf, 5, 30, (32, 32))
    model, residual, it = hogbom(dirty, psf, gain=1.0, niter=10, threshold=1e-6)
    assert it == 1 and model[5, 30] == pytest.approx(0.7, rel=1e-6)
    assert np.abs(residual).max() < 1e-6


def test_several_images_get_their_own_cards():
    psf = _fringed_psf((48, 48), 5.0, 3.0)
    bright = 1.0 * _shifted(psf, 20, 25, (48, 48))
    faint = 0.01 * _shifted(psf, 30, 10, (48, 48))
    rec = Reconstructor("clean", niter=50, threshold=0.0)
    one, two = rec.predict([bright, faint], psf=psf, progress=False)
    # The fringes widen the main lobe a little.
    assert one.meta["CBMAJPX"] == two.meta["CBMAJPX"] == pytest.approx(5.0, rel=0.15)
    assert one.meta["CLNITER"] == two.meta["CLNITER"] == 50
    assert np.unravel_index(np.nanargmax(two.extras["restored"]), (48, 48)) == (30, 10)
    assert two.extras["restored"].max() == pytest.approx(0.01, rel=0.02)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"gain": 0}, r"gain must be in \(0, 1\]"),
        ({"gain": -0.1}, "gain must be in"),
        ({"gain": 1.5}, "gain must be in"),
        ({"gain": True}, "gain must be in"),
        ({"gain": "0.1"}, "gain must be in"),
        ({"niter": 2.5}, "niter must be a non-negative integer"),
        ({"niter": True}, "niter must be"),
        ({"threshold": -1}, "threshold must be a number >= 0"),
        ({"threshold": None}, "threshold must be"),
        ({"rms_box": 0}, "rms_box must be a positive integer"),
        ({"mask": [0, 10, 0, 10]}, r"box 0 is 0, not four integers"),
        ({"mask": []}, "mask must be null or a list of clean boxes"),
        ({"mask": "box"}, "mask must be null or a list"),
        ({"mask": [[0, 10, 0]]}, "not four integers"),
        ({"mask": [[0, 10, 0, 10.5]]}, "not four integers"),
        ({"mask": [[0, 10, 0, 10], [10, 5, 0, 10]]}, r"box 1 is \[10, 5, 0, 10\]"),
        ({"mask": [[-2, 10, 0, 10]]}, "0 <= y0 < y1"),
    ],
)
def test_clean_config_errors_are_clear(config, message):
    with pytest.raises(ValueError, match=message):
        Reconstructor("clean", **config)


def test_good_configs_are_kept_as_json():
    rec = Reconstructor("clean", gain=1, niter=0, threshold=0, mask=[[0, 4, 0, 4], [2, 9, 3, 7]])
    assert rec.config["mask"] == [[0, 4, 0, 4], [2, 9, 3, 7]]
    # Tuples become lists, as in a model file.
    assert Reconstructor("clean", mask=[(0, 4, 0, 4)]).config["mask"] == [[0, 4, 0, 4]]
    assert Reconstructor("clean").config["mask"] is None


def test_bad_inputs_to_hogbom_are_refused():
    psf = _lobe_psf((16, 16))
    with pytest.raises(ValueError, match="peak at 1 at its centre"):
        hogbom(psf, 2 * psf)
    with pytest.raises(ValueError, match="peak at 1 at its centre"):
        hogbom(psf, np.roll(psf, 1, axis=0))
    with pytest.raises(ValueError, match="finite"):
        hogbom(np.full((16, 16), np.nan), psf)
    with pytest.raises(ValueError, match="gain must be in"):
        hogbom(psf, psf, gain=0)


def test_unfittable_psf_is_reported():
    delta = np.zeros((16, 16))
    delta[8, 8] = 1.0
    with pytest.raises(ValueError, match="clean cannot fit a clean beam to the PSF"):
        Reconstructor("clean", niter=5).predict(delta, psf=delta, progress=False)


def test_set_params_of_a_backend_without_networks():
    rec = Reconstructor("clean")
    assert rec.set_params(niter=20, gain=0.2) is rec
    assert rec.config["niter"] == 20 and rec.config["gain"] == 0.2
    with pytest.raises(TypeError, match="Unknown configuration .*: nitre"):
        rec.set_params(nitre=3)
    with pytest.raises(ValueError):
        rec.set_params(gain=-1.0)
    assert rec.config["gain"] == 0.2
