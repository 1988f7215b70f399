"""Tests of `radiorecon.resample.reproject_model`: flux, errors and masks on a new grid."""

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import NDData, StdDevUncertainty
from astropy.wcs import WCS

from radiorecon.exceptions import RadioreconWarning
from radiorecon.resample import reproject_model
from radiorecon.result import Reconstruction


def grid(scale, n, rotation=0.0):
    """A SIN grid of ``n`` x ``n`` pixels of ``scale`` arcsec around the same centre."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    wcs.wcs.pc = [[c, -s], [s, c]]
    return wcs


FINE, COARSE = grid(0.1, 96), grid(0.2, 48)
POINTS = [(48, 48), (31, 60), (70, 25), (52, 71)]  # (x, y) on the fine grid


def points(flux=1e-3):
    data = np.zeros((96, 96))
    for x, y in POINTS:
        data[y, x] = flux
    return data


def test_point_sources_keep_their_flux_there_and_back():
    model = Reconstruction(points(), unit=u.Jy / u.pix, wcs=FINE)
    coarse = reproject_model(model, COARSE, (48, 48))
    assert coarse.unit == u.Jy / u.pix and coarse.data.shape == (48, 48)
    assert coarse.wcs.wcs.cdelt[1] == pytest.approx(0.2 / 3600)
    assert np.nansum(coarse.data) == pytest.approx(4e-3, rel=0.01)
    # Each source's flux lands around its position on the new grid.
    for x, y in POINTS:
        cx, cy = np.round(COARSE.world_to_pixel(FINE.pixel_to_world(x, y))).astype(int)
        assert np.nansum(coarse.data[cy - 2:cy + 3, cx - 2:cx + 3]) == pytest.approx(1e-3, rel=0.01)
    back = reproject_model(coarse, FINE, (96, 96))
    assert np.nansum(back.data) == pytest.approx(4e-3, rel=0.01)
    # Rotated, finer pixels, in mJy: the unit is kept, the flux too.
    mjy = Reconstruction(points(1.0), unit=u.mJy / u.pix, wcs=FINE)
    rotated = reproject_model(mjy, grid(0.07, 137, rotation=30), (137, 137))
    assert rotated.unit == u.mJy / u.pix
    assert np.nansum(rotated.data) == pytest.approx(4.0, rel=0.01)


def test_samples_and_components_are_resampled_as_fluxes():
    samples = np.stack([points() * (1 + 0.1 * k) for k in range(3)])
    components = np.stack([points() * (np.arange(96) < 48), points() * (np.arange(96) >= 48)])
    model = Reconstruction(points(), unit=u.Jy / u.pix, wcs=FINE, samples=samples, components=components)
    coarse = reproject_model(model, COARSE.to_header(), (48, 48))  # a FITS header works too
    assert coarse.samples.shape == (3, 48, 48) and coarse.components.shape == (2, 48, 48)
    np.testing.assert_allclose(np.nansum(coarse.samples, axis=(1, 2)), 4e-3 * np.array([1.0, 1.1, 1.2]),
                               rtol=0.01)
    np.testing.assert_allclose(np.nansum(coarse.components, axis=0), coarse.data, atol=1e-12)


def test_per_pixel_errors_add_in_quadrature():
    sigma = np.full((96, 96), 1e-4)
    model = Reconstruction(points(), unit=u.Jy / u.pix, wcs=FINE, uncertainty=StdDevUncertainty(sigma))
    coarse = reproject_model(model, COARSE, (48, 48))
    # Four independent pixels of error s merge into one of error 2 s.
    inner = coarse.uncertainty.array[4:-4, 4:-4]
    np.testing.assert_allclose(inner, 2e-4, rtol=1e-6)
    assert coarse.uncertainty.unit == u.Jy / u.pix
    # Split again, the quadrature sum over each group of four keeps 2 s.
    back = reproject_model(coarse, FINE, (96, 96))
    np.testing.assert_allclose(back.uncertainty.array[8:-8, 8:-8], 1e-4, rtol=1e-6)
    # An error in another flux per pixel is converted to the model's unit.
    mjy = Reconstruction(points(), unit=u.Jy / u.pix, wcs=FINE,
                         uncertainty=StdDevUncertainty(sigma * 1e3, unit=u.mJy / u.pix))
    np.testing.assert_allclose(reproject_model(mjy, COARSE, (48, 48)).uncertainty.array[4:-4, 4:-4], 2e-4,
                               rtol=1e-6)


def test_masked_and_uncovered_pixels_are_masked():
    data = points()
    data[:, :20] = np.nan  # blank input
    mask = np.zeros(data.shape, bool)
    mask[80:] = True  # masked input
    model = Reconstruction(data, unit=u.Jy / u.pix, wcs=FINE, mask=mask)
    # A larger grid (fine pixel x lands on 7.75 + x / 2) reaches beyond the model.
    out = reproject_model(model, grid(0.2, 64), (64, 64))
    assert out.mask[:, :7].all() and out.mask[:7].all() and out.mask[57:].all()  # outside the model
    assert out.mask[:, 8:17].all()  # over the blank columns
    assert out.mask[49:].all()  # over the masked rows
    assert not out.mask[10:46, 19:56].any()
    assert np.isnan(out.data[out.mask]).all() and np.isfinite(out.data[~out.mask]).all()
    assert np.nansum(out.data) == pytest.approx(4e-3, rel=0.01)


def test_bad_inputs_are_refused():
    with pytest.raises(u.UnitConversionError, match="Jy / beam, not a flux per pixel"):
        reproject_model(NDData(points(), unit=u.Jy / u.beam, wcs=FINE), COARSE, (48, 48))
    with pytest.raises(ValueError, match="no celestial WCS"):
        reproject_model(NDData(points(), unit=u.Jy / u.pix), COARSE, (48, 48))
    with pytest.raises(ValueError, match="target_wcs has no celestial WCS"):
        reproject_model(NDData(points(), unit=u.Jy / u.pix, wcs=FINE), None, (48, 48))
    with pytest.raises(ValueError, match="shape_out"):
        reproject_model(NDData(points(), unit=u.Jy / u.pix, wcs=FINE), COARSE, (48, 0))
    with pytest.raises(TypeError, match="NDData"):
        reproject_model(points(), COARSE, (48, 48))
    with pytest.warns(RadioreconWarning, match="no unit"):
        out = reproject_model(NDData(points(), wcs=FINE), COARSE, (48, 48))
    assert out.unit is None and np.nansum(out.data) == pytest.approx(4e-3, rel=0.01)
