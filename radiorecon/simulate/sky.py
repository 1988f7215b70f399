"""Random sky models of Gaussian and point components, and their images.

Components are kept as a dict of equal-length float arrays (Jy, arcsec, deg
and pixel positions), which is cheap to make in worker processes; `render`
turns them into an image in Jy/pixel.

Position angles are measured from north through east. Pixel ``x`` grows to
the west and ``y`` to the north (FITS images with negative ``CDELT1``), with
the phase centre at pixel ``(npix // 2, npix // 2)``.
"""

import numpy as np

from .._validate import FWHM_PER_SIGMA

__all__ = [
    "COLUMNS", "empty_components", "place_sources", "sky_fluxes", "draw_components", "render", "covariance",
    "peak_snr",
]

COLUMNS = ("x", "y", "flux", "fwhm_major", "fwhm_minor", "pa")
# Sub-pixel samples per axis. The 4 x 4 midpoint rule integrates a Gaussian
# over each pixel; it misses 1/(12 * 16) px² of the pixel's own variance,
# 0.3 % of a 0.4" source's on 0.1" pixels (0.15 % of its width).
_OVERSAMPLE = 4
# Stamps reach 5 sigma of the major axis, where the Gaussian is 4e-6 of its peak.
_STAMP_SIGMAS = 5.0
_MAX_TRIES = 1000


def empty_components():
    """Components of an empty sky."""
    return {name: np.zeros(0) for name in COLUMNS}


def sky_fluxes(rng, n, lo, hi, distribution, index):
    """``n`` fluxes in ``[lo, hi]`` from the preset's ``flux_distribution`` and ``flux_index``."""
    x = rng.random(n)
    if distribution == "uniform":
        return lo + (hi - lo) * x
    a = index + 1.0
    if distribution == "log-uniform" or abs(a) < 1e-12:  # dN/dS ~ 1/S
        return lo * (hi / lo) ** x
    if distribution == "power-law":  # inverse CDF of dN/dS ~ S**index on [lo, hi]
        return (lo**a + x * (hi**a - lo**a)) ** (1 / a)
    raise ValueError(f"unknown flux distribution {distribution!r}")


def place_sources(rng, n, p):
    """Offsets (arcsec east, north of the centre) of ``n`` sources, uniform within ``placement_radius``.

    Raises
    ------
    ValueError
        When ``min_separation`` cannot be met within the placement radius.
    """
    radius = p["placement_radius"].to_value("arcsec")
    min_sep = p["min_separation"].to_value("arcsec")
    offsets = np.empty((n, 2))  # east, north in arcsec
    for i in range(n):
        for _ in range(_MAX_TRIES):
            # sqrt: uniform per unit area within the circle.
            r, phi = radius * np.sqrt(rng.random()), 2 * np.pi * rng.random()
            offsets[i] = r * np.sin(phi), r * np.cos(phi)
            if min_sep == 0 or i == 0 or np.hypot(*(offsets[:i] - offsets[i]).T).min() >= min_sep:
                break
        else:
            raise ValueError(
                f"could not place {n} sources {min_sep} arcsec apart within {radius} arcsec; "
                "lower min_separation or n_sources"
            )
    return offsets


def draw_components(rng, p, npix, pixel):
    """Draw the components of one random sky.

    Parameters
    ----------
    rng : `numpy.random.Generator`
    p : dict
        Resolved parameters (see `radiorecon.simulate.resolve_parameters`).
    npix : int
    pixel : float
        Pixel size in arcsec.

    Returns
    -------
    components : dict
        ``x``, ``y`` (pixels), ``flux`` (Jy), ``fwhm_major``,
        ``fwhm_minor`` (arcsec, 0 for point sources) and ``pa`` (deg)
        arrays. Point sources are moved to the nearest pixel centre, where
        a one-pixel image represents them exactly.

    Raises
    ------
    ValueError
        When ``min_separation`` cannot be met within the placement radius.
    """
    empty = rng.random() < p["empty_fraction"]
    lo, hi = p["n_sources"]
    n = int(rng.integers(lo, hi + 1))
    if empty or n == 0:
        return empty_components()
    offsets = place_sources(rng, n, p)
    f_lo, f_hi = p["flux_range"].to_value("Jy")
    flux = sky_fluxes(rng, n, f_lo, f_hi, p["flux_distribution"], p["flux_index"])
    point = rng.random(n) < p["point_fraction"]
    fwhm = np.sort(rng.uniform(*p["fwhm_range"].to_value("arcsec"), size=(n, 2)), axis=1)
    pa = rng.uniform(*p["pa_range"].to_value("deg"), size=n)
    x = npix // 2 - offsets[:, 0] / pixel
    y = npix // 2 + offsets[:, 1] / pixel
    x, y = np.where(point, np.rint(x), x), np.where(point, np.rint(y), y)
    return {
        "x": x, "y": y, "flux": flux,
        "fwhm_major": np.where(point, 0.0, fwhm[:, 1]), "fwhm_minor": np.where(point, 0.0, fwhm[:, 0]),
        "pa": np.where(point, 0.0, pa),
    }


def render(components, npix, pixel):
    """Image of components in Jy/pixel.

    Each Gaussian is integrated over the pixels (by a ``4 x 4`` midpoint
    rule per pixel) on a stamp reaching 5 sigma, and scaled so that its pixels sum to
    its flux; a source cut by the image edge keeps only the pixels inside.
    Point sources (zero FWHM) fill the pixel nearest to them.

    Parameters
    ----------
    components : dict
        As from `~radiorecon.simulate.sky.draw_components`.
    npix : int
    pixel : float
        Pixel size in arcsec.

    Returns
    -------
    image : `~numpy.ndarray`
        ``(npix, npix)`` float32.
    """
    image = np.zeros((npix, npix), np.float32)
    sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    for x, y, flux, major, minor, pa in zip(*(components[c] for c in COLUMNS)):
        ix, iy = int(np.rint(x)), int(np.rint(y))
        if minor <= 0:
            if 0 <= ix < npix and 0 <= iy < npix:
                image[iy, ix] += flux
            continue
        s_maj, s_min = major / FWHM_PER_SIGMA / pixel, minor / FWHM_PER_SIGMA / pixel
        half = int(np.ceil(_STAMP_SIGMAS * s_maj)) + 1
        grid = (np.arange(-half, half + 1)[:, None] + sub).ravel()  # pixel offsets of the samples
        dx, dy = grid[None, :] + (ix - x), grid[:, None] + (iy - y)
        theta = np.radians(pa)
        # Unit vectors of the axes in pixels: north is +y, east is -x.
        along = -np.sin(theta) * dx + np.cos(theta) * dy
        across = np.cos(theta) * dx + np.sin(theta) * dy
        g = np.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2))
        size = 2 * half + 1
        stamp = g.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))
        stamp *= flux / stamp.sum()
        y0, x0 = iy - half, ix - half
        ya, yb, xa, xb = max(y0, 0), min(y0 + size, npix), max(x0, 0), min(x0 + size, npix)
        if ya < yb and xa < xb:
            image[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return image


def covariance(major, minor, pa):
    """Covariances ``(..., 2, 2)`` (east, north) of Gaussians of FWHMs and PA (deg)."""
    s_maj, s_min = major / FWHM_PER_SIGMA, minor / FWHM_PER_SIGMA
    t = np.radians(pa)
    e = np.stack([np.sin(t), np.cos(t)], -1)  # major axis, east and north components
    n = np.stack([np.cos(t), -np.sin(t)], -1)
    outer = lambda a: a[..., :, None] * a[..., None, :]  # noqa: E731
    return (s_maj**2)[..., None, None] * outer(e) + (s_min**2)[..., None, None] * outer(n)


def peak_snr(flux, gain, components, beam, noise_rms):
    """Expected apparent peak in the dirty image over the noise rms.

    The peak of a Gaussian source of flux ``S`` seen through a Gaussian
    beam, in Jy/beam, is ``S * gain * sqrt(det B / det(B + C))`` with ``B``
    and ``C`` the covariances of the beam and of the source (1 for a point
    source). The PSF's sidelobes and neighbouring sources are ignored.

    Parameters
    ----------
    flux, gain : `~numpy.ndarray`
        Fluxes (Jy) and primary-beam gains.
    components : dict
        With ``fwhm_major``, ``fwhm_minor`` (arcsec), ``pa`` (deg).
    beam : `radio_beam.Beam`
        The fitted clean beam.
    noise_rms : float
        Image noise rms, Jy/beam (0 gives inf).

    Returns
    -------
    snr : `~numpy.ndarray`
    """
    b = covariance(*(np.asarray(v, float) for v in (
        beam.major.to_value("arcsec"), beam.minor.to_value("arcsec"), beam.pa.to_value("deg"))))
    src = covariance(components["fwhm_major"], components["fwhm_minor"], components["pa"])
    peak = flux * gain * np.sqrt(np.linalg.det(b) / np.linalg.det(b + src))
    with np.errstate(divide="ignore"):
        return peak / noise_rms if noise_rms > 0 else np.full(len(flux), np.inf)
