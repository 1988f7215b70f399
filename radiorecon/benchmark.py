"""Benchmarks of reconstruction methods in the form of the published tables.

Every method is scored the same way on a simulated data set
(`radiorecon.simulate.make_dataset`):

- The reference is the *apparent* sky, the true sky times the primary beam,
  which is what the dirty image encodes; true fluxes are compared as
  ``flux * pb_gain``.
- Sources are detected with `radiorecon.catalog.find_sources` in the method's
  sky model convolved with the clean beam (Jy/beam), at ``threshold`` times
  the robust noise of the dirty image, so that point-like models (CLEAN
  components) and smooth ones (networks) meet the same detector. The *truth
  limit* row does this with the true sky: no method can beat it. The *dirty*
  row detects in the dirty image itself, and a method that returns a
  restored image (``extras["restored"]``, as CLEAN does) is detected there,
  as astronomers do with CLEAN.
- Found sources are matched one-to-one to true ones within one clean-beam
  FWHM (`radiorecon.catalog.match`); fluxes are measured in an aperture of
  one FWHM radius on the sky model, pixels near two detections going to the
  nearer one (on the dirty image, divided by the same aperture on the PSF).
- Image metrics (L2, PSNR, SSIM; `radiorecon.metrics`) compare the sky model
  with the apparent sky, in Jy/pixel.
"""

import time

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.table import QTable
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.signal import fftconvolve

from . import metrics
from .beam import beam_kernel
from .catalog import find_sources
from ._noise import robust_std

__all__ = ["run_benchmark", "to_markdown", "COLUMNS"]

#: Columns of the benchmark table, in order.
COLUMNS = ["method", "n_samples", "purity", "completeness", "f1", "f1_std", "flux_r2",
           "l2", "psnr", "ssim", "network_runs", "seconds_per_image", "n_images"]


def _aperture_sum(image, x, y, radius):
    """Sum of ``image`` within ``radius`` of each position, pixels shared by
    neighbours going to the nearest one (so blended sources are not counted twice)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return np.zeros(0)
    r = int(np.ceil(radius))
    y0, y1 = max(0, int(y.min()) - r), min(image.shape[0], int(y.max()) + r + 2)
    x0, x1 = max(0, int(x.min()) - r), min(image.shape[1], int(x.max()) + r + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    distance = np.hypot(yy[None] - y[:, None, None], xx[None] - x[:, None, None])
    nearest = np.argmin(distance, axis=0)
    inside = distance.min(axis=0) <= radius
    cut = np.nan_to_num(image[y0:y1, x0:x1])
    return np.array([cut[inside & (nearest == k)].sum() for k in range(len(x))])


def _catalog(detect, wcs, noise, threshold, flux_image, radius, psf=None):
    """Detect in ``detect``; measure fluxes on ``flux_image`` in apertures."""
    found = find_sources(NDData(detect, wcs=wcs), threshold=threshold, noise=noise)
    flux = _aperture_sum(flux_image, found["x"], found["y"], radius)
    if psf is not None:  # a dirty image: divide by the PSF's share of the aperture
        cy, cx = np.array(psf.shape) // 2
        flux = flux / _aperture_sum(psf, [cx], [cy], radius)[0]
    found["flux"] = flux * u.Jy
    return found


def run_benchmark(data, methods, *, n_images=None, threshold=5.0, seed=0, progress=True):
    """Score methods on a simulated data set.

    Parameters
    ----------
    data : `radiorecon.simulate.SimulatedDataset` or str
        The data set (or its directory).
    methods : list of tuple
        ``(label, reconstructor, n_samples)`` for each row.
    n_images : int, optional
        Use the first ``n_images`` images (all by default).
    threshold : float
        Detection threshold in units of the dirty image's robust noise.
    seed : int
        Image ``i`` is predicted with seed ``seed + i``: same seed, same table.
    progress : bool
        Show a progress bar over images.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per method plus ``truth limit`` and ``dirty``, with `COLUMNS`.
    examples : dict
        For the first image: ``dirty``, ``truth`` and ``results`` (per method
        label, the `~radiorecon.Reconstruction`); and ``fluxes``, per row
        label, the matched (true, measured) flux pairs over all images. For
        `plot_report`.
    """
    from tqdm.auto import tqdm

    if isinstance(data, str):
        from .simulate import load_dataset

        data = load_dataset(data)
    n = len(data) if n_images is None else min(int(n_images), len(data))
    if n < 1:
        raise ValueError("The data set holds no images")
    pb = data.primary_beam
    truth_all = data.truth
    labels = ["truth limit", "dirty"] + [m[0] for m in methods]
    rows = {label: [] for label in labels}
    times = {label: [] for label in labels}
    examples = {"fluxes": {label: [] for label in labels}, "results": {}}
    for i in tqdm(range(n), desc="benchmark", disable=not progress, unit="image"):
        dirty = data.image(i)
        psf = np.asarray(data.psf(i).data)
        sky = np.asarray(data.sky(i).data) * pb
        wcs = dirty.wcs
        beam = data.beam(i)
        pixel = proj_plane_pixel_scales(wcs)[1] * u.deg
        kernel = beam_kernel(beam, pixel, (65, 65))
        fwhm_px = float((beam.major / pixel).decompose())
        noise = robust_std(dirty.data)
        truth = truth_all[truth_all["image_id"] == i]
        truth = QTable(truth)
        truth["flux"] = (truth["flux"] * truth["pb_gain"]).to(u.Jy)

        def score(label, found, model=None, seconds=None, runs=0, n_samples=1):
            row = metrics.score_catalog(found, truth, fwhm_px)
            if model is not None:
                row.update(metrics.image_scores(model, sky))
            row["seconds"] = np.nan if seconds is None else float(seconds)
            row["runs"], row["n_samples"] = runs, n_samples
            rows[label].append(row)
            examples["fluxes"][label].append((row["flux_true"], row["flux_found"]))

        smooth = fftconvolve(sky, kernel, mode="same")
        score("truth limit", _catalog(smooth, wcs, noise, threshold, sky, fwhm_px))
        dirty_data = np.nan_to_num(np.asarray(dirty.data, float))
        score("dirty", _catalog(dirty_data, wcs, noise, threshold, dirty_data, fwhm_px, psf=psf))
        if i == 0:
            examples.update(dirty=dirty, truth=sky)
        for label, rec, n_samples in methods:
            needs_psf = "needs_psf" in rec.capabilities
            start = time.perf_counter()
            result = rec.predict(dirty, psf=data.psf(i, full=True) if needs_psf else None,
                                 n_samples=n_samples, seed=seed + i, progress=False)
            elapsed = time.perf_counter() - start
            model = np.nan_to_num(np.asarray(result.data, float))
            if "restored" in result.extras:
                # The method's own detection image (CLEAN's restored image):
                # detect there, and measure fluxes there as for the dirty image.
                restored = np.nan_to_num(np.asarray(result.extras["restored"], float))
                found = _catalog(restored, wcs, noise, threshold, restored, fwhm_px, psf=kernel)
            else:
                found = _catalog(fftconvolve(model, kernel, mode="same"), wcs, noise, threshold, model, fwhm_px)
            score(label, found, model, elapsed, rec.backend.network_evaluations(n_samples), n_samples)
            if i == 0:
                examples["results"][label] = result
    table = QTable(names=COLUMNS, dtype=[str, int] + [float] * 8 + [int, float, int])
    for label in labels:
        s = metrics.summarize([{k: v for k, v in r.items() if k != "match"} for r in rows[label]])
        seconds = [r["seconds"] for r in rows[label]]
        table.add_row([
            label, rows[label][0]["n_samples"], s["purity"], s["completeness"], s["f1"],
            s.get("f1_std", np.nan), s.get("flux_r2", np.nan), s.get("mse_mean", np.nan),
            s.get("psnr_mean", np.nan), s.get("ssim_mean", np.nan), rows[label][0]["runs"],
            float(np.median(seconds)) if np.isfinite(seconds).any() else np.nan, len(rows[label]),
        ])
    table.meta.update(threshold=threshold, seed=seed, match_radius="1 clean-beam FWHM",
                      reference="apparent sky (sky x primary beam)")
    return table, examples


def to_markdown(table):
    """The benchmark table as a Markdown table (numbers to 3-4 significant digits)."""
    def fmt(value):
        if isinstance(value, (str, np.str_)):
            return str(value)
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        return "—" if not np.isfinite(value) else (f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.4g}")

    lines = ["| " + " | ".join(table.colnames) + " |", "|" + "---|" * len(table.colnames)]
    for row in table:
        lines.append("| " + " | ".join(fmt(row[c]) for c in table.colnames) + " |")
    return "\n".join(lines)


def plot_report(table, examples, out):
    """Write ``panels.png`` (dirty, truth, reconstructions, uncertainty) and ``fluxes.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(examples["results"])
    n = 2 + 2 * len(labels)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2))
    panels = [("dirty", examples["dirty"].data), ("truth (apparent)", examples["truth"])]
    for label in labels:
        result = examples["results"][label]
        panels.append((label, result.data))
        sigma = result.uncertainty.array if result.uncertainty is not None else np.full(result.shape, np.nan)
        panels.append((f"{label}: uncertainty", sigma))
    c = np.array(examples["dirty"].data.shape) // 2
    for ax, (title, image) in zip(axes, panels):
        cut = np.asarray(image)[c[0] - 128 : c[0] + 128, c[1] - 128 : c[1] + 128]
        ax.imshow(cut, origin="lower", cmap="inferno")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(f"{out}/panels.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for label, pairs in examples["fluxes"].items():
        true = np.concatenate([u.Quantity(t, u.Jy).to_value(u.mJy) for t, _ in pairs] or [[]])
        found = np.concatenate([u.Quantity(f, u.Jy).to_value(u.mJy) for _, f in pairs] or [[]])
        ax.scatter(true, found, s=6, label=label, alpha=0.6)
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k:", lw=1)
    ax.set_xlabel("true apparent flux (mJy)")
    ax.set_ylabel("measured flux (mJy)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/fluxes.png", dpi=110)
    plt.close(fig)
