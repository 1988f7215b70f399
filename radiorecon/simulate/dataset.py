"""Simulated data sets on disk: written in parallel, resumable, read lazily.

Layout of a data set directory::

    config.json       preset, overrides, all resolved parameters, seed, n,
                      shard size, radiorecon version
    images.ecsv       per image: image_id, phase centre ra/dec (deg), psf_index
    psf.npy           (n_psf, 2 npix, 2 npix) float32 PSF bank, peak 1 at
                      pixel npix (twice the image size, as CLEAN needs)
    psf_bank.ecsv     per PSF: declination it was computed at, fitted beam,
                      expected image noise rms
    primary_beam.npy  (npix, npix) float32 primary-beam gain
    shards/dirty_KKKKK.npy, shards/sky_KKKKK.npy
                      (shard_size, npix, npix) float32, Jy/beam and Jy/pixel
    shards/truth_KKKKK.npy
                      the shard's truth rows; written last, it marks the
                      shard complete
    truth.ecsv        truth catalog of all images (written when all shards are)

PSFs are stored as a bank with an index rather than one per image: the uv
coverage depends on the phase centre only through its declination, which is
rounded to ``psf_dec_step`` (0.25 deg by default, where the beam changes by
about 0.1 %), so a 2 deg field needs 9 PSFs instead of one per image, which
would double the size of the data set. The worker processes read the bank
instead of gridding the PSFs again.
"""

import json
import math
import os
import secrets
import shutil

import astropy.units as u
import numpy as np
from astropy.table import QTable

from .. import __version__
from .._files import atomic_path, is_temporary
from .observe import _draw_centre, _rng, _setup, _simulate, common_meta, image_meta, image_wcs, truth_table
from .presets import DEFAULT_PRESET, from_json, resolve_parameters, to_json

__all__ = ["make_dataset", "load_dataset", "SimulatedDataset"]

FORMAT = "radiorecon.simulate.dataset"
FORMAT_VERSION = 1
_PLAN_FILES = ("images.ecsv", "psf.npy", "psf_bank.ecsv", "primary_beam.npy")
_OWN_FILES = ("config.json", *_PLAN_FILES, "truth.ecsv", "shards")
# The settings that make a data set what it is; the rest (workers, progress)
# only say how it is made.
_IDENTITY = ("format_version", "radiorecon_version", "preset", "parameters", "seed", "n", "shard_size")
_TRUTH_DTYPE = np.dtype(
    [("image_id", "i8")] + [(name, "f8") for name in (
        "x", "y", "ra", "dec", "flux", "fwhm_major", "fwhm_minor", "pa", "pb_gain", "peak_snr")]
)


def check_index(i, n):
    """Image ``i`` (negative counts from the end) of ``n``, as a non-negative int."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"data set indices are integers, not {type(i).__name__}")
    j = int(i) + n if i < 0 else int(i)
    if not 0 <= j < n:
        raise IndexError(f"image {i} out of range for a data set of {n}")
    return j


def check_target(target):
    """``target`` of a pairs data set: ``"apparent"`` (sky x primary beam) or ``"sky"``."""
    if target not in ("apparent", "sky"):
        raise ValueError(f"target must be 'apparent' or 'sky', not {target!r}")
    return target


def _shard_name(kind, k):
    return os.path.join("shards", f"{kind}_{k:05d}.npy")


def _atomic_save(path, array):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _atomic_write_table(path, table):
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv")


def _preload(out, params):
    """Give this process's PSF bank the PSFs and beams already in ``out``."""
    setup = _setup(params)
    if getattr(setup, "preloaded_from", None) == out:
        return
    from radio_beam import Beam

    psfs = np.load(os.path.join(out, "psf.npy"), mmap_mode="r")
    for row in QTable.read(os.path.join(out, "psf_bank.ecsv"), format="ascii.ecsv"):
        beam = Beam(major=row["beam_major"], minor=row["beam_minor"], pa=row["beam_pa"])
        psf2 = np.array(psfs[row["psf_index"]])
        setup.coverage(float(row["declination"].to_value(u.deg)), psf2=psf2, beam=beam)
    setup.preloaded_from = out


def _make_shard(out, params, seed, k, start, stop):
    """Simulate images ``start:stop`` and write shard ``k``; runs in the workers."""
    _preload(out, params)
    dirty, sky, rows = [], [], []
    for i in range(start, stop):
        r = _simulate(params, seed, i)
        dirty.append(r["dirty"])
        sky.append(r["sky"])
        comps = r["components"]
        for j in range(len(comps["x"])):
            rows.append((i, comps["x"][j], comps["y"][j], r["src_ra"][j], r["src_dec"][j], comps["flux"][j],
                         comps["fwhm_major"][j], comps["fwhm_minor"][j], comps["pa"][j],
                         r["pb_gain"][j], r["peak_snr"][j]))
    _atomic_save(os.path.join(out, _shard_name("dirty", k)), np.stack(dirty))
    _atomic_save(os.path.join(out, _shard_name("sky", k)), np.stack(sky))
    _atomic_save(os.path.join(out, _shard_name("truth", k)), np.array(rows, dtype=_TRUTH_DTYPE))
    return stop - start


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _claim(out, config, overwrite):
    """Make ``out`` ready; True when it holds a partial run of the same data set."""
    if os.path.isdir(out) and os.listdir(out):
        if overwrite:
            for name in _OWN_FILES:
                path = os.path.join(out, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        elif os.path.exists(os.path.join(out, "config.json")):
            with open(os.path.join(out, "config.json")) as f:
                stored = json.load(f)
            differ = [key for key in _IDENTITY if stored.get(key) != config[key]]
            if differ:
                if "parameters" in differ:
                    a, b = stored.get("parameters") or {}, config["parameters"]
                    differ += [f"parameters[{k!r}]" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                raise ValueError(
                    f"{out} holds a different simulated data set (it differs in: {', '.join(differ)}); "
                    "pass overwrite=True to replace it, or choose another directory"
                )
            return True
        else:
            raise FileExistsError(
                f"{out} exists and is not a radiorecon simulated data set; "
                "pass overwrite=True to write one there anyway, or choose another directory"
            )
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    return False


def _write_plan(out, params, seed, n):
    """images.ecsv, the PSF bank and the primary beam, made by the parent process."""
    setup = _setup(params)
    centres = np.array([_draw_centre(_rng(seed, i), params) for i in range(n)])
    bins = np.array([setup.dec_bin(dec) for dec in centres[:, 1]])
    bank, index = np.unique(bins, return_inverse=True)
    covs = [setup.coverage(b) for b in bank]
    _atomic_save(os.path.join(out, "psf.npy"), np.stack([cov.psf2 for cov in covs]))
    _atomic_save(os.path.join(out, "primary_beam.npy"), setup.pb)
    _atomic_write_table(os.path.join(out, "psf_bank.ecsv"), QTable({
        "psf_index": np.arange(len(bank)),
        "declination": bank * u.deg,
        "beam_major": [cov.beam.major.to_value(u.arcsec) for cov in covs] * u.arcsec,
        "beam_minor": [cov.beam.minor.to_value(u.arcsec) for cov in covs] * u.arcsec,
        "beam_pa": [cov.beam.pa.to_value(u.deg) for cov in covs] * u.deg,
        "noise_rms": [setup.image_rms(cov) for cov in covs] * u.Jy / u.beam,
    }))
    _atomic_write_table(os.path.join(out, "images.ecsv"), QTable({
        "image_id": np.arange(n), "ra": centres[:, 0] * u.deg, "dec": centres[:, 1] * u.deg,
        "psf_index": index,
    }))


def make_dataset(n, *, preset=DEFAULT_PRESET, seed=None, out, overwrite=False, workers=None,
                 progress=True, shard_size=None, **overrides):
    """Simulate ``n`` observations and write them as a reusable data set.

    Image ``i`` depends only on ``(seed, i)`` and the parameters, so the
    data are the same whatever the number of workers, and equal to
    ``observe(seed=seed, index=i, preset=preset, **overrides)``. Shards are
    written atomically: after an interruption, the same call again skips the
    complete shards and makes the rest.

    Parameters
    ----------
    n : int
        Number of images.
    preset : str
        Recipe name (see `~radiorecon.simulate.available_presets`).
    seed : int, optional
        Base seed; None draws one, recorded in ``config.json``.
    out : str or os.PathLike
        Directory of the data set (created if needed).
    overwrite : bool
        Replace a different data set (or write into a non-empty directory
        that holds none); only the data set's own files are removed.
    workers : int, optional
        Processes to use (default: the CPUs available to this process); 1
        works in this process.
    progress : bool
        Show a progress bar (tqdm).
    shard_size : int, optional
        Images per shard file; default ``ceil(n / 16)``, between 1 and 128.
    **overrides
        Parameters replacing the preset's (see `~radiorecon.simulate.observe`).

    Returns
    -------
    dataset : `~radiorecon.simulate.SimulatedDataset`
        The complete data set, opened for reading.

    Raises
    ------
    ValueError
        If ``out`` holds a data set made with other settings (the message
        names them) and ``overwrite`` is False.
    FileExistsError
        If ``out`` is a non-empty directory without a data set and
        ``overwrite`` is False.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    n = int(n)
    params = resolve_parameters(preset, **overrides)
    if seed is None:
        seed = secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    shard_size = int(shard_size or min(128, max(1, math.ceil(n / 16))))
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    out = os.fspath(out)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "radiorecon_version": __version__,
        "preset": preset, "overrides": {k: v for k, v in to_json(params).items() if k in overrides},
        "parameters": to_json(params), "seed": int(seed), "n": n, "shard_size": shard_size,
        "npix": params["npix"], "pixel_scale_arcsec": params["pixel_scale"].to_value(u.arcsec),
        "meta": common_meta(_setup(params), seed=seed, preset=preset),
    }
    config = json.loads(json.dumps(config))  # as it will read back, for comparisons
    resumed = _claim(out, config, overwrite)
    if not resumed:
        with atomic_path(os.path.join(out, "config.json")) as tmp, open(tmp, "w") as f:
            json.dump(config, f, indent=1)
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    for name in os.listdir(os.path.join(out, "shards")):
        if is_temporary(name):  # left by an interrupted run
            os.remove(os.path.join(out, "shards", name))
    if not all(os.path.exists(os.path.join(out, name)) for name in _PLAN_FILES):
        _write_plan(out, params, int(seed), n)

    shards = [(k, k * shard_size, min(n, (k + 1) * shard_size)) for k in range(math.ceil(n / shard_size))]
    todo = [s for s in shards if not os.path.exists(os.path.join(out, _shard_name("truth", s[0])))]
    from tqdm.auto import tqdm

    with tqdm(total=n, initial=n - sum(b - a for _, a, b in todo), desc="simulating", unit="image",
              disable=not progress) as bar:
        if workers == 1 or len(todo) <= 1:
            for k, a, b in todo:
                bar.update(_make_shard(out, params, int(seed), k, a, b))
        else:
            _run_pool(out, params, int(seed), todo, min(workers, len(todo)), bar)

    truth = [np.load(os.path.join(out, _shard_name("truth", k))) for k, _, _ in shards]
    rows = np.concatenate(truth) if truth else np.zeros(0, _TRUTH_DTYPE)
    comps = {c: rows[c] for c in ("x", "y", "flux", "fwhm_major", "fwhm_minor", "pa")}
    table = truth_table(rows["image_id"], comps, rows["ra"], rows["dec"], rows["pb_gain"], rows["peak_snr"])
    _atomic_write_table(os.path.join(out, "truth.ecsv"), table)
    return SimulatedDataset(out)


def _run_pool(out, params, seed, todo, workers, bar):
    import concurrent.futures
    import multiprocessing

    # spawn: forking a process that has started threads (torch, BLAS) can
    # deadlock; a fresh interpreter costs ~2 s of imports once per worker.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures = [pool.submit(_make_shard, out, params, seed, k, a, b) for k, a, b in todo]
        for future in concurrent.futures.as_completed(futures):
            bar.update(future.result())
    except BaseException:
        # Complete shards are on disk; the next call resumes after them.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def load_dataset(path, *, target="apparent"):
    """Open a data set written by `~radiorecon.simulate.make_dataset`.

    Parameters
    ----------
    path : str or os.PathLike
        The data set's directory.
    target : {"apparent", "sky"}
        What ``ds[i]`` pairs with the dirty image (see `SimulatedDataset`).

    Returns
    -------
    dataset : `~radiorecon.simulate.SimulatedDataset`
        The same as ``SimulatedDataset(path)``.
    """
    return SimulatedDataset(path, target=target)


class SimulatedDataset:
    """A simulated data set on disk, read lazily.

    ``ds[i]`` is the pair ``(dirty, sky)`` of float32 ``(npix, npix)``
    arrays in Jy/beam and Jy/pixel, read from memory-mapped shards, so the
    data set can be far larger than memory. It works as it is with
    `radiorecon.Reconstructor.fit` and as a map-style torch dataset.

    Parameters
    ----------
    path : str or os.PathLike
        Directory written by `~radiorecon.simulate.make_dataset`.
    target : {"apparent", "sky"}
        The sky of the pairs: ``"apparent"`` (default) is the sky times the
        primary beam, what the dirty image shows and what a translation-
        invariant network can learn to recover (divide by `primary_beam` for
        the true sky); ``"sky"`` is the true sky. `sky` always gives the
        true sky.

    Attributes
    ----------
    units : dict
        ``{"input": "Jy / beam", "target": "Jy / pix"}``.
    config : dict
        The contents of ``config.json``.
    images : `~astropy.table.QTable`
        Per image: ``image_id``, phase centre ``ra``, ``dec`` and ``psf_index``.

    Raises
    ------
    ValueError
        If ``path`` holds no data set, or an incomplete one (rerun
        `~radiorecon.simulate.make_dataset` with the same arguments to finish it).
    """

    units = {"input": "Jy / beam", "target": "Jy / pix"}

    def __init__(self, path, *, target="apparent"):
        self.target = check_target(target)
        self._pb = None
        self.path = os.fspath(path)
        config_path = os.path.join(self.path, "config.json")
        if not os.path.exists(config_path):
            raise ValueError(f"{self.path} holds no simulated data set (no config.json)")
        with open(config_path) as f:
            self.config = json.load(f)
        if self.config.get("format") != FORMAT or self.config.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{self.path}: not a data set this version of radiorecon can read")
        if not os.path.exists(os.path.join(self.path, "truth.ecsv")):
            raise ValueError(
                f"{self.path} holds an incomplete data set; run make_dataset again with the same "
                "arguments to finish it"
            )
        self._n, self._shard = self.config["n"], self.config["shard_size"]
        self.images = QTable.read(os.path.join(self.path, "images.ecsv"), format="ascii.ecsv")
        self._maps = {}
        self._truth = None

    def __len__(self):
        return self._n

    def _index(self, i):
        return check_index(i, self._n)

    def _array(self, kind, i):
        k, j = divmod(self._index(i), self._shard)
        key = (kind, k)
        if key not in self._maps:
            self._maps[key] = np.load(os.path.join(self.path, _shard_name(kind, k)), mmap_mode="r")
        # A copy: writable (torch warns about read-only arrays) and detached from the file.
        return np.array(self._maps[key][j])

    def __getitem__(self, i):
        sky = self._array("sky", i)
        if self.target == "apparent":
            if self._pb is None:
                self._pb = self.primary_beam
            sky *= self._pb
        return self._array("dirty", i), sky

    def __getstate__(self):
        # Memory maps are not sent to DataLoader worker processes; they reopen them.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __repr__(self):
        npix, preset = self.config["npix"], self.config["preset"]
        return f"<SimulatedDataset {self.path!r}: {self._n} images of {npix}² px, preset {preset!r}>"

    @property
    def parameters(self):
        """The resolved simulation parameters."""
        return from_json(self.config["parameters"])

    @property
    def truth(self):
        """Truth catalog of all images (`~astropy.table.QTable`, see `~radiorecon.simulate.observe`)."""
        if self._truth is None:
            self._truth = QTable.read(os.path.join(self.path, "truth.ecsv"), format="ascii.ecsv")
        return self._truth

    @property
    def primary_beam(self):
        """Primary-beam gain on the image grid (float32 array)."""
        return np.load(os.path.join(self.path, "primary_beam.npy"))

    def _bank(self):
        if "psf" not in self._maps:
            self._maps["psf"] = np.load(os.path.join(self.path, "psf.npy"), mmap_mode="r")
            self._maps["bank"] = QTable.read(os.path.join(self.path, "psf_bank.ecsv"), format="ascii.ecsv")
        return self._maps["psf"], self._maps["bank"]

    def wcs(self, i):
        """Celestial WCS of image ``i``."""
        row = self.images[self._index(i)]
        return image_wcs(row["ra"].to_value(u.deg), row["dec"].to_value(u.deg),
                         self.config["npix"], self.config["pixel_scale_arcsec"])

    def beam(self, i):
        """Fitted clean beam of image ``i`` (`radio_beam.Beam`)."""
        from radio_beam import Beam

        row = self._bank()[1][int(self.images["psf_index"][self._index(i)])]
        return Beam(major=row["beam_major"], minor=row["beam_minor"], pa=row["beam_pa"])

    def _meta(self, i):
        j = self._index(i)
        row = self._bank()[1][int(self.images["psf_index"][j])]
        noise = row["noise_rms"].to_value(u.Jy / u.beam)
        return image_meta(self.config["meta"], self.beam(j), noise_rms=noise, index=j)

    def image(self, i):
        """Dirty image ``i`` as `~astropy.nddata.CCDData` (Jy/beam, WCS, beam in meta)."""
        from astropy.nddata import CCDData

        return CCDData(self._array("dirty", i), unit=u.Jy / u.beam, wcs=self.wcs(i), meta=self._meta(i))

    def sky(self, i):
        """True sky ``i`` as `~astropy.nddata.CCDData` (Jy/pixel, WCS)."""
        from astropy.nddata import CCDData

        return CCDData(self._array("sky", i), unit=u.Jy / u.pix, wcs=self.wcs(i))

    def psf(self, i, *, full=False):
        """PSF of image ``i`` as `~astropy.nddata.CCDData`, peak 1.

        ``npix x npix`` with the peak at pixel ``npix // 2`` and the image's
        WCS; with ``full=True``, the stored ``2 npix x 2 npix`` PSF (peak at
        pixel ``npix``) and a WCS with the reference pixel moved there.
        """
        from astropy.nddata import CCDData

        psfs, _ = self._bank()
        n = self.config["npix"]
        k = int(self.images["psf_index"][self._index(i)])
        wcs = self.wcs(i)
        if full:
            wcs.wcs.crpix = [n + 1, n + 1]
            return CCDData(np.array(psfs[k]), unit=u.one, wcs=wcs, meta=self._meta(i))
        lo = n - n // 2
        return CCDData(np.array(psfs[k, lo : lo + n, lo : lo + n]), unit=u.one, wcs=wcs, meta=self._meta(i))
