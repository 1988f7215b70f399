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
    ``make_dataset(n, seed=seed, preset=preset, **overrides)``, or a
    ``(crop, crop)`` cut-out of it. Nothing is
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
    crop : int or None
        Side (pixels) of a square cut-out returned instead of the whole
        field. The full field is observed first, so a cut-out carries the
        sidelobes of sources outside it and the primary-beam attenuation of
        its place in the field, as a crop of a real image does. Its centre
        is drawn uniformly within ``placement_radius`` of the phase centre
        (where the sources are; kept inside the field), from a random
        stream of its own: image ``i`` is the same with or without a crop.
        Training on cut-outs of full fields is cheaper than on full fields
        and, unlike small simulated fields, sees what a model meets in a
        512x512 image.
    **overrides
        Parameters replacing the preset's, e.g. ``npix=128`` for small
        training images.

    Raises
    ------
    TypeError
        If ``n`` or ``seed`` is not an integer.
    ValueError
        If ``n`` or ``seed`` is out of range, ``target`` is unknown, or
        ``crop`` is not between 1 and ``npix``.

    Examples
    --------
    >>> from radiorecon.simulate import SimulatedPairs
    >>> pairs = SimulatedPairs(1000, seed=1, npix=64)
    >>> dirty, sky = pairs[0]
    >>> dirty.shape, sky.dtype
    ((64, 64), dtype('float32'))
    >>> SimulatedPairs(1000, seed=1, crop=32, npix=64)[0][0].shape
    (32, 32)
    """

    units = {"input": "Jy / beam", "target": "Jy / pix"}

    def __init__(self, n, *, preset=DEFAULT_PRESET, seed=0, target="apparent", crop=None, **overrides):
        if seed is None:
            raise TypeError("seed must be an integer, not None: the pairs are made from it whenever indexed")
        self.n, self.seed = check_int(n, "n"), check_seed(seed)
        self.target, self.preset = check_target(target), preset
        self.parameters = resolve_parameters(preset, **overrides)
        npix = self.parameters["npix"]
        self.crop = None if crop is None else check_int(crop, "crop", minimum=1, maximum=npix)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = check_index(i, self.n)
        r = simulate_image(self.parameters, self.seed, i)
        sky = r["sky"] * r["setup"].pb if self.target == "apparent" else r["sky"]
        dirty = r["dirty"]
        if self.crop is not None:
            window = self._window(i)
            dirty, sky = dirty[window], sky[window]
        return np.asarray(dirty, dtype=np.float32), np.asarray(sky, dtype=np.float32)

    def _window(self, i):
        """The cut-out of image ``i``: uniform within the placement radius, inside the field."""
        p = self.parameters
        npix, c = p["npix"], self.crop
        # A stream apart from the image's own (seed, i), so that cropping
        # leaves the image unchanged.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, i, 1]))
        radius = p["placement_radius"].to_value("arcsec") / p["pixel_scale"].to_value("arcsec")
        r, phi = radius * np.sqrt(rng.random()), 2 * np.pi * rng.random()
        centre = npix // 2 + np.array([r * np.sin(phi), r * np.cos(phi)])
        y0, x0 = np.clip(np.round(centre - c / 2).astype(int), 0, npix - c)
        return slice(y0, y0 + c), slice(x0, x0 + c)

    def __repr__(self):
        npix = self.parameters["npix"]
        crop = "" if self.crop is None else f" cropped to {self.crop}² px"
        return f"<SimulatedPairs {self.n} pairs of {npix}² px{crop}, preset {self.preset!r}, seed {self.seed}>"
