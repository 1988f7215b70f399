"""Simulated ALMA observations: dirty images, PSFs and true skies for training.

`observe` simulates one observation; `make_dataset` writes many to disk and
`load_dataset` (or `SimulatedDataset`) reads them back as ``(dirty, sky)``
pairs that `radiorecon.Reconstructor.fit` trains on. The default preset,
``"alma-cycle5-c43-3"``, is the recipe of the reference data set (Taran et
al. 2023, Table 1); any parameter can be overridden by keyword. The
``"extended"`` preset puts radio galaxies (`radiorecon.simulate.galaxies`)
in that setting, and ``"lotss"`` makes LoTSS-DR2-like restored cut-outs.
"""

from .arrays import available_arrays, load_array
from .dataset import SimulatedDataset, load_dataset, make_dataset
from . import galaxies
from .imaging import RestoredImaging, UVCoverage, imaging_weights, visibility_noise
from .observe import SimulatedObservation, observe
from .presets import DEFAULT_PRESET, available_presets, preset_parameters, resolve_parameters
from .primary_beam import primary_beam_fwhm, primary_beam_gain, primary_beam_image
from .stream import SimulatedPairs
from .uv import earth_rotation_uvw, hour_angles

__all__ = [
    "observe",
    "SimulatedObservation",
    "make_dataset",
    "load_dataset",
    "SimulatedDataset",
    "SimulatedPairs",
    "available_presets",
    "preset_parameters",
    "resolve_parameters",
    "DEFAULT_PRESET",
    "available_arrays",
    "load_array",
    "earth_rotation_uvw",
    "hour_angles",
    "imaging_weights",
    "visibility_noise",
    "UVCoverage",
    "RestoredImaging",
    "primary_beam_fwhm",
    "primary_beam_gain",
    "primary_beam_image",
]
