import numpy as np
import pytest
import astropy.units as u
from astropy.modeling import models

from radiorecon.beam import beam_kernel, fit_clean_beam


@pytest.mark.parametrize("pa", [0.0, 30.0, -60.0, 89.0])
def test_fit_recovers_an_elliptical_gaussian_with_sidelobes(pa):
    pixel = 0.1 * u.arcsec
    from radio_beam import Beam

    truth = Beam(major=0.89 * u.arcsec, minor=0.62 * u.arcsec, pa=pa * u.deg)
    psf = beam_kernel(truth, pixel, (65, 64))
    yy, xx = np.mgrid[:65, :64]
    r = np.hypot(yy - 32, xx - 32)
    psf = psf + 0.15 * np.cos(r / 2.0) * (r > 12)  # sidelobes outside the main lobe
    beam = fit_clean_beam(psf, pixel)
    assert beam.major.to_value(u.arcsec) == pytest.approx(0.89, rel=0.01)
    assert beam.minor.to_value(u.arcsec) == pytest.approx(0.62, rel=0.01)
    assert (beam.pa.to_value(u.deg) - pa + 90) % 180 - 90 == pytest.approx(0, abs=0.5)


def test_kernel_orientation_follows_the_fits_convention():
    # PA 0: major axis along north (+y); PA 90: along east (-x).
    pixel = 1 * u.arcsec
    from radio_beam import Beam

    north = beam_kernel(Beam(major=6 * u.arcsec, minor=2 * u.arcsec, pa=0 * u.deg), pixel, (31, 31))
    east = beam_kernel(Beam(major=6 * u.arcsec, minor=2 * u.arcsec, pa=90 * u.deg), pixel, (31, 31))
    assert north[15 + 3, 15] > north[15, 15 + 3]
    assert east[15, 15 - 3] > east[15 + 3, 15]
    assert north[15, 15] == 1.0


def test_tiny_main_lobe_is_refused():
    psf = np.zeros((9, 9))
    psf[4, 4] = 1.0
    with pytest.raises(ValueError, match="fewer than 4 pixels"):
        fit_clean_beam(psf, 0.1 * u.arcsec)
