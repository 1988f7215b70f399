"""How images are scaled between the user's units and the units networks work in.

Networks learn best on numbers of order one. `Normalisation` divides inputs
(and targets) by one scale fitted on the training data and multiplies
outputs back; it is stored in model files, so a model always sees data the
way it was trained.
"""

import dataclasses

import numpy as np

from ._noise import robust_std

__all__ = ["Normalisation", "ESTIMATORS"]

#: How `Normalisation.fit` measures the scale of training images.
ESTIMATORS = {
    # Dirty images: networks then work in units of the noise.
    "noise": robust_std,
    # Noise-free sparse skies (unpaired training): in units of a typical peak.
    "peak": lambda image: float(np.nanmax(np.abs(image))) if np.isfinite(image).any() else 0.0,
    # Or of a typical root mean square: the data's standard deviation that
    # diffusion preconditioning (EDM's sigma_data) assumes.
    "rms": lambda image: float(np.sqrt(np.nanmean(image**2))) if np.isfinite(image).any() else 0.0,
}


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Divide by ``scale`` on the way in, multiply on the way out.

    Parameters
    ----------
    scale : float
        Positive scale, in the unit of the training inputs.
    estimator : {"noise", "peak", "rms", None}
        How the scale was measured (`ESTIMATORS`); None for a fixed scale.
    """

    scale: float = 1.0
    estimator: str = None

    def __post_init__(self):
        if isinstance(self.scale, bool) or not (
            isinstance(self.scale, (int, float, np.floating)) and np.isfinite(self.scale) and self.scale > 0
        ):
            raise ValueError(f"The normalisation scale must be a positive finite number, not {self.scale!r}")
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise ValueError(f"Unknown normalisation {self.estimator!r}; use one of {sorted(ESTIMATORS)} or None")
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def fit(cls, images, estimator, n_max=64):
        """Measure the scale on up to ``n_max`` images spread evenly through ``images``.

        Parameters
        ----------
        images : sequence of array
            Indexable; item ``i`` is an image or an ``(image, target)`` pair.
        estimator : {"noise", "peak", "rms", None}
            The backend's ``input_scale``. The median over images of the
            per-image values that are positive becomes the scale (1 if none
            is, or for None).
        """
        if estimator is None:
            return cls(1.0, None)
        if estimator not in ESTIMATORS:
            raise ValueError(f"Unknown input_scale {estimator!r}: use one of {sorted(ESTIMATORS)} or None")
        idx = np.linspace(0, len(images) - 1, min(n_max, len(images))).astype(int)
        values = []
        for i in idx:
            item = images[int(i)]
            image = item[0] if isinstance(item, tuple) else item
            values.append(ESTIMATORS[estimator](np.asarray(image, dtype=np.float64)))
        values = [v for v in values if v > 0]
        return cls(float(np.median(values)) if values else 1.0, estimator)

    def forward(self, x):
        """User units to network units (works on numpy arrays and tensors)."""
        return x / self.scale

    def inverse(self, y):
        """Network units back to user units."""
        return y * self.scale

    def to_dict(self):
        """The JSON form stored in model files."""
        return {"method": "scale", "scale": self.scale, "estimator": self.estimator}

    @classmethod
    def from_dict(cls, doc):
        """Read `to_dict`'s form (and that of older files, without ``estimator``).

        A missing or null scale means 1 (files of backends that were never
        normalised).

        Raises
        ------
        ValueError
            If the entry is not a mapping of a known method with a positive scale.
        """
        if doc is None:
            return cls()
        if not isinstance(doc, dict) or doc.get("method", "scale") != "scale":
            raise ValueError(f"normalisation {doc!r} is not a known method")
        scale = doc.get("scale")
        return cls(1.0 if scale is None else scale, doc.get("estimator"))
