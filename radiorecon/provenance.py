"""FITS provenance cards: how a result was made, written into its header.

Backends return plain values (any string keys, scalar values); this module
alone turns them, and the front door's own record (package, backend, model,
configuration, samples, seed, normalisation), into `~astropy.io.fits.Header`
cards. Keys that are not valid 8-character FITS keywords become ``HIERARCH``
cards, so plugin authors need not know FITS.
"""

import datetime
import json
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits

from ._fits import AXIS_KEYWORD, card_key
from .exceptions import RadioreconWarning

__all__ = [
    "observation_cards", "prediction_header", "draws_header", "backend_cards", "check_backend_meta", "beam_cards",
    "input_beam",
]

# Cards of the observation that stay true for a reconstruction of it.
_OBSERVATION = ("OBJECT", "TELESCOP", "INSTRUME", "DATE-OBS", "OBSERVER", "RESTFRQ")
# Cards the front door or FITS itself writes, which a backend may not set.
_RESERVED = {"SIMPLE", "BITPIX", "EXTEND", "END", "COMMENT", "HISTORY", "BMAJ", "BMIN", "BPA", "UTYPE",
             "EXTNAME", "XTENSION", "PCOUNT", "GCOUNT", *_OBSERVATION}


def _set(header, key, value, comment=""):
    # A long value leaves no room for a comment in an 80-character card.
    header[key] = (value, comment) if comment and len(str(value)) + len(comment) < 60 else value


def check_backend_meta(values, owner="Prediction"):
    """Plain values a backend may report (`~radiorecon.Prediction.meta`), as Python scalars.

    Raises
    ------
    TypeError
        If a value is not a bool, integer, float or string.
    ValueError
        If a value is not finite or not printable ASCII, or a key would
        overwrite a card the front door writes (``RR*``, the beam, WCS and
        structural cards). The messages name ``owner`` and the key.
    """
    checked = {}
    for key, value in (values or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        where = f"{owner}.meta[{key!r}] = {value!r}"
        if not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"{where}; Prediction.meta values must be numbers, booleans or strings")
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"{where}; FITS cards hold finite numbers only")
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            raise ValueError(f"{where}; FITS cards hold printable ASCII text only")
        name = str(key).upper()
        if name.startswith("RR") or name in _RESERVED or AXIS_KEYWORD.fullmatch(name) or name.startswith("HIERARCH"):
            raise ValueError(f"{where}; {key!r} is a card the front door writes, choose another name")
        checked[str(key)] = value
    return checked


def backend_cards(values, backend_name):
    """A header of a backend's per-image values (`~radiorecon.Prediction.meta`), checked."""
    header = fits.Header()
    for key, value in check_backend_meta(values, f"Backend {backend_name!r}: Prediction").items():
        header[card_key(key)] = value
    return header


def beam_cards(beam):
    """``BMAJ``/``BMIN``/``BPA`` (degrees) of a `radio_beam.Beam`, as viewers expect them."""
    header = fits.Header()
    if beam is not None:
        header["BMAJ"] = (beam.major.to_value(u.deg), "[deg] beam major axis FWHM")
        header["BMIN"] = (beam.minor.to_value(u.deg), "[deg] beam minor axis FWHM")
        header["BPA"] = (beam.pa.to_value(u.deg), "[deg] beam position angle")
    return header


def observation_cards(meta):
    """The cards of an input header that describe the observation."""
    header = fits.Header()
    if isinstance(meta, fits.Header):
        for key in _OBSERVATION:
            if key in meta:
                header[key] = (meta[key], meta.comments[key])
    return header


def _model_cards(header, version, backend_name, backend_version, origin, comment):
    _set(header, "RRVERS", version, "radiorecon version")
    _set(header, "RRBACKND", backend_name, "radiorecon backend")
    if backend_version is not None:
        _set(header, "RRBVERS", str(backend_version), "backend version")
    _set(header, "RRMODEL", origin, comment)


def prediction_header(
    *, input_meta, version, backend_name, backend_version, origin, config, n_samples, aggregate, seed,
    scale, uncertainty, beam, backend_meta, uncertainty_scale=1.0, uncertainty_floor=0.0, flux_error_floor=0.0,
    detection_calibration=None,
):
    """The header of a `~radiorecon.Reconstructor.predict` result.

    Parameters
    ----------
    input_meta : `~astropy.io.fits.Header` or mapping
        The input image's header; its observation cards are kept.
    beam : `radio_beam.Beam` or None
        The input's restoring beam: written both as the standard
        ``BMAJ``/``BMIN``/``BPA`` and as ``RRBMAJ``... (kept for older readers).
    backend_meta : mapping
        The backend's plain per-image values, see `backend_cards`.
    uncertainty_scale : float
        The factor applied to the standard deviation
        (`~radiorecon.Reconstructor.uncertainty_scale`), written as
        ``RRUSCALE``: 1 for an uncalibrated model.
    uncertainty_floor : float
        The standard deviation added in quadrature, in the unit of the
        result (`~radiorecon.Reconstructor.uncertainty_floor` times the
        normalisation scale), written as ``RRUFLOOR``: 0 for none.
    flux_error_floor : float
        The flux error catalogs add in quadrature, in units of the dirty
        image's noise (`~radiorecon.Reconstructor.flux_error_floor`),
        written as ``RRFFLOOR``: 0 for none.
    detection_calibration : list of float or None
        ``[a, b]`` or ``[a, b, c]`` of the calibrated detection probability
        (`~radiorecon.Reconstructor.detection_calibration`), written as
        ``RRDCAL`` (JSON) when set.
    Other parameters
        Plain values recorded as ``RR*`` cards.
    """
    header = observation_cards(input_meta)
    _model_cards(header, version, backend_name, backend_version, origin, "model the sky was predicted with")
    _set(header, "RRCONFIG", json.dumps(config, sort_keys=True), "backend config (JSON)")
    _set(header, "RRNSAMP", int(n_samples), "samples drawn")
    _set(header, "RRAGGR", aggregate, "how samples became the estimate")
    _set(header, "RRSEED", seed, "random seed")
    _set(header, "RRSCALE", scale, "normalisation scale (input units)")
    _set(header, "RRUNCERT", uncertainty, "what the uncertainty is")
    _set(header, "RRUSCALE", float(uncertainty_scale), "calibration factor applied to the std")
    _set(header, "RRUFLOOR", float(uncertainty_floor), "std added in quadrature (unit of the data)")
    _set(header, "RRFFLOOR", float(flux_error_floor), "catalog flux error added (units of the noise)")
    if detection_calibration is not None:
        _set(header, "RRDCAL", json.dumps([float(v) for v in detection_calibration]),
             "detection probability: a, b of logistic in ln S/N")
    _set(header, "RRDATE", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "UTC")
    if beam is not None:
        header.update(beam_cards(beam))
        header["RRBMAJ"] = (beam.major.to_value(u.deg), "[deg] input beam major axis")
        header["RRBMIN"] = (beam.minor.to_value(u.deg), "[deg] input beam minor axis")
        header["RRBPA"] = (beam.pa.to_value(u.deg), "[deg] input beam position angle")
    header.update(backend_cards(backend_meta, backend_name))
    return header


def draws_header(*, version, backend_name, origin, seed, comment):
    """The header of `~radiorecon.Reconstructor.generate` and ``sample`` results."""
    header = fits.Header()
    _model_cards(header, version, backend_name, None, origin, comment)
    _set(header, "RRSEED", seed, "random seed")
    return header


def input_beam(image):
    """The input's beam, or None with a warning when its beam cards are malformed."""
    from .io import get_beam

    try:
        return get_beam(image)
    except ValueError as exc:  # a malformed BMAJ/BMIN/BPA card
        warnings.warn(f"Ignoring the input's beam cards: {exc}", RadioreconWarning, stacklevel=4)
        return None
