"""
Comparing backends on one image
===============================

Every method sits behind the same front door, `radiorecon.Reconstructor`,
so comparing them is a loop. This tutorial reconstructs one simulated image
with Hogbom CLEAN, the matched filter, the pretrained STAR model and the
pretrained diffusion model (DDPM), catalogs each result, scores the catalogs
against the true sources and draws one panel per method.
"""

# %%
# The image and its truth
# -----------------------
#
# A 128 x 128 image of the default ALMA preset with five sources within 5"
# of the centre, and its PSF (``obs.psf``), which CLEAN and the matched
# filter need.

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.table import QTable

from radiorecon import Reconstructor, simulate
from radiorecon.catalog import find_sources, find_sources_in_model
from radiorecon.metrics import score_catalog

obs = simulate.observe(seed=11, npix=128, n_sources=(5, 5), empty_fraction=0,
                       placement_radius=5 * u.arcsec, flux_range=[0.2, 0.8] * u.mJy)
truth = QTable(obs.truth)
shown = QTable(truth["x", "y", "flux", "peak_snr"])  # the true sources
shown["flux"] = shown["flux"].to(u.mJy)
for name in shown.colnames:
    shown[name].info.format = ".1f" if name != "flux" else ".2f"
shown

# %%
# Four reconstructions
# --------------------
#
# CLEAN and the matched filter need no training, only the PSF. STAR and the
# DDPM ship trained; both sample, so each is given a few samples and a
# seed. The DDPM runs its DPM-Solver++ sampler with 10 steps, a setting of
# prediction that `~radiorecon.Reconstructor.set_params` changes on a
# trained model.

ddpm = Reconstructor.pretrained("ddpm").set_params(sampler="dpm++2m", steps=10)
methods = {
    "CLEAN": (Reconstructor("clean", niter=500, threshold=3.0), dict(psf=obs.psf)),
    "Matched filter": (Reconstructor("matched-filter"), dict(psf=obs.psf)),
    "STAR": (Reconstructor.pretrained("star"), dict(n_samples=8, return_samples=True)),
    "DDPM": (ddpm, dict(n_samples=4, return_samples=True)),
}
results = {name: rec.predict(obs.dirty, seed=0, progress=False, **options)
           for name, (rec, options) in methods.items()}

# %%
# Catalogs and scores
# -------------------
#
# Sky models (CLEAN's components, STAR's and the DDPM's skies) are cataloged
# as a restored image shows them, by
# `~radiorecon.catalog.find_sources_in_model`, at 4 times the dirty image's
# noise. The matched filter's output is a detection image in Jy/beam with its
# own noise as uncertainty, thresholded by `~radiorecon.catalog.find_sources`
# at the same S/N. `~radiorecon.metrics.score_catalog` matches each catalog
# one-to-one with the truth, here within 3 pixels (0.3", a third of the beam).

catalogs = {
    name: (find_sources(result, threshold=4.0) if name == "Matched filter"
           else find_sources_in_model(result, obs.dirty, threshold=4.0))
    for name, result in results.items()
}
rows = []
for name, catalog in catalogs.items():
    scores = score_catalog(catalog, truth, radius=3.0, flux=None)
    rows.append({"method": name, **{key: scores[key] for key in
                 ("n_found", "tp", "fp", "fn", "completeness", "purity", "f1")}})
table = QTable(rows=rows)
for key in ("completeness", "purity", "f1"):
    table[key].info.format = ".2f"
table

# %%
# One panel per method
# --------------------
#
# `~radiorecon.visualization.plot_image` draws each result on sky axes made
# with its WCS, and `~radiorecon.visualization.plot_catalog` overlays its
# catalog against the truth: matched sources solid, spurious ones dashed
# red, missed ones as yellow squares. CLEAN's components are single pixels,
# so its restored image is shown instead.

from radiorecon.visualization import legend_handles, plot_catalog, plot_image

from astropy.nddata import NDData

fig = plt.figure(figsize=(13, 7.5), layout="constrained")
panels = {"Dirty image": obs.dirty, **results}
for i, (name, image) in enumerate(panels.items()):
    if name == "CLEAN":
        name, image = "CLEAN (restored)", NDData(image.extras["restored"], wcs=image.wcs, meta=image.meta)
    ax = fig.add_subplot(2, 3, i + 1, projection=image.wcs)
    plot_image(image, ax, title=name)
    if name != "Dirty image":
        plot_catalog(ax, catalogs[name.split(" (")[0]], truth=truth, legend=False)
key = fig.add_subplot(2, 3, 6)
key.axis("off")
key.legend(handles=legend_handles(truth=True, probability=True), loc="center", title="Sources")

# %%
# With sources of a few times the noise, the methods differ most in how
# many faint sources they find and how many noise peaks they take for
# sources; measurements over many images, not one, tell them apart: that is what
# ``radiorecon benchmark`` does.
