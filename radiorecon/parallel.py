"""Reconstruct many images on a Dask cluster: surveys of many pointings.

`predict_many` sends one task per input image to `dask.distributed` workers
(a `~distributed.LocalCluster` on this machine by default, or any running
scheduler: an HPC job started with dask-jobqueue, a Kubernetes cluster).
Each worker loads the model once and keeps it for all its tasks. Each input
gives one FITS result and one source catalog in the output directory, named
after the input; a rerun skips the inputs whose outputs are finished, so an
interrupted survey continues where it stopped. At the end the fields'
catalogs are merged into one, with sky positions and source ids unique
across fields.

Imports of ``distributed`` wait until a survey runs, so the rest of radiorecon
works without it.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
import uuid

# Light imports only: the command line imports this module to start up.
from ._files import atomic_path, check_new
from .exceptions import CapabilityError, InputError

__all__ = [
    "predict_many", "SurveyResult", "field_name", "field_catalog", "check_catalog_input", "merge_catalogs",
    "DEFAULT_THRESHOLD", "MERGED_CATALOG",
]

log = logging.getLogger("radiorecon")

#: Detection threshold (S/N) of catalogs for models that record no ``catalog_threshold``.
DEFAULT_THRESHOLD = 5.0

#: File name of the merged catalog in the output directory.
MERGED_CATALOG = "catalog.ecsv"

_FITS_SUFFIXES = (".fits.gz", ".fits", ".fit.gz", ".fit", ".fts.gz", ".fts")
_RESULT_SUFFIX = ".model.fits"
_CATALOG_SUFFIX = ".sources.ecsv"
# The FITS card (and catalog meta key) holding the digest of how an output was made.
_JOB_CARD = "RRJOB"

# Dask's workers run with glibc's heap trimmed above 64 KiB, which returns every large
# array to the system and faults it in again: predictions of 512x512 images take three
# times longer. None lets malloc keep its own (adaptive) thresholds.
_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

# Models opened on this worker process, by (worker address, model, settings);
# the address keeps threads-only workers, which share the module, apart.
_MODELS = {}
_MODELS_LOCK = threading.Lock()


@dataclasses.dataclass
class SurveyResult:
    """What `predict_many` did.

    Attributes
    ----------
    fields : `~astropy.table.QTable`
        One row per input, in the order given: ``field`` (the name its
        outputs are derived from), ``input``, ``result`` and ``catalog``
        (the paths written; ``catalog`` is empty without catalogs),
        ``status`` (``"done"``, or ``"skipped"`` when finished outputs of an
        earlier run were found), ``n_sources`` (-1 without catalogs) and
        ``seconds`` (time on the worker, with reading and writing).
    catalog : `~astropy.table.QTable` or None
        The merged catalog (see `predict_many`), as written to
        ``catalog.ecsv``; None without catalogs.
    dashboard : str or None
        The Dask dashboard's address, when the scheduler serves one.
    """

    fields: object
    catalog: object
    dashboard: object


def predict_many(inputs, model, out, *, client=None, workers=None, n_samples=1, psf=None, aggregate="median",
                 seed=None, batch_size=8, device="auto", threads=1, config=None, catalog=True, threshold=None,
                 overwrite=False, progress=True):
    """Reconstruct many FITS images on a Dask cluster, resumably, with a merged catalog.

    Each input is predicted exactly as ``Reconstructor.predict(input,
    seed=seed, ...)`` would predict it alone, whatever the number of
    workers and the other inputs: seeded results equal serial ones.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        Dirty images (FITS files, as `~radiorecon.io.read_image` reads them).
        The client and every worker must see them, and ``out``, at the
        same paths (one machine, or a shared file system).
    model : `~radiorecon.Reconstructor` or str
        A model: a Reconstructor (sent to each worker once), a model file,
        ``"pretrained:NAME"`` or the name of a backend that needs no
        training (``"clean"``), which each worker opens once.
    out : str or os.PathLike
        Output directory (created if needed). Input ``NAME.fits`` gives
        ``NAME.model.fits`` (the result, as
        `~radiorecon.result.write_result` writes it with its extra maps)
        and ``NAME.sources.ecsv`` (its catalog); the merged catalog is
        ``catalog.ecsv``.
    client : `distributed.Client` or str, optional
        The cluster: a Client, or a scheduler's address
        (``"tcp://host:8786"``). By default a `~distributed.LocalCluster` of
        ``workers`` processes with one thread each is started for the call
        and closed after it.
    workers : int, optional
        Worker processes of the local cluster (default: one per core);
        only without ``client``.
    n_samples, aggregate, batch_size, device
        As for `~radiorecon.Reconstructor.predict`.
    psf : str, os.PathLike or list of them, optional
        The PSF for backends that need one: one file for every input, or
        one per input.
    seed : int, optional
        Seed of every image's prediction, as for
        `~radiorecon.Reconstructor.predict` of that image alone.
    threads : int, optional
        Torch CPU threads per task (default 1: a worker per core is faster
        than threads fighting over the cores).
    config : dict, optional
        Backend settings: the configuration of a backend named by ``model``,
        or the prediction settings of a trained model (as
        `~radiorecon.Reconstructor.set_params` takes them).
    catalog : bool, optional
        Also detect sources (as ``radiorecon predict --catalog`` does): one
        catalog per input and the merged one. Inputs need a celestial WCS
        and the clean beam for it.
    threshold : float, optional
        Detection threshold in sigma; default the model's
        ``catalog_threshold``, else `DEFAULT_THRESHOLD`.
    overwrite : bool, optional
        Replace outputs that were made otherwise (another model, seed or
        setting). Finished outputs made the same way are kept either way.
    progress : bool, optional
        Show the dashboard's address and a progress bar over inputs (on
        standard error).

    Returns
    -------
    `SurveyResult`

    Raises
    ------
    InputError
        Before any work, when two inputs would write the same outputs, an
        output would replace an input, or no inputs are given; after the
        others are done, when inputs failed: one line naming each failed
        input and why. The finished outputs stay, and a rerun (without the
        failing inputs, or once they are fixed) resumes from them.
    CapabilityError
        As for `~radiorecon.Reconstructor.predict` (no PSF for a backend
        that needs one, samples from a backend that gives one estimate).
    FileExistsError
        When the merged catalog of another run is in ``out`` and
        ``overwrite`` is False.

    Notes
    -----
    An input counts as finished when both its outputs read back completely
    and record the same digest (the FITS card ``RRJOB``, the catalog's
    ``job``) of the model's weights and settings, ``n_samples``,
    ``aggregate``, ``seed``, the PSF and the catalog settings. Anything
    else is predicted again; outputs are written to temporary files and
    renamed, so an interrupted write leaves no half file under the final
    name.
    """
    from astropy.table import QTable

    from ._validate import check_int, check_seed
    from .modelfile import check_catalog_threshold

    # Absolute paths: workers need not share the client's working directory.
    paths = [os.path.abspath(p) for p in inputs]
    if not paths:
        raise InputError("predict_many needs at least one input image")
    n_samples = check_int(n_samples, "n_samples")
    batch_size = check_int(batch_size, "batch_size")
    threads = None if threads is None else check_int(threads, "threads")
    seed = check_seed(seed)
    if aggregate not in ("median", "mean"):
        raise ValueError(f"aggregate must be 'median' or 'mean', not {aggregate!r}")
    if threshold is not None:
        try:
            threshold = check_catalog_threshold(threshold)
        except ValueError:
            raise ValueError(f"threshold must be a positive, finite S/N (such as 5), not {threshold!r}") from None
    if workers is not None:
        workers = check_int(workers, "workers")
        if client is not None:
            raise ValueError("give workers= for a local cluster, or client=, not both")
    out = os.path.abspath(out)
    psfs = _psfs(psf, paths)
    config = dict(config or {})

    rec = _open_model(model, config)
    if psf is None and "needs_psf" in rec.capabilities:
        raise CapabilityError(f"backend {rec.backend_name!r} needs the PSF: pass psf=")
    if n_samples > 1 and "draws" not in rec.capabilities:
        raise CapabilityError(f"backend {rec.backend_name!r} gives one estimate, not draws to sample: "
                              "use n_samples=1")
    if threshold is None:
        threshold = rec.catalog_threshold or DEFAULT_THRESHOLD
    settings = dict(n_samples=n_samples, aggregate=aggregate, seed=seed, batch_size=batch_size, device=device,
                    threads=threads, catalog=bool(catalog), threshold=float(threshold))
    settings["job"] = _job_digest(rec, settings)
    jobs = _jobs(paths, psfs, out, settings["job"])
    merged_path = os.path.join(out, MERGED_CATALOG)
    if catalog:
        _check_merged(merged_path, settings["job"], overwrite)
    os.makedirs(out, exist_ok=True)

    with _cluster(client, workers) as dask_client:
        dashboard = _dashboard(dask_client)
        if dashboard:
            log.info("Dask dashboard: %s", dashboard)
        # A model given in memory is sent to each worker once; a named one each worker opens once.
        if isinstance(model, (str, os.PathLike)):
            ref = (os.fspath(model), config)
        else:
            # A key of its own: one hashed from the model could be released by an earlier call meanwhile.
            ref = dask_client.scatter(rec, broadcast=True, hash=False)
        rows, failures = _run(dask_client, jobs, ref, settings, overwrite, progress, dashboard)

    if failures:
        done = len(jobs) - len(failures)
        detail = "; ".join(f"{name}: {message}" for name, message in failures)
        raise InputError(f"{len(failures)} of {len(jobs)} inputs failed ({done} finished in {out}; "
                         f"a rerun resumes from them): {detail}")
    fields = QTable(rows=[row[:-1] for row in rows],
                    names=["field", "input", "result", "catalog", "status", "n_sources", "seconds"])
    merged = None
    if catalog:
        merged = merge_catalogs([row[-1] for row in rows], [row[0] for row in rows])
        merged.meta["job"] = settings["job"]
        with atomic_path(merged_path) as tmp:
            merged.write(tmp, format="ascii.ecsv")
    return SurveyResult(fields=fields, catalog=merged, dashboard=dashboard)


def field_catalog(sky, dirty, threshold):
    """The sources of a prediction, as ``radiorecon predict --catalog`` finds them.

    A sky model (Jy/pixel) is detected through the input's clean beam
    against the input's noise (`~radiorecon.catalog.find_sources_in_model`);
    any other result as it is (`~radiorecon.catalog.find_sources`).

    Parameters
    ----------
    sky : `~radiorecon.Reconstruction`
        The prediction.
    dirty : `~astropy.nddata.NDData`
        The input image, as `~radiorecon.io.read_image` read it.
    threshold : float
        Detection threshold in sigma.

    Returns
    -------
    `~astropy.table.QTable`
    """
    import astropy.units as u

    from .catalog import find_sources, find_sources_in_model

    if sky.unit is not None and sky.unit.is_equivalent(u.Jy / u.pix):
        return find_sources_in_model(sky, dirty, threshold)
    return find_sources(sky, threshold=threshold)


def merge_catalogs(tables, fields):
    """One catalog of many fields: sky positions, a ``field`` column, ids unique across fields.

    Parameters
    ----------
    tables : list of `~astropy.table.QTable`
        Catalogs of `field_catalog`, each with ``sky_centroid``.
    fields : list of str
        The name of each table's field.

    Returns
    -------
    `~astropy.table.QTable`
        The rows of all tables in order, with ``id`` numbered from 1 across
        all of them, ``field`` and ``field_id`` (the source's id in its
        field's catalog), ``ra`` and ``dec`` (deg, ICRS) and
        ``sky_centroid`` in ICRS. ``meta`` holds ``fields`` (the field
        names) and the settings the fields agree on.
    """
    import numpy as np
    from astropy.table import QTable, vstack

    parts = []
    for name, table in zip(fields, tables):
        table = QTable(table, copy=True)
        table.meta = {}
        table["sky_centroid"] = table["sky_centroid"].icrs
        table.rename_column("id", "field_id")
        table.add_column(np.full(len(table), name), name="field", index=0)
        parts.append(table)
    merged = vstack(parts, join_type="exact", metadata_conflicts="silent")
    merged.add_column(np.arange(1, len(merged) + 1), name="id", index=0)
    merged.add_column(merged["sky_centroid"].ra.to("deg"), name="ra", index=4)
    merged.add_column(merged["sky_centroid"].dec.to("deg"), name="dec", index=5)
    shared = {k: v for k, v in tables[0].meta.items()
              if all(k in t.meta and _same(t.meta[k], v) for t in tables[1:])}
    merged.meta = {**shared, "fields": list(fields)}
    return merged


def _same(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. Quantities of unlike units
        return False


def field_name(path):
    """The name outputs of ``path`` are derived from: its file name without the FITS suffix."""
    base = os.path.basename(os.fspath(path))
    for suffix in _FITS_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclasses.dataclass(frozen=True)
class _Job:
    field: str
    input: str
    psf: object
    result: str
    catalog: str
    digest: str  # of the model, the settings and this input's PSF: what its outputs must record


def _jobs(paths, psfs, out, digest):
    """One job per input, refusing inputs whose outputs would collide or replace an input."""
    seen = {}
    inputs = {os.path.realpath(p) for p in paths}
    jobs = []
    for path, psf in zip(paths, psfs):
        field = field_name(path)
        if field in seen:
            raise InputError(f"{seen[field]} and {path} would both write {field}{_RESULT_SUFFIX} in {out}; "
                             "rename one, or run them into different directories")
        seen[field] = path
        psf_name = "" if psf is None else os.path.abspath(psf)
        job = _Job(field, path, psf, os.path.join(out, field + _RESULT_SUFFIX),
                   os.path.join(out, field + _CATALOG_SUFFIX),
                   hashlib.sha256(f"{digest}{psf_name}".encode()).hexdigest()[:16])
        for output in (job.result, job.catalog):
            if os.path.realpath(output) in inputs:
                raise InputError(f"the output {output} of {path} is one of the inputs; choose another out")
        jobs.append(job)
    return jobs


def _psfs(psf, paths):
    if psf is None or isinstance(psf, (str, os.PathLike)):
        return [None if psf is None else os.path.abspath(psf)] * len(paths)
    psfs = [os.path.abspath(p) for p in psf]
    if len(psfs) != len(paths):
        raise ValueError(f"{len(psfs)} PSFs for {len(paths)} inputs; give one PSF, or one per input")
    return psfs


def _open_model(model, config):
    """A Reconstructor from what `predict_many` takes as a model."""
    from .reconstructor import Reconstructor

    if isinstance(model, Reconstructor):
        if config:
            model = _copy(model).set_params(**config)
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Reconstructor, a model file, pretrained:NAME or a backend name, "
                        f"not {model!r}")
    from . import available_backends
    from .pretrained import resolve_model_path

    spec = os.fspath(model)
    try:
        path = resolve_model_path(spec)
    except FileNotFoundError:
        if spec not in available_backends():
            raise
        return Reconstructor(spec, **config)
    return Reconstructor.load(path).set_params(**config)


def _copy(rec):
    import copy

    return copy.deepcopy(rec)


def _job_digest(rec, settings):
    """A digest of everything that makes an output what it is (not where or how fast it was made)."""
    h = hashlib.sha256()
    for key, tensor in sorted(rec.backend.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    doc = {
        "backend": rec.backend_name, "version": str(rec.backend.version), "config": rec.config,
        "normalisation": rec.normalisation.to_dict(), "units": rec.units,
        "uncertainty_scale": rec.uncertainty_scale,
        **{k: settings[k] for k in ("n_samples", "aggregate", "seed", "catalog")},
        "threshold": settings["threshold"] if settings["catalog"] else None,
    }
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _check_merged(path, job, overwrite):
    """Refuse, before any work, to replace the merged catalog of another run."""
    if overwrite or not os.path.exists(path):
        return
    from astropy.table import QTable

    try:
        theirs = QTable.read(path, format="ascii.ecsv").meta.get("job")
    except Exception:  # unreadable: a half-written file of ours, or not a catalog at all
        theirs = None
    if theirs != job:
        check_new(path, False, "it is from another run; pass overwrite=True (--overwrite) to replace it")


@contextlib.contextmanager
def _cluster(client, workers):
    """The Client of ``client`` (a Client or an address), or of a LocalCluster started for the call."""
    import dask
    from distributed import Client, LocalCluster

    if isinstance(client, Client):
        yield client
        return
    with contextlib.ExitStack() as stack:
        if client is None:
            # One thread per worker: torch in several threads of one process would fight over the cores.
            # Port 0: a free port for the dashboard, not a warning when 8787 is taken.
            with dask.config.set({_MALLOC_TRIM: None}):
                client = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1,
                                                          processes=True, dashboard_address=":0"))
        yield stack.enter_context(Client(client))


def _dashboard(client):
    """The dashboard's address, when the scheduler serves one (it needs bokeh)."""
    return client.dashboard_link if "dashboard" in client.scheduler_info().get("services", {}) else None


def _run(client, jobs, ref, settings, overwrite, progress, dashboard):
    """Submit the jobs; collect their rows in input order and the failures, named by input."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    # Keys of this call alone: a key the scheduler still holds from an earlier call would return its result.
    call = uuid.uuid4().hex[:8]
    futures = {client.submit(_predict_field, job, ref, settings, overwrite, key=f"predict-{job.field}-{call}"):
               i for i, job in enumerate(jobs)}
    rows, failures = [None] * len(jobs), []
    with tqdm(total=len(jobs), desc="predict", unit="image", disable=not progress) as bar:
        if dashboard and progress:
            bar.write(f"Dask dashboard: {dashboard}")
        for future in as_completed(futures):
            i = futures[future]
            try:
                rows[i] = future.result()
            except Exception as exc:  # one bad input must not lose the others
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failures.append((i, jobs[i].input, message))
                log.info("%s failed: %s", jobs[i].input, message)
            finally:
                future.release()
            bar.update()
    return rows, [(name, message) for _, name, message in sorted(failures)]


def _worker_model(ref):
    """This worker's Reconstructor: opened on its first task, kept for the others."""
    from .reconstructor import Reconstructor

    if isinstance(ref, Reconstructor):
        return ref
    try:
        from distributed import get_worker

        where = get_worker().address
    except ValueError:  # not on a worker: called directly
        where = None
    spec, config = ref
    key = (where, spec, json.dumps(config, sort_keys=True))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _open_model(spec, config)
        return _MODELS[key]


def _predict_field(job, ref, settings, overwrite):
    """The task: predict one input and write its outputs, unless they are finished already."""
    start = time.perf_counter()
    found = _finished(job, settings, overwrite)
    if found is not None:
        return (job.field, job.input, job.result, job.catalog if settings["catalog"] else "", "skipped",
                len(found) if settings["catalog"] else -1, time.perf_counter() - start, found)

    from .io import read_image
    from .result import write_result

    rec = _worker_model(ref)
    image = read_image(job.input)
    if settings["catalog"]:
        check_catalog_input(image, job.input)
    sky = rec.predict(image, n_samples=settings["n_samples"], psf=job.psf, aggregate=settings["aggregate"],
                      seed=settings["seed"], batch_size=settings["batch_size"], progress=False,
                      device=settings["device"], threads=settings["threads"],
                      return_samples=settings["catalog"] and settings["n_samples"] > 1)
    sky.meta[_JOB_CARD] = (job.digest, "digest of the model and settings (resume)")
    table = None
    if settings["catalog"]:
        table = field_catalog(sky, image, settings["threshold"])
        table.meta["field"] = job.field
        table.meta["input"] = job.input
        table.meta["job"] = job.digest
        # The catalog first: a result without its catalog is redone, never mistaken for finished.
        with atomic_path(job.catalog) as tmp:
            table.write(tmp, format="ascii.ecsv")
    with atomic_path(job.result) as tmp:
        write_result(sky, tmp, overwrite=True, extras=True)
    return (job.field, job.input, job.result, job.catalog if table is not None else "", "done",
            len(table) if table is not None else -1, time.perf_counter() - start, table)


def _finished(job, settings, overwrite):
    """The catalog of a finished input (an empty dict without catalogs), else None.

    Raises
    ------
    FileExistsError
        When an output reads back but was made otherwise, unless ``overwrite``.
    """
    import warnings

    from astropy.table import QTable

    from .result import read_result

    outputs = [job.result] + ([job.catalog] if settings["catalog"] else [])
    if not all(os.path.exists(p) for p in outputs):
        return None
    try:
        # A FITS file is whole blocks of 2880 bytes. A file cut inside an extension's header reads
        # with a warning and without that extension: any warning means the output is not whole.
        if os.path.getsize(job.result) % 2880:
            raise InputError(f"{job.result} is not a whole number of FITS blocks")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            made = read_result(job.result).meta.get(_JOB_CARD)
            table = QTable.read(job.catalog, format="ascii.ecsv") if settings["catalog"] else {}
    except Exception as exc:  # a truncated or damaged output holds no result: predict it again
        log.info("%s: redoing an unreadable output (%s)", job.input, exc)
        return None
    made = [made] + ([table.meta.get("job")] if settings["catalog"] else [])
    if all(m == job.digest for m in made):
        return table
    if not overwrite:
        other = job.result if made[0] != job.digest else job.catalog
        check_new(other, False, "it was made with another model, seed or setting; pass overwrite=True "
                                "(--overwrite) to replace it")
    return None


def check_catalog_input(image, path, what="a catalog"):
    """Refuse, before predicting, an input that cannot give a catalog.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`
        The input, as `~radiorecon.io.read_image` read it.
    path : str
        Its name, for the message.
    what : str
        What needs the catalog, for the message (``"--catalog"``).

    Raises
    ------
    InputError
        If the image has no celestial WCS or records no clean beam.
    """
    from .io import get_beam

    if image.wcs is None or not image.wcs.has_celestial:
        raise InputError(f"{what} needs sky coordinates, but {path} has no celestial WCS")
    if get_beam(image) is None:
        raise InputError(f"{what} needs the clean beam, but {path} records none "
                         "(BMAJ, BMIN and BPA cards, or a CASA BEAMS table)")
