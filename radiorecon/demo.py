"""The whole path on a built-in example: ``radiorecon demo``.

Simulate one observation with the default preset, reconstruct it with the
shipped STAR model, detect its sources, compare them with the truth, and
write everything a user would look at.
"""

import os

import numpy as np
import astropy.units as u

__all__ = ["run_demo"]

_FILES = ("sky.fits", "sources.ecsv", "sources.reg", "demo.png")


def run_demo(out="radiorecon-demo", *, model="star", n_samples=10, seed=3, threshold=3.0,
             overwrite=False, progress=True):
    """Simulate, reconstruct, catalog and score one default-preset observation.

    Parameters
    ----------
    out : str or os.PathLike
        Directory for ``sky.fits`` (sky model, ``UNCERT``, ``MASK``),
        ``sources.ecsv`` (catalog), ``sources.reg`` (DS9 regions) and
        ``demo.png`` (dirty image, reconstruction, uncertainty, truth with
        the detections circled).
    model : str or os.PathLike
        Shipped model (a name from `radiorecon.available_pretrained`, with
        or without the ``pretrained:`` prefix) or a model file.
    n_samples : int
        Styles (samples) for the uncertainty.
    seed : int
        Fixes the simulated observation and the samples (3, the default,
        gives five sources; 0 gives an empty field).
    threshold : float
        Detection threshold, in units of the dirty image's robust noise,
        applied to the sky model convolved with the clean beam, as in
        `radiorecon.benchmark` (`radiorecon.catalog.find_sources_in_model`).
    overwrite : bool
        Replace existing output files.
    progress : bool

    Returns
    -------
    dict
        ``observation`` (`~radiorecon.simulate.SimulatedObservation`),
        ``result`` (`~radiorecon.Reconstruction`), ``catalog``
        (`~astropy.table.QTable`), ``scores`` (purity, completeness, F1,
        ...) and ``files`` (paths written).
    """
    from .catalog import find_sources_in_model, to_regions
    from .io import write_result
    from .metrics import score_catalog
    from .reconstructor import Reconstructor
    from .simulate import observe
    from astropy.table import QTable

    files = [os.path.join(out, name) for name in _FILES]
    existing = [f for f in files if os.path.exists(f)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(out, exist_ok=True)

    obs = observe(seed=seed)
    rec = _open(model)
    result = rec.predict(obs.dirty, n_samples=n_samples, seed=seed, progress=progress, return_samples=n_samples > 1)

    catalog = find_sources_in_model(result, obs.dirty, threshold)
    fwhm_px = catalog.meta["beam_fwhm_pix"]
    truth = QTable(obs.truth)
    truth["flux"] = (truth["flux"] * truth["pb_gain"]).to(u.Jy)
    scores = score_catalog(catalog, truth, fwhm_px)

    write_result(result, files[0], overwrite=overwrite)
    catalog.write(files[1], format="ascii.ecsv", overwrite=overwrite)
    to_regions(catalog).write(files[2], format="ds9", overwrite=overwrite)
    _plot(obs, result, catalog, files[3], title=f"{rec.backend_name} sky model (Jy/pix)")
    return {"observation": obs, "result": result, "catalog": catalog, "scores": scores, "files": files}


def _open(model):
    from .pretrained import available_pretrained
    from .reconstructor import Reconstructor

    name = str(model)
    if name.startswith("pretrained:"):
        return Reconstructor.pretrained(name.partition(":")[2])
    # A shipped name wins over a directory that happens to share it.
    if name in available_pretrained() or not os.path.isfile(name):
        return Reconstructor.pretrained(name)
    return Reconstructor.load(name)


def _plot(obs, result, catalog, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    truth = np.asarray(obs.sky.data) * obs.primary_beam
    sigma = result.uncertainty.array if result.uncertainty is not None else np.full(result.data.shape, np.nan)
    panels = [("dirty (Jy/beam)", obs.dirty.data), (title, result.data),
              ("uncertainty (Jy/pix)", sigma), ("apparent true sky, detections", truth)]
    c = np.array(truth.shape) // 2
    half = 128
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(np.asarray(image)[c[0] - half: c[0] + half, c[1] - half: c[1] + half], origin="lower",
                  cmap="inferno", extent=(c[1] - half - 0.5, c[1] + half - 0.5, c[0] - half - 0.5, c[0] + half - 0.5))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    for x, y in zip(catalog["x"], catalog["y"]):
        axes[3].add_patch(Circle((float(x), float(y)), 6, fill=False, color="cyan", lw=1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
