import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from scipy.signal import fftconvolve

from radiorecon import Reconstructor, available_backends, backend_info
from radiorecon.catalog import find_sources

from conftest import celestial_header, gaussian_psf

N = 256
S_PSF = 3.0  # PSF sigma, pixels
NOISE = 1e-4  # Jy/beam, rms of the dirty image


def _correlated_noise(rng, k, shape=(N, N)):
    """White noise convolved with a Gaussian of sigma ``k`` pixels, scaled to rms NOISE."""
    half = int(np.ceil(6 * k))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(xx**2 + yy**2) / (2 * k**2))
    # The rms of white noise of unit rms convolved with the kernel is its L2 norm.
    return fftconvolve(rng.standard_normal(shape), kernel, mode="same") * (NOISE / np.sqrt((kernel**2).sum()))


def _expected_gain(s, k, b):
    """S/N gain of a Gaussian filter of sigma ``b`` on a Gaussian PSF of sigma ``s``
    in white noise convolved with a Gaussian of sigma ``k`` (continuous limit).

    Per unit white noise, the dirty image has peak 1 and rms sqrt(pi) k; the
    filtered one peak 2 pi b^2 s^2 / (b^2 + s^2) and rms 2 pi^1.5 b^2 k^2 /
    sqrt(b^2 + k^2) (overlap integrals and L2 norms of Gaussians).
    """
    return s**2 * np.sqrt(b**2 + k**2) / (k * (b**2 + s**2))


@pytest.mark.parametrize(
    "k, factor",
    [
        (1.0, 1.0),  # noise finer than the beam: filtering gains sqrt-ish of the beam area
        (S_PSF / np.sqrt(2), 1.0),  # noise correlated like the PSF (natural weighting): filtering loses
        (S_PSF / np.sqrt(2), 0.5),  # a narrower kernel loses less
    ],
)
def test_gain_and_flux_of_a_faint_point_source(k, factor):
    rng = np.random.default_rng(3)
    psf = gaussian_psf((N, N), S_PSF)
    source = 3 * NOISE * psf  # a 3-sigma point source at (N // 2, N // 2)
    noise = _correlated_noise(rng, k)
    rec = Reconstructor("matched-filter", fwhm_factor=factor)
    both, alone = rec.predict([(source + noise) * u.Jy / u.beam, noise * u.Jy / u.beam], psf=psf, progress=False)
    assert both.unit == u.Jy / u.beam and both.uncertainty.unit == u.Jy / u.beam
    # The filter is linear: the source's filtered image is the difference.
    filtered = both.data.astype(float) - alone.data
    assert np.unravel_index(np.argmax(filtered), filtered.shape) == (N // 2, N // 2)
    assert filtered[N // 2, N // 2] == pytest.approx(3 * NOISE, rel=0.01)  # the peak keeps the flux
    sigma = np.std(alone.data)
    # The std the backend reports is the filtered image's noise.
    assert np.median(both.uncertainty.array) == pytest.approx(sigma, rel=0.05)
    gain = (filtered[N // 2, N // 2] / sigma) / (3 * NOISE / np.std(noise))
    assert gain == pytest.approx(_expected_gain(S_PSF, k, factor * S_PSF), rel=0.04)


def test_filtered_image_is_a_detection_image():
    rng = np.random.default_rng(4)
    psf = gaussian_psf((N, N), S_PSF)
    sky = np.zeros((N, N))
    sky[60, 70], sky[180, 150] = 8 * NOISE, 5 * NOISE
    dirty = fftconvolve(sky, np.pad(psf, ((0, 1), (0, 1))), mode="same") + _correlated_noise(rng, 1.0)
    hdu = fits.PrimaryHDU(dirty, celestial_header(N, N))
    result = Reconstructor("matched-filter").predict(hdu, psf=psf, progress=False)
    # The kernel is the clean beam fitted to the PSF (sigma 3 pixels).
    assert result.meta["MFMAJPX"] == pytest.approx(S_PSF * 2 * np.sqrt(2 * np.log(2)), rel=0.02)
    assert result.meta["MFMINPX"] == pytest.approx(result.meta["MFMAJPX"], rel=0.02)
    # Thresholded against its own noise (the uncertainty), it finds both sources.
    found = find_sources(result, threshold=4.0)
    assert len(found) == 2
    found.sort("y")
    assert np.allclose(found["y"], [60, 180], atol=1.5) and np.allclose(found["x"], [70, 150], atol=1.5)
    assert found["peak"].unit == u.Jy / u.beam


@pytest.mark.parametrize("value", [0, -1.0, "1", True, None])
def test_config_is_checked(value):
    with pytest.raises(ValueError, match="fwhm_factor"):
        Reconstructor("matched-filter", fwhm_factor=value)


def test_listed_with_its_capabilities():
    assert "matched-filter" in available_backends()
    info = backend_info("matched-filter")
    assert info["capabilities"] == ["needs_psf", "reconstruct", "std"]
    assert info["default_config"] == {"fwhm_factor": 1.0}


def test_needs_a_psf():
    from radiorecon.exceptions import CapabilityError

    with pytest.raises((CapabilityError, ValueError), match="(?i)psf"):
        Reconstructor("matched-filter").predict(np.zeros((32, 32)), progress=False)
