import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.wcs import WCS

import torch

from radiorecon import registry

import _backends

# One thread: on a 2-core machine busy with other work, torch's default of
# one thread per core makes the suite several times slower (its threads spin
# waiting for each other); results do not depend on it.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def test_backends():
    """Register the test backends for the whole session."""
    names = {
        "test-conv": _backends.ConvBackend,
        "test-smooth": _backends.SmoothBackend,
        "test-prior": _backends.PriorBackend,
        "test-split": _backends.SplitBackend,
    }
    for name, cls in names.items():
        registry.register_backend(name, cls, force=True)
    yield names
    for name in names:
        registry.unregister_backend(name)


def celestial_header(ny, nx, *, naxis=2, bunit="Jy/beam"):
    """A CASA-like header: SIN projection, 0.1 arcsec pixels, 230 GHz, with a beam."""
    w = WCS(naxis=naxis)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"][:naxis]
    w.wcs.crval = [150.119, 2.206, 2.3e11, 1.0][:naxis]
    w.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600, 1.875e9, 1.0][:naxis]
    w.wcs.crpix = [nx / 2 + 1, ny / 2 + 1, 1.0, 1.0][:naxis]
    w.wcs.cunit = ["deg", "deg", "Hz", ""][:naxis]
    header = w.to_header()
    if bunit:
        header["BUNIT"] = bunit
    header["BMAJ"] = 0.89 / 3600
    header["BMIN"] = 0.82 / 3600
    header["BPA"] = 30.0
    header["OBJECT"] = "COSMOS-test"
    return header


def gaussian_psf(shape, sigma=2.0):
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    return np.exp(-((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2) / (2 * sigma**2))


@pytest.fixture
def pairs():
    """(dirty, sky) training pairs: point sources blurred by a Gaussian PSF plus noise."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(42)
    n, size = 24, 32
    sky = np.zeros((n, size, size), np.float32)
    for image in sky:
        for _ in range(3):
            image[rng.integers(4, size - 4), rng.integers(4, size - 4)] = rng.uniform(1, 3)
    psf = gaussian_psf((size, size), 1.5)
    dirty = np.stack([fftconvolve(s, psf, mode="same") for s in sky])
    dirty += rng.normal(0, 0.05, dirty.shape)
    return dirty.astype(np.float32), sky


@pytest.fixture
def cube_file(tmp_path):
    """A CASA-style (1, 1, 64, 64) Jy/beam image with a point source and NaN corner."""
    header = celestial_header(64, 64, naxis=4)
    data = np.zeros((1, 1, 64, 64), np.float32)
    data[0, 0] += gaussian_psf((64, 64), 2.0) * 2.0
    data[0, 0, :3, :3] = np.nan
    path = tmp_path / "dirty.image.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    return path


@pytest.fixture
def no_prediction(monkeypatch):
    """Fail the test if a prediction starts: the checks under test must come before it."""
    from radiorecon import Reconstructor

    def predict(*args, **kwargs):
        raise AssertionError("predicted before checking the outputs")

    monkeypatch.setattr(Reconstructor, "predict", predict)


def make_unwritable(monkeypatch, directory):
    """Make ``directory`` read-only, also for root (whom os.access would let write anyway)."""
    import os

    directory.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        not (mode & os.W_OK and os.path.samefile(path, directory)) and real(path, mode, **kw)))


def record_build_devices(monkeypatch, cls):
    """A list that gets the default torch device each time ``cls`` is constructed."""
    built_on = []
    original = cls.__init__

    def spy(self, *args, **kwargs):
        built_on.append(torch.empty(0).device.type)  # the default device while building
        original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    return built_on
