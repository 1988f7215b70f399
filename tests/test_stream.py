"""Cut-outs of simulated full fields (`radiorecon.simulate.SimulatedPairs` with ``crop``)."""

import astropy.units as u
import numpy as np
import pytest

from radiorecon.simulate import SimulatedPairs

FIELD = dict(npix=64, placement_radius=2 * u.arcsec, field_radius=0.3 * u.deg)


def _find(window, image):
    """Where ``window`` sits in ``image``: the (y, x) of its top-left pixel."""
    c = window.shape[0]
    hits = [
        (y, x) for y in range(image.shape[0] - c + 1) for x in range(image.shape[1] - c + 1)
        if np.array_equal(image[y:y + c, x:x + c], window)
    ]
    assert len(hits) == 1
    return hits[0]


def test_crops_are_windows_of_the_full_field():
    full = SimulatedPairs(30, seed=4, **FIELD)
    crops = SimulatedPairs(30, seed=4, crop=16, **FIELD)
    radius_px = 2 / 0.1  # placement radius over the pixel scale
    corners = []
    for i in range(0, 30, 3):
        (d, s), (dc, sc) = full[i], crops[i]
        assert dc.shape == sc.shape == (16, 16)
        # Observed as a whole field, then cut: the same pixels, sidelobes and all.
        y, x = _find(dc, d)
        np.testing.assert_array_equal(sc, s[y:y + 16, x:x + 16])
        # Centred within the placement radius (where the sources are).
        assert np.hypot(y + 8 - 32, x + 8 - 32) <= radius_px + 1
        corners.append((y, x))
    # Drawn anew per image, reproducibly.
    assert len(set(corners)) > 5
    np.testing.assert_array_equal(SimulatedPairs(30, seed=4, crop=16, **FIELD)[9][0], crops[9][0])


def test_crop_stays_inside_the_field():
    # A placement radius larger than the field: windows are clipped to it.
    pairs = SimulatedPairs(20, seed=1, crop=48, npix=64, placement_radius=20 * u.arcsec)
    for i in range(20):
        assert pairs[i][0].shape == (48, 48)
    assert "cropped to 48" in repr(pairs)


def test_crops_anywhere_reach_the_whole_field(tmp_path):
    full = SimulatedPairs(12, seed=4, **FIELD)
    anywhere = SimulatedPairs(12, seed=4, crop=16, crop_anywhere=1.0, **FIELD)
    half = SimulatedPairs(12, seed=4, crop=16, crop_anywhere=0.5, **FIELD)
    default = SimulatedPairs(12, seed=4, crop=16, **FIELD)
    radius_px = 2 / 0.1
    outside = 0
    for i in range(12):
        d, s = full[i]
        y, x = _find(anywhere[i][0], d)
        np.testing.assert_array_equal(anywhere[i][1], s[y:y + 16, x:x + 16])
        outside += np.hypot(y + 8 - 32, x + 8 - 32) > radius_px + 1
        # Each window is either the default one or the one drawn over the field.
        assert any(np.array_equal(half[i][0], w[i][0]) for w in (default, anywhere))
    # Uniform over the 49x49 possible corners: most centres lie beyond the sources' region.
    assert outside >= 4
    assert "0.5 anywhere in the field" in repr(half)
    # A cache of one placement refuses the other; the default's record is that of earlier versions.
    SimulatedPairs(12, seed=4, crop=16, cache=tmp_path / "c", **FIELD)
    assert "crop_anywhere" not in (tmp_path / "c" / "pairs.json").read_text()
    with pytest.raises(ValueError, match="other settings.*crop_anywhere"):
        SimulatedPairs(12, seed=4, crop=16, crop_anywhere=0.5, cache=tmp_path / "c", **FIELD)


@pytest.mark.parametrize("fraction, error", [(1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                             (True, TypeError), ("half", TypeError)])
def test_bad_crop_anywhere(fraction, error):
    with pytest.raises(error, match="crop_anywhere must be"):
        SimulatedPairs(3, seed=1, crop=16, crop_anywhere=fraction, **FIELD)
    with pytest.raises(ValueError, match="give crop too"):
        SimulatedPairs(3, seed=1, crop_anywhere=0.5, **FIELD)


@pytest.mark.parametrize("crop, error", [(0, ValueError), (65, ValueError), (16.0, TypeError), (True, TypeError)])
def test_bad_crop(crop, error):
    with pytest.raises(error, match="crop"):
        SimulatedPairs(3, seed=1, crop=crop, **FIELD)
