import numpy as np
import pytest
import astropy.units as u
from scipy.signal import fftconvolve

from radiorecon import Reconstructor
from radiorecon.backends.clean import hogbom

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
    # Uncertainty: the residual's local rms, close to the injected noise.
    assert np.median(result.uncertainty.array) == pytest.approx(5e-5, rel=0.3)
    assert result.extras["residual"].shape == (n, n)
    assert np.std(result.extras["residual"]) < 1.5 * 5e-5
    assert result.meta["RRUNCERT"] == "from backend clean"


def test_clean_config_is_validated():
    with pytest.raises(ValueError, match="gain must be in"):
        Reconstructor("clean", gain=0)
    with pytest.raises(ValueError, match="niter must be"):
        Reconstructor("clean", niter=-1)
