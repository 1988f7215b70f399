"""A population of radio galaxies: compact sources, FR I and FR II, as Gaussian components.

Each source is a sum of elliptical Gaussians (the components of
`radiorecon.simulate.sky`), so that it is rendered, flux-conserving, by
`~radiorecon.simulate.sky.render`, and its true image is known exactly:

``compact``
    One Gaussian of FWHMs drawn from ``fwhm_range`` (a point source with
    probability ``point_fraction``), as the default sky's sources.
``FRI``
    A core (a point) and two jets that fade outwards (Fanaroff & Riley
    1974: the brightest emission lies closer to the core than half the
    source's size). Each jet is a chain of `JET_COMPONENTS` Gaussians along
    a circular arc that widens outwards; a fraction `BENT_FRACTION` of the
    jets bend to one side, from straight to wide-angle (WAT) and
    narrow-angle (NAT) tails.
``FRII``
    A core and two edge-brightened lobes, each a chain of `LOBE_COMPONENTS`
    Gaussians whose brightness rises outwards and ends in a compact hotspot;
    the two lobes may differ in length and flux and be misaligned.

The size of an extended source follows from a projected linear size and a
redshift (the angular scale of the Planck 2018 cosmology), so that angular
sizes scale as for a population at a range of distances; draws outside the
preset's ``size_range`` are made again, i.e. the population is the part of
that population that fits the images. All draws are at one frequency (no
spectral index). The distributions are listed in `DISTRIBUTIONS` and in the
documentation (:doc:`/simulate`), with their sources.

Offsets are computed in arcsec east and north of the core, and position
angles are east of north, as in `radiorecon.simulate.sky`.
"""

import functools

import numpy as np

from .._validate import FWHM_PER_SIGMA
from .sky import COLUMNS, covariance, place_sources, sky_fluxes

__all__ = [
    "CLASSES", "KINDS", "SOURCE_COLUMNS", "DISTRIBUTIONS", "JET_COMPONENTS", "LOBE_COMPONENTS",
    "BENT_FRACTION", "draw_galaxies", "source_moments", "peak_snr", "kpc_per_arcsec",
]

CLASSES = ("compact", "FRI", "FRII")
#: Component kinds: the default sky's Gaussians, and the parts of a radio galaxy.
KINDS = ("gaussian", "compact", "core", "jet", "lobe", "hotspot")
#: Per-source truth columns besides those of `radiorecon.simulate.sky.COLUMNS`
#: (NaN where they do not apply: the shape parameters of compact sources).
SOURCE_COLUMNS = ("class", "redshift", "linear_size", "las", "axis_pa", "core_fraction", "flux_ratio",
                  "arm_ratio", "bend", "axis_ratio", "hotspot_fraction", "n_components")
JET_COMPONENTS = 10
LOBE_COMPONENTS = 6
#: Fraction of FR I sources whose jets bend. Mingo et al. (2019) found 459
#: bent-tailed sources among 5805 extended LoTSS radio galaxies (8 %); the
#: larger fraction here, among FR Is only, is our choice, so that tails are
#: common in training sets.
BENT_FRACTION = 0.25
#: The shape distributions (our choices unless `DISTRIBUTIONS_SOURCES` says
#: otherwise): each a (low, high) range, drawn uniformly or, for names in
#: `_LOG_UNIFORM`, log-uniformly.
DISTRIBUTIONS = {
    "core_fraction_FRI": (0.05, 0.3),  # core flux / total flux, FR I
    "core_fraction_FRII": (0.002, 0.03),  # FR II cores are weaker relative to their lobes
    "flux_ratio": (0.5, 2.0),  # arm 1 / arm 2 flux
    "arm_ratio": (1 / 1.5, 1.5),  # arm 1 / arm 2 length
    "bend": (0.0, 90.0),  # deg, turning of each bent jet; 90: parallel tails (NAT)
    "jet_axis_ratio": (3.0, 8.0),  # jet length / its final width (FWHM)
    "lobe_axis_ratio": (1.5, 4.0),  # lobe length / width (FWHM)
    "hotspot_fraction": (0.2, 0.5),  # hotspot flux / lobe flux
    "misalignment": (-10.0, 10.0),  # deg, of the FR II counter-lobe from anti-parallel
}
_LOG_UNIFORM = {"core_fraction_FRI", "core_fraction_FRII", "flux_ratio", "arm_ratio"}
#: The jets' brightness per unit length falls as exp(-s / (JET_SCALE * L)) along
#: an arm of length L; the lobes' rises as (s / L)**2; hotspots have a FWHM
#: of HOTSPOT_SIZE * L (hotspot size grows with source size: Hardcastle et al.
#: 1998). Our choices.
JET_SCALE = 0.4
HOTSPOT_SIZE = 0.03
_MAX_TRIES = 1000


@functools.lru_cache(maxsize=1)
def _scale_table():
    from astropy.cosmology import Planck18

    z = np.geomspace(1e-3, 10.0, 2000)
    return z, Planck18.kpc_proper_per_arcmin(z).value / 60.0


def kpc_per_arcsec(z):
    """Projected kpc per arcsec at redshift ``z`` (Planck 2018 cosmology, interpolated)."""
    grid, scale = _scale_table()
    return np.interp(z, grid, scale)


def _draw(rng, name):
    lo, hi = DISTRIBUTIONS[name]
    if name in _LOG_UNIFORM:
        return float(lo * (hi / lo) ** rng.random())
    return float(rng.uniform(lo, hi))


def _gaussians(east, north, flux, along, across, direction):
    """Components (arcsec, deg) of Gaussians of FWHM ``along`` and ``across`` a direction (deg)."""
    major, minor = np.maximum(along, across), np.minimum(along, across)
    pa = np.where(along >= across, direction, direction + 90.0) % 180.0
    return east, north, flux, major, minor, pa


def _arm(length, start_pa, turn, n):
    """Points along an arm that turns by ``turn`` deg over its ``length``, and their directions."""
    s = (np.arange(n) + 0.5) / n * length
    theta0, k = np.radians(start_pa), np.radians(turn) / length  # curvature
    if abs(turn) < 1e-9:
        east, north = s * np.sin(theta0), s * np.cos(theta0)
    else:  # circular arc: the direction theta(s) = theta0 + k s
        east = (np.cos(theta0) - np.cos(theta0 + k * s)) / k
        north = (np.sin(theta0 + k * s) - np.sin(theta0)) / k
    return s, east, north, np.degrees(theta0 + k * s)


def _fri(rng, flux, las, core):
    """Components of an FR I: (east, north, flux, major, minor, pa) arrays and its parameters."""
    ratio, arm_ratio = _draw(rng, "flux_ratio"), _draw(rng, "arm_ratio")
    bent = rng.random() < BENT_FRACTION
    bend = _draw(rng, "bend") if bent else 0.0
    q, axis = _draw(rng, "jet_axis_ratio"), float(rng.uniform(0, 360))
    lengths = las * np.array([arm_ratio, 1.0]) / (1 + arm_ratio)
    fluxes = (1 - core) * flux * np.array([ratio, 1.0]) / (1 + ratio)
    parts = []
    # Both jets turn towards axis + 90 deg (the side the tails trail to).
    for length, arm_flux, start, turn in zip(lengths, fluxes, (axis, axis + 180.0), (bend, -bend)):
        s, east, north, direction = _arm(length, start, turn, JET_COMPONENTS)
        weight = np.exp(-s / (JET_SCALE * length))
        width = length / q * (0.2 + 0.8 * s / length)  # widening outwards
        along = np.full(JET_COMPONENTS, 2.0 * length / JET_COMPONENTS)  # overlapping: a smooth ridge
        parts.append(_gaussians(east, north, arm_flux * weight / weight.sum(), along, width, direction))
    params = {"axis_pa": axis % 360, "flux_ratio": ratio, "arm_ratio": arm_ratio, "bend": bend,
              "axis_ratio": q, "hotspot_fraction": np.nan}
    return parts, ["jet"] * 2, params


def _frii(rng, flux, las, core):
    """Components of an FR II and its parameters (see `_fri`)."""
    ratio, arm_ratio = _draw(rng, "flux_ratio"), _draw(rng, "arm_ratio")
    q, hotspot = _draw(rng, "lobe_axis_ratio"), _draw(rng, "hotspot_fraction")
    misalignment, axis = _draw(rng, "misalignment"), float(rng.uniform(0, 360))
    lengths = las * np.array([arm_ratio, 1.0]) / (1 + arm_ratio)
    fluxes = (1 - core) * flux * np.array([ratio, 1.0]) / (1 + ratio)
    parts, kinds = [], []
    for length, arm_flux, direction in zip(lengths, fluxes, (axis, axis + 180.0 + misalignment)):
        # The lobe fills the outer 70 % of the arm; its brightness rises outwards.
        s = length * (0.3 + 0.65 * (np.arange(LOBE_COMPONENTS) + 0.5) / LOBE_COMPONENTS)
        weight = (s / length) ** 2
        theta = np.radians(direction)
        lobe_flux = (1 - hotspot) * arm_flux * weight / weight.sum()
        along = np.full(LOBE_COMPONENTS, 2.0 * 0.65 * length / LOBE_COMPONENTS)
        width = np.full(LOBE_COMPONENTS, 0.7 * length / q)
        parts.append(_gaussians(s * np.sin(theta), s * np.cos(theta), lobe_flux, along, width, direction))
        end, size = 0.97 * length, HOTSPOT_SIZE * length
        parts.append(_gaussians(np.array([end * np.sin(theta)]), np.array([end * np.cos(theta)]),
                                np.array([hotspot * arm_flux]), np.array([size]), np.array([size]), direction))
        kinds += ["lobe", "hotspot"]
    params = {"axis_pa": axis % 360, "flux_ratio": ratio, "arm_ratio": arm_ratio, "bend": misalignment,
              "axis_ratio": q, "hotspot_fraction": hotspot}
    return parts, kinds, params


def draw_galaxies(rng, p, npix, pixel):
    """Draw the radio galaxies of one random sky.

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
    sources : dict
        Per source: ``x``, ``y`` (pixels; the core, at a pixel centre for
        extended sources), ``flux`` (Jy, total), ``fwhm_major``,
        ``fwhm_minor`` (arcsec) and ``pa`` (deg) of the Gaussian of the same
        second moments (see `source_moments`), and the `SOURCE_COLUMNS`:
        ``class``, ``redshift``, ``linear_size`` (kpc), ``las`` (arcsec,
        the summed length of the two arms along their paths),
        ``axis_pa`` (deg, direction of arm 1), ``core_fraction``,
        ``flux_ratio`` and ``arm_ratio`` (arm 1 over arm 2), ``bend``
        (deg: an FR I jet's turning, an FR II counter-lobe's misalignment),
        ``axis_ratio`` (jet or lobe length over width), ``hotspot_fraction``
        (of each lobe's flux) and ``n_components``.
    components : dict
        Per Gaussian component: the `~radiorecon.simulate.sky.COLUMNS`,
        ``source`` (its row in ``sources``) and ``kind`` (see `KINDS`).

    Raises
    ------
    ValueError
        When the sources cannot be placed ``min_separation`` apart, or no
        linear size and redshift in their ranges give a size within
        ``size_range``.
    """
    empty = rng.random() < p["empty_fraction"]
    lo, hi = p["n_sources"]
    n = int(rng.integers(lo, hi + 1))
    if empty or n == 0:
        return _empty()
    offsets = place_sources(rng, n, p)
    f_lo, f_hi = p["flux_range"].to_value("Jy")
    flux = sky_fluxes(rng, n, f_lo, f_hi, p["flux_distribution"], p["flux_index"])
    fractions = np.asarray(p["class_fractions"])
    classes = rng.choice(len(CLASSES), size=n, p=fractions / fractions.sum())
    x = npix // 2 - offsets[:, 0] / pixel
    y = npix // 2 + offsets[:, 1] / pixel
    rows, comps = [], []
    for i in range(n):
        row, parts, kinds = _source(rng, p, CLASSES[classes[i]], flux[i])
        if row["class"] != "compact" or parts[0][3] == 0:
            x[i], y[i] = np.rint(x[i]), np.rint(y[i])  # the core (or point) is one pixel
        for part, kind in zip(parts, kinds):
            east, north, f, major, minor, pa = (np.atleast_1d(np.asarray(v, float)) for v in part)
            comps.append({"x": x[i] - east / pixel, "y": y[i] + north / pixel, "flux": f, "fwhm_major": major,
                          "fwhm_minor": minor, "pa": pa, "source": np.full(len(f), i),
                          "kind": np.full(len(f), kind, dtype="<U8")})
        rows.append(row)
    components = {c: np.concatenate([part[c] for part in comps]) for c in comps[0]}
    sources = {c: np.array([row[c] for row in rows]) for c in rows[0]}
    sources["x"], sources["y"], sources["flux"] = x, y, flux
    major, minor, pa = source_moments(components, n, pixel)
    sources.update(fwhm_major=major, fwhm_minor=minor, pa=pa)
    sources["n_components"] = np.bincount(components["source"], minlength=n)
    return sources, components


def _source(rng, p, cls, flux):
    """One source's parameters and its parts: (row, [(east, north, flux, major, minor, pa)], kinds)."""
    nan = {c: np.nan for c in SOURCE_COLUMNS[1:-1]}
    if cls == "compact":
        major, minor = np.sort(rng.uniform(*p["fwhm_range"].to_value("arcsec"), size=2))[::-1]
        pa = float(rng.uniform(*p["pa_range"].to_value("deg")))
        if rng.random() < p["point_fraction"]:
            major = minor = pa = 0.0
        return {**nan, "class": cls}, [(0.0, 0.0, flux, major, minor, pa)], ["compact"]
    size_lo, size_hi = p["size_range"].to_value("arcsec")
    l_lo, l_hi = p["linear_size_range"].to_value("kpc")
    z_lo, z_hi = p["redshift_range"]
    for _ in range(_MAX_TRIES):
        z = float(rng.uniform(z_lo, z_hi))
        linear = float(l_lo * (l_hi / l_lo) ** rng.random())  # log-uniform
        las = linear / float(kpc_per_arcsec(z))
        if size_lo <= las <= size_hi:
            break
    else:
        raise ValueError(
            f"no linear size in {l_lo:g}-{l_hi:g} kpc at a redshift in {z_lo:g}-{z_hi:g} gave an angular "
            f"size in size_range {size_lo:g}-{size_hi:g} arcsec in {_MAX_TRIES} draws; widen the ranges"
        )
    core = _draw(rng, f"core_fraction_{cls}")
    parts, kinds, params = (_fri if cls == "FRI" else _frii)(rng, flux, las, core)
    parts = [(0.0, 0.0, core * flux, 0.0, 0.0, 0.0)] + parts
    row = {**nan, **params, "class": cls, "redshift": z, "linear_size": linear, "las": las,
           "core_fraction": core}
    return row, parts, ["core"] + kinds


def _empty():
    sources = {c: np.zeros(0) for c in COLUMNS + SOURCE_COLUMNS}
    sources["class"] = np.zeros(0, "<U7")
    sources["n_components"] = np.zeros(0, np.int64)
    components = {c: np.zeros(0) for c in COLUMNS}
    components.update(source=np.zeros(0, np.int64), kind=np.zeros(0, "<U8"))
    return sources, components


def _offsets(components, pixel):
    """Component centres in arcsec (east, north) of the image centre."""
    return np.stack([-components["x"] * pixel, components["y"] * pixel], -1)


def source_moments(components, n, pixel):
    """FWHMs (arcsec) and PA (deg) of the Gaussian with each source's second moments.

    The flux-weighted covariance of a source's components (their own
    covariances plus the scatter of their centres); for a single Gaussian it
    is that Gaussian. Points give 0.
    """
    flux = components["flux"]
    centre = _offsets(components, pixel)
    cov = covariance(components["fwhm_major"], components["fwhm_minor"], components["pa"])
    major, minor, pa = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        k = components["source"] == i
        w = flux[k] / flux[k].sum()
        mean = w @ centre[k]
        d = centre[k] - mean
        total = np.einsum("k,kij->ij", w, cov[k]) + np.einsum("k,ki,kj->ij", w, d, d)
        values, vectors = np.linalg.eigh(total)
        major[i], minor[i] = FWHM_PER_SIGMA * np.sqrt(np.maximum(values[::-1], 0))
        if major[i] > 0:
            east, north = vectors[:, 1]
            pa[i] = np.degrees(np.arctan2(east, north)) % 180.0
    return major, minor, pa


def peak_snr(components, n, pixel, gain, beam, noise_rms):
    """Expected apparent peak of each source, seen through a Gaussian beam, over the noise rms.

    As `radiorecon.simulate.sky.peak_snr` for a sum of Gaussians: the
    beam-convolved source, ``sum_k S_k sqrt(det B / det(B + C_k))
    exp(-d_k^T (B + C_k)^-1 d_k / 2)``, is evaluated at every component's
    centre and the largest value taken (for a single Gaussian this is
    `~radiorecon.simulate.sky.peak_snr`).

    Parameters
    ----------
    components : dict
        As from `draw_galaxies`.
    n : int
        Number of sources.
    pixel : float
        Pixel size in arcsec.
    gain : `~numpy.ndarray`
        Primary-beam gain of each source.
    beam : `radio_beam.Beam`
    noise_rms : float
        Image noise rms, Jy/beam (0 gives inf).

    Returns
    -------
    snr : `~numpy.ndarray`
    """
    b = covariance(*(np.asarray(v, float) for v in (
        beam.major.to_value("arcsec"), beam.minor.to_value("arcsec"), beam.pa.to_value("deg"))))
    centre = _offsets(components, pixel)
    total = b + covariance(components["fwhm_major"], components["fwhm_minor"], components["pa"])
    amplitude = components["flux"] * np.sqrt(np.linalg.det(b) / np.linalg.det(total))
    inverse = np.linalg.inv(total)
    peak = np.zeros(n)
    for i in range(n):
        k = np.flatnonzero(components["source"] == i)
        d = centre[k][:, None, :] - centre[k][None, :, :]  # (at, component, 2)
        quad = np.einsum("akx,kxy,aky->ak", d, inverse[k], d)
        peak[i] = (np.exp(-0.5 * quad) @ amplitude[k]).max()
    peak = peak * gain
    with np.errstate(divide="ignore"):
        return peak / noise_rms if noise_rms > 0 else np.full(n, np.inf)
