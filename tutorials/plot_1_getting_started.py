"""
Getting started: a CASA image to a sky model and a catalog
==========================================================

CASA and WSClean export images as 4-D FITS cubes, with degenerate frequency
and Stokes axes, in Jy/beam with the restoring beam in the header. This
tutorial makes a small stand-in for such an export, reconstructs its sky
with the pretrained STAR model, catalogs the sources, writes the results and
draws them.
"""

# %%
# A dirty image
# -------------
#
# `radiorecon.simulate.observe` simulates an ALMA observation (the default
# preset: configuration C43-3 at 230 GHz, 0.1" pixels, 50 µJy/beam of
# noise). We keep it small, 128 x 128 pixels, with three to four sources
# placed within 5" of the centre so that they fall inside the image.

import os
import tempfile

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits
from astropy.table import QTable
from astropy.wcs import WCS

from radiorecon import Reconstructor, simulate

obs = simulate.observe(seed=7, npix=128, n_sources=(3, 4), empty_fraction=0,
                       placement_radius=5 * u.arcsec, flux_range=[0.3, 0.8] * u.mJy)
shown = QTable(obs.truth["x", "y", "flux", "peak_snr"])  # the true sources
shown["flux"] = shown["flux"].to(u.mJy)
for name in shown.colnames:
    shown[name].info.format = ".1f" if name != "flux" else ".2f"
shown

# %%
# We write it as CASA does, a ``(1, 1, 128, 128)`` cube whose third and
# fourth axes are one frequency channel and Stokes I, with ``BUNIT`` and the
# beam (``BMAJ``, ``BMIN``, ``BPA``) in the header. Everything this tutorial
# writes goes to a temporary directory.

celestial = obs.dirty.wcs
cube = WCS(naxis=4)
cube.wcs.ctype = [*celestial.wcs.ctype, "FREQ", "STOKES"]
cube.wcs.cunit = [*celestial.wcs.cunit, "Hz", ""]
cube.wcs.crval = [*celestial.wcs.crval, obs.dirty.meta["OBSFREQ"], 1]  # Hz
cube.wcs.cdelt = [*celestial.wcs.cdelt, 1.875e9, 1]
cube.wcs.crpix = [*celestial.wcs.crpix, 1, 1]
header = cube.to_header()
header["BUNIT"] = "Jy/beam"
for card in ("BMAJ", "BMIN", "BPA"):
    header[card] = obs.dirty.meta[card]

folder = tempfile.mkdtemp()
image_path = os.path.join(folder, "field.image.fits")
fits.writeto(image_path, np.asarray(obs.dirty.data, dtype="float32")[None, None], header)
fits.getdata(image_path).shape

# %%
# `radiorecon.io.read_image` drops the degenerate axes and keeps the
# celestial WCS, the unit and the beam; every function of the package that
# takes an image reads it this way, so the path itself will do.

from radiorecon.io import get_beam, read_image

dirty = read_image(image_path)
print(dirty.shape, dirty.unit, get_beam(dirty))

# %%
# The sky model
# -------------
#
# The STAR model ships with the package. It samples: each of the
# ``n_samples`` draws is one plausible sky, their median is the sky model
# (Jy/pixel) and their standard deviation its uncertainty. ``seed`` makes
# the draws repeatable, and ``return_samples=True`` keeps them.

star = Reconstructor.pretrained("star")
sky = star.predict(image_path, n_samples=8, seed=0, return_samples=True, progress=False)
print(sky.unit, sky.n_samples, sky.meta["RRBACKND"])
print(f"total flux {np.nansum(sky.data) * 1e3:.2f} mJy "
      f"(true, times the primary beam: {np.sum(obs.truth['flux'] * obs.truth['pb_gain']).to_value(u.mJy):.2f} mJy)")

# %%
# A catalog
# ---------
#
# `radiorecon.catalog.find_sources_in_model` sees the sky model as a
# restored image (convolved with the beam) and detects sources above a
# threshold in units of the dirty image's noise; the samples give each
# source a flux error and a detection probability (the fraction of samples
# in which it is detected).

from radiorecon.catalog import find_sources_in_model

catalog = find_sources_in_model(sky, dirty, threshold=4.0)
catalog["id", "sky_centroid", "flux", "flux_err", "snr", "detection_probability"]

# %%
# Writing the results
# -------------------
#
# ``write`` stores the sky model with its uncertainty (``UNCERT``), mask
# (``MASK``) and provenance cards; the catalog is an astropy table.

sky.write(os.path.join(folder, "field.sky.fits"))
catalog.write(os.path.join(folder, "field.sources.ecsv"))
with fits.open(os.path.join(folder, "field.sky.fits")) as hdul:
    print([hdu.name for hdu in hdul], hdul[0].header["RRUNCERT"])

# %%
# The picture
# -----------
#
# ``Reconstruction.plot`` (`radiorecon.visualization.plot_reconstruction`)
# draws the dirty image, the sky model, its uncertainty and the residual on
# sky axes, with the beam, a scale bar and colour bars in physical units.
# Given the true sources, the catalog panel marks found sources that match
# one as solid ellipses, spurious ones dashed and missed ones as squares.
# The figure is a plain matplotlib `~matplotlib.figure.Figure`;
# ``plt.figure(fig)`` hands it to pyplot, which shows it.

fig = sky.plot(dirty, catalog=catalog, truth=obs.truth, psf=obs.psf,
               title="STAR on a simulated ALMA image")
plt.figure(fig)

# %%
# From the shell, the same in one line (see :doc:`/cli`)::
#
#     radiorecon predict pretrained:star field.image.fits -o field.sky.fits --samples 8 --seed 0 --catalog field.sources.ecsv --threshold 4
