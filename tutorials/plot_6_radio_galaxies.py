"""
Simulating radio galaxies
=========================

Beyond the Gaussian sources of the reference data set, the simulator draws
a population of radio galaxies (`radiorecon.simulate.galaxies`): compact
sources, FR I galaxies (a core and two jets fading outwards, straight or
bent into tails) and FR II galaxies (a faint core and two edge-brightened
lobes ending in hotspots). Every source is a sum of elliptical Gaussians,
so its true image is exact. This tutorial draws a few with the ``"lotss"``
preset, a LoTSS-DR2-like cut-out at 144 MHz, and looks at what the
simulator knows about each.
"""

# %%
# One cut-out
# -----------
#
# ``"lotss"`` makes 80 x 80 pixels of 1.5" with one source near the centre,
# a *restored* image as LoTSS publishes: the sky convolved with the 6"
# restoring beam, plus noise correlated by that beam. ``class_fractions``
# picks the classes (compact, FR I, FR II); here FR IIs only.

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np

from radiorecon import simulate
from radiorecon.visualization import plot_image

obs = simulate.observe(seed=4, preset="lotss", class_fractions=(0, 0, 1))
obs.truth["class", "flux", "las", "redshift", "linear_size", "peak_snr"]

# %%
# The components it is made of, and each source's own true image (what a
# deblender is scored against), a cube that sums to the sky:

print(obs.components["kind", "x", "y", "flux", "fwhm_major"])
cube = obs.source_images()
print(cube.shape, cube.unit, u.allclose(cube.sum(axis=0), obs.sky.data * obs.sky.unit))

# %%
# The observed image, the true sky and the components' centres:

fig = plt.figure(figsize=(10, 4.2), layout="constrained")
ax = fig.add_subplot(1, 2, 1, projection=obs.dirty.wcs)
plot_image(obs.dirty, ax, title="Restored image (LoTSS-like)")
ax = fig.add_subplot(1, 2, 2, projection=obs.sky.wcs)
plot_image(obs.sky, ax, title="True sky")
ax.scatter(obs.components["x"], obs.components["y"], s=25, marker="+", color="cyan", label="components")
ax.legend(loc="upper right", fontsize=8)

# %%
# A gallery
# ---------
#
# The first images of each class for one seed. FR I jets fade outwards and
# some bend into tails; FR II lobes brighten towards their hotspots.

classes = {"compact": (1, 0, 0), "FR I": (0, 1, 0), "FR II": (0, 0, 1)}
fig = plt.figure(figsize=(14, 10), layout="constrained")
for row, (name, fractions) in enumerate(classes.items()):
    for column in range(3):
        obs = simulate.observe(seed=3, index=column, preset="lotss", class_fractions=fractions)
        source = obs.truth[0]
        ax = fig.add_subplot(3, 3, 3 * row + column + 1, projection=obs.dirty.wcs)
        size = "" if name == "compact" else f", {source['las'].to_value(u.arcsec):.0f}\""
        plot_image(obs.dirty, ax, scalebar=column == 0,
                   title=f"{name}: {source['flux'].to_value(u.mJy):.0f} mJy{size}")
        ax.coords[0].set_axislabel(" ")
        ax.coords[1].set_axislabel(" ")

# %%
# Training sets of these images are made the same way, on disk or on the
# fly: ``simulate.make_dataset(n, preset="lotss", seed=0, out="train/")`` or
# ``simulate.SimulatedPairs(n, preset="extended", npix=256)`` (see
# :doc:`/simulate`).
