"""The simulation engine: one image from its parameters, seed and index.

Internal API of `radiorecon.simulate`, shared by `~radiorecon.simulate.observe`
(one image, as CCDData), `~radiorecon.simulate.make_dataset` (many, written
to disk by worker processes) and `~radiorecon.simulate.SimulatedPairs` (made
when indexed). It is not part of the public API and may change between
releases; the names here are public only within the package:

`simulate_image`
    Everything about image ``index`` of seed ``seed``, as plain arrays and
    numbers, so that image ``i`` of a data set is ``observe(seed=s, index=i)``.
`setup_for`, `Setup`
    What a parameter set fixes for every image (channels, primary beam, a
    bank of PSFs by declination), cached per process.
`image_rng`, `draw_centre`
    The random stream of one image and the first draw from it, its phase
    centre (a data set's plan draws all centres without simulating).
`image_wcs`, `truth_table`, `components_table`, `common_meta`, `image_meta`
    The WCS, truth catalogs (of sources and of their components) and FITS
    cards of an image.
`draw_sky`, `render_sources`, `source_images`
    The sources and components of image ``index`` without observing it, and
    the true image of each source on its own (what a deblender learns).
"""

import collections
import json

import astropy.units as u
import numpy as np
from astropy.constants import c
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table
from astropy.wcs import WCS

from . import galaxies
from . import sky as skymod
from .arrays import load_array
from .imaging import RestoredImaging, UVCoverage, visibility_noise
from .presets import to_json
from .primary_beam import primary_beam_fwhm, primary_beam_gain, primary_beam_image
from .uv import earth_rotation_uvw, hour_angles

__all__ = [
    "Setup", "setup_for", "image_rng", "draw_centre", "simulate_image", "image_wcs", "truth_table",
    "components_table", "draw_sky", "render_sources", "source_images", "common_meta", "image_meta",
]

_C = c.to_value(u.m / u.s)
# Per process: the last few parameter sets, each with its PSF bank (a
# handful of 2N x 2N PSFs and their transforms, ~12 MB each at 512²).
_SETUPS = collections.OrderedDict()
_MAX_SETUPS = 4
_MAX_COVERAGES = 32


class Setup:
    """What a parameter set fixes for every image: channels, primary beam, PSF bank."""

    def __init__(self, params):
        p = self.params = params
        self.npix = p["npix"]
        self.pixel = p["pixel_scale"].to_value(u.arcsec)
        n, width = p["n_channels"], p["bandwidth"] / p["n_channels"]
        self.channel_width = width
        self.freq = (p["frequency"] + (np.arange(n) - (n - 1) / 2) * width).to_value(u.Hz)
        diameter = p["dish_diameter"]
        self.restored = p["imaging"] == "restored"
        if self.restored or p["array"] is None:
            self.positions, self.telescope = None, ""
        elif p["uvw"] is None:
            table = load_array(p["array"])
            self.positions = np.column_stack([table[c].to_value(u.m) for c in ("x", "y", "z")]) * u.m
            self.telescope = table.meta.get("observatory", "")
            if diameter is None and "diameter" in table.colnames:
                sizes = np.unique(table["diameter"].to_value(u.m))
                if len(sizes) > 1:
                    raise ValueError(
                        f"the array has dishes of {len(sizes)} sizes; the simulator uses one primary "
                        "beam: give dish_diameter= to choose it, or primary_beam=False"
                    )
                diameter = sizes[0] * u.m
        else:
            self.positions, self.telescope = None, ""
        self.pb_fwhm = None
        if p["primary_beam"]:
            if diameter is None:
                raise ValueError("primary_beam=True needs dish_diameter= (the array gives none)")
            # Evaluated at the centre frequency: across a band of a few per
            # cent the beam's change is below the accuracy of the Gaussian model.
            self.pb_fwhm = primary_beam_fwhm(p["frequency"], diameter, p["pb_fwhm_factor"])
        self.pb = primary_beam_image(self.npix, p["pixel_scale"], self.pb_fwhm)
        self._coverages = collections.OrderedDict()
        # The data set directory whose PSF bank was loaded into this one, so
        # that a worker reads it once (see dataset.py).
        self.preloaded_from = None

    def dec_bin(self, dec):
        """Declination (deg) at which the uv coverage of a phase centre at ``dec`` is computed."""
        step = self.params["psf_dec_step"].to_value(u.deg)
        if self.positions is None:
            return 0.0  # given uvw or a restored image: one coverage for all
        return float(np.round(dec / step) * step) if step > 0 else float(dec)

    def coverage(self, dec_bin, **known):
        """The `~radiorecon.simulate.UVCoverage` at a declination bin; ``known`` passes on psf2 and beam."""
        cov = self._coverages.get(dec_bin)
        if cov is None and self.restored:
            p = self.params
            cov = self._coverages[dec_bin] = RestoredImaging(p["restoring_beam"], self.npix, p["pixel_scale"])
        elif cov is None:
            cov = self._coverages[dec_bin] = UVCoverage(
                self.uvw(dec_bin), self.freq, self.npix, self.params["pixel_scale"],
                self.params["weighting"], self.params["robust"], **known,
            )
            while len(self._coverages) > _MAX_COVERAGES:
                self._coverages.popitem(last=False)
        self._coverages.move_to_end(dec_bin)
        return cov

    def uvw(self, dec_bin):
        """``(n_rows, 3)`` uvw in metres."""
        p = self.params
        if self.positions is None:
            q = p["uvw"]
            if q.unit == u.one:  # wavelengths at the centre frequency
                q = q.value * (_C / p["frequency"].to_value(u.Hz)) * u.m
            q = q.to_value(u.m)
            return np.column_stack([q[:, :2], q[:, 2] if q.shape[1] == 3 else np.zeros(len(q))])
        ha = hour_angles(p["hour_angle"], p["duration"], p["integration"])
        return earth_rotation_uvw(
            self.positions, latitude=p["latitude"], declination=dec_bin * u.deg, hour_angle=ha
        ).to_value(u.m)

    def noise_sigma(self, cov):
        """Noise of one visibility (real or imaginary part), Jy."""
        p = self.params
        if p["sefd"] is not None:
            return visibility_noise(
                p["sefd"], self.channel_width, p["integration"], p["efficiency"], p["n_pol"]
            ).to_value(u.Jy)
        return p["noise_rms"].to_value(u.Jy / u.beam) / cov.noise_gain

    def image_rms(self, cov):
        """Expected image noise rms, Jy/beam."""
        return self.noise_sigma(cov) * cov.noise_gain


def setup_for(params):
    """The `Setup` of resolved parameters, made once per process and parameter set."""
    key = json.dumps(to_json(params), sort_keys=True)
    setup = _SETUPS.get(key)
    if setup is None:
        setup = _SETUPS[key] = Setup(params)
        while len(_SETUPS) > _MAX_SETUPS:
            _SETUPS.popitem(last=False)
    _SETUPS.move_to_end(key)
    return setup


def image_rng(seed, index):
    """The random generator of image ``index`` of seed ``seed``."""
    # One stream per image: the same (seed, index) gives the same image
    # whichever process, worker count or shard layout makes it.
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def draw_centre(rng, p):
    """Phase centre (ra, dec in deg), uniform over a spherical cap of ``field_radius``."""
    u1, u2 = rng.random(2)
    radius = p["field_radius"].to_value(u.rad)
    rho = np.arccos(1 - u1 * (1 - np.cos(radius)))
    phi = 2 * np.pi * u2
    d0, a0 = p["declination"].to_value(u.rad), p["right_ascension"].to_value(u.rad)
    dec = np.arcsin(np.sin(d0) * np.cos(rho) + np.cos(d0) * np.sin(rho) * np.cos(phi))
    ra = a0 + np.arctan2(np.sin(phi) * np.sin(rho) * np.cos(d0), np.cos(rho) - np.sin(d0) * np.sin(dec))
    return float(np.degrees(ra) % 360), float(np.degrees(dec))


def image_wcs(ra, dec, npix, pixel):
    """Celestial SIN WCS with the phase centre (deg) at pixel ``npix // 2``; pixel in arcsec."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [npix // 2 + 1, npix // 2 + 1]
    w.wcs.cdelt = [-pixel / 3600, pixel / 3600]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    return w


def simulate_image(params, seed, index, *, sky=None, centre=None, method="image"):
    """Everything about one image, as plain arrays and numbers.

    Parameters
    ----------
    params : dict
        Resolved parameters (`~radiorecon.simulate.resolve_parameters`).
    seed, index : int
        Seed and image number: they fix every random draw.
    sky, centre, method
        As ``sky``, ``phase_center`` (here ``(ra, dec)`` in deg) and
        ``method`` of `~radiorecon.simulate.observe`.

    Returns
    -------
    result : dict
        ``dirty`` (Jy/beam) and ``sky`` (Jy/pixel, without primary beam)
        float32 images; ``components``, one entry per source (see
        `draw_sky`); ``parts``, its Gaussian components; ``ra``, ``dec``
        (deg) of the phase centre and ``dec_bin`` of its PSF; ``wcs``;
        ``setup`` and ``coverage``; per source ``pb_gain``, ``peak_snr``,
        ``src_ra`` and ``src_dec`` (deg); ``noise_rms`` (Jy/beam);
        ``visibilities`` (None on the image path).
    """
    setup = setup_for(params)
    rng = image_rng(seed, index)
    drawn = draw_centre(rng, params)  # drawn even when overridden: the stream stays the same
    ra, dec = centre if centre is not None else drawn
    wcs = image_wcs(ra, dec, setup.npix, setup.pixel)
    if sky is None:
        comps, parts = _draw(rng, params)
        image = skymod.render(parts, setup.npix, setup.pixel)
    elif isinstance(sky, Table):
        comps = parts = _with_sources(_table_components(sky, wcs, setup.npix))
        image = skymod.render(comps, setup.npix, setup.pixel)
    else:
        comps = parts = _with_sources(skymod.empty_components())
        image = _sky_image(sky, setup.npix)
    dec_bin = setup.dec_bin(dec)
    cov = setup.coverage(dec_bin)
    sigma = setup.noise_sigma(cov)
    apparent = image * setup.pb
    vis = None
    if method == "visibility":
        vis = cov.visibilities(apparent, sigma, rng)
        dirty = cov.image(vis)
    else:
        dirty = cov.dirty(apparent, sigma, rng)
    offset = np.hypot(comps["x"] - setup.npix // 2, comps["y"] - setup.npix // 2) * setup.pixel * u.arcsec
    gain = primary_beam_gain(offset, setup.pb_fwhm)
    rms = setup.image_rms(cov)
    if parts is comps:  # one Gaussian per source
        snr = skymod.peak_snr(comps["flux"], gain, comps, cov.beam, rms)
    else:
        snr = galaxies.peak_snr(parts, len(comps["x"]), setup.pixel, gain, cov.beam, rms)
    world = wcs.wcs_pix2world(comps["x"], comps["y"], 0) if len(comps["x"]) else (np.zeros(0), np.zeros(0))
    return {
        "ra": ra, "dec": dec, "dec_bin": dec_bin, "wcs": wcs, "setup": setup, "coverage": cov,
        "dirty": dirty, "sky": image, "components": comps, "parts": parts, "pb_gain": gain, "peak_snr": snr,
        "src_ra": np.asarray(world[0]), "src_dec": np.asarray(world[1]), "noise_rms": rms,
        "visibilities": vis,
    }


def _with_sources(comps):
    """Gaussian sources as their own components: ``source`` and ``kind`` added."""
    n = len(comps["x"])
    return {**comps, "source": np.arange(n), "kind": np.full(n, "gaussian", dtype="<U8")}


def _draw(rng, params):
    npix, pixel = params["npix"], params["pixel_scale"].to_value(u.arcsec)
    if params["sky_model"] == "radio-galaxies":
        return galaxies.draw_galaxies(rng, params, npix, pixel)
    comps = _with_sources(skymod.draw_components(rng, params, npix, pixel))
    return comps, comps


def draw_sky(params, seed, index):
    """The sources and components of image ``index`` of seed ``seed``, without observing it.

    Returns
    -------
    sources : dict
        Per source: ``x``, ``y`` (pixels), ``flux`` (Jy), ``fwhm_major``,
        ``fwhm_minor`` (arcsec), ``pa`` (deg), and for
        ``sky_model="radio-galaxies"`` the columns of
        `radiorecon.simulate.galaxies.draw_galaxies`.
    components : dict
        Per Gaussian component: the same shape columns, ``source`` (row in
        ``sources``) and ``kind``. For the Gaussian sky model, the sources
        themselves.
    """
    rng = image_rng(seed, index)
    draw_centre(rng, params)  # as in simulate_image: the same stream
    return _draw(rng, params)


def render_sources(components, n_sources, npix, pixel):
    """``(n_sources, npix, npix)`` float32 images (Jy/pixel) of each source's components on its own."""
    cube = np.zeros((n_sources, npix, npix), np.float32)
    for i in range(n_sources):
        k = components["source"] == i
        cube[i] = skymod.render({c: components[c][k] for c in skymod.COLUMNS}, npix, pixel)
    return cube


def source_images(params, seed, index):
    """The true sky of each source of image ``index``, without primary beam.

    Returns
    -------
    images : `~numpy.ndarray`
        ``(n_sources, npix, npix)`` float32 in Jy/pixel, in the order of the
        truth table's rows; they sum to the image's ``sky`` (up to float32
        rounding).
    """
    sources, components = draw_sky(params, seed, index)
    pixel = params["pixel_scale"].to_value(u.arcsec)
    return render_sources(components, len(sources["x"]), params["npix"], pixel)


def _sky_image(sky, npix):
    """A user's sky image as float32 Jy/pixel (a bare Jy is taken per pixel)."""
    from astropy.nddata import NDData

    unit = getattr(sky, "unit", None)
    data = np.asarray(sky.data if isinstance(sky, NDData) else sky)  # a Quantity's values
    if unit is not None and unit != u.one:
        unit = u.Unit(unit)
        if not (unit.is_equivalent(u.Jy / u.pix) or unit.is_equivalent(u.Jy)):
            raise ValueError(f"a sky image must be in Jy/pixel, not {unit}")
        data = (data * unit).to_value(u.Jy / u.pix if unit.is_equivalent(u.Jy / u.pix) else u.Jy)
    data = np.asarray(data, np.float32)
    if data.shape != (npix, npix) or not np.isfinite(data).all():
        raise ValueError(
            f"a sky image must be a finite ({npix}, {npix}) array in Jy/pixel, got shape {data.shape}"
        )
    return data


def _table_components(table, wcs, npix):
    """Components from a user table (x, y or sky_centroid; flux; optional shape)."""
    n = len(table)
    if "x" in table.colnames and "y" in table.colnames:
        x, y = (np.asarray(u.Quantity(table[c]).value, float) for c in ("x", "y"))
    elif "sky_centroid" in table.colnames:
        x, y = wcs.world_to_pixel(table["sky_centroid"])
    else:
        raise ValueError("a sky table needs x and y (pixels) or sky_centroid columns")
    if "flux" not in table.colnames:
        raise ValueError("a sky table needs a flux column (Jy)")

    def column(name, unit):
        if name not in table.colnames:
            return np.zeros(n)
        value = table[name]
        return u.Quantity(value).to_value(unit) if getattr(value, "unit", None) else np.asarray(value, float)

    flux = column("flux", u.Jy)
    major, minor, pa = column("fwhm_major", u.arcsec), column("fwhm_minor", u.arcsec), column("pa", u.deg)
    major, minor = np.maximum(major, minor), np.minimum(major, minor)
    minor = np.where(minor > 0, minor, major)  # a round source when one FWHM is given
    point = major <= 0
    x, y = np.where(point, np.rint(x), x), np.where(point, np.rint(y), y)
    return {"x": np.asarray(x, float), "y": np.asarray(y, float), "flux": flux,
            "fwhm_major": major, "fwhm_minor": minor, "pa": pa}


#: Units of the radio-galaxy truth columns (the others are plain numbers or strings).
_SOURCE_UNITS = {"linear_size": u.kpc, "las": u.arcsec, "axis_pa": u.deg, "bend": u.deg}


def truth_table(image_id, comps, src_ra, src_dec, pb_gain, peak_snr):
    """The truth catalog of sources (see `~radiorecon.simulate.observe`).

    Radio-galaxy columns (`radiorecon.simulate.galaxies.SOURCE_COLUMNS`)
    present in ``comps`` are added after the others.
    """
    image_id = np.broadcast_to(np.asarray(image_id, np.int64), (len(comps["x"]),))
    table = QTable(
        {
            "image_id": image_id,
            "x": comps["x"], "y": comps["y"],
            "sky_centroid": SkyCoord(np.asarray(src_ra) * u.deg, np.asarray(src_dec) * u.deg, frame="icrs"),
            "flux": comps["flux"] * u.Jy,
            "fwhm_major": comps["fwhm_major"] * u.arcsec, "fwhm_minor": comps["fwhm_minor"] * u.arcsec,
            "pa": comps["pa"] * u.deg,
            "pb_gain": np.asarray(pb_gain, float), "peak_snr": np.asarray(peak_snr, float),
        }
    )
    for name in galaxies.SOURCE_COLUMNS:
        if name in comps:
            value = np.asarray(comps[name])
            table[name] = value * _SOURCE_UNITS[name] if name in _SOURCE_UNITS else value
    return table


def components_table(image_id, parts):
    """The Gaussian components of the sources: ``image_id``, ``source``, ``kind`` and their shapes."""
    n = len(parts["x"])
    return QTable({
        "image_id": np.broadcast_to(np.asarray(image_id, np.int64), (n,)).copy(),
        "source": np.asarray(parts["source"], np.int64), "kind": np.asarray(parts["kind"], str),
        "x": parts["x"], "y": parts["y"], "flux": parts["flux"] * u.Jy,
        "fwhm_major": parts["fwhm_major"] * u.arcsec, "fwhm_minor": parts["fwhm_minor"] * u.arcsec,
        "pa": parts["pa"] * u.deg,
    })


def common_meta(setup, *, seed, preset):
    """FITS cards shared by every image made with one parameter set and seed."""
    meta = {
        "TELESCOP": setup.telescope, "OBJECT": "radiorecon.simulate",
        "OBSFREQ": float(setup.params["frequency"].to_value(u.Hz)), "SIMPRSET": preset, "SIMSEED": int(seed),
    }
    if setup.pb_fwhm is not None:
        meta["PBFWHM"] = float(setup.pb_fwhm.to_value(u.arcsec))
    return meta


def image_meta(common, beam, *, noise_rms, index):
    """FITS cards of one image: the common ones, the fitted beam (deg), noise (Jy/beam), index."""
    return {
        **common, "BMAJ": float(beam.major.to_value(u.deg)), "BMIN": float(beam.minor.to_value(u.deg)),
        "BPA": float(beam.pa.to_value(u.deg)), "NOISERMS": float(noise_rms), "SIMINDEX": int(index),
    }
