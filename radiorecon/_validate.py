"""Checks of plain arguments shared by every public function.

One home for them, so that ``predict(n_samples=True)`` and ``generate(n=True)``
are refused alike and every message reads the same.
"""

import numbers

import numpy as np

__all__ = ["FWHM_PER_SIGMA", "check_int", "check_seed"]

#: Full width at half maximum of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))

# numpy's SeedSequence takes any non-negative integer, but a seed must also
# fit a FITS card (RRSEED) and torch's manual_seed: 64 bits.
_SEED_MAX = 2**63 - 1


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value, name, *, minimum=1, maximum=None):
    """Return ``value`` as an int if it is an integer within bounds.

    Booleans are refused although Python counts them as integers: ``True``
    samples is a mistake, not a request for one.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is outside ``[minimum, maximum]``.
    """
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value}")
    return value


def check_seed(seed):
    """Return ``seed`` as an int (or None) if it can seed every generator.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` is not None or an integer in ``[0, 2**63 - 1]``.
    """
    if seed is None:
        return None
    if not _is_int(seed):
        raise TypeError(f"seed must be None or a non-negative integer, not {seed!r}")
    return check_int(seed, "seed", minimum=0, maximum=_SEED_MAX)
