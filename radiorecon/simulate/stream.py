"""Simulated training pairs made on demand, optionally kept on disk once made."""

import hashlib
import json
import os
from pathlib import Path

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
    cache : str or os.PathLike, optional
        Directory that keeps each pair once simulated (memory-mapped
        float32 ``.npy`` files, ``4 n crop²`` bytes each for inputs and
        targets, and a record of which pairs are made), so that a run of
        many epochs over the same ``n`` pairs, or a later run of the same
        settings, reads them instead of simulating them again: the same
        arrays, bit for bit. Made when missing; several data-loader
        processes may fill it at once (each pair is written by one).
    **overrides
        Parameters replacing the preset's, e.g. ``npix=128`` for small
        training images.

    Raises
    ------
    TypeError
        If ``n`` or ``seed`` is not an integer.
    ValueError
        If ``n`` or ``seed`` is out of range, ``target`` is unknown,
        ``crop`` is not between 1 and ``npix``, or ``cache`` holds pairs of
        other settings.

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

    def __init__(self, n, *, preset=DEFAULT_PRESET, seed=0, target="apparent", crop=None, cache=None, **overrides):
        if seed is None:
            raise TypeError("seed must be an integer, not None: the pairs are made from it whenever indexed")
        self.n, self.seed = check_int(n, "n"), check_seed(seed)
        self.target, self.preset = check_target(target), preset
        self.parameters = resolve_parameters(preset, **overrides)
        npix = self.parameters["npix"]
        self.crop = None if crop is None else check_int(crop, "crop", minimum=1, maximum=npix)
        self.cache = None if cache is None else Path(cache)
        self._arrays = None
        if self.cache is not None:
            self._open_cache()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = check_index(i, self.n)
        if self.cache is None:
            return self._simulate(i)
        if self._arrays is None:  # in a data-loader process: the maps are not pickled
            self._open_cache()
        inputs, targets, made = self._arrays
        if not made[i]:
            inputs[i], targets[i] = self._simulate(i)
            made[i] = 1  # after the pair, so that a pair marked made is whole
        return np.array(inputs[i]), np.array(targets[i])

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def _cache_record(self):
        size = self.crop or self.parameters["npix"]
        parameters = json.dumps(self.parameters, sort_keys=True, default=str)
        return {
            "format": "radiorecon.simulate.SimulatedPairs cache", "n": self.n, "seed": self.seed,
            "preset": self.preset, "target": self.target, "crop": self.crop, "shape": [self.n, size, size],
            "parameters_sha256": hashlib.sha256(parameters.encode()).hexdigest(),
        }

    def _open_cache(self):
        record, path = self._cache_record(), self.cache / "pairs.json"
        files = [self.cache / name for name in ("inputs.npy", "targets.npy", "made.npy")]
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path} is not a SimulatedPairs cache record: {exc}") from None
            if found != record:
                differ = sorted(k for k in record if found.get(k) != record[k])
                raise ValueError(f"{self.cache} caches pairs of other settings ({', '.join(differ)} differ); "
                                 "give another directory or remove it")
            try:
                self._arrays = tuple(np.load(f, mmap_mode="r+") for f in files)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.cache} is a damaged SimulatedPairs cache ({exc}); remove it") from None
            if any(len(a) != self.n for a in self._arrays):
                raise ValueError(f"{self.cache} is a damaged SimulatedPairs cache (arrays of the wrong length); "
                                 "remove it")
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        shape = tuple(record["shape"])
        arrays = [np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=shape) for f in files[:2]]
        arrays.append(np.lib.format.open_memmap(files[2], mode="w+", dtype=np.uint8, shape=(self.n,)))
        for a in arrays:
            a.flush()
        # The record last, atomically: a cache without one is made again.
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        self._arrays = tuple(arrays)

    def _simulate(self, i):
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
