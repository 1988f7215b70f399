"""Simulated training pairs made on demand, without touching the disk."""

import numpy as np

from .._validate import check_int, check_seed
from .dataset import check_index, check_target
from .engine import simulate_image
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
        Number of distinct images (at least 1).
    preset : str
        Recipe name (see `~radiorecon.simulate.available_presets`).
    seed : int
        Base seed, in ``[0, 2**63 - 1]``.
    target : {"apparent", "sky"}
        Sky times the primary beam (default; see
        `~radiorecon.simulate.SimulatedDataset`) or the true sky.
    **overrides
        Parameters replacing the preset's, e.g. ``npix=128`` for small
        training images.

    Raises
    ------
    TypeError
        If ``n`` or ``seed`` is not an integer.
    ValueError
        If ``n`` or ``seed`` is out of range, or ``target`` is unknown.

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
        if seed is None:
            raise TypeError("seed must be an integer, not None: the pairs are made from it whenever indexed")
        self.n, self.seed = check_int(n, "n"), check_seed(seed)
        self.target, self.preset = check_target(target), preset
        self.parameters = resolve_parameters(preset, **overrides)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        r = simulate_image(self.parameters, self.seed, check_index(i, self.n))
        sky = r["sky"] * r["setup"].pb if self.target == "apparent" else r["sky"]
        return np.asarray(r["dirty"], dtype=np.float32), np.asarray(sky, dtype=np.float32)

    def __repr__(self):
        npix = self.parameters["npix"]
        return f"<SimulatedPairs {self.n} pairs of {npix}² px, preset {self.preset!r}, seed {self.seed}>"
