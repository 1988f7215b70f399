"""Mosaics of pointings: inverse-variance weighting of the primary-beam-corrected sky, and its uncertainty."""

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import NDData, StdDevUncertainty
from astropy.wcs import WCS

from radiorecon import Reconstruction
from radiorecon.exceptions import InputError
from radiorecon.mosaic import combine_pointings
from radiorecon.simulate.primary_beam import primary_beam_image

PIXEL = 0.2 * u.arcsec
NPIX, STEP, GRID = 48, 24, 96  # 3 x 3 pointings of 48 pixels, 24 apart, on a 96-pixel sky
FWHM = 30 * PIXEL
SOURCES = [(20, 20, 0.01), (48, 48, 0.004), (30, 70, 0.02), (75, 40, 0.006)]  # (y, x, Jy) on the sky grid


def sky_wcs(offset=(0, 0), crval=(150.0, 2.0)):
    """The sky grid's SIN projection, moved by whole pixels: pointings are cut-outs of the sky grid."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = crval
    wcs.wcs.cdelt = [-PIXEL.to_value(u.deg), PIXEL.to_value(u.deg)]
    wcs.wcs.crpix = [GRID / 2 + 1 - offset[1], GRID / 2 + 1 - offset[0]]
    return wcs


def truth():
    sky = np.zeros((GRID, GRID))
    for y, x, flux in SOURCES:
        sky[y, x] = flux
    return sky


def observe(sigmas, seed=0):
    """Pointings whose reconstructions are the apparent sky plus noise of known sigma, and their beams."""
    rng = np.random.default_rng(seed)
    pb = primary_beam_image(NPIX, PIXEL, FWHM)
    sky, pointings = truth(), []
    for k, sigma in enumerate(sigmas):
        y, x = STEP * (k // 3), STEP * (k % 3)
        apparent = pb * sky[y : y + NPIX, x : x + NPIX] + rng.normal(0, sigma, (NPIX, NPIX))
        pointings.append(Reconstruction(apparent, uncertainty=StdDevUncertainty(np.full((NPIX, NPIX), sigma)),
                                        wcs=sky_wcs((y, x)), unit=u.Jy / u.pix))
    return pointings, [pb] * len(pointings)


SIGMAS = [1e-4, 2e-4, 1.5e-4, 3e-4, 1e-4, 2e-4, 2.5e-4, 1e-4, 1.5e-4]


@pytest.fixture(scope="module")
def mosaic():
    pointings, beams = observe(SIGMAS)
    return combine_pointings(pointings, beams, wcs_out=sky_wcs(), shape_out=(GRID, GRID), progress=False)


def test_a_3x3_mosaic_recovers_the_sky_within_its_propagated_errors(mosaic):
    assert isinstance(mosaic, Reconstruction) and mosaic.unit == u.Jy / u.pix
    assert mosaic.meta["RRNPOINT"] == 9 and mosaic.meta["RRPBCUT"] == 0.2
    sigma = mosaic.uncertainty.array
    for y, x, flux in SOURCES:
        assert abs(mosaic.data[y, x] - flux) < 4 * sigma[y, x]
    # (mosaic - truth) is pure noise: in units of the propagated sigma its scatter is 1.
    pull = ((mosaic.data - truth()) / sigma)[~mosaic.mask]
    assert pull.size > 8000
    assert abs(pull.mean()) < 0.05 and abs(pull.std() - 1) < 0.03


def test_the_propagated_sigma_is_one_over_the_root_summed_weights(mosaic):
    pb = primary_beam_image(NPIX, PIXEL, FWHM)
    weight = np.zeros((GRID, GRID))
    for k, sigma in enumerate(SIGMAS):
        y, x = STEP * (k // 3), STEP * (k % 3)
        weight[y : y + NPIX, x : x + NPIX] += np.where(pb >= 0.2, pb**2 / sigma**2, 0)
    np.testing.assert_allclose(mosaic.uncertainty.array[weight > 0], weight[weight > 0] ** -0.5, rtol=1e-5)
    # Where no pointing reaches a gain of 0.2 (the sky's corners), the mosaic is blank.
    np.testing.assert_array_equal(mosaic.mask, weight == 0)
    assert mosaic.mask[0, 0] and np.isnan(mosaic.data[0, 0]) and np.isnan(mosaic.uncertainty.array[0, 0])
    assert not mosaic.mask[GRID // 4 : -GRID // 4, GRID // 4 : -GRID // 4].any()


def test_two_pointings_are_weighted_by_gain_squared_over_variance():
    # Two pointings that disagree, without noise: the mosaic lies between
    # their corrected skies, nearer the one with the larger pb^2 / sigma^2.
    pb = primary_beam_image(NPIX, PIXEL, FWHM)
    one = Reconstruction(pb * 1.0, uncertainty=StdDevUncertainty(np.full((NPIX, NPIX), 1.0)),
                         wcs=sky_wcs(), unit=u.Jy / u.pix)
    two = Reconstruction(pb * 4.0, uncertainty=StdDevUncertainty(np.full((NPIX, NPIX), 2.0)),
                         wcs=sky_wcs((0, STEP // 2)), unit=u.Jy / u.pix)
    result = combine_pointings([one, two], [pb, pb], wcs_out=sky_wcs(), shape_out=(NPIX, NPIX + STEP // 2),
                               progress=False)
    y, x = NPIX // 2, NPIX // 2 + 6  # 6 pixels right of the first centre, 6 left of the second
    g1, g2 = pb[y, x], pb[y, x - STEP // 2]
    w1, w2 = g1**2 / 1.0, g2**2 / 4.0
    assert result.data[y, x] == pytest.approx((w1 * 1 + w2 * 4) / (w1 + w2), rel=1e-6)
    assert result.uncertainty.array[y, x] == pytest.approx((w1 + w2) ** -0.5, rel=1e-6)
    # Where only the first reaches the cut-off, the mosaic is its corrected sky and error.
    assert result.data[y, 2] == pytest.approx(1.0) and result.uncertainty.array[y, 2] == pytest.approx(1 / pb[y, 2])


def test_the_default_grid_covers_every_pointing_and_keeps_the_flux():
    pointings, beams = observe(SIGMAS[:2])  # two pointings side by side, 24 pixels apart
    result = combine_pointings(pointings, beams, progress=False)
    assert result.wcs.has_celestial and result.data.shape[0] >= NPIX and result.data.shape[1] >= NPIX + STEP
    # The new grid (TAN, another reference point) splits the source over pixels; their sum keeps its flux.
    y, x, flux = SOURCES[0]
    sky = result.wcs.world_to_pixel(sky_wcs().pixel_to_world(x, y))
    yy, xx = int(round(float(sky[1]))), int(round(float(sky[0])))
    box = (slice(yy - 2, yy + 3), slice(xx - 2, xx + 3))
    sigma = np.sqrt(np.nansum(result.uncertainty.array[box] ** 2))
    assert abs(np.nansum(result.data[box]) - flux) < 5 * sigma


def test_units_convert_to_the_first_pointing():
    pointings, beams = observe(SIGMAS[:2])
    one = pointings[1]
    milli = Reconstruction(one.data * 1e3, uncertainty=StdDevUncertainty(one.uncertainty.array * 1e3),
                           wcs=one.wcs, unit=u.mJy / u.pix)
    same = combine_pointings(pointings[:2], beams[:2], wcs_out=sky_wcs(), shape_out=(NPIX, GRID), progress=False)
    mixed = combine_pointings([pointings[0], milli], beams[:2], wcs_out=sky_wcs(), shape_out=(NPIX, GRID),
                              progress=False)
    assert mixed.unit == u.Jy / u.pix
    np.testing.assert_allclose(mixed.data, same.data, rtol=1e-5)


@pytest.mark.parametrize("change, match", [
    (lambda p, b: ([p[0], NDData(p[1].data, uncertainty=p[1].uncertainty, unit=p[1].unit)], b),
     "Pointing 1 has no celestial WCS"),
    (lambda p, b: ([p[0], Reconstruction(p[1].data, wcs=p[1].wcs, unit=p[1].unit)], b),
     "Pointing 1 has no uncertainty"),
    (lambda p, b: ([p[0], Reconstruction(p[1].data, uncertainty=StdDevUncertainty(p[1].uncertainty.array),
                                         wcs=p[1].wcs, unit=u.Jy / u.beam)], b),
     r"Pointing 1 is in Jy / beam, not a flux per pixel"),
    (lambda p, b: ([p[0], Reconstruction(p[1].data, uncertainty=StdDevUncertainty(p[1].uncertainty.array),
                                         wcs=p[1].wcs)], b),
     r"Pointing 1 has no unit"),
    (lambda p, b: ([p[0], p[1].data], b), r"Pointing 1 is a ndarray, not an NDData"),
    (lambda p, b: (p, [b[0], b[1][:10]]), r"primary beam of pointing 1 has shape \(10, 48\)"),
    (lambda p, b: (p, [b[0], -b[1]]), "primary beam of pointing 1 has negative or non-finite gains"),
    (lambda p, b: (p, b[:1]), "1 primary beams for 2 pointings"),
])
def test_bad_pointings_are_refused_by_name(change, match):
    pointings, beams = observe(SIGMAS[:2])
    pointings, beams = change(pointings, beams)
    with pytest.raises(InputError, match=match):
        combine_pointings(pointings, beams, wcs_out=sky_wcs(), shape_out=(GRID, GRID), progress=False)


def test_pointings_off_the_output_grid_are_refused():
    pointings, beams = observe(SIGMAS[:2])
    far = sky_wcs(crval=(151.0, 2.0))  # a degree away from every pointing
    with pytest.raises(InputError, match="Pointing 0 does not overlap the output grid"):
        combine_pointings(pointings, beams, wcs_out=far, shape_out=(GRID, GRID), progress=False)
    with pytest.raises(InputError, match="pass shape_out"):
        combine_pointings(pointings, beams, wcs_out=sky_wcs(), progress=False)
    with pytest.raises(InputError, match=r"pb_cutoff must be in \(0, 1\]"):
        combine_pointings(pointings, beams, pb_cutoff=0, progress=False)


def test_a_coarser_mosaic_grid_keeps_the_flux_per_pixel_right(mosaic):
    pointings, beams = observe(SIGMAS)
    coarse = sky_wcs()
    coarse.wcs.cdelt = coarse.wcs.cdelt * 2  # 0.4" pixels: each holds the flux of four
    coarse.wcs.crpix = [GRID / 4 + 0.5, GRID / 4 + 0.5]
    result = combine_pointings(pointings, beams, wcs_out=coarse, shape_out=(GRID // 2, GRID // 2), progress=False)
    for y, x, flux in SOURCES[:3]:
        box = (slice(y // 2 - 1, y // 2 + 2), slice(x // 2 - 1, x // 2 + 2))
        sigma = np.sqrt(np.sum(result.uncertainty.array[box] ** 2))
        assert abs(result.data[box].sum() - flux) < 5 * sigma
    # Four times the flux per pixel: the total over the sources' region matches the fine mosaic's.
    assert np.nansum(result.data[8:40, 8:40]) == pytest.approx(np.nansum(mosaic.data[16:80, 16:80]), rel=0.05)
