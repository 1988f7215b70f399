"""Isolated sources and blended scenes of the radio-galaxy population, for deblending.

`isolated_stamps` draws single sources of a preset's population, centred on
noise-free stamps of the sky at the pixel scale: the training set of a
deblender's source model (`radiorecon.backends.vae_deblend`). `blended_scenes`
puts a few of them at controlled separations into one field, observes it as
the preset does (a dirty image with the instrument's correlated noise, or a
restored one), and keeps the truth of every source with its `blendedness`.

Blendedness (Bosch et al. 2018; the definition of the LSST blending
toolkit, btk) is the fraction of the light under a source that belongs to its
neighbours, measured on the noise-free images:

.. math:: b_i = 1 - \\frac{\\sum_p s_{i,p}^2}{\\sum_p s_{i,p} \\sum_j s_{j,p}}

where ``s_i`` is source ``i``'s image and the sum over ``j`` the whole
scene: 0 for an isolated source, towards 1 for one drowned by its
neighbours. The scenes measure it on each source's apparent sky convolved
with the clean beam, the resolution at which an image shows them.
"""

import dataclasses

import astropy.units as u
import numpy as np

from .._validate import check_int, check_seed
from . import engine, galaxies, sky as skymod
from .presets import resolve_parameters

__all__ = ["isolated_stamps", "blended_scenes", "blendedness", "BlendedScenes", "SceneLayout"]


def blendedness(sources):
    """Per-source blendedness of a scene (see the module docs).

    Parameters
    ----------
    sources : array-like
        ``(n_sources, ny, nx)`` noise-free images of the scene's sources,
        at the resolution the blending is judged at.

    Returns
    -------
    `~numpy.ndarray`
        ``(n_sources,)`` in [0, 1) for non-negative images; NaN for a
        source without flux.
    """
    s = np.asarray(sources, np.float64)
    if s.ndim != 3:
        raise ValueError(f"sources must be a (n_sources, ny, nx) array, got shape {s.shape}")
    total = s.sum(axis=0)
    own = (s * s).sum(axis=(1, 2))
    shared = (s * total).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shared != 0, 1.0 - own / np.where(shared != 0, shared, 1.0), np.nan)


def _single_source_parameters(preset, npix, overrides):
    """A preset's parameters for one source at the centre of ``npix`` pixels, sized to fit."""
    p = resolve_parameters(preset, **overrides)
    pixel = p["pixel_scale"].to_value(u.arcsec)
    lo, hi = p["size_range"].to_value(u.arcsec)
    # Sources are placed by hand; extended ones must fit inside the stamp.
    fit = 0.75 * npix * pixel
    if lo >= fit:
        raise ValueError(
            f"extended sources of at least {lo:g} arcsec do not fit stamps of {npix} pixels of {pixel:g} arcsec; "
            "use larger stamps, coarser pixels or a smaller size_range"
        )
    return resolve_parameters(
        preset, **{**overrides, "n_sources": (1, 1), "empty_fraction": 0.0,
                   "placement_radius": 0.0 * u.arcsec, "size_range": (lo, min(hi, fit)) * u.arcsec}
    )


def _draw_one(rng, p, npix):
    """The components of one source at the centre of ``npix`` pixels (``source`` = 0)."""
    pixel = p["pixel_scale"].to_value(u.arcsec)
    if p["sky_model"] == "radio-galaxies":
        return galaxies.draw_galaxies(rng, p, npix, pixel)[1]
    comps = skymod.draw_components(rng, p, npix, pixel)
    return {**comps, "source": np.zeros(len(comps["x"]), int)}


def isolated_stamps(n, *, preset="extended", stamp_size=32, seed=0, progress=False, **overrides):
    """Noise-free stamps of single sources of a preset's population, for training.

    Each stamp holds one source whose core (or centre) lies at pixel
    ``(stamp_size // 2, stamp_size // 2)``, drawn as the preset draws its
    sources (class, flux, size, shape), at the preset's pixel scale. Extended
    sources are kept within the stamp: the upper end of ``size_range`` is
    lowered to three quarters of the stamp's width.

    Parameters
    ----------
    n : int
        Number of stamps.
    preset : str
        Simulation preset (`~radiorecon.simulate.available_presets`); its
        ``sky_model`` is used as it is (``"extended"`` and ``"lotss"`` draw
        radio galaxies).
    stamp_size : int
        Pixels on a side (even).
    seed : int
        Stamp ``i`` depends on ``(seed, i)`` alone.
    progress : bool
        Show a progress bar.
    **overrides
        Simulation parameters to change (e.g. ``pixel_scale``,
        ``flux_range``), as for `~radiorecon.simulate.resolve_parameters`.

    Returns
    -------
    `~numpy.ndarray`
        ``(n, stamp_size, stamp_size)`` float32, Jy/pixel.
    """
    from tqdm.auto import tqdm

    n = check_int(n, "n")
    stamp_size = check_int(stamp_size, "stamp_size")
    seed = check_seed(seed)
    p = _single_source_parameters(preset, stamp_size, overrides)
    pixel = p["pixel_scale"].to_value(u.arcsec)
    stamps = np.empty((n, stamp_size, stamp_size), np.float32)
    for i in tqdm(range(n), disable=not progress, desc="stamps"):
        comps = _draw_one(engine.image_rng(seed, i), p, stamp_size)
        stamps[i] = engine.render_sources(comps, 1, stamp_size, pixel)[0]
    return stamps


@dataclasses.dataclass
class BlendedScenes:
    """Blended scenes and the truth of every source (from `blended_scenes`).

    Attributes
    ----------
    images : `~numpy.ndarray`
        ``(n, npix, npix)`` observed images (dirty or restored, Jy/beam).
    psf : `~numpy.ndarray`
        ``(n, 2 npix, 2 npix)`` PSFs, peak 1 at pixel ``(npix, npix)``.
    sources : list of `~numpy.ndarray`
        Per scene, ``(k, npix, npix)`` apparent sky of each source
        (Jy/pixel, primary beam applied: what the image shows).
    positions : list of `~numpy.ndarray`
        Per scene, ``(k, 2)`` pixel ``(x, y)`` of each source's core.
    blendedness : list of `~numpy.ndarray`
        Per scene, ``(k,)`` `blendedness` at the clean beam's resolution.
    noise_rms : `~numpy.ndarray`
        ``(n,)`` image noise, Jy/beam.
    beam : list of `radio_beam.Beam`
        The clean (or restoring) beam of each image.
    parameters : dict
        The resolved simulation parameters of the scenes.
    """

    images: np.ndarray
    psf: np.ndarray
    sources: list
    positions: list
    blendedness: list
    noise_rms: np.ndarray
    beam: list
    parameters: dict

    def __len__(self):
        return len(self.images)


class SceneLayout:
    """Where the sources of a blended scene go: the first near the centre, each next one near an earlier one.

    Parameters
    ----------
    npix : int
        Scene size (pixels).
    n_sources : (int, int)
        Range of the number of sources, drawn uniformly.
    separation : (float, float)
        Range of the distance (pixels) of each source from the earlier one
        it is placed next to, drawn uniformly; positions are rounded to
        pixels and kept 2 pixels inside the scene.

    Raises
    ------
    ValueError
        If a range is empty or out of bounds.
    """

    def __init__(self, npix, n_sources, separation):
        self.npix = check_int(npix, "npix")
        self.n_min, self.n_max = (check_int(k, "n_sources") for k in n_sources)
        if not 1 <= self.n_min <= self.n_max:
            raise ValueError(f"n_sources must be a range (min, max) with 1 <= min <= max, not {n_sources!r}")
        self.d_min, self.d_max = (float(d) for d in separation)
        if not 0 <= self.d_min <= self.d_max:
            raise ValueError(
                f"separation must be a range (min, max) of pixels with 0 <= min <= max, not {separation!r}"
            )

    def draw(self, rng):
        """``(k, 2)`` pixel positions ``(x, y)`` of one scene, from ``rng``."""
        npix = self.npix
        k = int(rng.integers(self.n_min, self.n_max + 1))
        xy = np.empty((k, 2))
        xy[0] = npix // 2 + np.rint(rng.uniform(-2, 2, 2))
        for j in range(1, k):
            anchor = xy[rng.integers(j)]
            r, phi = rng.uniform(self.d_min, self.d_max), rng.uniform(0, 2 * np.pi)
            xy[j] = np.clip(np.rint(anchor + r * np.array([np.cos(phi), np.sin(phi)])), 2, npix - 3)
        return xy


def blended_scenes(n, *, preset="extended", npix=64, n_sources=(2, 3), separation=(3.0, 12.0), seed=0,
                   progress=False, **overrides):
    """Scenes of a few overlapping sources, observed, with the truth of each source.

    Every scene places ``k`` sources (drawn as in `isolated_stamps`, within
    stamps of ``npix // 2`` pixels) around its centre: the first within 2
    pixels of it, each next one at a distance drawn uniformly in
    ``separation`` from a source already placed, in a uniform direction; cores
    fall on pixel centres. The scene is then observed by
    `radiorecon.simulate` as the preset observes (primary beam, PSF and
    correlated noise of a dirty image, or a restored image).

    Parameters
    ----------
    n : int
        Number of scenes.
    preset : str
        Simulation preset.
    npix : int
        Scene size in pixels (even).
    n_sources : (int, int)
        Inclusive range of the number of sources per scene (at least 1).
    separation : (float, float)
        Range of distances between a new source and the one it is placed
        next to, in pixels.
    seed : int
        Scene ``i`` depends on ``(seed, i)`` alone.
    progress : bool
        Show a progress bar.
    **overrides
        Simulation parameters to change.

    Returns
    -------
    BlendedScenes
    """
    from astropy.convolution import convolve_fft
    from tqdm.auto import tqdm

    n, npix, seed = check_int(n, "n"), check_int(npix, "npix"), check_seed(seed)
    layout = SceneLayout(npix, n_sources, separation)
    single = _single_source_parameters(preset, npix // 2, overrides)
    scene = resolve_parameters(preset, **{**overrides, "npix": npix})
    pixel = scene["pixel_scale"].to_value(u.arcsec)
    out = {key: [] for key in ("images", "psf", "sources", "positions", "blendedness", "noise_rms", "beam")}
    for i in tqdm(range(n), disable=not progress, desc="scenes"):
        # A stream apart from simulate_image's (seed, i): the scene's layout and noise are independent.
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
        xy = layout.draw(rng)
        k = len(xy)
        truth = np.empty((k, npix, npix), np.float32)
        for j in range(k):
            comps = _draw_one(rng, single, npix // 2)
            shift = xy[j] - npix // 4  # from the single stamp's centre to the scene position
            comps = {**comps, "x": comps["x"] + shift[0], "y": comps["y"] + shift[1]}
            truth[j] = engine.render_sources(comps, 1, npix, pixel)[0]
        obs = engine.simulate_image(scene, seed, i, sky=truth.sum(axis=0))
        apparent = truth * obs["setup"].pb
        beam = obs["coverage"].beam
        kernel = beam.as_kernel(scene["pixel_scale"])
        seen = np.stack([convolve_fft(s, kernel, normalize_kernel=True) for s in apparent])
        out["images"].append(obs["dirty"])
        out["psf"].append(obs["coverage"].psf2)
        out["sources"].append(apparent.astype(np.float32))
        out["positions"].append(xy)
        out["blendedness"].append(blendedness(seen))
        out["noise_rms"].append(obs["noise_rms"])
        out["beam"].append(beam)
    return BlendedScenes(
        images=np.stack(out["images"]), psf=np.stack(out["psf"]), sources=out["sources"],
        positions=out["positions"], blendedness=out["blendedness"], noise_rms=np.array(out["noise_rms"]),
        beam=out["beam"], parameters=scene,
    )
