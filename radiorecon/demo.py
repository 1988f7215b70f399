"""The whole path on a built-in example: ``radiorecon demo``.

Simulate one observation with the default preset, reconstruct it with the
shipped STAR model, detect its sources, compare them with the truth, and
write everything a user would look at.
"""

import contextlib
import os

import numpy as np
import astropy.units as u

__all__ = ["run_demo"]

_FILES = ("sky.fits", "sources.ecsv", "sources.reg", "demo.png")


def run_demo(out="radiorecon-demo", *, model="star", n_samples=10, seed=3, threshold=None,
             overwrite=False, progress=True, threads=None):
    """Simulate, reconstruct, catalog and score one default-preset observation.

    Parameters
    ----------
    out : str or os.PathLike
        Directory for ``sky.fits`` (sky model, ``UNCERT``, ``MASK``),
        ``sources.ecsv`` (catalog), ``sources.reg`` (DS9 regions) and
        ``demo.png`` (`radiorecon.visualization.plot_reconstruction`:
        dirty image, sky model, uncertainty, residual, and the detections
        over the apparent true sky with matched, spurious and missed
        sources marked).
    model : str or os.PathLike
        ``pretrained:NAME`` for a shipped model (a name from
        `radiorecon.available_pretrained`), else a model file if one
        exists at that path, else a shipped model's bare name.
    n_samples : int
        Samples for the uncertainty: styles for STAR, diffusion draws for
        DDPM.
    seed : int
        Fixes the simulated observation and the samples (3, the default,
        gives five sources; 0 gives an empty field).
    threshold : float, optional
        Detection threshold, in units of the dirty image's robust noise,
        applied to the sky model convolved with the clean beam, as in
        `radiorecon.benchmark` (`radiorecon.catalog.find_sources_in_model`).
        By default the model's
        `~radiorecon.Reconstructor.catalog_threshold`, else
        `radiorecon.catalog.DEFAULT_THRESHOLD` (5), as for ``radiorecon
        predict --catalog`` and the benchmark.
    overwrite : bool
        Replace existing output files.
    progress : bool
    threads : int, optional
        Torch CPU threads for the prediction (see
        `~radiorecon.Reconstructor.predict`).

    Returns
    -------
    dict
        ``observation`` (`~radiorecon.simulate.SimulatedObservation`),
        ``result`` (`~radiorecon.Reconstruction`), ``catalog``
        (`~astropy.table.QTable`), ``scores`` (purity, completeness, F1,
        ...), ``threshold`` (the one used) and ``files`` (paths written). The four files are written
        together at the end: a failure leaves none of them changed.
    """
    from ._files import atomic_path, check_new
    from .catalog import default_threshold, find_sources_in_model, to_regions
    from .io import write_result
    from .metrics import score_catalog
    from .simulate import observe
    from astropy.table import QTable

    files = [os.path.join(out, name) for name in _FILES]
    for f in files:
        check_new(f, overwrite, "pass overwrite=True (--overwrite) to replace it")
    rec = _open(model)
    if threshold is None:
        threshold = default_threshold(rec)
    os.makedirs(out, exist_ok=True)

    obs = observe(seed=seed)
    # Backends that model the observation (CLEAN, score) take its PSF.
    psf = obs.psf if "needs_psf" in rec.capabilities else None
    result = rec.predict(obs.dirty, psf=psf, n_samples=n_samples, seed=seed, progress=progress,
                         return_samples=n_samples > 1, threads=threads)

    catalog = find_sources_in_model(result, obs.dirty, threshold)
    fwhm_px = catalog.meta["beam_fwhm_pix"]
    truth = QTable(obs.truth)
    truth["flux"] = (truth["flux"] * truth["pb_gain"]).to(u.Jy)
    scores = score_catalog(catalog, truth, fwhm_px)

    with contextlib.ExitStack() as stack:
        tmp = [stack.enter_context(atomic_path(f, overwrite=overwrite)) for f in files]
        write_result(result, tmp[0], overwrite=True)
        catalog.write(tmp[1], format="ascii.ecsv")
        to_regions(catalog).write(tmp[2], format="ds9")
        _plot(obs, result, catalog, truth, tmp[3], title=f"radiorecon demo: {rec.backend_name}, seed {seed}, "
              f"detections at {threshold:g} sigma")
    return {"observation": obs, "result": result, "catalog": catalog, "scores": scores, "threshold": threshold,
            "files": files}


def _open(model):
    """The model ``model`` names, in the command line's order (docs/cli.rst).

    ``pretrained:NAME`` is explicit and comes first; then an existing file;
    then a shipped model's bare name. A directory is never a model file.
    """
    from .exceptions import InputError
    from .pretrained import available_pretrained
    from .reconstructor import Reconstructor

    name = os.fspath(model)
    if name.startswith("pretrained:"):
        return Reconstructor.pretrained(name.partition(":")[2])
    if os.path.isfile(name):
        return Reconstructor.load(name)
    if name in available_pretrained():
        return Reconstructor.pretrained(name)
    raise InputError(
        f"{name!r} is neither a model file nor a shipped model "
        f"(shipped: {', '.join(available_pretrained()) or 'none'})"
    )


def _plot(obs, result, catalog, truth, path, title):
    from astropy.nddata import NDData

    from .visualization import plot_reconstruction

    # The apparent sky (what the dirty image encodes) is the truth to look at;
    # the sources lie within the primary beam, so its central half is shown.
    apparent = NDData(np.asarray(obs.sky.data) * obs.primary_beam, wcs=obs.sky.wcs, unit=obs.sky.unit)
    plot_reconstruction(result, obs.dirty, catalog=catalog, truth=truth, truth_image=apparent, psf=obs.psf,
                        title=title, size=obs.dirty.shape[0] // 2, path=path, overwrite=True)
