import numpy as np
import pytest
from scipy.ndimage import convolve

from radiorecon.tiling import Stitcher, Tiler, center_psf


@pytest.mark.parametrize("shape", [(300, 217), (64, 64), (65, 200), (20, 30)])
def test_tiled_local_operator_equals_whole_image(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape)
    kernel = rng.normal(size=(7, 7))
    tiler = Tiler(shape, (64, 64), margin=3)
    tiles = tiler.split(image)
    assert tiles.shape == (len(tiler), 64, 64)
    stitched = tiler.merge(np.stack([convolve(t, kernel, mode="constant") for t in tiles]))
    np.testing.assert_allclose(stitched, convolve(image, kernel, mode="constant"), atol=1e-12)


def test_tiles_cover_and_overlap():
    tiler = Tiler((300, 217), (64, 64), margin=3)
    covered = np.zeros((300, 217))
    for (y, x), w in zip(tiler.starts, tiler.weights):
        covered[y : y + 64, x : x + 64] += w[: 300 - y, : 217 - x]
    assert covered.min() > 0.5


def test_margin_too_large():
    with pytest.raises(ValueError, match="too small for a margin"):
        Tiler((200, 200), (32, 32), margin=16)


def test_center_psf_cuts_pads_and_normalises():
    psf = np.zeros((9, 11))
    psf[3, 6] = 4.0
    psf[3, 7] = 2.0
    small = center_psf(psf, (4, 4))
    assert small[2, 2] == 1.0 and small[2, 3] == 0.5 and small.sum() == 1.5
    big = center_psf(psf, (32, 33))
    assert big[16, 16] == 1.0 and big[16, 17] == 0.5
    with pytest.raises(ValueError, match="no positive peak"):
        center_psf(np.zeros((4, 4)), (4, 4))


def test_stitcher_hands_back_the_merge_band_by_band():
    rng = np.random.default_rng(1)
    tiler = Tiler((300, 217), (64, 64), margin=3)
    tiles = rng.normal(size=(3, len(tiler), 64, 64)).astype(np.float32)
    stitcher = Stitcher(tiler, (3,))
    bands = [band for t in range(len(tiler)) if (band := stitcher.add(tiles[:, t])) is not None]
    assert stitcher.done
    # Contiguous bands from the first row to the last, never more than a tile high held.
    rows = [row for row, _ in bands]
    assert rows[0] == 0 and all(r + b.shape[1] == n for (r, b), n in zip(bands, rows[1:] + [300]))
    assert stitcher._total.shape == (3, 64, 217)
    stitched = np.concatenate([band for _, band in bands], axis=1)
    assert stitched.dtype == np.float32
    np.testing.assert_array_equal(stitched, tiler.merge(tiles))
    with pytest.raises(ValueError, match=f"all {len(tiler)} tiles have been added"):
        stitcher.add(tiles[:, 0])


def test_one_tile_is_handed_back_whole():
    tiler = Tiler((20, 30), (64, 64))
    tile = np.random.default_rng(2).normal(size=(64, 64))
    row, band = Stitcher(tiler, dtype=tile.dtype).add(tile)
    assert row == 0
    np.testing.assert_array_equal(band, tile[:20, :30])
