"""Hogbom CLEAN, the classical reference deconvolution."""

import hashlib
import math
import numbers
from collections import OrderedDict

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve

from .._noise import robust_std
from ..backend import Backend, Prediction

__all__ = ["CleanBackend", "hogbom", "psf_convolve", "fit_clean_beam_pixels", "restore"]



def _clip_boxes(boxes, shape):
    """Boxes ``[y0, y1, x0, x1]`` cut to an image of ``shape``; empty ones dropped."""
    ny, nx = shape
    if boxes is None:
        return [(0, ny, 0, nx)]
    out = []
    for y0, y1, x0, x1 in boxes:
        y0, y1, x0, x1 = max(0, int(y0)), min(ny, int(y1)), max(0, int(x0)), min(nx, int(x1))
        if y0 < y1 and x0 < x1:
            out.append((y0, y1, x0, x1))
    if not out:
        raise ValueError(
            f"No clean box overlaps the {ny} x {nx} image: the boxes {list(map(list, boxes))} "
            "lie outside it (boxes are [y0, y1, x0, x1] in pixels, y1 and x1 excluded)"
        )
    return out


def psf_convolve(model, psf):
    """Clean components convolved with the PSF, as the `hogbom` loop subtracts them.

    The PSF is zero outside its array, exactly as in the loop (it is
    clipped, not wrapped), so ``dirty - psf_convolve(model, psf)`` is the
    loop's residual. Computed by FFT over the components' bounding box.

    Parameters
    ----------
    model : `~numpy.ndarray`
        ``(ny, nx)`` components.
    psf : `~numpy.ndarray`
        ``(pny, pnx)`` PSF of any size, centred at ``(pny // 2, pnx // 2)``.

    Returns
    -------
    `~numpy.ndarray`
        ``(ny, nx)`` float64.
    """
    model = np.asarray(model, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    ny, nx = model.shape
    out = np.zeros((ny, nx))
    ys, xs = np.nonzero(model)
    if ys.size == 0:
        return out
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    full = fftconvolve(model[y0:y1, x0:x1], psf, mode="full")
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    # full[i, j] lands on image pixel (i + y0 - cy, j + x0 - cx).
    oy0, oy1 = max(0, y0 - cy), min(ny, y0 - cy + full.shape[0])
    ox0, ox1 = max(0, x0 - cx), min(nx, x0 - cx + full.shape[1])
    if oy0 < oy1 and ox0 < ox1:
        out[oy0:oy1, ox0:ox1] = full[oy0 - y0 + cy : oy1 - y0 + cy, ox0 - x0 + cx : ox1 - x0 + cx]
    return out


def hogbom(dirty, psf, *, gain=0.1, niter=1000, threshold=0.0, boxes=None):
    """Hogbom CLEAN of one image.

    Each iteration finds the pixel of largest absolute residual (inside the
    clean boxes, if given), adds ``gain`` times its value to the model there
    and subtracts that times the PSF centred on it. Where the PSF centred on
    a pixel near an edge reaches past the image, it is clipped: a PSF of the
    image's size cleans every pixel within half an image of the peak; a PSF
    twice the image's size (peak at its centre) cleans the whole image.

    The loop is exact Hogbom (the same components as the textbook loop, up
    to float32 rounding), made fast by keeping the largest absolute residual
    of every row: an iteration subtracts the PSF in one fused in-place pass
    (torch) and refreshes only the maxima of the rows it touched, then finds
    the peak from the row maxima and one row. With clean boxes only the
    boxes' bounding box is updated during the loop (the search runs in the
    boxes alone); the residual outside it is computed once at the end, by
    FFT.

    Parameters
    ----------
    dirty : `~numpy.ndarray`
        ``(ny, nx)`` dirty image, finite.
    psf : `~numpy.ndarray`
        ``(pny, pnx)`` point-spread function of any size, peak 1 at
        ``(pny // 2, pnx // 2)`` (as `radiorecon.tiling.center_psf` makes it).
    gain : float
        Fraction of the peak removed per iteration, in (0, 1].
    niter : int
        Maximum number of iterations.
    threshold : float
        Stop when the absolute residual peak (inside the boxes) is at most
        this, in image units.
    boxes : list of ``[y0, y1, x0, x1]`` or None
        Clean boxes in pixels, as numpy slices (``y1`` and ``x1`` excluded):
        components are only placed in their union. Parts outside the image
        are ignored. `None` cleans the whole image.

    Returns
    -------
    model : `~numpy.ndarray`
        float32 clean components, in the dirty image's units times
        pixel/beam (Jy/pixel for a Jy/beam image).
    residual : `~numpy.ndarray`
        float32 ``dirty`` minus the components convolved with the PSF.
    iterations : int
        Iterations done (fewer than ``niter`` when the threshold stopped it).
    """
    import torch

    dirty = np.asarray(dirty)
    psf = np.asarray(psf)
    if dirty.ndim != 2 or psf.ndim != 2:
        raise ValueError(f"hogbom needs 2-D arrays, got dirty {dirty.shape} and psf {psf.shape}")
    if not (np.isfinite(dirty).all() and np.isfinite(psf).all()):
        raise ValueError("The dirty image and PSF must be finite (no NaN or inf)")
    pny, pnx = psf.shape
    cy, cx = pny // 2, pnx // 2
    if not (abs(psf[cy, cx] - 1) < 1e-3 and psf.max() <= psf[cy, cx]):
        raise ValueError(
            f"The PSF must peak at 1 at its centre (pixel {(cy, cx)}); it is {psf[cy, cx]:.4g} "
            f"there and peaks at {psf.max():.4g}. radiorecon.tiling.center_psf centres and normalises it."
        )
    if not 0 < gain <= 1:
        raise ValueError(f"gain must be in (0, 1], not {gain}")
    ny, nx = dirty.shape
    regions = _clip_boxes(boxes, (ny, nx))
    # Work on the boxes' bounding box only: the rest of the residual is
    # needed only at the end, and one FFT gives it then.
    wy0, wy1 = min(r[0] for r in regions), max(r[1] for r in regions)
    wx0, wx1 = min(r[2] for r in regions), max(r[3] for r in regions)
    whole = (wy0, wy1, wx0, wx1) == (0, ny, 0, nx)
    work = np.array(dirty[wy0:wy1, wx0:wx1], dtype=np.float32, order="C")
    wh, ww = work.shape
    work_t = torch.from_numpy(work)  # shares memory: numpy for small ops, torch for big
    psf32 = np.ascontiguousarray(psf, dtype=np.float32)
    psf_t = torch.from_numpy(psf32)
    # Per region (in work coordinates): rows, columns, and the largest
    # absolute residual of each of its rows (as numpy and torch views).
    search = []
    for y0, y1, x0, x1 in regions:
        y0, y1, x0, x1 = y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0
        rowmax = np.abs(work[y0:y1, x0:x1]).max(axis=1)
        search.append((y0, y1, x0, x1, rowmax, torch.from_numpy(rowmax)))

    comp_y, comp_x, comp_f = [], [], []
    iterations = niter
    for it in range(niter):
        best, by, bx = -1.0, 0, 0
        for y0, y1, x0, x1, rowmax, _ in search:
            j = int(rowmax.argmax())
            if rowmax[j] > best:
                best, by = rowmax[j], y0 + j
                bx = x0 + int(np.abs(work[by, x0:x1]).argmax())
        peak = float(work[by, bx])
        if abs(peak) <= threshold:
            iterations = it
            break
        flux = gain * peak
        comp_y.append(by)
        comp_x.append(bx)
        comp_f.append(flux)
        # The PSF centred on (by, bx), clipped to the work array.
        y0, y1 = max(0, by - cy), min(wh, by - cy + pny)
        x0, x1 = max(0, bx - cx), min(ww, bx - cx + pnx)
        work_t[y0:y1, x0:x1].sub_(psf_t[y0 - by + cy : y1 - by + cy, x0 - bx + cx : x1 - bx + cx], alpha=flux)
        for ry0, ry1, rx0, rx1, _, rowmax_t in search:
            a, b = max(y0, ry0), min(y1, ry1)
            if a < b and max(x0, rx0) < min(x1, rx1):
                torch.amax(work_t[a:b, rx0:rx1].abs(), dim=1, out=rowmax_t[a - ry0 : b - ry0])

    model = np.zeros((ny, nx), dtype=np.float64)
    np.add.at(model, (np.array(comp_y, dtype=int) + wy0, np.array(comp_x, dtype=int) + wx0), comp_f)
    if whole:
        residual = work
    else:
        residual = (np.asarray(dirty, dtype=np.float64) - psf_convolve(model, psf)).astype(np.float32)
        residual[wy0:wy1, wx0:wx1] = work
    return model.astype(np.float32), residual, iterations


def fit_clean_beam_pixels(psf):
    """The clean beam fitted to a PSF's main lobe, in pixel units.

    Parameters
    ----------
    psf : `~numpy.ndarray`
        2-D PSF.

    Returns
    -------
    major, minor : float
        FWHM in pixels.
    pa : float
        Position angle in degrees, counter-clockwise from +y towards -x
        (east of north for an image with north up and east left, i.e.
        negative ``CDELT1``), as `radiorecon.beam.fit_clean_beam` gives it.
    """
    import astropy.units as u

    from ..beam import fit_clean_beam

    # With one-degree pixels the beam's angles in degrees are its sizes in pixels.
    beam = fit_clean_beam(psf, 1 * u.deg)
    return float(beam.major.to_value(u.deg)), float(beam.minor.to_value(u.deg)), float(beam.pa.to_value(u.deg))


def restore(model, major, minor, pa, residual=None):
    """Clean components convolved with the clean beam (peak 1), plus the residual.

    A component of flux S gives a peak of S: the restored image is in the
    dirty image's units (Jy/beam, of the clean beam) when ``model`` is in
    Jy/pixel.

    Parameters
    ----------
    model : `~numpy.ndarray`
        Clean components.
    major, minor, pa : float
        Clean beam FWHMs in pixels and position angle in degrees, as
        `fit_clean_beam_pixels` gives them.
    residual : `~numpy.ndarray`, optional
        Added to the result.
    """
    from ..beam import pixel_beam_kernel

    model = np.asarray(model, dtype=np.float64)
    kernel = pixel_beam_kernel(major, minor, pa, limit=max(model.shape))
    restored = fftconvolve(model, kernel, mode="same") if model.any() else np.zeros(model.shape)
    if residual is not None:
        restored = restored + residual
    return restored


def beam_area_pixels(major, minor):
    """Area of an elliptical Gaussian beam of FWHM ``major`` x ``minor`` pixels, in pixels."""
    return math.pi * major * minor / (4 * math.log(2))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_config(c):
    if not (_is_number(c["gain"]) and 0 < c["gain"] <= 1):
        raise ValueError(f"gain must be in (0, 1] (the fraction of the peak removed per iteration), not {c['gain']!r}")
    if not (_is_int(c["niter"]) and c["niter"] >= 0):
        raise ValueError(f"niter must be a non-negative integer, not {c['niter']!r}")
    if not (_is_number(c["threshold"]) and c["threshold"] >= 0):
        raise ValueError(
            f"threshold must be a number >= 0 (in units of the image's robust noise), not {c['threshold']!r}"
        )
    if not (_is_int(c["rms_box"]) and c["rms_box"] >= 1):
        raise ValueError(f"rms_box must be a positive integer (pixels), not {c['rms_box']!r}")
    mask = c["mask"]
    if mask is None:
        return
    how = "mask must be null or a list of clean boxes [[y0, y1, x0, x1], ...] in pixels"
    if not isinstance(mask, list) or not mask:
        raise ValueError(f"{how}, not {mask!r}")
    for i, box in enumerate(mask):
        if not (isinstance(box, list) and len(box) == 4 and all(_is_int(v) for v in box)):
            raise ValueError(f"{how}; box {i} is {box!r}, not four integers")
        y0, y1, x0, x1 = box
        if not (0 <= y0 < y1 and 0 <= x0 < x1):
            raise ValueError(
                f"{how}, each with 0 <= y0 < y1 and 0 <= x0 < x1 (y1 and x1 excluded, as in "
                f"image[y0:y1, x0:x1]); box {i} is {box!r}"
            )


class CleanBackend(Backend):
    """Hogbom CLEAN: clean components as the sky model, residual rms as uncertainty.

    Needs no training, only the PSF. Configuration:

    ``gain``
        Fraction of the peak removed per iteration, in (0, 1].
    ``niter``
        Maximum number of iterations.
    ``threshold``
        Stop when the residual peak is at most this many times the image's
        robust noise (1.4826 times the median absolute deviation of the
        dirty image).
    ``mask``
        `None`, or clean boxes ``[[y0, y1, x0, x1], ...]`` in pixels of the
        image (numpy slices: ``y1`` and ``x1`` excluded): components are
        only placed in their union. Parts outside the image are ignored.
    ``rms_box``
        Side in pixels of the sliding box the residual rms is taken in.

    ``extras["rms"]`` is the residual's rms in a sliding box of ``rms_box``
    pixels, in the dirty image's unit (Jy/beam). The uncertainty of the model
    (Jy/pixel) is that rms divided by the clean beam's area in pixels, the
    surface-brightness conversion from Jy/beam to Jy/pixel. ``extras`` also
    holds the ``residual`` (dirty-image units) and the ``restored`` image:
    the components convolved with the clean beam (peak 1, so Jy/beam of the
    clean beam for a Jy/beam input) plus the residual.
    The clean beam is an elliptical Gaussian fitted to the PSF's main lobe;
    ``meta`` carries it in pixel units, with the stopping state:

    ``CBMAJPX``, ``CBMINPX``
        Clean beam major and minor FWHM, in pixels.
    ``CBPA``
        Its position angle in degrees, counter-clockwise from +y (north)
        towards -x (east when ``CDELT1`` < 0, as in radio images).
    ``CLNITER``
        Iterations done.
    ``CLNSTOP``
        ``"threshold"`` or ``"niter"``: what stopped the loop.
    """

    capabilities = {"reconstruct", "std", "needs_psf"}
    version = "2"
    tile_shape = None
    # A PSF twice the image size reaches every pixel from a peak anywhere.
    psf_factor = 2
    default_config = {"gain": 0.1, "niter": 1000, "threshold": 3.0, "rms_box": 31, "mask": None}

    def __init__(self, **config):
        super().__init__(**config)
        self._beams = OrderedDict()  # clean beams of recent PSFs, by content

    def check_config(self):
        _check_config(self.config)

    def clean_beam(self, psf):
        """``(major, minor, pa)`` of the clean beam of ``psf`` in pixels and degrees (cached)."""
        psf = np.ascontiguousarray(psf, dtype=np.float32)
        key = (psf.shape, hashlib.sha1(psf.tobytes()).hexdigest())
        if key not in self._beams:
            try:
                self._beams[key] = fit_clean_beam_pixels(psf)
            except ValueError as exc:
                raise ValueError(f"clean cannot fit a clean beam to the PSF: {exc}") from None
            while len(self._beams) > 8:
                self._beams.popitem(last=False)
        return self._beams[key]

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        import torch

        c = self.config
        models, stds, rmss, residuals, restored, meta = [], [], [], [], [], []
        for dirty, beam in zip(inputs.detach().cpu().float().numpy(), psf.detach().cpu().float().numpy()):
            noise = robust_std(dirty)
            model, residual, iterations = hogbom(
                dirty, beam, gain=c["gain"], niter=c["niter"], threshold=c["threshold"] * noise, boxes=c["mask"]
            )
            major, minor, pa = self.clean_beam(beam)
            residual64 = residual.astype(np.float64)
            rms = np.sqrt(np.maximum(uniform_filter(residual64**2, size=c["rms_box"], mode="reflect"), 0))
            models.append(model)
            # The rms is in the dirty image's unit (Jy/beam); per pixel of the
            # model (Jy/pixel) it is spread over the clean beam's area.
            stds.append(rms / beam_area_pixels(major, minor))
            rmss.append(rms)
            residuals.append(residual)
            restored.append(restore(model, major, minor, pa, residual64))
            meta.append(
                {
                    "CBMAJPX": major,
                    "CBMINPX": minor,
                    "CBPA": pa,
                    "CLNITER": int(iterations),
                    "CLNSTOP": "threshold" if iterations < c["niter"] else "niter",
                }
            )

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        return Prediction(
            mean=stack(models),
            std=stack(stds),
            extras={"residual": stack(residuals), "restored": stack(restored), "rms": stack(rmss)},
            units={"residual": "input", "restored": "input", "rms": "input"},
            meta=meta,
        )
