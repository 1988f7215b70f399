"""One simulated observation: sky, primary beam, uv coverage, dirty image, truth.

`~radiorecon.simulate.observe` is the entry point for single images;
`~radiorecon.simulate.make_dataset` calls the same ``_simulate`` for each
image, so image ``i`` of a data set made with seed ``s`` is
``observe(seed=s, index=i)``.
"""

import collections
import dataclasses
import json
import secrets

import astropy.units as u
import numpy as np
from astropy.constants import c
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table
from astropy.wcs import WCS

from . import sky as skymod
from .arrays import load_array
from .imaging import UVCoverage, visibility_noise
from .presets import DEFAULT_PRESET, resolve_parameters, to_json
from .primary_beam import primary_beam_fwhm, primary_beam_gain, primary_beam_image
from .uv import earth_rotation_uvw, hour_angles

__all__ = ["observe", "SimulatedObservation"]

_C = c.to_value(u.m / u.s)
# Per process: the last few parameter sets, each with its PSF bank (a
# handful of 2N x 2N PSFs and their transforms, ~12 MB each at 512²).
_SETUPS = collections.OrderedDict()
_MAX_SETUPS = 4
_MAX_COVERAGES = 32


class _Setup:
    """What a parameter set fixes for every image: channels, primary beam, PSF bank."""

    def __init__(self, params):
        p = self.params = params
        self.npix = p["npix"]
        self.pixel = p["pixel_scale"].to_value(u.arcsec)
        n, width = p["n_channels"], p["bandwidth"] / p["n_channels"]
        self.channel_width = width
        self.freq = (p["frequency"] + (np.arange(n) - (n - 1) / 2) * width).to_value(u.Hz)
        diameter = p["dish_diameter"]
        if p["uvw"] is None:
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

    def dec_bin(self, dec):
        """Declination (deg) at which the uv coverage of a phase centre at ``dec`` is computed."""
        step = self.params["psf_dec_step"].to_value(u.deg)
        if self.positions is None:
            return 0.0  # given uvw: one coverage for all
        return float(np.round(dec / step) * step) if step > 0 else float(dec)

    def coverage(self, dec_bin, **known):
        """The `~radiorecon.simulate.UVCoverage` at a declination bin; ``known`` passes on psf2 and beam."""
        cov = self._coverages.get(dec_bin)
        if cov is None:
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


def _setup(params):
    key = json.dumps(to_json(params), sort_keys=True)
    setup = _SETUPS.get(key)
    if setup is None:
        setup = _SETUPS[key] = _Setup(params)
        while len(_SETUPS) > _MAX_SETUPS:
            _SETUPS.popitem(last=False)
    _SETUPS.move_to_end(key)
    return setup


def _rng(seed, index):
    # One stream per image: the same (seed, index) gives the same image
    # whichever process, worker count or shard layout makes it.
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _draw_centre(rng, p):
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


def _simulate(params, seed, index, *, sky=None, centre=None, method="image"):
    """Everything about one image, as plain arrays and numbers."""
    setup = _setup(params)
    rng = _rng(seed, index)
    drawn = _draw_centre(rng, params)  # drawn even when overridden: the stream stays the same
    ra, dec = centre if centre is not None else drawn
    wcs = image_wcs(ra, dec, setup.npix, setup.pixel)
    if sky is None:
        comps = skymod.draw_components(rng, params, setup.npix, setup.pixel)
        image = skymod.render(comps, setup.npix, setup.pixel)
    elif isinstance(sky, Table):
        comps = _table_components(sky, wcs, setup.npix)
        image = skymod.render(comps, setup.npix, setup.pixel)
    else:
        comps, image = skymod.empty_components(), _sky_image(sky, setup.npix)
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
    snr = skymod.peak_snr(comps["flux"], gain, comps, cov.beam, rms)
    world = wcs.wcs_pix2world(comps["x"], comps["y"], 0) if len(comps["x"]) else (np.zeros(0), np.zeros(0))
    return {
        "ra": ra, "dec": dec, "dec_bin": dec_bin, "wcs": wcs, "setup": setup, "coverage": cov,
        "dirty": dirty, "sky": image, "components": comps, "pb_gain": gain, "peak_snr": snr,
        "src_ra": np.asarray(world[0]), "src_dec": np.asarray(world[1]), "noise_rms": rms,
        "visibilities": vis,
    }


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


def truth_table(image_id, comps, src_ra, src_dec, pb_gain, peak_snr):
    """The truth catalog of components (see `~radiorecon.simulate.observe`)."""
    image_id = np.broadcast_to(np.asarray(image_id, np.int64), (len(comps["x"]),))
    return QTable(
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


@dataclasses.dataclass(repr=False)
class SimulatedObservation:
    """The result of `~radiorecon.simulate.observe`.

    Attributes
    ----------
    dirty : `~astropy.nddata.CCDData`
        Dirty image in Jy/beam; celestial SIN WCS centred on the phase
        centre (pixel ``npix // 2``); ``meta`` holds ``BMAJ``, ``BMIN``,
        ``BPA`` (deg) of the fitted clean beam, ``NOISERMS`` (expected image
        rms, Jy/beam), ``OBSFREQ`` (Hz), ``PBFWHM`` (arcsec) and the seed.
    sky : `~astropy.nddata.CCDData`
        True sky (without primary beam) in Jy/pixel, same WCS.
    psf : `~astropy.nddata.CCDData`
        PSF of ``npix`` pixels, peak 1 at pixel ``npix // 2``, same WCS.
    truth : `~astropy.table.QTable`
        One row per component: ``image_id``, ``x``, ``y`` (0-based pixels),
        ``sky_centroid``, ``flux`` (Jy), ``fwhm_major``, ``fwhm_minor``
        (arcsec, 0 for points), ``pa`` (deg, east of north), ``pb_gain``
        and ``peak_snr`` (see `~radiorecon.simulate.observe`).
    primary_beam : `~numpy.ndarray`
        Gain of the primary beam on the image grid.
    beam : `radio_beam.Beam`
    noise_rms : `~astropy.units.Quantity`
        Expected rms of the dirty image's noise.
    phase_center : `~astropy.coordinates.SkyCoord`
    uvw : `~astropy.units.Quantity` or None
        ``(n_rows, 3)`` baselines in metres (with ``return_uv=True``).
    frequency : `~astropy.units.Quantity`
        Channel frequencies.
    weights : `~numpy.ndarray` or None
        ``(n_rows, n_channels)`` imaging weights (with ``return_uv=True``).
    visibilities : `~numpy.ndarray` or None
        ``(n_rows, n_channels)`` complex visibilities in Jy with noise (with
        ``return_uv=True``).
    parameters : dict
        The resolved parameters.
    """

    dirty: object
    sky: object
    psf: object
    truth: QTable
    primary_beam: np.ndarray
    beam: object
    noise_rms: u.Quantity
    phase_center: SkyCoord
    frequency: u.Quantity
    parameters: dict
    uvw: u.Quantity = None
    weights: np.ndarray = None
    visibilities: np.ndarray = None

    def __repr__(self):
        b = self.beam
        return (
            f"<SimulatedObservation {self.dirty.shape[1]}x{self.dirty.shape[0]} px, "
            f"{len(self.truth)} source(s), beam {b.major.to_value(u.arcsec):.3f}\" x "
            f"{b.minor.to_value(u.arcsec):.3f}\", noise {self.noise_rms.to(u.uJy / u.beam):.3g}>"
        )


def observe(sky=None, *, preset=DEFAULT_PRESET, seed=None, index=0, phase_center=None,
            method=None, return_uv=False, **overrides):
    """Simulate one interferometric observation and its dirty image.

    The sky (in Jy/pixel) is multiplied by the primary beam, observed with
    the uv coverage of the array (Earth-rotation synthesis at the phase
    centre's declination, rounded to ``psf_dec_step``), imaged with the
    imaging weights, and given thermal noise whose image rms is
    ``noise_rms`` (or follows from ``sefd``).

    Parameters
    ----------
    sky : None, table, array, Quantity or NDData, optional
        None draws a random sky from the preset's source parameters. A
        table lists components: ``x``, ``y`` (0-based pixels) or
        ``sky_centroid``; ``flux`` (Jy); optional ``fwhm_major``,
        ``fwhm_minor`` (arcsec; none or 0 for a point source, which is
        moved to the nearest pixel centre) and ``pa`` (deg). An image is an
        ``(npix, npix)`` sky in Jy/pixel (then ``truth`` is empty).
    preset : str
        Name of the recipe (see `~radiorecon.simulate.available_presets`); default
        ``"alma-cycle5-c43-3"``, the recipe of Taran et al. (2023).
    seed : int, optional
        With ``index``, fixes everything random: ``observe(seed=s,
        index=i)`` is image ``i`` of ``make_dataset(..., seed=s)`` with the
        same parameters. None draws a seed (recorded in ``dirty.meta``).
    index : int
        Image number within the seed's sequence.
    phase_center : `~astropy.coordinates.SkyCoord`, optional
        Use this phase centre instead of drawing one within
        ``field_radius`` of the field centre.
    method : {"image", "visibility"}, optional
        How the dirty image is made (see `radiorecon.simulate.imaging`):
        the fast image-plane path (default) or gridding the predicted
        visibilities (needed for ``return_uv``). Both give the same image
        up to the noise realisation.
    return_uv : bool
        Also return ``uvw``, ``weights`` and the noisy ``visibilities``
        (by the visibility path).
    **overrides
        Parameters replacing the preset's, e.g. ``declination=-30 * u.deg``,
        ``noise_rms=30 * u.uJy``, ``weighting="briggs"``, ``npix=256``
        (see `~radiorecon.simulate.preset_parameters` for all of them).

    Returns
    -------
    result : `~radiorecon.simulate.SimulatedObservation`
        ``dirty``, ``sky``, ``psf`` (CCDData), ``truth`` (QTable), ...

    Notes
    -----
    ``truth["peak_snr"]`` is the expected apparent peak of each source,
    ``flux * pb_gain * sqrt(det B / det(B + C))`` for beam and source
    covariances ``B`` and ``C`` (the Gaussian convolution of the source with
    the fitted clean beam, in Jy/beam), divided by the expected noise rms;
    sidelobes and neighbours are not included.
    """
    from astropy.nddata import CCDData

    params = resolve_parameters(preset, **overrides)
    if seed is None:
        seed = secrets.randbits(63)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, not {index!r}")
    if phase_center is not None:
        icrs = phase_center.icrs
        phase_center = (float(icrs.ra.deg), float(icrs.dec.deg))
    method = method or ("visibility" if return_uv else "image")
    if method not in ("image", "visibility"):
        raise ValueError(f"method must be 'image' or 'visibility', not {method!r}")
    if return_uv and method != "visibility":
        raise ValueError("return_uv=True returns the visibility path's visibilities: use method='visibility'")
    r = _simulate(params, int(seed), int(index), sky=sky, centre=phase_center, method=method)
    setup, cov, wcs = r["setup"], r["coverage"], r["wcs"]
    common = common_meta(setup, seed=seed, preset=preset)
    meta = image_meta(common, cov.beam, noise_rms=r["noise_rms"], index=index)
    truth = truth_table(0, r["components"], r["src_ra"], r["src_dec"], r["pb_gain"], r["peak_snr"])
    truth.meta.update({"noise_rms": r["noise_rms"] * u.Jy / u.beam, "beam_major": cov.beam.major.to(u.arcsec),
                       "beam_minor": cov.beam.minor.to(u.arcsec), "beam_pa": cov.beam.pa.to(u.deg)})
    result = SimulatedObservation(
        dirty=CCDData(r["dirty"], unit=u.Jy / u.beam, wcs=wcs, meta=dict(meta)),
        sky=CCDData(r["sky"], unit=u.Jy / u.pix, wcs=wcs.deepcopy(), meta={"OBJECT": meta["OBJECT"]}),
        psf=CCDData(cov.psf().copy(), unit=u.one, wcs=wcs.deepcopy(), meta=dict(meta)),
        truth=truth,
        primary_beam=setup.pb.copy(),
        beam=cov.beam,
        noise_rms=(r["noise_rms"] * u.Jy / u.beam).to(u.uJy / u.beam),
        phase_center=SkyCoord(r["ra"] * u.deg, r["dec"] * u.deg, frame="icrs"),
        frequency=setup.freq * u.Hz,
        parameters=params,
    )
    if return_uv:
        result.uvw, result.weights, result.visibilities = cov.uvw * u.m, cov.weights, r["visibilities"]
    return result
