"""Hogbom CLEAN, the classical reference deconvolution."""

import numpy as np
from scipy.ndimage import uniform_filter

from .._noise import robust_std
from ..backend import Backend, Prediction

__all__ = ["CleanBackend", "hogbom"]


def hogbom(dirty, psf, *, gain=0.1, niter=1000, threshold=0.0):
    """Hogbom CLEAN of one image.

    Parameters
    ----------
    dirty : `~numpy.ndarray`
        ``(ny, nx)`` dirty image.
    psf : `~numpy.ndarray`
        ``(ny, nx)`` point-spread function, peak 1 at ``(ny // 2, nx // 2)``.
    gain : float
        Fraction of the peak removed per iteration.
    niter : int
        Maximum number of iterations.
    threshold : float
        Stop when the absolute residual peak falls below this (image units).

    Returns
    -------
    model : `~numpy.ndarray`
        Clean components, in the dirty image's units times pixel/beam.
    residual : `~numpy.ndarray`
    iterations : int
    """
    residual = np.array(dirty, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    model = np.zeros_like(residual)
    ny, nx = residual.shape
    cy, cx = ny // 2, nx // 2
    for it in range(niter):
        peak_at = np.argmax(np.abs(residual))
        y, x = divmod(int(peak_at), nx)
        peak = residual[y, x]
        if abs(peak) <= threshold:
            return model, residual, it
        flux = gain * peak
        model[y, x] += flux
        # The PSF centred on (y, x), clipped to the image.
        y0, y1 = max(0, y - cy), min(ny, y - cy + ny)
        x0, x1 = max(0, x - cx), min(nx, x - cx + nx)
        residual[y0:y1, x0:x1] -= flux * psf[y0 - y + cy : y1 - y + cy, x0 - x + cx : x1 - x + cx]
    return model, residual, niter


class CleanBackend(Backend):
    """Hogbom CLEAN: clean components as the sky model, residual rms as uncertainty.

    Needs no training, only the PSF. The threshold is in units of the
    image's robust noise (1.4826 times the median absolute deviation of the
    dirty image). The uncertainty is the residual's rms in a sliding box of
    ``rms_box`` pixels; the residual is returned in ``extras``.
    """

    capabilities = {"reconstruct", "uncertainty", "needs_psf"}
    version = "1"
    tile_shape = None
    default_config = {"gain": 0.1, "niter": 1000, "threshold": 3.0, "rms_box": 31}

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if not 0 < c["gain"] <= 1:
            raise ValueError(f"gain must be in (0, 1], not {c['gain']}")
        if not (isinstance(c["niter"], int) and c["niter"] >= 0):
            raise ValueError(f"niter must be a non-negative integer, not {c['niter']}")
        if c["threshold"] < 0:
            raise ValueError(f"threshold must be >= 0, not {c['threshold']}")

    def predict(self, inputs, *, n_samples=1, psf=None):
        import torch

        c = self.config
        models, stds, residuals = [], [], []
        for dirty, beam in zip(inputs.cpu().double().numpy(), psf.cpu().double().numpy()):
            noise = robust_std(dirty)
            model, residual, _ = hogbom(
                dirty, beam, gain=c["gain"], niter=c["niter"], threshold=c["threshold"] * noise
            )
            rms = np.sqrt(np.maximum(uniform_filter(residual**2, size=c["rms_box"], mode="reflect"), 0))
            models.append(model)
            stds.append(rms)
            residuals.append(residual)

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        return Prediction(mean=stack(models), std=stack(stds), extras={"residual": stack(residuals)})
