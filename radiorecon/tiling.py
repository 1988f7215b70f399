"""Cutting images into overlapping tiles and stitching them without seams.

Tiles overlap by at least ``2 * margin + ramp`` pixels. In each tile the
``margin`` pixels next to an inner edge (one shared with another tile) get
weight zero, because a method with a receptive field of up to ``margin``
pixels sees zero padding there; the next ``ramp`` pixels rise smoothly to
one. Stitching divides the weighted sum by the summed weights, so a local
method gives the same result tiled as on the whole image, and a method with a
wider reach blends without visible seams.

`Tiler.merge` stitches tiles held all at once; a `Stitcher` takes them one by
one, in tile order, and hands back the rows no later tile touches, so the
stitching of many samples of a large image holds a band of about one tile's
height, not the whole image per sample.
"""

import numpy as np

__all__ = ["Tiler", "Stitcher", "center_psf", "tile_size"]


def _starts(length, tile, overlap, multiple=1):
    if length <= tile:
        return [0]
    # Rounding a start moves it by less than a cell: leave that much slack
    # in the overlap, so that no pixel lies in the unweighted margins only.
    overlap += multiple - 1
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    # Starts on the method's grid (a network that bins and downsamples gives
    # the same numbers only for shifts by whole cells); the last tile may run
    # past the image by less than a cell, into zero padding.
    starts = [multiple * int(round(s / multiple)) for s in np.linspace(0, length - tile, n)]
    starts[-1] = multiple * int(np.ceil((length - tile) / multiple))
    return starts


def tile_size(length, max_tile, margin, multiple=1):
    """The tile length that covers ``length`` pixels in evenly sized tiles of at most ``max_tile``.

    Fewest tiles, each as small as they can be (so 700 pixels with tiles of
    at most 512 become two of about 380, not 512 + 512), rounded up to a
    multiple of ``multiple``; ``length`` itself when it fits in one tile.
    """
    if length <= max_tile:
        return length
    overlap = 2 * margin + max(4, max_tile // 16) + multiple - 1
    n = int(np.ceil((length - overlap) / (max_tile - overlap)))
    tile = int(np.ceil((length + (n - 1) * overlap) / n))
    return multiple * int(np.ceil(tile / multiple))


def _ramp(tile, margin, ramp, inner_start, inner_end):
    w = np.ones(tile)
    d = np.arange(tile, dtype=float)
    # Raised cosine from 0 at the margin to 1 after the ramp.
    rise = np.clip((d - margin + 1) / (ramp + 1), 0, 1)
    rise = 0.5 - 0.5 * np.cos(np.pi * rise)
    if inner_start:
        w *= rise
    if inner_end:
        w *= rise[::-1]
    return w


class Tiler:
    """Geometry of overlapping tiles over one image.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    tile_shape : tuple of int or None
        ``(ty, tx)``; `None` for one tile of the whole image.
    margin : int
        Pixels of context the method needs on each side.
    multiple : int
        Tile starts are multiples of it (the cell of a method that bins or
        downsamples its input), so tiles see the image on the method's grid.
    """

    def __init__(self, shape, tile_shape, margin=0, multiple=1):
        self.shape = tuple(int(s) for s in shape)
        self.tile_shape = self.shape if tile_shape is None else tuple(int(t) for t in tile_shape)
        self.margin = int(margin)
        self.starts = []
        self.weights = []
        per_axis = []
        for length, tile in zip(self.shape, self.tile_shape):
            ramp = max(4, tile // 16)
            overlap = 2 * self.margin + ramp
            if length > tile and overlap + multiple - 1 >= tile:
                raise ValueError(
                    f"Tiles of {tile} pixels are too small for a margin of {self.margin} pixels"
                )
            starts = _starts(length, tile, overlap, int(multiple))
            weights = [
                _ramp(tile, self.margin, ramp, i > 0, i < len(starts) - 1)
                for i in range(len(starts))
            ]
            per_axis.append((starts, weights))
        (ys, wys), (xs, wxs) = per_axis
        for y, wy in zip(ys, wys):
            for x, wx in zip(xs, wxs):
                self.starts.append((y, x))
                self.weights.append(np.outer(wy, wx))

    def __len__(self):
        return len(self.starts)

    def split(self, image):
        """Tiles of ``image`` as an ``(n_tiles, ty, tx)`` array, zero-padded where short."""
        return np.stack([self.tile(image, i) for i in range(len(self))])

    def tile(self, image, index):
        """Tile ``index`` of ``image`` as a ``(ty, tx)`` array, zero-padded where short."""
        (y, x), (ty, tx) = self.starts[index], self.tile_shape
        cut = image[y : y + ty, x : x + tx]
        out = np.zeros((ty, tx), dtype=image.dtype)
        out[: cut.shape[0], : cut.shape[1]] = cut
        return out

    def merge(self, tiles):
        """Stitch ``(..., n_tiles, ty, tx)`` tiles into ``(..., ny, nx)``."""
        tiles = np.asarray(tiles)
        if len(self) == 1:
            return tiles[..., 0, : self.shape[0], : self.shape[1]]
        ny, nx = self.shape
        # The tiles' own precision: samples can be large, and float32 is enough.
        total = np.zeros(tiles.shape[:-3] + (ny, nx), dtype=np.result_type(tiles.dtype, np.float32))
        norm = np.zeros((ny, nx))
        for i, ((y, x), w) in enumerate(zip(self.starts, self.weights)):
            h, v = min(ny - y, w.shape[0]), min(nx - x, w.shape[1])
            total[..., y : y + h, x : x + v] += tiles[..., i, :h, :v] * w[:h, :v]
            norm[y : y + h, x : x + v] += w[:h, :v]
        return (total / norm).astype(tiles.dtype)


class Stitcher:
    """Stitch tiles that arrive one at a time, in tile order, into finished bands of rows.

    The bands hold the same numbers as `Tiler.merge` gives for all the tiles
    at once (the same weighted sums, in the same order), but only the rows
    the coming tiles can still touch are kept: ``(..., ty, nx)`` instead of
    ``(..., ny, nx)``.

    Parameters
    ----------
    tiler : `Tiler`
    lead_shape : tuple of int
        Shape of the tiles' leading axes, e.g. ``(n_samples,)``.
    dtype : dtype
        Of the tiles and the bands.
    """

    def __init__(self, tiler, lead_shape=(), dtype=np.float32):
        self.tiler = tiler
        self.dtype = np.dtype(dtype)
        # One tile is the image itself (as in Tiler.merge): no sums to hold.
        height = 0 if len(tiler) == 1 else min(tiler.tile_shape[0], tiler.shape[0])
        self._total = np.zeros(tuple(lead_shape) + (height, tiler.shape[1]),
                               dtype=np.result_type(self.dtype, np.float32))
        self._norm = np.zeros((height, tiler.shape[1]))
        self._top = 0  # image row of the buffer's first row
        self._next = 0  # index of the tile expected next

    @property
    def done(self):
        """Whether every tile has been added (and every row handed back)."""
        return self._next == len(self.tiler)

    def add(self, tile):
        """Add the next tile, ``(..., ty, tx)``.

        Returns
        -------
        band : tuple or None
            ``(row, array)``: rows ``row`` to ``row + len`` of the stitched
            image, ``(..., rows, nx)``, that no later tile touches; None
            when this tile finished no row.
        """
        tiler, i = self.tiler, self._next
        if i >= len(tiler):
            raise ValueError(f"all {len(tiler)} tiles have been added already")
        (y, x), w = tiler.starts[i], tiler.weights[i]
        ny, nx = tiler.shape
        if len(tiler) == 1:
            self._next = 1
            return 0, np.asarray(tile)[..., :ny, :nx].astype(self.dtype, copy=False)
        h, v = min(ny - y, w.shape[0]), min(nx - x, w.shape[1])
        top = y - self._top
        self._total[..., top : top + h, x : x + v] += np.asarray(tile)[..., :h, :v] * w[:h, :v]
        self._norm[top : top + h, x : x + v] += w[:h, :v]
        self._next += 1
        # Tiles come row by row with rising starts: the rows above the next
        # tile's start are final.
        end = ny if self._next == len(tiler) else tiler.starts[self._next][0]
        done = end - self._top
        if done <= 0:
            return None
        band = (self._total[..., :done, :] / self._norm[:done]).astype(self.dtype)
        keep = self._norm.shape[0] - done
        self._total[..., :keep, :] = self._total[..., done:, :]
        self._total[..., keep:, :] = 0
        self._norm[:keep] = self._norm[done:]
        self._norm[keep:] = 0
        row, self._top = self._top, end
        return row, band


def center_psf(psf, shape):
    """Cut or zero-pad a PSF to ``shape`` with its peak at ``(ny // 2, nx // 2)``, peak 1.

    Parameters
    ----------
    psf : `~numpy.ndarray`
        2-D point-spread function of any size, NaN-free.
    shape : tuple of int

    Returns
    -------
    `~numpy.ndarray`
    """
    psf = np.asarray(psf, dtype=float)
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    peak = psf[py, px]
    if not peak > 0:
        raise ValueError("The PSF has no positive peak")
    ny, nx = shape
    out = np.zeros(shape)
    # Offsets from the peak that exist in both arrays.
    y0, y1 = max(-(ny // 2), -py), min(ny - ny // 2, psf.shape[0] - py)
    x0, x1 = max(-(nx // 2), -px), min(nx - nx // 2, psf.shape[1] - px)
    out[ny // 2 + y0 : ny // 2 + y1, nx // 2 + x0 : nx // 2 + x1] = psf[py + y0 : py + y1, px + x0 : px + x1]
    return out / peak
