"""Named simulation recipes and the checking of their parameters.

A preset is a complete set of parameters; keyword arguments override single
ones (``noise_rms=30 * u.uJy``). `~radiorecon.simulate.resolve_parameters` checks every value,
converts it to its canonical unit, and `to_json` / `from_json` turn the
result into plain JSON and back, for a data set's ``config.json``.

Dimensional parameters take `~astropy.units.Quantity` values or strings that
`~astropy.units.Quantity` parses (``"30 uJy"``); a plain number is refused,
since its unit would be a guess.

The parameters, with their values in ``"alma-cycle5-c43-3"``, are as follows.

Observation:

``array`` (``"alma_cycle5_3"``)
    Configuration name, path or table (see `~radiorecon.simulate.load_array`);
    None with ``imaging="restored"``, which uses no array.
``latitude`` (-23.0229 deg)
    Latitude of the array.
``right_ascension``, ``declination`` (150.1192 deg, 2.2058 deg: COSMOS)
    Field centre.
``field_radius`` (1 deg)
    Phase centres are drawn uniformly over the sphere within this radius of
    the field centre; 0 puts every image at the field centre.
``hour_angle`` (0 h), ``duration`` (20 min), ``integration`` (10 s)
    Track centred on ``hour_angle`` (0: transit); a ``(start, end)`` pair of
    hour angles replaces ``duration``.
``frequency`` (230 GHz), ``bandwidth`` (1.875 GHz), ``n_channels`` (1)
    Channels of width ``bandwidth / n_channels`` centred on ``frequency``.
``uvw`` (None)
    Given ``(n, 2)`` or ``(n, 3)`` uv(w) points instead of an array: plain
    numbers are wavelengths at ``frequency``, a length Quantity metres. No
    Earth rotation is applied to them.

Imaging and noise:

``imaging`` (``"dirty"``), ``restoring_beam`` (6 arcsec)
    ``"dirty"``: the dirty image of the array (as below). ``"restored"``:
    the image of a deconvolved survey, the sky convolved with a circular
    Gaussian restoring beam of FWHM ``restoring_beam`` plus noise of rms
    ``noise_rms`` correlated by that beam (see
    `~radiorecon.simulate.RestoredImaging`); its PSF is the beam.

``npix`` (512), ``pixel_scale`` (0.1 arcsec)
    Square image; ``npix`` even and at least 32.
``weighting`` (``"natural"``), ``robust`` (0.5)
    ``"natural"``, ``"uniform"`` or ``"briggs"`` with ``robust`` in [-2, 2].
``noise_rms`` (50 uJy/beam)
    Expected rms of the dirty image's thermal noise (0 for none).
``sefd`` (None), ``efficiency`` (0.88), ``n_pol`` (2)
    Alternatively, the noise from the radiometer equation (see
    `~radiorecon.simulate.visibility_noise`).
``primary_beam`` (True), ``dish_diameter`` (None: from the array),
``pb_fwhm_factor`` (1.13)
    Gaussian primary beam of FWHM ``pb_fwhm_factor * lambda / D``.
``psf_dec_step`` (0.25 deg)
    The uv coverage is computed at the phase centre's declination rounded
    to this step (0: exactly), so that images share PSFs.

Sky:

``n_sources`` ((1, 5)), ``empty_fraction`` (0.1)
    Sources per image, uniform between the bounds, in all but a fraction
    ``empty_fraction`` of images, which are empty.
``flux_range`` ((0.05, 0.5) mJy), ``flux_distribution`` (``"uniform"``), ``flux_index`` (-2)
    Integrated fluxes: ``"uniform"``, ``"log-uniform"`` or ``"power-law"``
    (dN/dS proportional to S**flux_index) within the range.
``fwhm_range`` ((0.4, 0.8) arcsec), ``pa_range`` ((0, 180) deg)
    Two FWHMs drawn uniformly (the larger is the major axis) and a position
    angle (east of north) drawn uniformly.
``placement_radius`` (11.43 arcsec), ``min_separation`` (0 arcsec)
    Sources lie uniformly within this radius of the phase centre, at least
    ``min_separation`` apart.
``point_fraction`` (0)
    Fraction of sources that are points.
``sky_model`` (``"gaussian"``)
    ``"gaussian"``: the sources above. ``"radio-galaxies"``: compact
    sources (shaped by ``fwhm_range``, ``pa_range`` and ``point_fraction``),
    FR I and FR II radio galaxies (see `radiorecon.simulate.galaxies`), with
    ``n_sources``, ``empty_fraction``, the placement and the total fluxes as
    above, and:
``class_fractions`` ((0.2, 0.4, 0.4))
    Probabilities of a source being compact, FR I or FR II.
``linear_size_range`` ((5, 150) kpc), ``redshift_range`` ((0.5, 3))
    Projected linear size (log-uniform) and redshift (uniform) of the
    extended sources; with the Planck 2018 cosmology they give the angular
    size, the length of the two arms together.
``size_range`` ((1.5, 15) arcsec)
    Angular sizes allowed; other draws of size and redshift are made again.

The other presets: ``"extended"`` is the default preset with
``sky_model="radio-galaxies"`` and fluxes of 0.2-5 mJy (log-uniform).
``"lotss"`` is a LoTSS-DR2-like survey cut-out (Shimwell et al. 2022:
144 MHz, 6" restoring beam, median rms 83 µJy/beam): 80 x 80 pixels of
1.5", ``imaging="restored"``, no primary beam (survey mosaics are
corrected for it), one radio galaxy within 6" of the centre, fluxes of
5-100 mJy (log-uniform), angular sizes 12-90", linear sizes 30-1000 kpc at
redshifts 0.1-1.5, and compact sources of FWHM up to 5" (half of them points).
"""

import copy
import hashlib
import os

import astropy.units as u
import numpy as np
from astropy.table import Table

from .._validate import check_int

__all__ = ["PRESETS", "DEFAULT_PRESET", "available_presets", "preset_parameters", "resolve_parameters"]

DEFAULT_PRESET = "alma-cycle5-c43-3"

PRESETS = {
    # Taran et al. (2023), Table 1: the recipe of the reference data set.
    "alma-cycle5-c43-3": {
        # Observation
        "array": "alma_cycle5_3",
        "latitude": -23.0229 * u.deg,
        "right_ascension": 150.11916667 * u.deg,  # COSMOS, 10h00m28.6s
        "declination": 2.20583333 * u.deg,  # +02d12m21s
        "field_radius": 1.0 * u.deg,
        "hour_angle": 0.0 * u.hourangle,
        "duration": 20.0 * u.min,
        "integration": 10.0 * u.s,
        "frequency": 230.0 * u.GHz,
        "bandwidth": 1.875 * u.GHz,
        "n_channels": 1,
        "uvw": None,
        # Imaging and noise
        "npix": 512,
        "pixel_scale": 0.1 * u.arcsec,
        "weighting": "natural",
        "robust": 0.5,
        "noise_rms": 50.0 * u.uJy / u.beam,
        "sefd": None,
        "efficiency": 0.88,
        "n_pol": 2,
        "primary_beam": True,
        "dish_diameter": None,
        "pb_fwhm_factor": 1.13,
        "psf_dec_step": 0.25 * u.deg,
        # Sky
        "n_sources": (1, 5),
        "empty_fraction": 0.1,
        "flux_range": (0.05, 0.5) * u.mJy,
        "flux_distribution": "uniform",
        "flux_index": -2.0,
        "fwhm_range": (0.4, 0.8) * u.arcsec,
        "pa_range": (0.0, 180.0) * u.deg,
        "placement_radius": 11.43 * u.arcsec,
        "min_separation": 0.0 * u.arcsec,
        "point_fraction": 0.0,
        "sky_model": "gaussian",
        # Radio galaxies (sky_model="radio-galaxies"); our choices, see the module docs.
        "class_fractions": (0.2, 0.4, 0.4),
        "linear_size_range": (5.0, 150.0) * u.kpc,
        "redshift_range": (0.5, 3.0),
        "size_range": (1.5, 15.0) * u.arcsec,
        "imaging": "dirty",
        "restoring_beam": 6.0 * u.arcsec,
    },
}
PRESETS["extended"] = {
    **PRESETS[DEFAULT_PRESET],
    "sky_model": "radio-galaxies",
    # Extended sources spread their flux over many beams: brighter than the
    # default's 0.05-0.5 mJy, to be seen above the 50 uJy/beam noise (our choice).
    "flux_range": (0.2, 5.0) * u.mJy,
    "flux_distribution": "log-uniform",
}
PRESETS["lotss"] = {
    **PRESETS[DEFAULT_PRESET],
    # LoTSS-DR2 (Shimwell et al. 2022, A&A 659, A1): 120-168 MHz centred on
    # 144 MHz, 6" restored images, median rms 83 uJy/beam; the field centre is
    # that of its larger region (12h45m +44d30m). The 1.5" pixels and 80 x 80
    # cut-outs are those of the score-based generative models' data.
    "array": None,
    "latitude": 52.91 * u.deg,  # LOFAR core, unused by restored images
    "right_ascension": 191.25 * u.deg,
    "declination": 44.5 * u.deg,
    "field_radius": 0.0 * u.deg,
    "frequency": 144.0 * u.MHz,
    "bandwidth": 48.0 * u.MHz,
    "npix": 80,
    "pixel_scale": 1.5 * u.arcsec,
    "noise_rms": 83.0 * u.uJy / u.beam,
    "primary_beam": False,
    "psf_dec_step": 0.0 * u.deg,
    "imaging": "restored",
    "restoring_beam": 6.0 * u.arcsec,
    "sky_model": "radio-galaxies",
    # One source near the centre of each cut-out, as in catalogue-centred cut-outs (our choice).
    "n_sources": (1, 1),
    "empty_fraction": 0.0,
    "placement_radius": 6.0 * u.arcsec,
    "flux_range": (5.0, 100.0) * u.mJy,
    "flux_distribution": "log-uniform",
    "fwhm_range": (0.0, 5.0) * u.arcsec,
    "point_fraction": 0.5,
    "linear_size_range": (30.0, 1000.0) * u.kpc,
    "redshift_range": (0.1, 1.5),
    "size_range": (12.0, 90.0) * u.arcsec,
}

# name: (kind, canonical unit or choices or (min, max) bounds, meaning). The
# kinds are checked by _check below; the module docstring documents each parameter.
_SPEC = {
    "array": ("array", None, "array configuration"),
    "latitude": ("latitude", u.deg, "array latitude"),
    "right_ascension": ("angle", u.deg, "right ascension of the field centre"),
    "declination": ("latitude", u.deg, "declination of the field centre"),
    "field_radius": ("nonnegative", u.deg, "radius of the field of phase centres"),
    "hour_angle": ("hour_angle", u.hourangle, "mid-track hour angle or (start, end)"),
    "duration": ("positive", u.min, "observing time"),
    "integration": ("positive", u.s, "integration time"),
    "frequency": ("positive", u.GHz, "centre frequency"),
    "bandwidth": ("positive", u.GHz, "total bandwidth"),
    "n_channels": ("count", (1, None), "number of channels"),
    "uvw": ("uvw", None, "given uv points"),
    "npix": ("npix", (32, None), "image size"),
    "pixel_scale": ("positive", u.arcsec, "pixel size"),
    "weighting": ("choice", ("natural", "uniform", "briggs"), "weighting"),
    "robust": ("number", (-2, 2), "Briggs robustness"),
    "noise_rms": ("noise", u.uJy / u.beam, "image noise rms"),
    "sefd": ("positive_or_none", u.Jy, "system equivalent flux density"),
    "efficiency": ("number", (1e-6, 1), "correlator efficiency"),
    "n_pol": ("count", (1, 2), "number of polarisations"),
    "primary_beam": ("bool", None, "primary beam switch"),
    "dish_diameter": ("positive_or_none", u.m, "dish diameter"),
    "pb_fwhm_factor": ("number", (1e-6, np.inf), "primary beam FWHM in lambda/D"),
    "psf_dec_step": ("nonnegative", u.deg, "declination step of the PSF bank"),
    "n_sources": ("count_range", None, "(min, max) sources per image"),
    "empty_fraction": ("number", (0, 1), "fraction of empty images"),
    "flux_range": ("positive_range", u.mJy, "(min, max) integrated flux"),
    "flux_distribution": ("choice", ("uniform", "log-uniform", "power-law"), "flux distribution"),
    "flux_index": ("number", (-np.inf, np.inf), "power-law index of dN/dS"),
    "fwhm_range": ("nonnegative_range", u.arcsec, "(min, max) source FWHM"),
    "pa_range": ("range", u.deg, "(min, max) position angle"),
    "placement_radius": ("nonnegative", u.arcsec, "radius within which sources lie"),
    "min_separation": ("nonnegative", u.arcsec, "minimum source separation"),
    "point_fraction": ("number", (0, 1), "fraction of point sources"),
    "sky_model": ("choice", ("gaussian", "radio-galaxies"), "sky model"),
    "class_fractions": ("fractions", 3, "(compact, FRI, FRII) probabilities"),
    "linear_size_range": ("positive_range", u.kpc, "(min, max) projected linear size"),
    "redshift_range": ("number_range", (1e-3, 10), "(min, max) redshift"),
    "size_range": ("positive_range", u.arcsec, "(min, max) angular size of extended sources"),
    "imaging": ("choice", ("dirty", "restored"), "imaging model"),
    "restoring_beam": ("positive", u.arcsec, "restoring beam FWHM"),
}


def available_presets():
    """Names of the presets.

    Returns
    -------
    names : list of str
        The default preset first.
    """
    return [DEFAULT_PRESET] + sorted(set(PRESETS) - {DEFAULT_PRESET})


def preset_parameters(preset=DEFAULT_PRESET):
    """A copy of a preset's parameters.

    Parameters
    ----------
    preset : str
        Name of the preset.

    Returns
    -------
    parameters : dict
        Parameter name to value (Quantities where dimensional).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the presets.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available presets: {', '.join(available_presets())}")
    return copy.deepcopy(PRESETS[preset])


def resolve_parameters(preset=DEFAULT_PRESET, **overrides):
    """A preset's parameters with overrides applied, checked and in canonical units.

    Parameters
    ----------
    preset : str
        Name of the preset (see `~radiorecon.simulate.available_presets`).
    **overrides
        Parameters to replace. ``sefd`` (with ``efficiency`` and
        ``n_pol``) replaces ``noise_rms``: give one of them.

    Returns
    -------
    parameters : dict
        Every parameter, checked, in its canonical unit.

    Raises
    ------
    TypeError
        For an unknown parameter (the message lists the valid ones) or a
        value of the wrong kind (e.g. a plain number for a Quantity).
    ValueError
        For a value out of range (negative noise, odd ``npix``, ...).
    """
    params = preset_parameters(preset)
    unknown = sorted(set(overrides) - set(_SPEC))
    if unknown:
        raise TypeError(
            f"unknown simulation parameter(s) {', '.join(unknown)}; valid ones: {', '.join(_SPEC)}"
        )
    if overrides.get("sefd") is not None and overrides.get("noise_rms") is not None:
        raise ValueError("give noise_rms or sefd, not both: the SEFD sets the noise")
    params.update(overrides)
    out = {name: _check(name, params[name]) for name in _SPEC}
    if out["imaging"] == "restored" and out["sefd"] is not None:
        raise ValueError("imaging='restored' takes noise_rms, not sefd: a restored image has no visibilities")
    if out["imaging"] == "dirty" and out["array"] is None and out["uvw"] is None:
        raise ValueError("imaging='dirty' needs an array or uvw points (array=None only with imaging='restored')")
    if out["sefd"] is not None:
        out["noise_rms"] = None  # set by the radiometer equation instead
    elif out["noise_rms"] is None:
        raise ValueError("noise_rms=None needs an sefd to set the noise; use 0 uJy/beam for no noise")
    return out


def _quantity(name, value, unit, what):
    """``value`` as a Quantity in ``unit``, or a TypeError that says what is wanted."""
    try:
        q = u.Quantity(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} ({what}) must be a Quantity in {unit}, not {value!r}") from exc
    if q.unit == u.one:
        raise TypeError(f"{name} ({what}) needs a unit, e.g. {name}={np.asarray(value).tolist()} * u.{unit}")
    try:
        return q.to(unit)
    except u.UnitConversionError:
        raise TypeError(f"{name} ({what}) must be in units of {unit}, not {q.unit}") from None


def _check(name, value):
    """The checked, canonical value of one parameter."""
    kind, unit, what = _SPEC[name]
    wrong = f"{name} ({what}) must be"

    if kind == "array":
        if value is None:
            return None
        if isinstance(value, Table):
            return value
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise TypeError(f"{wrong} a configuration name, a path or a table, not {type(value).__name__}")
    if kind == "uvw":
        if value is None:
            return None
        q = u.Quantity(value)
        if q.ndim != 2 or q.shape[1] not in (2, 3) or len(q) == 0 or not np.isfinite(q.value).all():
            raise ValueError(f"{wrong} an (n, 2) or (n, 3) array of finite (u, v[, w])")
        if q.unit != u.one and not q.unit.is_equivalent(u.m):
            raise TypeError(f"{wrong} in wavelengths (plain numbers) or a length unit, not {q.unit}")
        return q
    if kind == "choice":
        if value not in unit:
            raise ValueError(f"{wrong} one of {', '.join(map(repr, unit))}, not {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{wrong} True or False, not {value!r}")
        return bool(value)
    if kind in ("count", "npix"):
        lo, hi = unit
        value = check_int(value, f"{name} ({what})", minimum=lo, maximum=hi)
        if kind == "npix" and value % 2:
            raise ValueError(f"{wrong} even and at least {lo}, not {value}")
        return value
    if kind == "count_range":
        lo, hi = _pair(name, value, what)
        lo = check_int(lo, f"{name} ({what}) minimum", minimum=0)
        hi = check_int(hi, f"{name} ({what}) maximum", minimum=lo)
        return (lo, hi)
    if kind == "number":
        return _check_number(name, value, unit, wrong)
    if kind == "fractions":
        try:
            values = np.array(value, dtype=float)
        except (TypeError, ValueError):
            values = np.zeros(0)
        if values.shape != (unit,) or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
            raise ValueError(f"{wrong} {unit} non-negative numbers, not all 0, not {value!r}")
        return tuple(float(v) for v in values / values.sum())
    if kind == "number_range":
        lo, hi = (_check_number(name, v, unit, wrong) for v in _pair(name, value, what))
        if lo > hi:
            raise ValueError(f"{wrong} (min, max) with min <= max, not {value!r}")
        return (lo, hi)
    if kind.endswith("range"):
        lo, hi = _pair(name, value, what)
        q = _quantity(name, u.Quantity([u.Quantity(lo), u.Quantity(hi)]), unit, what)
        if not np.isfinite(q.value).all() or q[0] > q[1]:
            raise ValueError(f"{wrong} (min, max) with min <= max, not {value!r}")
        if (kind == "positive_range" and q[0] <= 0) or (kind == "nonnegative_range" and q[0] < 0):
            raise ValueError(f"{wrong} {'positive' if kind == 'positive_range' else '>= 0'}, not {q}")
        return q
    if value is None and kind in ("noise", "positive_or_none"):
        return None
    if kind == "noise" and _is_flux(value):
        value = u.Quantity(value) / u.beam  # "50 uJy" means per beam
    q = _quantity(name, value, unit, what)
    if kind == "hour_angle":
        if q.size not in (1, 2) or not np.isfinite(q.value).all():
            raise ValueError(f"{wrong} a scalar or a (start, end) pair, not {value!r}")
        return q.reshape(()) if q.size == 1 else q.reshape(2)
    if q.ndim != 0 or not np.isfinite(q.value):
        raise ValueError(f"{wrong} a finite scalar, not {value!r}")
    if kind in ("positive", "positive_or_none") and q.value <= 0:
        raise ValueError(f"{wrong} positive, not {q}")
    if kind in ("nonnegative", "noise") and q.value < 0:
        raise ValueError(f"{wrong} >= 0, not {q}")
    if kind == "latitude" and abs(q.value) > 90:
        raise ValueError(f"{wrong} within [-90, 90] deg, not {q}")
    return q


def _check_number(name, value, bounds, wrong):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{wrong} a number, not {value!r}")
    lo, hi = bounds
    if not (np.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{wrong} within [{lo:g}, {hi:g}], not {value!r}")
    return float(value)


def _is_flux(value):
    try:
        return u.Quantity(value).unit.is_equivalent(u.Jy)
    except (TypeError, ValueError):
        return False


def _pair(name, value, what):
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({what}) must be a pair (min, max), not {value!r}") from None
    return lo, hi


# -- JSON ------------------------------------------------------------------


def to_json(params):
    """Parameters as plain JSON values (Quantities as ``{"value", "unit"}``).

    A table-valued ``array`` is stored with its columns; a ``uvw`` array by
    its shape, unit and SHA-256 digest only.
    """
    out = {}
    for name, value in params.items():
        if name == "uvw" and value is not None:
            data = np.ascontiguousarray(value.value, dtype=np.float64)
            digest = hashlib.sha256(data.tobytes()).hexdigest()
            out[name] = {"sha256": digest, "shape": list(data.shape), "unit": value.unit.to_string()}
        elif isinstance(value, Table):
            columns = [c for c in ("x", "y", "z", "diameter") if c in value.colnames]
            out[name] = {"table": {c: u.Quantity(value[c], u.m).value.tolist() for c in columns}}
        elif isinstance(value, u.Quantity):
            out[name] = {"value": value.value.tolist(), "unit": value.unit.to_string()}
        elif isinstance(value, tuple):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def from_json(doc):
    """Parameters from `to_json`'s output (a ``uvw`` digest cannot be undone)."""
    params = {}
    for name, value in doc.items():
        if isinstance(value, dict) and "table" in value:
            from astropy.table import QTable

            value = QTable({c: np.asarray(v) * u.m for c, v in value["table"].items()})
        elif isinstance(value, dict) and "sha256" in value:
            raise ValueError("this configuration's uvw points were given as an array and are not stored")
        elif isinstance(value, dict):
            value = u.Quantity(value["value"], value["unit"])
        elif isinstance(value, list):
            value = tuple(value)
        params[name] = value
    return params
