"""
Training on your own array
==========================

The shipped models learned ALMA's configuration C43-3 at 230 GHz. A network
learns how wide sources and sidelobes are in pixels, so for another array,
frequency or pixel size, train on simulations of your own instrument. This
tutorial describes an array by its antenna positions, trains a tiny STAR
model on pairs simulated on the fly, saves it, reloads it and predicts; the
model file records what it was trained on, and predicting an image of
another instrument warns. At these sizes the model is a toy; a real one
trains on tens of thousands of images (see :doc:`/training`).
"""

# %%
# An array of your own
# --------------------
#
# An array is a table of antenna positions, ``x`` (east), ``y`` (north) and
# ``z`` (up) in metres, with an optional dish ``diameter``: a table in
# memory, or any file astropy reads (ECSV, CSV, ...). Here, 24 antennas of
# 12 m on a three-armed spiral, out to 400 m.

import os
import tempfile
import warnings

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.table import QTable

from radiorecon import Reconstructor, simulate

arm = np.arange(1, 9)
radius = 400 * (arm / 8) ** 1.5
angles = np.concatenate([np.radians(angle) + 0.4 * arm / 8 for angle in (90, 210, 330)])
antennas = QTable({"x": np.tile(radius, 3) * np.cos(angles) * u.m,
                   "y": np.tile(radius, 3) * np.sin(angles) * u.m,
                   "z": np.zeros(24) * u.m,
                   "diameter": np.full(24, 12.0) * u.m})
folder = tempfile.mkdtemp()
array_path = os.path.join(folder, "spiral.ecsv")
antennas.write(array_path)
positions = simulate.load_array(array_path)  # what the simulator reads

# %%
# The simulator takes it as ``array=``, with every other setting of the
# preset (230 GHz, 20 minutes at transit, natural weighting) or overridden:
# here 0.15" pixels and 64 x 64 pixel images, sources within 2.5" of the
# centre. One observation, to see the PSF and the beam of the new array:

settings = dict(array=array_path, npix=64, pixel_scale=0.15 * u.arcsec,
                placement_radius=2.5 * u.arcsec, flux_range=[0.3, 1.0] * u.mJy)
example = simulate.observe(seed=1, **settings)

from radiorecon.visualization import plot_image

fig = plt.figure(figsize=(11, 3.8), layout="constrained")
layout = fig.add_subplot(1, 3, 1)
layout.scatter(positions["x"], positions["y"], s=12)
layout.set(aspect="equal", xlabel="east (m)", ylabel="north (m)", title="Antennas")
plot_image(example.psf, fig.add_subplot(1, 3, 2, projection=example.psf.wcs), title="PSF", colorbar=False)
plot_image(example.dirty, fig.add_subplot(1, 3, 3, projection=example.dirty.wcs), title="A dirty image")
print(example.beam)

# %%
# Training
# --------
#
# `~radiorecon.simulate.SimulatedPairs` simulates ``(dirty, apparent sky)``
# pairs when they are indexed, the same images ``make_dataset`` would
# write to disk. A tiny STAR network (8 base channels, two levels) trains for
# a few epochs; ``checkpoint`` saves its state after every epoch, so a run
# that is stopped resumes where it was.

pairs = simulate.SimulatedPairs(48, seed=3, **settings)
validation = simulate.SimulatedPairs(8, seed=4, **settings)
rec = Reconstructor("star", base_channels=8, style_base_channels=4, channel_mult=[1, 2])
rec.fit(pairs, epochs=4, batch_size=8, validation=validation, seed=0, threads=1,
        checkpoint=os.path.join(folder, "spiral.ckpt"), progress=False)
QTable(rows=rec.history)  # the losses of every epoch

# %%
# Saving, reloading, predicting
# -----------------------------
#
# The model file holds the weights, the configuration, the normalisation
# and the training domain: the preset, the clean beam, the pixel size and
# the noise of the training images. ``preset`` names the recipe the
# settings started from; the array is known by the beam it makes.

model_path = os.path.join(folder, "spiral.rrm")
rec.save(model_path)
model = Reconstructor.load(model_path)
model.domain

# %%
# An image of the same instrument predicts without complaint. After four
# epochs on 48 images the model has learned where the sources are, not yet
# their shapes nor all their flux, as the residual shows:

test = simulate.observe(seed=5, **settings)
sky = model.predict(test.dirty, n_samples=4, seed=0, progress=False)
fig = sky.plot(test.dirty, psf=test.psf, title="The spiral array's model on its own data")
plt.figure(fig)

# %%
# An image of another instrument, here ALMA's C43-3 at 0.1" pixels, warns
# (`~radiorecon.exceptions.RadioreconWarning`): its beam and pixels are not
# those the model learned, and its sky model may be far off.

alma = simulate.observe(seed=5, npix=64, placement_radius=2.5 * u.arcsec)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.predict(alma.dirty, seed=0, progress=False)
print(caught[0].category.__name__, ":", caught[0].message)
