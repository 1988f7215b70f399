import math

import numpy as np
import pytest

from radiorecon.simulate.blends import BlendedScenes
from radiorecon.simulate.optical import optical_parameters, optical_scenes, optical_stamps

POINT = dict(disk_radius_range=(1e-3, 1e-3), magnitude_range=(22.0, 22.0))


@pytest.fixture(scope="module")
def scenes():
    return optical_scenes(3, npix=32, seed=5)


def test_parameters_state_lsst_i_noise_and_depth():
    p = optical_parameters()
    assert p["noise_rms"] == pytest.approx(428.5, abs=0.1)  # electrons/pixel of the 10-year coadd
    assert p["depth_5sigma"] == pytest.approx(27.0, abs=0.01)


def test_reproducible_with_a_seed(scenes):
    again = optical_scenes(3, npix=32, seed=5)
    assert isinstance(scenes, BlendedScenes) and len(scenes) == 3
    np.testing.assert_array_equal(scenes.images, again.images)
    assert not np.array_equal(scenes.images, optical_scenes(3, npix=32, seed=6).images)
    np.testing.assert_array_equal(optical_stamps(2, stamp_size=20, seed=1), optical_stamps(2, stamp_size=20, seed=1))


def test_galaxy_image_sums_to_its_flux():
    p = optical_parameters()
    flux = p["exposure_time"] * 10 ** (-0.4 * (22.0 - p["zero_point"]))
    # A compact galaxy on a stamp wide enough to hold the PSF's wings.
    stamp = optical_stamps(1, stamp_size=101, seed=0, magnitude_range=(22.0, 22.0), disk_radius_range=(0.2, 0.2))
    assert stamp.sum() == pytest.approx(flux, rel=3e-3)


def test_point_like_galaxy_shows_the_psf_fwhm():
    stamp = optical_stamps(1, stamp_size=45, seed=0, **POINT)[0].astype(float)
    assert np.unravel_index(stamp.argmax(), stamp.shape) == (22, 22)
    # Half-maximum area of a round profile: pi (FWHM / 2)^2; pixels are 0.2 arcsec.
    area = (stamp >= stamp.max() / 2).sum()
    assert 2 * math.sqrt(area / math.pi) * 0.2 == pytest.approx(0.7, abs=0.06)


def test_scene_is_sources_plus_noise_of_stated_rms(scenes):
    rms = optical_parameters()["noise_rms"]
    noise = np.concatenate([(im - s.sum(0)).ravel() for im, s in zip(scenes.images, scenes.sources)])
    assert noise.std() == pytest.approx(rms, rel=0.05) and abs(noise.mean()) < 0.1 * rms
    np.testing.assert_allclose(scenes.noise_rms, rms)
    assert scenes.psf.shape == (3, 64, 64) and scenes.psf[0, 32, 32] == 1 and scenes.psf[0].max() == 1
    assert scenes.beam == [None] * 3
    for xy, s, b in zip(scenes.positions, scenes.sources, scenes.blendedness):
        assert len(xy) == len(s) == len(b) and 2 <= len(xy) <= 3
        for (x, y), source in zip(xy, s):  # each galaxy peaks on its position
            assert np.unravel_index(source.argmax(), source.shape) == (int(y), int(x))


def test_isolated_source_has_no_blendedness():
    far = optical_scenes(1, npix=128, n_sources=(2, 2), separation=(60.0, 60.0), seed=0,
                         disk_radius_range=(0.2, 0.3))
    assert far.blendedness[0] == pytest.approx([0.0, 0.0], abs=1e-3)
    twins = dict(magnitude_range=(22.0, 22.0), disk_radius_range=(0.5, 0.5))  # neither outshines the other
    near = optical_scenes(1, npix=32, n_sources=(2, 2), separation=(3.0, 3.0), seed=0, **twins)
    assert (near.blendedness[0] > 0.1).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(psf_fwhm=0.0), "psf_fwhm must be a positive number"),
    (dict(exposure_time=float("nan")), "exposure_time must be a positive number"),
    (dict(disk_radius_range=(0.0, 1.0)), "disk_radius_range must be a range"),
    (dict(bulge_fraction_range=(0.5, 1.5)), "bulge_fraction_range must be a range"),
    (dict(magnitude_range=(25.0, 20.0)), "magnitude_range must be a range"),
    (dict(magnitude_range="faint"), r"magnitude_range must be a \(min, max\) pair"),
])
def test_bad_parameters_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optical_stamps(1, **kwargs)


def test_bad_arguments_refused():
    with pytest.raises(TypeError, match="unknown optical parameters"):
        optical_scenes(1, seeing=0.7)
    with pytest.raises(ValueError, match="n_sources must be a range"):
        optical_scenes(1, n_sources=(3, 2))
    with pytest.raises(ValueError, match="separation must be a range"):
        optical_scenes(1, separation=(-1.0, 2.0))
    with pytest.raises(TypeError, match="stamp_size must be an integer"):
        optical_stamps(1, stamp_size=4.5)
