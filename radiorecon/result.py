"""The sky model that `~radiorecon.Reconstructor.predict` returns."""

import numpy as np
from astropy.nddata import NDDataRef

__all__ = ["Reconstruction"]


class Reconstruction(NDDataRef):
    """A reconstructed sky model: an `~astropy.nddata.NDData` with its samples.

    ``data`` is the sky model (Jy/pixel when the input was Jy/beam),
    ``uncertainty`` a `~astropy.nddata.StdDevUncertainty` or `None` when the
    method gives none, ``mask`` is True where the input was blank, ``wcs`` is
    the input's 2-D celestial WCS and ``meta`` a `~astropy.io.fits.Header`
    with provenance cards (``RR*``). Arithmetic, slicing and unit handling
    come from `~astropy.nddata.NDDataRef`; ``write`` and ``read`` use the
    FITS layout of `~radiorecon.io.write_result`, which
    `~astropy.nddata.CCDData` also reads.

    Parameters
    ----------
    data, uncertainty, mask, wcs, meta, unit
        As for `~astropy.nddata.NDData`.
    samples : `~numpy.ndarray` or None
        ``(n_samples, ny, nx)`` individual draws, in ``unit``, when asked for.
    components : `~numpy.ndarray` or None
        ``(n_sources, ny, nx)`` per-source models from a deblending backend.
    extras : dict of str to `~numpy.ndarray`
        Further ``(ny, nx)`` maps from the method (e.g. ``residual``).
    """

    def __init__(self, data, *args, samples=None, components=None, extras=None, **kwargs):
        super().__init__(data, *args, **kwargs)
        shape = np.shape(self.data)
        for name, arr in (("samples", samples), ("components", components)):
            if arr is not None and np.shape(arr)[1:] != shape:
                raise ValueError(
                    f"{name} of shape {np.shape(arr)} do not match the data's shape {shape}"
                )
        self.samples = samples
        self.components = components
        self.extras = dict(extras or {})

    @property
    def n_samples(self):
        """Number of stored samples (0 when none were kept)."""
        return 0 if self.samples is None else len(self.samples)

    def _slice(self, item):
        kwargs = super()._slice(item)
        from astropy.wcs import WCS

        if isinstance(self.wcs, WCS):
            # Keep a FITS WCS (as CCDData does), so slices can be written.
            kwargs["wcs"] = self.wcs[item]
        planes = (slice(None),) + (item if isinstance(item, tuple) else (item,))
        if self.samples is not None:
            kwargs["samples"] = self.samples[planes]
        if self.components is not None:
            kwargs["components"] = self.components[planes]
        kwargs["extras"] = {key: value[item] for key, value in self.extras.items()}
        return kwargs


# Registers the FITS reader and writer of Reconstruction with astropy's
# unified I/O; imported last because io itself needs Reconstruction.
from . import io as _io  # noqa: E402,F401
