"""Robust noise estimates shared by the front door and the backends."""

import numpy as np

# Scales the median absolute deviation to the standard deviation of a Gaussian.
MAD_TO_STD = 1.4826


def robust_std(image):
    """Standard deviation of the finite pixels from their median absolute deviation.

    Insensitive to the few bright pixels of sources; 0 for an image with no
    finite pixels.
    """
    finite = np.asarray(image)[np.isfinite(image)]
    if finite.size == 0:
        return 0.0
    return float(MAD_TO_STD * np.median(np.abs(finite - np.median(finite))))
