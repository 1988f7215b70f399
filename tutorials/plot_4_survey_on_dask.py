"""
A survey on Dask
================

A survey is many pointings, each an image that is reconstructed on its own.
`radiorecon.parallel.predict_many` sends one task per image to the workers
of a `Dask <https://distributed.dask.org>`_ cluster, writes a sky model and
a catalog per field, skips fields that are done when it is run again, and
merges the catalogs. The same call runs on a laptop, an HPC allocation or
Kubernetes (see :ref:`parallel`); here, four small fields on a cluster
inside this process.
"""

# %%
# The fields
# ----------
#
# Four simulated pointings of 96 x 96 pixels, written as FITS files in
# Jy/beam with their WCS and beam, as a survey's images would be.

import os
import tempfile

import astropy.units as u
import matplotlib.pyplot as plt

from radiorecon import simulate

folder = tempfile.mkdtemp()
os.makedirs(os.path.join(folder, "fields"))
settings = dict(npix=96, n_sources=(2, 4), empty_fraction=0, placement_radius=4 * u.arcsec,
                flux_range=[0.3, 0.8] * u.mJy)
inputs = []
for index in range(4):
    obs = simulate.observe(seed=21, index=index, **settings)
    inputs.append(os.path.join(folder, "fields", f"field{index}.fits"))
    obs.dirty.write(inputs[-1])
sorted(os.listdir(os.path.join(folder, "fields")))

# %%
# A cluster
# ---------
#
# Without ``client``, `~radiorecon.parallel.predict_many` starts a
# `~distributed.LocalCluster` of one process per core and closes it at the
# end. Here we start a cluster of one worker thread inside this process
# (``processes=False``), as a notebook on a small machine might, and pass
# its client. On an HPC system the client would be that of a
# ``dask_jobqueue`` cluster; on Kubernetes, a scheduler's address.

from distributed import Client, LocalCluster

from radiorecon.parallel import predict_many

cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)
client = Client(cluster)

survey_dir = os.path.join(folder, "survey")
survey = predict_many(inputs, "pretrained:star", survey_dir, client=client,
                      n_samples=4, seed=1, threshold=4.0, progress=False)
survey.fields

# %%
# Each field has its sky model (``NAME.model.fits``) and catalog
# (``NAME.sources.ecsv``); ``catalog.ecsv`` is the merged catalog.

sorted(os.listdir(survey_dir))

# %%
# Resuming
# --------
#
# A rerun checks each field's outputs (both complete, made by the same
# model and settings) and skips those that are done. Delete one field's
# model, as an interrupted run would leave it, and only that field is
# predicted again.

os.remove(os.path.join(survey_dir, "field2.model.fits"))
again = predict_many(inputs, "pretrained:star", survey_dir, client=client,
                     n_samples=4, seed=1, threshold=4.0, progress=False)
again.fields["field", "status"]

# %%
# The merged catalog
# ------------------
#
# One `~astropy.table.QTable` for the survey: ``id`` numbered across all
# fields, the field each source comes from and its id there, ``ra``,
# ``dec`` and ``sky_centroid``, then the columns of the fields' catalogs.

catalog = again.catalog
catalog["id", "field", "field_id", "ra", "dec", "flux", "snr"]

# %%
# The sky models with their sources, one panel per field:

from radiorecon import Reconstruction
from radiorecon.visualization import plot_catalog, plot_image

fig = plt.figure(figsize=(15, 3.4), layout="constrained")
for i, row in enumerate(again.fields):
    model = Reconstruction.read(os.path.join(survey_dir, f"{row['field']}.model.fits"))
    ax = fig.add_subplot(1, 4, i + 1, projection=model.wcs)
    n = row["n_sources"]
    plot_image(model, ax, title=f"{row['field']}: {n} source{'s' if n != 1 else ''}")
    plot_catalog(ax, catalog[catalog["field"] == row["field"]], legend=False)

client.close()
cluster.close()
