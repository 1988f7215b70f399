"""Simulated data sets on disk: written in parallel, resumable, read lazily.

A data set is a directory of ``.npy`` shards and ECSV tables (see
`radiorecon.simulate.layout` for the files). `make_dataset` writes it,
`SimulatedDataset` reads it, and `SimulatedDataset.export_fits` writes
chosen images as FITS files.

PSFs are stored as a bank with an index rather than one per image: the uv
coverage depends on the phase centre only through its declination, which is
rounded to ``psf_dec_step`` (0.25 deg by default, where the beam changes by
about 0.1 %), so a 2 deg field needs 9 PSFs instead of one per image, which
would double the size of the data set. The worker processes read the bank
instead of gridding the PSFs again.
"""

import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import secrets

import astropy.units as u
import numpy as np
from astropy.table import QTable

from .. import __version__
from .._files import atomic_path
from .._validate import check_int, check_seed
from ..exceptions import InputError
from .engine import (
    common_meta, draw_centre, draw_sky, image_meta, image_rng, image_wcs, setup_for, simulate_image,
    source_images, truth_table,
)
from .galaxies import SOURCE_COLUMNS
from .layout import (
    FORMAT, FORMAT_VERSION, TRUTH_DTYPE, check_array, foreign_files, manifest, open_array,
    own_temporaries, read_config, read_table, shard_length, shard_name,
)
from .presets import DEFAULT_PRESET, from_json, resolve_parameters, to_json

__all__ = ["make_dataset", "load_dataset", "SimulatedDataset"]

# The settings that make a data set what it is; the rest (workers, progress)
# only say how it is made.
_IDENTITY = ("format_version", "radiorecon_version", "preset", "parameters", "seed", "n", "shard_size")
# Starting a worker process costs 1-2 s (it imports radiorecon); below this
# many pixels to simulate (64 images of 512², about a second of work) the
# images are made in this process instead. Images smaller than 256² count
# as 256²: their cost is mostly per image, not per pixel.
_IN_PROCESS_PIXELS = 64 * 512**2
_GUARD_FIX = (
    "put the call under `if __name__ == \"__main__\":` (each worker process runs the calling script again "
    "when it starts), or pass workers=1"
)


def check_index(i, n):
    """Image ``i`` (negative counts from the end) of ``n``, as a non-negative int.

    Raises
    ------
    TypeError
        If ``i`` is not an integer.
    IndexError
        If it is out of range (as sequences do, so that iteration stops).
    """
    i = check_int(i, "a data set index", minimum=None)
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(f"image {i} out of range for a data set of {n}")
    return j


def check_target(target):
    """``target`` of a pairs data set: ``"apparent"`` (sky x primary beam) or ``"sky"``."""
    if target not in ("apparent", "sky"):
        raise ValueError(f"target must be 'apparent' or 'sky', not {target!r}")
    return target


def _atomic_save(path, array):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _atomic_write_table(path, table):
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv")


def _read_bank(out, npix):
    """The PSF bank table and its (memory-mapped) PSFs, checked against each other."""
    bank = read_table(os.path.join(out, "psf_bank.ecsv"),
                      ("psf_index", "declination", "beam_major", "beam_minor", "beam_pa", "noise_rms"))
    psfs = open_array(os.path.join(out, "psf.npy"), (len(bank), 2 * npix, 2 * npix), np.float32)
    return bank, psfs


def _preload(out, params):
    """Give this process's PSF bank the PSFs and beams already in ``out``."""
    setup = setup_for(params)
    if setup.preloaded_from == out:
        return
    from radio_beam import Beam

    bank, psfs = _read_bank(out, params["npix"])
    for row in bank:
        beam = Beam(major=row["beam_major"], minor=row["beam_minor"], pa=row["beam_pa"])
        psf2 = np.array(psfs[row["psf_index"]])
        setup.coverage(float(row["declination"].to_value(u.deg)), psf2=psf2, beam=beam)
    setup.preloaded_from = out


def _make_shard(out, params, seed, k, start, stop):
    """Simulate images ``start:stop`` and write shard ``k``; runs in the workers."""
    _preload(out, params)
    dirty, sky, rows = [], [], []
    for i in range(start, stop):
        r = simulate_image(params, seed, i)
        dirty.append(r["dirty"])
        sky.append(r["sky"])
        comps = r["components"]
        for j in range(len(comps["x"])):
            rows.append((i, comps["x"][j], comps["y"][j], r["src_ra"][j], r["src_dec"][j], comps["flux"][j],
                         comps["fwhm_major"][j], comps["fwhm_minor"][j], comps["pa"][j],
                         r["pb_gain"][j], r["peak_snr"][j]))
    _atomic_save(os.path.join(out, shard_name("dirty", k)), np.stack(dirty))
    _atomic_save(os.path.join(out, shard_name("sky", k)), np.stack(sky))
    # Written last: a shard whose truth file is missing is made again.
    _atomic_save(os.path.join(out, shard_name("truth", k)), np.array(rows, dtype=TRUTH_DTYPE))
    return stop - start


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _inspect(out, config, overwrite):
    """Decide what to do with ``out``, without changing anything in it.

    Returns
    -------
    resume : bool
        True when ``out`` holds a run of the same data set, complete or not.
    stale : list of str
        The files of another data set in ``out`` that ``overwrite`` replaces.
    """
    if not os.path.lexists(out):
        return False, []
    if not os.path.isdir(out):
        raise InputError(f"{out} exists and is not a directory; choose another output directory")
    stored = read_config(out)
    if stored is not None and not overwrite:
        differ = [key for key in _IDENTITY if stored.get(key) != config[key]]
        if differ:
            if "parameters" in differ:
                a, b = stored.get("parameters") or {}, config["parameters"]
                differ += [f"parameters[{k!r}]" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            raise InputError(
                f"{out} holds a different simulated data set (it differs in: {', '.join(differ)}); "
                "pass overwrite=True to replace it, or choose another directory"
            )
        return True, []
    own = manifest(stored) if stored is not None else []
    foreign = foreign_files(out, own)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"{out} holds files named like a simulated data set's that are not part of one ({shown}); "
            "move them away or choose another directory"
        )
    if stored is None and os.listdir(out) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not a radiorecon simulated data set; "
            "pass overwrite=True to write one there anyway (its files are kept), or choose another directory"
        )
    return False, [name for name in own if os.path.lexists(os.path.join(out, name))]


def _prepare(out, config, resume, stale):
    """Remove the ``stale`` files and the temporaries of interrupted runs; write config.json."""
    # config.json goes last, replaced by the new one: until then the old one
    # still owns what is left, should this be interrupted.
    for name in stale:
        if name != "config.json":
            os.remove(os.path.join(out, name))
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    for directory in (out, os.path.join(out, "shards")):
        for name in own_temporaries(directory):
            os.remove(os.path.join(directory, name))
    if not resume:
        with atomic_path(os.path.join(out, "config.json")) as tmp, open(tmp, "w") as f:
            json.dump(config, f, indent=1)


def _is_complete(path, shape, dtype):
    try:
        check_array(path, shape, dtype)
    except InputError:
        return False
    return True


def _plan_is_complete(out, config):
    """Whether the plan files are all there and whole (a resumed run remakes them if not)."""
    npix = config["npix"]
    try:
        read_table(os.path.join(out, "images.ecsv"), ("image_id", "ra", "dec", "psf_index"), rows=config["n"])
        _read_bank(out, npix)
    except InputError:
        return False
    return _is_complete(os.path.join(out, "primary_beam.npy"), (npix, npix), np.float32)


def _shard_is_complete(out, config, k):
    images = (shard_length(config, k), config["npix"], config["npix"])
    return (_is_complete(os.path.join(out, shard_name("truth", k)), (None,), TRUTH_DTYPE)
            and all(_is_complete(os.path.join(out, shard_name(kind, k)), images, np.float32)
                    for kind in ("dirty", "sky")))


def _write_plan(out, params, seed, n):
    """images.ecsv, the PSF bank and the primary beam, made by the parent process."""
    setup = setup_for(params)
    centres = np.array([draw_centre(image_rng(seed, i), params) for i in range(n)])
    bins = np.array([setup.dec_bin(dec) for dec in centres[:, 1]])
    bank, index = np.unique(bins, return_inverse=True)
    covs = [setup.coverage(b) for b in bank]
    _atomic_save(os.path.join(out, "psf.npy"), np.stack([cov.psf2 for cov in covs]).astype(np.float32))
    _atomic_save(os.path.join(out, "primary_beam.npy"), setup.pb.astype(np.float32))
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
    complete shards and makes the rest (and remakes any damaged file).

    Parameters
    ----------
    n : int
        Number of images (at least 1).
    preset : str
        Recipe name (see `~radiorecon.simulate.available_presets`).
    seed : int, optional
        Base seed, in ``[0, 2**63 - 1]``; None draws one, recorded in
        ``config.json``.
    out : str or os.PathLike
        Directory of the data set (created if needed).
    overwrite : bool
        Replace a different data set, or write into a non-empty directory
        that holds none. Only the files of the data set that was there (as
        its ``config.json`` describes them) are removed; others are kept.
    workers : int, optional
        Processes to use (default: the CPUs available to this process). Small
        jobs (up to about 64 images of 512²) and ``workers=1`` run in this
        process; larger ones start worker processes, which re-run the
        calling script: call ``make_dataset`` under ``if __name__ ==
        "__main__":`` in scripts.
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
    TypeError
        If ``n``, ``seed``, ``workers`` or ``shard_size`` is not an integer.
    ValueError
        If one of them is out of range.
    ~radiorecon.exceptions.InputError
        If ``out`` holds a data set made with other settings (the message
        names them) and ``overwrite`` is False; or if it holds a
        ``config.json`` that is not a data set's, or files named like a
        data set's that are not part of the one there (they are never
        removed or replaced, whatever ``overwrite``).
    FileExistsError
        If ``out`` is a non-empty directory without a data set and
        ``overwrite`` is False.
    RuntimeError
        If a worker process died; complete shards are kept, and the same
        call resumes.
    """
    n = check_int(n, "n")
    seed = secrets.randbits(63) if seed is None else check_seed(seed)
    if shard_size is None:
        shard_size = min(128, max(1, math.ceil(n / 16)))
    shard_size = check_int(shard_size, "shard_size")
    workers = _default_workers() if workers is None else check_int(workers, "workers")
    params = resolve_parameters(preset, **overrides)
    out = os.fspath(out)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "radiorecon_version": __version__,
        "preset": preset, "overrides": {k: v for k, v in to_json(params).items() if k in overrides},
        "parameters": to_json(params), "seed": seed, "n": n, "shard_size": shard_size,
        "npix": params["npix"], "pixel_scale_arcsec": params["pixel_scale"].to_value(u.arcsec),
        "meta": common_meta(setup_for(params), seed=seed, preset=preset),
    }
    config = json.loads(json.dumps(config))  # as it will read back, for comparisons
    resume, stale = _inspect(out, config, overwrite)
    shards = [(k, k * shard_size, min(n, (k + 1) * shard_size)) for k in range(math.ceil(n / shard_size))]
    todo = [s for s in shards if not (resume and _shard_is_complete(out, config, s[0]))]
    pixels = sum(b - a for _, a, b in todo) * max(params["npix"], 256) ** 2
    parallel = min(workers, len(todo)) if pixels > _IN_PROCESS_PIXELS else 1
    from tqdm.auto import tqdm

    # The worker processes start before the directory is touched: one that
    # re-runs an unguarded calling script stops there (see _start_pool).
    with _pool(parallel) as pool:
        _prepare(out, config, resume, stale)
        if not (resume and _plan_is_complete(out, config)):
            _write_plan(out, params, seed, n)
        with tqdm(total=n, initial=n - sum(b - a for _, a, b in todo), desc="simulating", unit="image",
                  disable=not progress) as bar:
            if pool is None:
                for k, a, b in todo:
                    bar.update(_make_shard(out, params, seed, k, a, b))
            else:
                _run_shards(pool, out, params, seed, todo, bar)

    truth = [open_array(os.path.join(out, shard_name("truth", k)), (None,), TRUTH_DTYPE, mmap=False)
             for k, _, _ in shards]
    rows = np.concatenate(truth) if truth else np.zeros(0, TRUTH_DTYPE)
    comps = {c: rows[c] for c in ("x", "y", "flux", "fwhm_major", "fwhm_minor", "pa")}
    if params["sky_model"] == "radio-galaxies":
        comps.update(_galaxy_columns(params, seed, n))
    table = truth_table(rows["image_id"], comps, rows["ra"], rows["dec"], rows["pb_gain"], rows["peak_snr"])
    _atomic_write_table(os.path.join(out, "truth.ecsv"), table)
    return SimulatedDataset(out)


def _galaxy_columns(params, seed, n):
    """The radio-galaxy truth columns of all ``n`` images, drawn again (no imaging: milliseconds each).

    The shards' truth rows hold the columns every sky model has; the draws
    are repeated here, in the same order, rather than widening them.
    """
    drawn = [draw_sky(params, seed, i)[0] for i in range(n)]
    return {c: np.concatenate([d[c] for d in drawn]) for c in SOURCE_COLUMNS}


@contextlib.contextmanager
def _pool(workers):
    """Started worker processes for ``workers > 1``, else None."""
    if workers < 2:
        yield None
        return
    pool = _start_pool(workers)
    try:
        yield pool
    except BaseException:
        # Complete shards are on disk; the next call resumes after them.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _start_pool(workers):
    """A process pool with its ``workers`` processes started."""
    # spawn: forking a process that has started threads (torch, BLAS) can
    # deadlock; a fresh interpreter costs ~2 s of imports once per worker.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        # Processes start on demand, one per task submitted while none is idle.
        for _ in range(workers):
            pool.submit(int)
    except RuntimeError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        # The check multiprocessing makes in a process that is still importing
        # its main module, i.e. in a worker re-running an unguarded script.
        if "bootstrapping phase" in str(exc):
            raise RuntimeError(f"make_dataset was called by a worker process as it started: {_GUARD_FIX}") from None
        raise
    return pool


def _run_shards(pool, out, params, seed, todo, bar):
    try:
        futures = [pool.submit(_make_shard, out, params, seed, k, a, b) for k, a, b in todo]
        for future in concurrent.futures.as_completed(futures):
            bar.update(future.result())
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise RuntimeError(
            "a worker process of make_dataset died (complete shards are kept: the same call resumes); "
            "if the calling script has no `if __name__ == \"__main__\":` guard, that is the cause: "
            f"{_GUARD_FIX}; otherwise the worker was killed, e.g. for lack of memory"
        ) from exc


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
    `image`, `psf` and `sky` give image ``i`` as `~astropy.nddata.CCDData`
    with its WCS, and `export_fits` writes them as FITS files.

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
    ~radiorecon.exceptions.InputError
        If ``path`` holds no data set, an incomplete one (rerun
        `~radiorecon.simulate.make_dataset` with the same arguments to
        finish it), or a damaged one. Damaged shards are found when read:
        indexing raises the same error, naming the file.
    """

    units = {"input": "Jy / beam", "target": "Jy / pix"}

    def __init__(self, path, *, target="apparent"):
        self.target = check_target(target)
        self._pb = None
        self.path = os.fspath(path)
        self.config = read_config(self.path)
        if self.config is None:
            raise InputError(f"{self.path} holds no simulated data set (no config.json)")
        if not os.path.exists(os.path.join(self.path, "truth.ecsv")):
            raise InputError(
                f"{self.path} holds an incomplete data set; run make_dataset again with the same "
                "arguments to finish it"
            )
        self._n, self._shard = self.config["n"], self.config["shard_size"]
        self.images = read_table(os.path.join(self.path, "images.ecsv"), ("image_id", "ra", "dec", "psf_index"),
                                 rows=self._n)
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
            npix = self.config["npix"]
            shape = (shard_length(self.config, k), npix, npix)
            self._maps[key] = open_array(os.path.join(self.path, shard_name(kind, k)), shape, np.float32)
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
            self._truth = read_table(os.path.join(self.path, "truth.ecsv"), ("image_id", "x", "y", "flux"))
        return self._truth

    def source_images(self, i):
        """The true sky of each source of image ``i`` on its own (what a deblender learns).

        The sources are drawn again from the data set's parameters and
        seed (without imaging), so nothing more is stored.

        Returns
        -------
        images : `~numpy.ndarray`
            ``(n_sources, npix, npix)`` float32 in Jy/pixel, without primary
            beam, in the order of the image's rows of `truth`; their sum is
            `sky` (up to float32 rounding).
        """
        return source_images(self.parameters, self.config["seed"], self._index(i))

    @property
    def primary_beam(self):
        """Primary-beam gain on the image grid (float32 array)."""
        npix = self.config["npix"]
        return open_array(os.path.join(self.path, "primary_beam.npy"), (npix, npix), np.float32, mmap=False)

    def _bank(self):
        if "psf" not in self._maps:
            bank, psfs = _read_bank(self.path, self.config["npix"])
            index = np.asarray(self.images["psf_index"])
            if index.dtype.kind not in "iu" or len(index) and not 0 <= index.min() <= index.max() < len(bank):
                raise InputError(
                    f"{os.path.join(self.path, 'images.ecsv')}: its psf_index does not match psf_bank.ecsv; "
                    "call make_dataset again with the data set's arguments (see its config.json) to remake it"
                )
            self._maps["psf"], self._maps["bank"] = psfs, bank
        return self._maps["psf"], self._maps["bank"]

    def wcs(self, i):
        """Celestial WCS of image ``i``: SIN projection, phase centre at pixel ``npix // 2``."""
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
        """Dirty image ``i`` as `~astropy.nddata.CCDData`.

        In Jy/beam, with the image's WCS; ``meta`` holds the fitted clean
        beam (``BMAJ``, ``BMIN``, ``BPA`` in deg), the expected noise rms
        ``NOISERMS`` (Jy/beam), ``OBSFREQ`` (Hz), the seed and the index.
        """
        from astropy.nddata import CCDData

        return CCDData(self._array("dirty", i), unit=u.Jy / u.beam, wcs=self.wcs(i), meta=self._meta(i))

    def sky(self, i):
        """True sky ``i`` (without primary beam) as `~astropy.nddata.CCDData` in Jy/pixel, with its WCS."""
        from astropy.nddata import CCDData

        meta = {**self.config["meta"], "SIMINDEX": self._index(i)}
        return CCDData(self._array("sky", i), unit=u.Jy / u.pix, wcs=self.wcs(i), meta=meta)

    def psf(self, i, *, full=False):
        """PSF of image ``i`` as `~astropy.nddata.CCDData`, peak 1.

        ``npix x npix`` with the peak at pixel ``npix // 2`` and the image's
        WCS; with ``full=True``, the stored ``2 npix x 2 npix`` PSF (peak at
        pixel ``npix``, what CLEAN needs) and a WCS with the reference pixel
        moved there. ``meta`` is that of `image`.
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

    def export_fits(self, directory, indices=None, *, overwrite=False):
        """Write images as FITS files, e.g. to try ``radiorecon predict`` on them.

        For each image ``i``, ``NNNNNN.dirty.fits`` (`image`: Jy/beam, with
        the beam cards ``BMAJ``, ``BMIN``, ``BPA``), ``NNNNNN.psf.fits``
        (``psf(i, full=True)``: ``2 npix x 2 npix``, peak 1 at pixel
        ``npix``, so that CLEAN can subtract sidelobes across the whole
        image) and ``NNNNNN.sky.fits`` (`sky`: the true sky in Jy/pixel),
        where ``NNNNNN`` is ``i`` in six digits; all with the image's
        celestial WCS (the PSF's reference pixel at its peak). The true
        sources are in `truth`.

        Parameters
        ----------
        directory : str or os.PathLike
            Where to write the files (created if needed).
        indices : iterable of int, optional
            The images to write (negative ones count from the end); default
            all.
        overwrite : bool
            Replace existing files. Without it nothing is written if any of
            the files exists.

        Returns
        -------
        paths : list of str
            The files written, three per image.

        Raises
        ------
        FileExistsError
            If a file exists and ``overwrite`` is False.
        TypeError, IndexError
            If an index is not an integer or is out of range.
        """
        from ..io import write_result

        directory = os.fspath(directory)
        indices = range(self._n) if indices is None else [self._index(i) for i in indices]
        files = [(i, kind, os.path.join(directory, f"{i:06d}.{kind}.fits"))
                 for i in indices for kind in ("dirty", "psf", "sky")]
        if not overwrite:
            existing = [path for _, _, path in files if os.path.exists(path)]
            if existing:
                more = f" and {len(existing) - 1} other file(s)" if len(existing) > 1 else ""
                raise FileExistsError(f"{existing[0]}{more} already exist; pass overwrite=True to replace them")
        os.makedirs(directory, exist_ok=True)
        image = {"dirty": self.image, "psf": functools.partial(self.psf, full=True), "sky": self.sky}
        for i, kind, path in files:
            write_result(image[kind](i), path, overwrite=overwrite)
        return [path for _, _, path in files]
