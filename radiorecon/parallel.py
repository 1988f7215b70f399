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

`predict_large` predicts one image too large for one process: overlapping
blocks of it go to the workers (`dask.array.map_overlap`), which read their
windows of the memory-mapped input and write their parts of the output file
themselves, so no process ever holds the whole image.

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
from .catalog import default_threshold
from .exceptions import CapabilityError, InputError

__all__ = [
    "predict_many", "predict_large", "SurveyResult", "field_name", "field_catalog", "check_catalog_input", "merge_catalogs",
    "MERGED_CATALOG",
]

log = logging.getLogger("radiorecon")

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
        ``catalog_threshold``, else
        `radiorecon.catalog.DEFAULT_THRESHOLD`
        (`radiorecon.catalog.default_threshold`).
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
    workers = _check_workers(workers, client)
    out = os.path.abspath(out)
    psfs = _psfs(psf, paths)
    config = dict(config or {})
    rec = _checked_model(model, config, psf, n_samples)
    if threshold is None:
        threshold = default_threshold(rec)
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


def predict_large(image, model, out, *, client=None, workers=None, tile=1024, margin=None, n_samples=1,
                  psf=None, aggregate="median", seed=None, batch_size=8, device="auto", threads=1, config=None,
                  overwrite=False, progress=True):
    """Reconstruct one large image on a Dask cluster, block by block, into a FITS file.

    The image is cut into ``tile x tile`` blocks (`dask.array`), each
    widened by ``margin`` pixels of its neighbours on every inner side
    (`dask.array.map_overlap`). A worker predicts each widened block as
    `~radiorecon.Reconstructor.predict` predicts an image (with the WCS of
    its window and the input's unit and beam), keeps its inner part and
    writes it into its place in the output file. Memory is bounded: the
    input is read memory-mapped, window by window, on the workers; the
    output is written by the workers, block by block, into a file made at
    its full size beforehand; the client holds only the task graph.

    Parameters
    ----------
    image : str, os.PathLike or image
        The dirty image: a FITS file (its first image HDU; axes other than
        the two image axes must have length 1, as in a CASA cube of one
        plane), which the client and every worker must see at the same path;
        or anything `~radiorecon.io.read_image` reads (then it is in memory
        already and goes to the workers block by block).
    model : `~radiorecon.Reconstructor` or str
        As for `predict_many`: a Reconstructor, a model file,
        ``"pretrained:NAME"`` or a backend name; each worker opens it once.
    out : str or os.PathLike
        Output FITS file, in the layout of `~radiorecon.result.write_result`:
        the estimate with WCS, ``BUNIT`` and provenance cards, and an
        ``UNCERT`` extension when the model gives an uncertainty. Blank
        input pixels are NaN (there is no ``MASK`` extension).
    client, workers
        The cluster, as for `predict_many`.
    tile : int, optional
        Side of the blocks, in pixels (default 1024). A worker's memory
        grows with ``(tile + 2 * margin)**2``.
    margin : int, optional
        Pixels of context on each side of a block, trimmed after the
        prediction (default: the backend's ``tile_margin``, at least 16).
    n_samples, psf, aggregate, batch_size, device, threads, config
        As for `predict_many`.
    seed : int, optional
        Makes the result repeatable: block ``k`` (numbered row by row) is
        predicted with the seed ``stream_seed(seed, k)``
        (`~radiorecon.seeding.stream_seed`).
    overwrite : bool, optional
        Replace an existing ``out``.
    progress : bool, optional
        Show the dashboard's address and a progress bar over blocks.

    Returns
    -------
    str
        The path of the output file.

    Raises
    ------
    FileExistsError
        Before any work, when ``out`` exists and ``overwrite`` is False.
    InputError
        When the FITS file holds no image, an axis other than the image
        axes is longer than 1, or ``out`` is compressed (``.gz``).
    CapabilityError
        As for `~radiorecon.Reconstructor.predict`.

    Notes
    -----
    The result is not exactly that of one ``predict`` of the whole image:
    each block is normalised on its own (its own ``RRSCALE``), and the
    blocks meet at hard seams where their margins were cut off, where the
    in-process tiler of ``predict`` blends overlapping tiles. For a linear
    model whose reach is within ``margin`` the two agree to float precision
    away from the image's edges; for ``pretrained:star`` on a 512 x 512
    image, blocks of 256 with a margin of 64 differ by 1e-4 of the
    estimate's noise (rms), blocks of 128 with a margin of 32 by a tenth of
    it (the docs' "One large image on Dask" gives the numbers). Blocks larger
    than the backend's tiles are tiled inside the worker, as ``predict``
    tiles an image. The output is written to a temporary file beside
    ``out`` and renamed at the end, so a failure leaves no partial file
    under the final name.
    """
    import dask.array as da
    import numpy as np

    from ._validate import check_int, check_seed

    out = os.path.abspath(out)
    check_new(out, overwrite)
    if out.lower().endswith(".gz"):
        raise InputError(f"predict_large writes its blocks into an uncompressed FITS file, not {out}; "
                         "compress it afterwards")
    tile = check_int(tile, "tile")
    n_samples = check_int(n_samples, "n_samples")
    seed = check_seed(seed)
    workers = _check_workers(workers, client)
    config = dict(config or {})
    rec = _checked_model(model, config, psf, n_samples)
    if margin is None:
        margin = max(rec.backend.tile_margin or 0, 16)
    margin = check_int(margin, "margin", minimum=0)
    if margin > tile:
        raise ValueError(f"margin ({margin}) must not be larger than tile ({tile})")
    if isinstance(psf, (str, os.PathLike)):
        psf = os.path.abspath(psf)
    source, wcs, unit, meta = _large_input(image)
    ny, nx = source.shape
    pixels = da.from_array(source, chunks=tuple(_block_sides(n, tile, margin) for n in (ny, nx)), lock=False,
                           asarray=False,
                           name=f"radiorecon-input-{uuid.uuid4().hex[:8]}", meta=np.empty((0, 0), source.dtype))
    settings = dict(n_samples=n_samples, psf=psf, aggregate=aggregate, seed=seed, batch_size=batch_size,
                    device=device, threads=threads, wcs=wcs, unit=unit, meta=meta, margin=margin,
                    chunks=pixels.chunks)

    with _cluster(client, workers) as dask_client, atomic_path(out, overwrite=overwrite) as tmp:
        dashboard = _dashboard(dask_client)
        # A named model each worker opens once; one in memory is sent to each worker once.
        if isinstance(model, (str, os.PathLike)):
            ref = (os.fspath(model), config)
        else:
            ref = dask_client.scatter(rec, broadcast=True, hash=False)
        # A small prediction first, on a worker (which keeps the model for the blocks): the output's
        # unit, dtype, provenance and whether it has an uncertainty decide the file's layout.
        corner = (slice(0, min(ny, 64)), slice(0, min(nx, 64)))
        probe = dask_client.submit(_predict_window, ref, source[corner], corner, settings, None,
                                   key=f"predict-large-probe-{uuid.uuid4().hex[:8]}").result()
        layout = _large_output(tmp, probe, wcs, (ny, nx), tile, margin)
        # The estimate and the std of a block come from one prediction, stacked on a new first axis.
        blocks = da.map_overlap(_predict_block, pixels, depth=margin, boundary="none", trim=False,
                                new_axis=0, chunks=((len(layout["hdus"]),),) + pixels.chunks,
                                dtype=layout["dtype"], meta=np.empty((0, 0, 0), layout["dtype"]),
                                ref=ref, settings=settings)
        writes = [_write_block(block, index, pixels.chunks, tmp, layout)
                  for index, block in zip(np.ndindex(blocks.numblocks[1:]), blocks.to_delayed().ravel())]
        _run_blocks(dask_client, writes, progress, dashboard)
    return out


def _block_sides(n, tile, margin):
    """Block sides along an axis of ``n`` pixels: ``tile``, a last one shorter than ``margin`` merged.

    map_overlap would otherwise rechunk to give every block at least its
    margin, and the blocks would no longer be those the tasks were planned for.
    """
    sides = [tile] * (n // tile) + ([n % tile] if n % tile else [])
    if len(sides) > 1 and sides[-1] < margin:
        sides[-2:] = [sides[-2] + sides[-1]]
    return tuple(sides)


def _large_input(image):
    """The pixels (an array-like read window by window), celestial WCS, unit and header of a large image."""
    import numpy as np
    from astropy.io import fits

    from ._fits import clean_header, header_wcs, parse_bunit
    from .io import read_image

    if not isinstance(image, (str, os.PathLike)):
        image = read_image(image)
        return image.data, image.wcs, image.unit, image.meta
    path = os.path.abspath(image)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such FITS file: {path}")
    with fits.open(path, memmap=True) as hdul:
        # .shape comes from the header: no data are read here.
        found = [i for i, hdu in enumerate(hdul) if hdu.is_image and len(hdu.shape) >= 2 and 0 not in hdu.shape]
        if not found:
            raise InputError(f"{path} holds no image data (no HDU with 2 or more axes)")
        hdu = hdul[found[0]]
        shape, header, bitpix = hdu.shape, hdu.header.copy(), hdu.header["BITPIX"]
    if any(n != 1 for n in shape[:-2]):
        raise InputError(f"{path} has shape {shape}; predict_large needs one image plane (other axes of length 1)")
    wcs = header_wcs(header, path)
    if wcs is not None:
        wcs = wcs.celestial
    unit = parse_bunit(header.get("BUNIT"), path)
    meta = clean_header(header)
    if wcs is not None:
        meta.extend(wcs.to_header(relax=True), update=True, useblanks=False)
    dtype = np.dtype(np.float64 if bitpix > 0 else np.float32 if bitpix == -32 else np.float64)
    return _FitsPlane(path, found[0], shape[-2:], dtype), wcs, unit, meta


class _FitsPlane:
    """The image plane of a FITS HDU as an array that reads only the windows asked for.

    Picklable and small, so that a task graph carries it to the workers, which
    open the file themselves (memory-mapped) instead of receiving its pixels.
    """

    ndim = 2

    def __init__(self, path, hdu, shape, dtype):
        self.path, self.hdu, self.shape, self.dtype = path, hdu, tuple(shape), dtype

    def __getitem__(self, key):
        import numpy as np
        from astropy.io import fits

        with fits.open(self.path, memmap=True) as hdul:
            hdu = hdul[self.hdu]
            window = hdu.section[(0,) * (len(hdu.shape) - 2) + tuple(key)]
            return np.array(window, dtype=self.dtype)


def _predict_window(ref, pixels, window, settings, seed):
    """Predict the pixels of ``window`` (a pair of slices of the whole image) as an image of its own."""
    from astropy.nddata import NDData

    rec = _worker_model(ref)
    wcs = settings["wcs"]
    image = NDData(pixels, unit=settings["unit"], wcs=None if wcs is None else wcs.slice(window),
                   meta=settings["meta"])
    return rec.predict(image, n_samples=settings["n_samples"], psf=settings["psf"], aggregate=settings["aggregate"],
                       seed=seed, batch_size=settings["batch_size"], progress=False, device=settings["device"],
                       threads=settings["threads"])


def _predict_block(pixels, ref, settings, block_info=None):
    """map_overlap's function: a widened block in, its inner estimate (and std) out, stacked."""
    import numpy as np

    from .result import std_array
    from .seeding import stream_seed

    where = block_info[0]["chunk-location"]
    margin, chunks = settings["margin"], settings["chunks"]
    # boundary="none": blocks at the image's edges are widened on their inner sides only.
    start = [sum(c[:i]) - (margin if i else 0) for c, i in zip(chunks, where)]
    window = tuple(slice(s, s + n) for s, n in zip(start, pixels.shape))
    index = int(np.ravel_multi_index(where, [len(c) for c in chunks]))
    seed = None if settings["seed"] is None else stream_seed(settings["seed"], index)
    sky = _predict_window(ref, pixels, window, settings, seed)
    inner = tuple(slice(margin if i else 0, (margin if i else 0) + c[i]) for c, i in zip(chunks, where))
    planes = [np.asarray(sky.data)[inner]]
    if sky.uncertainty is not None:
        planes.append(std_array(sky)[inner])
    return np.stack(planes)


def _large_output(path, probe, wcs, shape, tile, margin):
    """Make the output file at its full size, its data areas unwritten; return where they are."""
    import numpy as np
    from astropy.io import fits

    from .result import extension_header, result_header

    dtype = np.dtype(np.float32 if probe.data.dtype == np.float32 else np.float64)
    meta = probe.meta.copy()
    # Each block has its own normalisation: the probe's scale describes none of them.
    meta.remove("RRSCALE", ignore_missing=True)
    meta["RRTILE"] = (tile, "[pix] side of the blocks predicted")
    meta["RRMARGIN"] = (margin, "[pix] context trimmed off each block")
    header, wcs_cards = result_header(meta, wcs, probe.unit, 2)
    ny, nx = shape
    axes = [("BITPIX", -8 * dtype.itemsize), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny)]
    headers = [fits.Header([("SIMPLE", True)] + axes + [("EXTEND", True)])]
    headers[0].extend(header, useblanks=False)
    names = ["PRIMARY"]
    if probe.uncertainty is not None:
        ext = fits.Header([("XTENSION", "IMAGE")] + axes + [("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", "UNCERT")])
        ext.extend(extension_header([("UTYPE", "StdDevUncertainty")], probe.unit, wcs_cards), useblanks=False)
        headers.append(ext)
        names.append("UNCERT")
    size = -(-ny * nx * dtype.itemsize // 2880) * 2880
    with open(path, "wb") as f:
        for header in headers:
            f.write(header.tostring().encode("ascii"))
            f.seek(size, os.SEEK_CUR)  # the data area stays a hole until the workers write it
        f.truncate()
    with fits.open(path) as hdul:
        offsets = [hdul.fileinfo(i)["datLoc"] for i in range(len(names))]
    return dict(hdus=names, offsets=offsets, dtype=dtype, shape=shape)


def _write_block(block, where, chunks, path, layout):
    """A task writing one block's planes into their places in the output file."""
    import dask

    window = tuple(slice(sum(c[:i]), sum(c[: i + 1])) for c, i in zip(chunks, where))
    return dask.delayed(_write_window, pure=True)(block, window, path, layout)


def _write_window(planes, window, path, layout):
    import numpy as np

    for plane, offset in zip(planes, layout["offsets"]):
        data = np.memmap(path, dtype=layout["dtype"].newbyteorder(">"), mode="r+", offset=offset,
                         shape=layout["shape"])
        data[window] = plane
        data.flush()
        del data


def _run_blocks(client, writes, progress, dashboard):
    """Compute the block writes with a progress bar; the first failure cancels the rest."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = client.compute(writes)
    try:
        with tqdm(total=len(futures), desc="predict", unit="block", disable=not progress) as bar:
            if dashboard and progress:
                bar.write(f"Dask dashboard: {dashboard}")
            for future in as_completed(futures):
                future.result()
                bar.update()
    finally:
        client.cancel(futures)


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


def _check_workers(workers, client):
    """The worker count of a local cluster (None: one per core), refused next to a client."""
    from ._validate import check_int

    if workers is None:
        return None
    workers = check_int(workers, "workers")
    if client is not None:
        raise ValueError("give workers= for a local cluster, or client=, not both")
    return workers


def _checked_model(model, config, psf, n_samples):
    """The model, opened on the client, checked against the call before any work goes to the cluster."""
    rec = _open_model(model, config)
    if psf is None and "needs_psf" in rec.capabilities:
        raise CapabilityError(f"backend {rec.backend_name!r} needs the PSF: pass psf=")
    if n_samples > 1 and "draws" not in rec.capabilities:
        raise CapabilityError(f"backend {rec.backend_name!r} gives one estimate, not draws to sample: "
                              "use n_samples=1")
    return rec


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
        "uncertainty_floor": rec.uncertainty_floor,
        "flux_error_floor": rec.flux_error_floor,
        "detection_calibration": rec.detection_calibration,
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
