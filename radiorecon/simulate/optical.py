"""Optical blends of parametric galaxies drawn with GalSim: the deblending seed's own setting.

The MADNESS deblender (Biswas et al. 2025) is measured on LSST-like images of
galaxies. This module makes single-band scenes of that kind offline, so that
`radiorecon.backends.vae_deblend` can be compared with it where it was built:
`optical_stamps` draws noise-free, centred galaxies (the source model's
training set) and `optical_scenes` a few overlapping ones with sky noise,
returning the same `~radiorecon.simulate.blends.BlendedScenes` as the radio
`~radiorecon.simulate.blends.blended_scenes`.

Every galaxy is a de Vaucouleurs bulge (Sersic n = 4) plus an exponential disk
(n = 1) with the same centre and position angle, convolved with a Kolmogorov
PSF and integrated over square pixels by GalSim (flux-conserving: a galaxy's
image sums to its flux, less what falls outside the image). Images are in
**electrons per pixel** of the full-depth coadd, sky-subtracted; a galaxy of
AB magnitude ``m`` holds ``exposure_time * 10**(-0.4 (m - zero_point))``
electrons. The noise is Gaussian of variance the sky level per pixel (the
Poisson noise of a background-dominated coadd; the galaxies' own shot noise
is left out).

The defaults (`OPTICAL_DEFAULTS`) are the LSST i band after ten years, from
surveycodex (LSSTDESC, ``LSST.yaml``, after Ivezic et al. 2019, ApJ 873, 111):
sky 20.48 mag/arcsec^2 (their Table 2), 184 visits of 30 s = 5520 s (Table 1),
zero point 27.78 mag for 1 electron/s (speclite throughputs), 0.2 arcsec
pixels; a PSF of 0.7 arcsec FWHM and 45 x 45 pixel stamps, the setting of the
issue that asks for it (surveycodex gives 0.79 arcsec at airmass 1.2). The
noise is then 428.6 electrons/pixel and the 5 sigma point-source depth
(``n_eff = 2.266 (FWHM / pixel)^2``, LSST technote SMTN-002) i = 27.0, near
the 26.8 of Ivezic et al. (2019, Table 1) for a 0.8 arcsec PSF.

The galaxy population is a stated toy, not a catalogue: i magnitudes from
number counts ``dN/dm ~ 10**(0.3 m)`` between 20 and 25.3 (the LSST "gold
sample" limit), a disk half-light radius log-uniform in 0.2 - 1.0 arcsec, a
bulge of half-light radius 0.3 - 0.7 times the disk's, bulge-to-total flux
ratio, disk axis ratio (0.2 - 1) and bulge axis ratio (0.6 - 1) uniform, and a
uniform position angle.
"""

import math

import numpy as np

from .._validate import check_int, check_seed
from .blends import BlendedScenes, SceneLayout, blendedness

__all__ = ["OPTICAL_DEFAULTS", "optical_parameters", "optical_stamps", "optical_scenes"]

#: The LSST i-band-like survey and galaxy population (see the module docs).
OPTICAL_DEFAULTS = {
    "pixel_scale": 0.2,  # arcsec
    "psf_fwhm": 0.7,  # arcsec, Kolmogorov
    "zero_point": 27.78,  # AB mag of a source giving 1 electron/s
    "exposure_time": 5520.0,  # s: 184 visits of 30 s
    "sky_brightness": 20.48,  # AB mag/arcsec^2
    "magnitude_range": (20.0, 25.3),  # i, AB
    "count_slope": 0.3,  # d log10 N / dm
    "disk_radius_range": (0.2, 1.0),  # arcsec, half-light, log-uniform
    "bulge_radius_ratio": (0.3, 0.7),  # bulge / disk half-light radius
    "bulge_fraction_range": (0.0, 1.0),  # bulge / total flux
    "disk_axis_ratio": (0.2, 1.0),
    "bulge_axis_ratio": (0.6, 1.0),
}

_POSITIVE = ("pixel_scale", "psf_fwhm", "exposure_time")
_FINITE = ("zero_point", "sky_brightness", "count_slope")
# Ranges: the bounds their ends must keep, and whether min may equal the lower bound
# (not for radii and ratios, whose logarithm or shape would break).
_RANGES = {
    "magnitude_range": (-math.inf, math.inf, True),
    "disk_radius_range": (0.0, math.inf, False),
    "bulge_radius_ratio": (0.0, math.inf, False),
    "bulge_fraction_range": (0.0, 1.0, True),
    "disk_axis_ratio": (0.0, 1.0, False),
    "bulge_axis_ratio": (0.0, 1.0, False),
}


def optical_parameters(**overrides):
    """The survey and population parameters, with the noise and depth they imply.

    Parameters
    ----------
    **overrides
        Keys of `OPTICAL_DEFAULTS` to change: ``pixel_scale`` and
        ``psf_fwhm`` (arcsec), ``zero_point`` (AB mag for 1 electron/s),
        ``exposure_time`` (s), ``sky_brightness`` (AB mag/arcsec^2),
        ``count_slope`` (d log10 N / dm), and the ``(min, max)`` ranges
        ``magnitude_range`` (AB mag), ``disk_radius_range`` (arcsec),
        ``bulge_radius_ratio``, ``bulge_fraction_range``,
        ``disk_axis_ratio``, ``bulge_axis_ratio``.

    Returns
    -------
    dict
        The parameters, plus ``sky_level`` (electrons/pixel), ``noise_rms``
        (its square root, electrons/pixel) and ``depth_5sigma`` (AB mag of
        a point source detected at 5 sigma with PSF-weighted photometry).

    Raises
    ------
    TypeError
        For an unknown key.
    ValueError
        For a value out of its domain.
    """
    unknown = sorted(set(overrides) - set(OPTICAL_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown optical parameters {unknown}; known: {sorted(OPTICAL_DEFAULTS)}")
    p = {**OPTICAL_DEFAULTS, **overrides}
    for key in _POSITIVE + _FINITE:
        value = p[key]
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (key in _POSITIVE and value <= 0):
            kind = "a positive" if key in _POSITIVE else "a finite"
            raise ValueError(f"{key} must be {kind} number, not {value!r}")
        p[key] = float(value)
    for key, (lo_bound, hi_bound, closed) in _RANGES.items():
        try:
            lo, hi = (float(v) for v in p[key])
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a (min, max) pair of numbers, not {p[key]!r}") from None
        above = lo >= lo_bound if closed else lo > lo_bound
        if not (math.isfinite(lo) and math.isfinite(hi) and above and lo <= hi <= hi_bound):
            raise ValueError(f"{key} must be a range (min, max) with {lo_bound:g} {'<=' if closed else '<'} min "
                             f"<= max <= {hi_bound:g}, not {p[key]!r}")
        p[key] = (lo, hi)
    sky = p["exposure_time"] * 10 ** (-0.4 * (p["sky_brightness"] - p["zero_point"])) * p["pixel_scale"] ** 2
    n_eff = 2.266 * (p["psf_fwhm"] / p["pixel_scale"]) ** 2
    five_sigma = 5.0 * math.sqrt(sky * n_eff)
    p.update(sky_level=sky, noise_rms=math.sqrt(sky),
             depth_5sigma=p["zero_point"] - 2.5 * math.log10(five_sigma / p["exposure_time"]))
    return p


def _galaxy(rng, p):
    """One bulge + disk galaxy, centred, PSF-convolved, flux in electrons (a GalSim profile)."""
    import galsim

    lo, hi = p["magnitude_range"]
    a = p["count_slope"] * (hi - lo)
    # Inverse CDF of dN/dm ~ 10**(slope m) on [lo, hi]; a degenerate range gives lo = hi.
    mag = hi + math.log10(rng.uniform() * (1 - 10**-a) + 10**-a) / p["count_slope"]
    flux = p["exposure_time"] * 10 ** (-0.4 * (mag - p["zero_point"]))
    r_disk = math.exp(rng.uniform(*np.log(p["disk_radius_range"])))
    r_bulge = r_disk * rng.uniform(*p["bulge_radius_ratio"])
    bt = rng.uniform(*p["bulge_fraction_range"])
    q_disk, q_bulge = rng.uniform(*p["disk_axis_ratio"]), rng.uniform(*p["bulge_axis_ratio"])
    angle = rng.uniform(0, math.pi) * galsim.radians
    disk = galsim.Exponential(half_light_radius=r_disk, flux=(1 - bt) * flux).shear(q=q_disk, beta=angle)
    bulge = galsim.DeVaucouleurs(half_light_radius=r_bulge, flux=bt * flux).shear(q=q_bulge, beta=angle)
    return galsim.Convolve(disk + bulge, galsim.Kolmogorov(fwhm=p["psf_fwhm"]))


def _draw(profile, npix, x, y, pixel):
    """``profile`` on ``npix`` square pixels centred on pixel ``(x, y)`` (0-based), float64."""
    import galsim

    image = galsim.ImageD(npix, npix, xmin=0, ymin=0, scale=pixel)
    return profile.drawImage(image, center=galsim.PositionD(x, y)).array


def optical_stamps(n, *, stamp_size=45, seed=0, progress=False, **parameters):
    """Noise-free stamps of single galaxies, centred, for training a source model.

    Parameters
    ----------
    n : int
        Number of stamps.
    stamp_size : int
        Pixels on a side (45, as in the MADNESS paper); the galaxy's centre
        is pixel ``(stamp_size // 2, stamp_size // 2)``.
    seed : int or None
        Stamp ``i`` depends on ``(seed, i)`` alone; None draws a fresh seed.
    progress : bool
        Show a progress bar.
    **parameters
        Survey and population parameters to change (`optical_parameters`).

    Returns
    -------
    `~numpy.ndarray`
        ``(n, stamp_size, stamp_size)`` float32, electrons per pixel.
    """
    from tqdm.auto import tqdm

    n, stamp_size, seed = check_int(n, "n"), check_int(stamp_size, "stamp_size"), check_seed(seed)
    p = optical_parameters(**parameters)
    entropy = seed if seed is not None else np.random.SeedSequence().entropy
    c = stamp_size // 2
    stamps = np.empty((n, stamp_size, stamp_size), np.float32)
    for i in tqdm(range(n), disable=not progress, desc="stamps"):
        rng = np.random.default_rng(np.random.SeedSequence([entropy, i]))
        stamps[i] = _draw(_galaxy(rng, p), stamp_size, c, c, p["pixel_scale"])
    return stamps


def optical_scenes(n, *, npix=64, n_sources=(2, 3), separation=(3.0, 12.0), seed=0, progress=False,
                   **parameters):
    """Blended optical scenes with sky noise and the truth of every galaxy.

    The layout is that of `~radiorecon.simulate.blends.blended_scenes`:
    ``k`` galaxies, the first within 2 pixels of the centre, each next one
    at a distance drawn uniformly in ``separation`` from one already placed,
    in a uniform direction, centres on pixel centres. Each galaxy is drawn
    alone (PSF-convolved, noise-free); the scene is their sum plus Gaussian
    noise of rms ``sqrt(sky_level)``, drawn by a GalSim deviate seeded from
    the scene's `numpy.random.SeedSequence`.

    Parameters
    ----------
    n : int
        Number of scenes.
    npix : int
        Scene size in pixels.
    n_sources : (int, int)
        Inclusive range of the number of galaxies per scene (at least 1).
    separation : (float, float)
        Range of distances between a new galaxy and the one it is placed
        next to, in pixels.
    seed : int or None
        Scene ``i`` depends on ``(seed, i)`` alone; None draws a fresh seed.
    progress : bool
        Show a progress bar.
    **parameters
        Survey and population parameters to change (`optical_parameters`).

    Returns
    -------
    `~radiorecon.simulate.blends.BlendedScenes`
        As from `~radiorecon.simulate.blends.blended_scenes`, in optical
        units: ``images`` and ``sources`` in electrons per pixel; ``psf``
        the PSF image, peak 1 at pixel ``(npix, npix)`` of ``2 npix``
        (one read-only array repeated, the seeing being fixed);
        ``blendedness`` measured on the PSF-convolved galaxies (what the
        image shows); ``noise_rms`` in electrons per pixel; ``beam`` None
        for every scene (the images are per pixel, not per beam);
        ``parameters`` those of `optical_parameters`.
    """
    import galsim
    from tqdm.auto import tqdm

    n, npix, seed = check_int(n, "n"), check_int(npix, "npix"), check_seed(seed)
    layout = SceneLayout(npix, n_sources, separation)
    p = optical_parameters(**parameters)
    entropy = seed if seed is not None else np.random.SeedSequence().entropy
    pixel = p["pixel_scale"]
    psf = _draw(galsim.Kolmogorov(fwhm=p["psf_fwhm"]), 2 * npix, npix, npix, pixel)
    psf = (psf / psf[npix, npix]).astype(np.float32)
    out = {key: [] for key in ("images", "sources", "positions", "blendedness")}
    for i in tqdm(range(n), disable=not progress, desc="scenes"):
        sequence = np.random.SeedSequence([entropy, i, 1])
        rng = np.random.default_rng(sequence)
        xy = layout.draw(rng)
        truth = np.stack([_draw(_galaxy(rng, p), npix, x, y, pixel) for x, y in xy])
        # GalSim's own deviate for the noise; 0 would seed it from the clock.
        deviate = galsim.BaseDeviate(int(sequence.spawn(1)[0].generate_state(1)[0]) + 1)
        noise = galsim.ImageD(npix, npix)
        noise.addNoise(galsim.GaussianNoise(deviate, sigma=p["noise_rms"]))
        out["images"].append((truth.sum(axis=0) + noise.array).astype(np.float32))
        out["sources"].append(truth.astype(np.float32))
        out["positions"].append(xy)
        out["blendedness"].append(blendedness(truth))
    return BlendedScenes(
        images=np.stack(out["images"]),
        psf=np.broadcast_to(psf, (n, 2 * npix, 2 * npix)), sources=out["sources"], positions=out["positions"],
        blendedness=out["blendedness"], noise_rms=np.full(n, p["noise_rms"]), beam=[None] * n, parameters=p,
    )
