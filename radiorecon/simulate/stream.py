"""Simulated training pairs made on demand, optionally kept on disk once made."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import __version__
from .._validate import check_int, check_seed
from .dataset import check_index, check_target
from .engine import simulate_image
from .presets import DEFAULT_PRESET, _check_number, resolve_parameters

__all__ = ["SimulatedPairs"]

_CACHE_FILES = ("inputs.npy", "targets.npy", "made.npy")


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
    crop_anywhere : float, optional
        Fraction (0 to 1) of the cut-outs whose window is drawn uniformly
        over the whole field instead of around the sources' region (drawn
        per image from the window's own stream; 0, the default, gives the
        windows of earlier versions). A model meets every part of a
        512x512 field, sidelobes far from any source included; trained only
        on windows near the sources, it takes those for sources.
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
        ``crop`` is not between 1 and ``npix``, ``crop_anywhere`` is not
        between 0 and 1 (or is given without ``crop``), or ``cache`` holds pairs of
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

    def __init__(self, n, *, preset=DEFAULT_PRESET, seed=0, target="apparent", crop=None, crop_anywhere=0.0,
                 cache=None, **overrides):
        if seed is None:
            raise TypeError("seed must be an integer, not None: the pairs are made from it whenever indexed")
        self.n, self.seed = check_int(n, "n"), check_seed(seed)
        self.target, self.preset = check_target(target), preset
        self.parameters = resolve_parameters(preset, **overrides)
        npix = self.parameters["npix"]
        self.crop = None if crop is None else check_int(crop, "crop", minimum=1, maximum=npix)
        self.crop_anywhere = _check_number("crop_anywhere", crop_anywhere, (0, 1), "crop_anywhere must be")
        if self.crop_anywhere and self.crop is None:
            raise ValueError("crop_anywhere places cut-outs: give crop too")
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
            made[i] = 1  # after the pair: a process killed while writing it leaves it unmarked
        return np.array(inputs[i]), np.array(targets[i])

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def _cache_record(self):
        size = self.crop or self.parameters["npix"]
        parameters = json.dumps(_canonical(self.parameters), sort_keys=True)
        return {
            "format": "radiorecon.simulate.SimulatedPairs cache", "radiorecon_version": __version__,
            "n": self.n, "seed": self.seed, "preset": self.preset, "target": self.target, "crop": self.crop,
            "shape": [self.n, size, size], "parameters_sha256": hashlib.sha256(parameters.encode()).hexdigest(),
            # Only when set, so that the caches of earlier versions still open.
            **({"crop_anywhere": self.crop_anywhere} if self.crop_anywhere else {}),
        }

    def _open_cache(self):
        record, path = self._cache_record(), self.cache / "pairs.json"
        if not path.exists():
            self._make_cache(record)
        if not path.exists():
            raise ValueError(f"{self.cache} holds other files and no SimulatedPairs cache; give another directory")
        try:
            found = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not a SimulatedPairs cache record: {exc}") from None
        if found != record:
            differ = sorted(k for k in record if found.get(k) != record[k])
            raise ValueError(f"{self.cache} caches pairs of other settings ({', '.join(differ)} differ); "
                             "give another directory or remove it")
        files = [self.cache / name for name in _CACHE_FILES]
        try:
            self._arrays = tuple(np.load(f, mmap_mode="r+") for f in files)
        except PermissionError:
            raise  # a read-only cache is not a damaged one: say so as it is
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.cache} is a damaged SimulatedPairs cache ({exc}); remove it") from None
        if any(len(a) != self.n for a in self._arrays):
            raise ValueError(f"{self.cache} is a damaged SimulatedPairs cache (arrays of the wrong length); remove it")

    def _make_cache(self, record):
        """Make the empty cache beside its place and rename it there: whole or not at all, one maker wins."""
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.cache.name}.", dir=self.cache.parent))
        try:
            shape = tuple(record["shape"])
            for name, dtype, s in zip(_CACHE_FILES, (np.float32, np.float32, np.uint8), (shape, shape, shape[:1])):
                np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dtype, shape=s).flush()
            (tmp / "pairs.json").write_text(json.dumps(record, indent=1))
            try:
                os.rename(tmp, self.cache)  # fails if another process made it first, or other files are there
            except OSError:
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _simulate(self, i):
        r = simulate_image(self.parameters, self.seed, i)
        sky = r["sky"] * r["setup"].pb if self.target == "apparent" else r["sky"]
        dirty = r["dirty"]
        if self.crop is not None:
            window = self._window(i)
            dirty, sky = dirty[window], sky[window]
        return np.asarray(dirty, dtype=np.float32), np.asarray(sky, dtype=np.float32)

    def _window(self, i):
        """The cut-out of image ``i``: uniform within the placement radius (or, at ``crop_anywhere``'s rate,
        over the whole field), inside the field."""
        p = self.parameters
        npix, c = p["npix"], self.crop
        # A stream apart from the image's own (seed, i), so that cropping
        # leaves the image unchanged.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, i, 1]))
        radius = p["placement_radius"].to_value("arcsec") / p["pixel_scale"].to_value("arcsec")
        r, phi = radius * np.sqrt(rng.random()), 2 * np.pi * rng.random()
        centre = npix // 2 + np.array([r * np.sin(phi), r * np.cos(phi)])
        y0, x0 = np.clip(np.round(centre - c / 2).astype(int), 0, npix - c)
        # Drawn after the default window's numbers, so that rate 0 leaves every window as it was.
        if self.crop_anywhere and rng.random() < self.crop_anywhere:
            y0, x0 = rng.integers(0, npix - c + 1, size=2)
        y0, x0 = int(y0), int(x0)
        return slice(y0, y0 + c), slice(x0, x0 + c)

    def __repr__(self):
        npix = self.parameters["npix"]
        crop = "" if self.crop is None else f" cropped to {self.crop}² px"
        if self.crop_anywhere:
            crop += f" ({self.crop_anywhere:g} anywhere in the field)"
        return f"<SimulatedPairs {self.n} pairs of {npix}² px{crop}, preset {self.preset!r}, seed {self.seed}>"


def _canonical(value):
    """A JSON-able form of simulation parameters that tells every value apart (arrays hashed in full)."""
    import astropy.units as u

    if isinstance(value, u.Quantity):
        return {"unit": value.unit.to_string(), "value": _canonical(np.asarray(value.value))}
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
