"""radiorecon: sky models, uncertainties and catalogs from dirty radio images.

Importing the package is cheap: torch, astropy and the backends are imported
only when something that needs them is used.
"""

import importlib
import importlib.metadata
import logging

from .pretrained import available_pretrained
from .registry import available_backends, backend_info

try:
    __version__ = importlib.metadata.version("radiorecon")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
    "Reconstructor",
    "Reconstruction",
    "Backend",
    "Prediction",
    "available_backends",
    "available_pretrained",
    "backend_info",
]

logging.getLogger("radiorecon").addHandler(logging.NullHandler())

# Attributes loaded on first access (PEP 562), so that `import radiorecon`
# and `available_backends()` stay free of torch and astropy.
_LAZY = {
    "Reconstructor": "radiorecon.reconstructor",
    "Reconstruction": "radiorecon.result",
    "Backend": "radiorecon.backend",
    "Prediction": "radiorecon.backend",
}
_SUBMODULES = {
    "io", "catalog", "metrics", "simulate", "benchmark", "beam", "registry", "exceptions",
    "backends", "tiling", "modelfile", "cli", "nn", "pretrained", "diffusion", "resample", "calibration",
    "pipeline", "normalisation", "training", "provenance", "seeding", "visualization",
    "score_sampling", "parallel", "mosaic", "instrument",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"radiorecon.{name}")
    raise AttributeError(f"module 'radiorecon' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
