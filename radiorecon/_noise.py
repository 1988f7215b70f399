"""The one robust noise estimate, shared by the front door, the backends and the catalogs."""

import numpy as np

# Scales the median absolute deviation to the standard deviation of a Gaussian.
MAD_TO_STD = 1.4826


def robust_std(image, mask=None):
    """Standard deviation of the pixels from their median absolute deviation.

    Insensitive to the few bright pixels of sources: up to half the pixels
    may be outliers.

    Parameters
    ----------
    image : array-like
        The pixels, in any unit (the result is in the same unit).
    mask : bool array-like, optional
        True where pixels must be left out, in addition to non-finite ones;
        broadcast to ``image``'s shape.

    Returns
    -------
    float
        ``1.4826 * median(|x - median(x)|)`` of the finite, unmasked pixels;
        0 when there are none.
    """
    image = np.asarray(image)
    good = np.isfinite(image)
    if mask is not None:
        good &= ~np.broadcast_to(np.asarray(mask, bool), image.shape)
    pixels = image[good]
    if pixels.size == 0:
        return 0.0
    return float(MAD_TO_STD * np.median(np.abs(pixels - np.median(pixels))))
