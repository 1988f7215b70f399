"""Simulated training pairs made on demand, without touching the disk."""

import numpy as np

from .dataset import check_index, check_target
from .observe import _simulate
from .presets import DEFAULT_PRESET, resolve_parameters

__all__ = ["SimulatedPairs"]


class SimulatedPairs:
    """A map-style data set whose pairs are simulated when indexed.

    ``pairs[i]`` is ``(dirty, target)``, float32 ``(npix, npix)`` arrays in
    Jy/beam and Jy/pixel, identical to image ``i`` of
    ``make_dataset(n, seed=seed, preset=preset, **overrides)``. Nothing is
    stored, so a long training run can see fresh images in every epoch
    (make ``n`` as large as the images it should see) and a resumed run sees
    the same images as an uninterrupted one. It works with
    `radiorecon.Reconstructor.fit` and as a torch dataset.

    Parameters
    ----------
    n : int
        Number of distinct images.
    preset : str
        Recipe name (see `~radiorecon.simulate.available_presets`).
    seed : int
        Base seed.
    target : {"apparent", "sky"}
        Sky times the primary beam (default; see
        `~radiorecon.simulate.SimulatedDataset`) or the true sky.
    **overrides
        Parameters replacing the preset's, e.g. ``npix=128`` for small
        training images.

    Examples
    --------
    >>> from radiorecon.simulate import SimulatedPairs
    >>> pairs = SimulatedPairs(1000, seed=1, npix=64)
    >>> dirty, sky = pairs[0]
    >>> dirty.shape, sky.dtype
    ((64, 64), dtype('float32'))
    """

    units = {"input": "Jy / beam", "target": "Jy / pix"}

    def __init__(self, n, *, preset=DEFAULT_PRESET, seed=0, target="apparent", **overrides):
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n must be a positive integer, not {n!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        self.n, self.seed, self.target, self.preset = int(n), int(seed), check_target(target), preset
        self.parameters = resolve_parameters(preset, **overrides)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        r = _simulate(self.parameters, self.seed, check_index(i, self.n))
        sky = r["sky"] * r["setup"].pb if self.target == "apparent" else r["sky"]
        return np.asarray(r["dirty"], dtype=np.float32), np.asarray(sky, dtype=np.float32)

    def __repr__(self):
        npix = self.parameters["npix"]
        return f"<SimulatedPairs {self.n} pairs of {npix}² px, preset {self.preset!r}, seed {self.seed}>"
