"""The prediction pipeline: from images to backend calls and back to sky models.

`~radiorecon.Reconstructor.predict` reads every image into a `Job` (the image
in normalised units, blank mask, tiling, the PSF cut to the tile), then `run`
sends the tiles through the backend: tiles of one shape share batches of
``batch_size``, many samples are split into calls of about ``batch_size``
draws, and each draw has its own random generator seeded from ``(seed, image,
tile, sample)``, so an image's result depends neither on its neighbours in the
list nor on the batch size. `run` stitches the tiles as they come back, band
by band (`~radiorecon.tiling.Stitcher`), and reduces each band's samples to the
estimate and their spread at once, so memory grows with the image, not with
the number of samples times the image. `assemble` attaches units and
provenance and makes the `~radiorecon.Reconstruction`.
"""

import collections
import copy
import dataclasses
import hashlib
import json
import logging
import warnings

import numpy as np
import astropy.units as u
from astropy.nddata import StdDevUncertainty

from . import __version__, provenance
from ._files import atomic_path
from .exceptions import InputError, RadioreconWarning
from .result import Reconstruction
from .runtime import check_memory
from .seeding import Draws, seeded, stream_seed
from .tiling import Stitcher, Tiler, center_psf

__all__ = [
    "Job", "read_input", "read_psf", "make_jobs", "check_sample_memory", "run", "assemble", "chunk_sizes",
    "model_unit", "input_units", "is_per_beam", "PROGRESS_DELAY", "pixel_scale_arcsec", "warn_outside_domain",
    "DOMAIN_TOLERANCE",
]

log = logging.getLogger("radiorecon")

#: Seconds before a progress bar appears: quick predictions stay silent,
#: long ones (many tiles, many samples, a slow sampler) show their progress.
PROGRESS_DELAY = 0.5

#: Relative difference between an image's beam (major or minor axis) or
#: pixel size and the model's training domain beyond which `warn_outside_domain`
#: warns. Networks learn the width of sources in pixels from the beams they
#: were trained on (within a simulated preset those differ by well under
#: 1 %); 20 % is about two pixels of the default preset's 9-pixel beam. The
#: shipped STAR gave fluxes off by 3x on a 0.59" beam with 0.05" pixels.
DOMAIN_TOLERANCE = 0.2


@dataclasses.dataclass
class Job:
    """One image on its way through `run`: what was read, and its tiles."""

    index: int  # position in the caller's list: keys the random streams
    image: object  # the NDData from io.read_image
    mask: np.ndarray
    unit: object
    tiler: Tiler
    data: np.ndarray  # (ny, nx) float32, normalised; tiles are cut from it as they are sent
    normalisation: object
    psf: np.ndarray = None  # (f * ty, f * tx), peak 1 at the centre


def is_per_beam(unit):
    """Whether ``unit`` is a flux density per beam (Jy/beam, mJy/beam, ...)."""
    return unit is not None and dict(zip(unit.bases, unit.powers)).get(u.beam) == -1


def model_unit(in_unit, target_unit=None):
    """The unit of a sky model predicted from an image in ``in_unit``.

    The training targets' unit when the model knows it; else a per-beam
    input gives a per-pixel model (Jy/beam -> Jy/pixel: with the PSF's peak
    at 1, a point source of S Jy peaks at S Jy/beam in the dirty image and
    is one pixel of S Jy in the model).
    """
    if target_unit is not None:
        return u.Unit(target_unit)
    if in_unit is None:
        return None
    if is_per_beam(in_unit):
        return in_unit * u.beam / u.pix
    return in_unit


def input_units(units):
    """The units a model takes images in, best first, from its training ``units``.

    Parameters
    ----------
    units : dict
        ``{"input": str or None, "target": str or None}``, as
        `~radiorecon.Reconstructor.units`.

    Returns
    -------
    `~astropy.units.UnitBase` or tuple of them
        The recorded input unit when there is one (paired training; an
        image without a unit is assumed to be in it). A model trained on
        skies alone (unpaired backends, such as ``score``
        and ``vae-deblend``) records only their unit, the target's: it takes
        dirty images in its per-beam counterpart (Jy/beam for skies in
        Jy/pixel, the PSF having a peak of 1), then images in the sky's
        unit itself (an image without a unit is taken as it is). Empty
        when nothing is known.
    """
    if units.get("input") is not None:
        return u.Unit(units["input"])
    if units.get("target") is None:
        return ()
    target = u.Unit(units["target"])
    per_pixel = dict(zip(target.bases, target.powers)).get(u.pix) == -1
    return (target * u.pix / u.beam, target) if per_pixel else (target,)


def chunk_sizes(n, batch_size):
    """Sizes of the backend calls for ``n`` draws, about ``batch_size`` each.

    Every call gets at least 2 draws whenever more than one was asked for:
    a backend may answer a call for 1 with its direct estimate (the mean
    style, the most probable sky) instead of a draw.
    """
    n_calls = max(1, n // max(2, batch_size))
    return [n // n_calls + (i < n % n_calls) for i in range(n_calls)]


def pixel_scale_arcsec(wcs):
    """Pixel size of a celestial WCS in arcsec (the mean of its two axes), or None without one."""
    if wcs is None or not getattr(wcs, "has_celestial", False):
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600)


def warn_outside_domain(jobs, domain, *, stacklevel):
    """Warn once if any image's beam or pixel size is unlike the model's training domain.

    Compared are the beam's major and minor axes (from the image's beam
    cards) and the pixel size (from its celestial WCS) against the domain's,
    with a tolerance of `DOMAIN_TOLERANCE`. What the image or the domain
    does not record is not compared: an image without beam cards or WCS,
    or a model without a domain, gives no warning.
    """
    if not domain:
        return
    from .io import get_beam

    odd = []
    for job in jobs:
        try:
            beam = get_beam(job.image)
        except ValueError:  # malformed beam cards: assemble warns about those
            beam = None
        seen = {"pixel_scale_arcsec": pixel_scale_arcsec(job.image.wcs)}
        if beam is not None:
            seen["beam_major_arcsec"] = beam.major.to_value(u.arcsec)
            seen["beam_minor_arcsec"] = beam.minor.to_value(u.arcsec)
        if any(
            value is not None and domain.get(key) and abs(value / domain[key] - 1) > DOMAIN_TOLERANCE
            for key, value in seen.items()
        ):
            odd.append((job, seen))
    if not odd:
        return

    def describe(values):
        beam = "unknown beam"
        if values.get("beam_major_arcsec") and values.get("beam_minor_arcsec"):
            beam = f'beam {values["beam_major_arcsec"]:.3g}" x {values["beam_minor_arcsec"]:.3g}"'
        pixels = values.get("pixel_scale_arcsec")
        return f'{beam}, pixels {pixels:.3g}"' if pixels else f"{beam}, unknown pixels"

    job, seen = odd[0]
    what = "The image" if len(jobs) == 1 else f"Image {job.index}" + (
        f" (and {len(odd) - 1} other(s))" if len(odd) > 1 else "")
    preset = f" (preset {domain['preset']})" if domain.get("preset") else ""
    warnings.warn(
        f"{what} is unlike the data the model was trained on: {describe(seen)}, against "
        f"{describe(domain)}{preset}, more than {DOMAIN_TOLERANCE:.0%} apart. The network learned the beam in "
        "pixels; its sky model and fluxes may be wrong (resample the image to the training pixels, or "
        "train on data like it).",
        RadioreconWarning,
        stacklevel=stacklevel,
    )


def read_input(obj, what, want_unit, *, stacklevel):
    """Read an image and express it in ``want_unit``.

    ``want_unit`` is a unit (an image without a unit is assumed to be in
    it, with a warning), None (no conversion) or a sequence of units (see
    `input_units`): the image is converted to the first one its unit
    converts to, and an image without a unit is taken as it is (a model
    trained on skies alone never saw a dirty image's unit to assume).

    Returns
    -------
    image : NDData
        What `~radiorecon.io.read_image` made of ``obj``.
    data : `~numpy.ndarray`
        float32, blank pixels set to zero.
    mask : `~numpy.ndarray`
        True where the input was blank (NaN or masked).
    unit : `~astropy.units.Unit` or None
    """
    from .io import read_image

    image = read_image(obj)
    data = np.array(image.data, dtype=np.float32)
    mask = ~np.isfinite(data)
    if image.mask is not None:
        mask |= np.asarray(image.mask, dtype=bool)
    if mask.all():
        raise InputError(f"Every pixel of the {what} is blank (NaN or masked)")
    unit = image.unit
    single = isinstance(want_unit, (str, u.UnitBase))
    wants = [] if want_unit is None else [want_unit] if single else want_unit
    wants = [u.Unit(want) for want in wants]
    if wants and (unit is not None or single):
        if unit is None:
            warnings.warn(
                f"The {what} has no unit; assuming the model's training unit {wants[0]}.",
                RadioreconWarning,
                stacklevel=stacklevel,
            )
            unit = wants[0]
        elif unit not in wants:
            want = next((want for want in wants if unit.is_equivalent(want)), None)
            if want is None:
                raise u.UnitConversionError(
                    f"The {what} is in {unit}, which cannot be converted to {' or '.join(map(str, wants))}, "
                    f"the unit{'s' if len(wants) > 1 else ''} the model takes (from its training data)."
                )
            data = data * np.float32(unit.to(want))
            unit = want
    data[mask] = 0.0
    return image, data, mask, unit


def read_psf(obj):
    """The PSF as a NaN-free float64 array."""
    from .io import read_image

    return np.nan_to_num(np.asarray(read_image(obj).data, dtype=np.float64))


def make_jobs(images, psfs, backend, normalisation, input_unit):
    """Read and tile every image; one PSF is read and cut once per tile shape."""
    jobs, psf_cache = [], {}
    for index, (obj, psf_obj) in enumerate(zip(images, psfs)):
        what = "image" if len(images) == 1 else f"image {index}"
        image, data, mask, unit = read_input(obj, what, input_unit, stacklevel=4)
        tiler = Tiler(data.shape, backend.tile_for(data.shape), backend.tile_margin, backend.tile_multiple)
        psf = None
        if psf_obj is not None:
            key = (id(psf_obj), tiler.tile_shape)
            if key not in psf_cache:
                shape = tuple(backend.psf_factor * t for t in tiler.tile_shape)
                try:
                    psf_cache[key] = center_psf(read_psf(psf_obj), shape).astype(np.float32)
                except ValueError as exc:
                    raise InputError(f"The PSF of {what}: {exc}") from None
            psf = psf_cache[key]
        data = normalisation.forward(data).astype(np.float32, copy=False)
        jobs.append(Job(index, image, mask, unit, tiler, data, normalisation, psf))
    return jobs


def check_sample_memory(jobs, n_samples, return_samples, batch_size=8):
    """Refuse up front a request whose samples cannot fit in memory."""
    # Bytes per draw: a batch's tiles as returned (torch and numpy float32),
    # the stitching band of about one tile's height (float32 sums, a float64
    # quotient, then float32 copies: stitched, rescaled, the median's
    # working copy), and the kept samples.
    tile = max((job.tiler.tile_shape[0] * job.tiler.tile_shape[1] for job in jobs), default=0)
    per_sample = 8 * min(batch_size, sum(len(job.tiler) for job in jobs)) * tile
    per_sample += sum(24 * job.tiler.tile_shape[0] * job.mask.shape[1] + 4 * return_samples * job.mask.size
                      for job in jobs)
    check_memory(
        per_sample * n_samples,
        f"{n_samples} samples of {len(jobs)} image(s)",
        "ask for fewer samples, or predict fewer or smaller images at a time",
    )


def _call(backend, name, x, psf, n_samples, batch_size, keys, device, bar, positions=None):
    """The backend's Prediction for a batch, its samples gathered over calls of about ``batch_size``.

    ``positions`` (one list of pixel ``(x, y)`` per image of the batch) is
    passed on only when given: backends without ``deblend`` need not take it.
    """
    import torch

    from .backend import Prediction

    given = {} if positions is None else {"positions": positions}
    parts, start = [], 0
    for k in chunk_sizes(n_samples, batch_size):
        seeds = [[stream_seed(*key, start + s) for key in keys] for s in range(k)]
        pred = backend.predict(x, n_samples=k, psf=psf, draws=Draws(seeds, device), **given)
        if not isinstance(pred, Prediction):
            raise TypeError(f"Backend {name!r} returned {type(pred).__name__} from predict(), not a Prediction")
        if pred.samples is None:
            if "draws" in backend.capabilities:
                raise TypeError(f"Backend {name!r} declares 'draws' but returned no samples")
            bar.update(n_samples * x.shape[0])
            return pred
        if tuple(pred.samples.shape[:2]) != (k, x.shape[0]):
            raise TypeError(
                f"Backend {name!r} returned samples of shape {tuple(pred.samples.shape)}, "
                f"expected ({k}, {x.shape[0]}, ...)"
            )
        parts.append(pred)
        start += k
        bar.update(k * x.shape[0])
    if len(parts) == 1:
        return parts[0]
    return dataclasses.replace(parts[0], samples=torch.cat([p.samples for p in parts]))


def run(jobs, backend, name, *, n_samples, batch_size, seed, device, progress, aggregate=None,
        return_samples=True, positions=None):
    """Send every tile of every job through the backend, and stitch what comes back.

    Parameters
    ----------
    positions : list or None
        Per job, a list of pixel ``(x, y)`` of its sources, passed to the
        backend's ``predict`` (``deblend`` backends, whose images go whole,
        in one tile each) when given.
    aggregate : {"median", "mean"} or None
        Reduce the samples to the estimate (their median or mean) and their
        standard deviation band by band as they are stitched, so that they
        are never held for the whole image unless ``return_samples``. None
        keeps every sample for `assemble` to reduce.
    return_samples : bool
        Keep the stitched samples (always kept when ``aggregate`` is None).

    Returns
    -------
    outputs : list of dict
        Per job, stitched ``(ny, nx)`` maps in the model's units:
        ``estimate`` (the backend's mean, or the samples' aggregate), ``std``
        (the backend's, or the samples' when aggregated; None when none),
        ``samples`` (``(n_samples, ny, nx)`` when kept, else None),
        ``sampled`` (whether the backend drew samples), ``extras`` (name to
        map), ``components`` (list of per-tile arrays), ``units`` and ``meta``.
    """
    import torch
    from tqdm.auto import tqdm

    outputs = [_Stitched(job, n_samples, aggregate, return_samples or aggregate is None) for job in jobs]
    # Tiles of one shape (and PSF shape) can share a batch.
    groups = collections.defaultdict(list)
    for j, job in enumerate(jobs):
        for t in range(len(job.tiler)):
            psf_shape = None if job.psf is None else job.psf.shape
            groups[(job.tiler.tile_shape, psf_shape)].append((j, t))
    # One unit per draw of one tile, so a single image with many samples or
    # a slow sampler shows its progress call by call.
    total = sum(len(job.tiler) for job in jobs) * n_samples
    # seeded: a backend that draws from torch's global generator instead of
    # its Draws is still repeatable under a seed (though batch-dependent).
    with seeded(seed, device), torch.no_grad(), tqdm(
        total=total, disable=not progress, desc="predict", unit="draw", delay=PROGRESS_DELAY
    ) as bar:
        for members in groups.values():
            for b in range(0, len(members), batch_size):
                chunk = members[b : b + batch_size]
                x = torch.from_numpy(np.stack([jobs[j].tiler.tile(jobs[j].data, t) for j, t in chunk])).to(device)
                psf = None
                if jobs[chunk[0][0]].psf is not None:
                    psf = torch.from_numpy(np.stack([jobs[j].psf for j, _ in chunk])).to(device)
                keys = [(seed, jobs[j].index, t) for j, t in chunk]
                where = None if positions is None else [positions[j] for j, _ in chunk]
                pred = _call(backend, name, x, psf, n_samples, batch_size, keys, device, bar, where)
                _collect(pred, chunk, outputs)
    return [out.maps for out in outputs]


def _collect(pred, chunk, outputs):
    def cpu(tensor):
        return tensor.float().cpu().numpy()

    for i, (j, t) in enumerate(chunk):
        out = outputs[j]
        out.maps["units"] = pred.units
        if pred.samples is not None:
            out.add("samples", cpu(pred.samples[:, i]))
        else:
            out.add("estimate", cpu(pred.mean[i]))
            if pred.std is not None:
                out.add("std", cpu(pred.std[i]))
        if pred.components is not None:
            out.maps["components"].append(cpu(pred.components[i]))
        for key, value in pred.extras.items():
            out.add(("extra", key), cpu(value[i]))
        if pred.meta is not None:
            out.maps["meta"].update(pred.meta[i])


class _Stitched:
    """One job's backend outputs, stitched and rescaled band by band as its tiles come back in order."""

    def __init__(self, job, n_samples, aggregate, keep_samples):
        self.job, self.n_samples, self.aggregate, self.keep_samples = job, n_samples, aggregate, keep_samples
        self.stitchers = {}
        self.maps = dict(estimate=None, std=None, samples=None, sampled=False, extras={}, components=[],
                         units={}, meta={})

    def add(self, key, tile):
        """Add the next tile of output ``key``: "samples", "estimate", "std" or ("extra", name)."""
        if key not in self.stitchers:
            self.stitchers[key] = Stitcher(self.job.tiler, tile.shape[:-2])
        stitcher = self.stitchers[key]
        band = stitcher.add(tile)
        if stitcher.done:
            del self.stitchers[key]  # its buffer is no longer needed
        if band is not None:
            row, values = band
            self._store(key, slice(row, row + values.shape[-2]), self.job.normalisation.inverse(values))

    def _store(self, key, rows, values):
        maps, shape = self.maps, self.job.mask.shape

        def put(name, value, lead=()):
            if maps[name] is None:
                maps[name] = np.empty(lead + shape, dtype=np.float32)
            maps[name][..., rows, :] = value

        if key == "samples":
            maps["sampled"] = True
            if self.keep_samples:
                put("samples", values, (len(values),))
            if self.aggregate is not None:
                put("estimate", np.median(values, axis=0) if self.aggregate == "median" else values.mean(axis=0))
                if self.n_samples > 1:
                    put("std", values.std(axis=0, ddof=1))
        elif isinstance(key, tuple):
            extras = maps["extras"]
            if key[1] not in extras:
                extras[key[1]] = np.empty(shape, dtype=np.float32)
            extras[key[1]][rows] = values
        else:
            put(key, values)


def prediction_key(jobs, backend, *, model=None, **settings):
    """A digest of everything a `run` of ``jobs`` depends on, for reusing its outputs.

    The images and masks as the networks see them, the PSFs, the tiling,
    the backend's configuration and trained weights (by identity, the same
    backend object, unless ``model`` names them: a digest of the weights,
    the same in every process), and ``settings`` (``seed``, ``aggregate``,
    ...).
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps([model or id(backend), backend.config, repr(sorted(settings.items()))],
                             sort_keys=True, default=repr).encode())
    for job in jobs:
        digest.update(repr((job.index, job.data.shape, job.tiler.tile_shape, job.normalisation.scale)).encode())
        for array in (job.data, job.mask, job.psf):
            digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_outputs(path, outputs, *, n_samples, seconds):
    """Write `run` outputs to an ``.npz`` file, for `load_outputs` in a later process.

    Arrays are stored as they are (float32, compressed) and everything
    else as JSON: no pickle. ``seconds`` is what the `predict` call that
    made them took. An interrupted write never leaves a truncated file
    under ``path``.

    Raises
    ------
    OSError
        When the file cannot be written.
    TypeError
        For backend meta values that are not JSON numbers, strings or lists.
    """
    arrays, jobs = {}, []
    for j, out in enumerate(outputs):
        for name in ("estimate", "std", "samples"):
            if out[name] is not None:
                arrays[f"{j}.{name}"] = out[name]
        for name, value in out["extras"].items():
            arrays[f"{j}.extra.{name}"] = value
        for k, value in enumerate(out["components"]):
            arrays[f"{j}.component.{k}"] = value
        jobs.append({"maps": [name for name in ("estimate", "std", "samples") if out[name] is not None],
                     "sampled": bool(out["sampled"]), "extras": list(out["extras"]),
                     "components": len(out["components"]), "units": out["units"], "meta": out["meta"]})
    header = {"format": "radiorecon prediction outputs", "version": __version__, "n_samples": int(n_samples),
              "seconds": float(seconds), "jobs": jobs}
    arrays["header"] = np.frombuffer(json.dumps(header, default=_plain).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Sky models are mostly exact zeros: 20 draws of a 512x512 DDPM sky
        # take 0.2 MB compressed against 23 MB.
        np.savez_compressed(fh, **arrays)


def _plain(value):
    # Backends' meta values may be numpy scalars: stored as the Python numbers they hold.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a prediction file")


def load_outputs(path, n_jobs):
    """Read outputs written by `save_outputs`: ``(n_samples, outputs, seconds)``, or None if unreadable.

    A file that is missing, damaged, not of this format, of another number
    of jobs than ``n_jobs``, or written by another version of radiorecon is
    treated as absent (the outputs are then computed again), never as an
    error.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes().decode())
            # Another version's backends may have computed otherwise.
            if (header["format"] != "radiorecon prediction outputs" or header["version"] != __version__
                    or len(header["jobs"]) != n_jobs):
                return None
            outputs = []
            for j, job in enumerate(header["jobs"]):
                out = {name: None for name in ("estimate", "std", "samples")}
                out.update({name: npz[f"{j}.{name}"] for name in job["maps"]})
                out.update(sampled=bool(job["sampled"]), units=dict(job["units"]), meta=dict(job["meta"]),
                           extras={name: npz[f"{j}.extra.{name}"] for name in job["extras"]},
                           components=[npz[f"{j}.component.{k}"] for k in range(job["components"])])
                outputs.append(out)
            return int(header["n_samples"]), outputs, float(header["seconds"])
    except Exception:  # noqa: BLE001 - whatever is wrong with a cached file, it is predicted again
        return None


def first_samples(outputs, n_samples):
    """Copies of `run` outputs kept with their samples, cut to the first ``n_samples`` draws.

    The estimate and standard deviation are left for `assemble` to make
    from those draws. None when the outputs cannot be cut: without samples,
    or with maps a backend made from all its draws (extras, components).
    """
    cut = []
    for out in outputs:
        if out["samples"] is None or len(out["samples"]) < n_samples or out["extras"] or out["components"]:
            return None
        cut.append(copy.deepcopy(dict(out, samples=out["samples"][:n_samples], estimate=None, std=None)))
    return cut


def assemble(job, out, *, n_samples, aggregate, seed, return_samples, normalisation, units, backend, name,
             origin, uncertainty_scale=1.0, uncertainty_floor=0.0, flux_error_floor=0.0,
             detection_calibration=None):
    """The `~radiorecon.Reconstruction` of one job from its backend outputs.

    The standard deviation, whether of the samples or the backend's own, is
    multiplied by ``uncertainty_scale`` and ``uncertainty_floor`` (in
    normalised units) is added to it in quadrature: the model's
    calibration, see `radiorecon.calibration`. The samples and the estimate
    are not changed. ``flux_error_floor`` and ``detection_calibration`` are
    recorded for catalogs.
    """
    mask = job.mask
    samples, estimate, std = out["samples"], out["estimate"], out["std"]
    if out["sampled"]:
        if estimate is None:  # not reduced by run: every sample was kept
            estimate = np.median(samples, axis=0) if aggregate == "median" else samples.mean(axis=0)
            if n_samples > 1:
                std = samples.std(axis=0, ddof=1)
        if n_samples > 1:
            how = f"std of {n_samples} samples"
        else:
            how = "none: one sample gives no spread; use n_samples > 1"
    else:
        if std is not None:
            how = f"from backend {name}"
        else:
            how = f"none: backend {name} gives no uncertainty"
    if std is None:
        log.info("no uncertainty for this prediction (%s)", how)
    else:
        if uncertainty_scale != 1:
            std = std * uncertainty_scale
            how += f", times {uncertainty_scale:.4g} (calibrated)"
        if uncertainty_floor > 0:
            floor = normalisation.inverse(uncertainty_floor)
            std = np.hypot(std, floor)
            how += f", with {floor:.4g} added in quadrature (calibrated floor)"
    # The maps are run's own, not shared: blank them in place.
    estimate = estimate.astype(np.float32, copy=False)
    estimate[mask] = np.nan
    if std is not None:
        std = std.astype(np.float32, copy=False)
        std[mask] = np.nan
    kinds = out["units"]
    model = model_unit(job.unit, units.get("target"))

    def unit_of(key):
        return model if kinds.get(key, "model") == "model" else job.unit

    components = None
    if out["components"]:  # deblending backends predict whole images: one tile
        components = normalisation.inverse(out["components"][0][:, : mask.shape[0], : mask.shape[1]])
        components[:, mask] = np.nan
        if unit_of("estimate") is not None:
            components = u.Quantity(components, unit_of("estimate"), copy=False)
    extras = {}
    for key, value in out["extras"].items():
        value[mask] = np.nan  # blank in the input, blank in every map, as in the estimate
        unit = unit_of(key)
        extras[key] = value if unit is None else u.Quantity(value, unit, copy=False)
    beam = provenance.input_beam(job.image)
    meta = provenance.prediction_header(
        input_meta=job.image.meta,
        version=__version__,
        backend_name=name,
        backend_version=backend.version,
        origin=origin,
        config=backend.config,
        n_samples=n_samples,
        aggregate=aggregate,
        seed=seed,
        scale=normalisation.scale,
        uncertainty=how,
        beam=beam,
        backend_meta=out["meta"],
        uncertainty_scale=uncertainty_scale,
        uncertainty_floor=normalisation.inverse(uncertainty_floor),
        flux_error_floor=flux_error_floor,
        detection_calibration=detection_calibration,
    )
    return Reconstruction(
        estimate,
        uncertainty=None if std is None else StdDevUncertainty(std),
        mask=mask,
        wcs=job.image.wcs,
        unit=unit_of("estimate"),
        meta=meta,
        samples=samples if return_samples else None,
        components=components,
        extras=extras,
    )
