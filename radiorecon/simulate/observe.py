"""One simulated observation: sky, primary beam, uv coverage, dirty image, truth.

`~radiorecon.simulate.observe` is the entry point for single images. It and
`~radiorecon.simulate.make_dataset` both call the engine
(`radiorecon.simulate.engine`), so image ``i`` of a data set made with seed
``s`` is ``observe(seed=s, index=i)``.
"""

import dataclasses
import secrets

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import QTable

from .._validate import check_int, check_seed
from .engine import common_meta, components_table, image_meta, render_sources, simulate_image, truth_table
from .presets import DEFAULT_PRESET, resolve_parameters

__all__ = ["observe", "SimulatedObservation"]


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
        One row per source: ``image_id``, ``x``, ``y`` (0-based pixels),
        ``sky_centroid``, ``flux`` (Jy), ``fwhm_major``, ``fwhm_minor``
        (arcsec, 0 for points), ``pa`` (deg, east of north), ``pb_gain``
        and ``peak_snr`` (see `~radiorecon.simulate.observe`). With
        ``sky_model="radio-galaxies"``, ``x``, ``y`` are the core's, the
        shape is the Gaussian of the source's second moments, and the
        columns ``class`` (``"compact"``, ``"FRI"``, ``"FRII"``),
        ``redshift``, ``linear_size``, ``las``, ``axis_pa``,
        ``core_fraction``, ``flux_ratio``, ``arm_ratio``, ``bend``,
        ``axis_ratio``, ``hotspot_fraction`` and ``n_components`` follow
        (see `radiorecon.simulate.galaxies.draw_galaxies`).
    components : `~astropy.table.QTable`
        The Gaussian components of the sources, one row each:
        ``image_id``, ``source`` (row of ``truth``), ``kind``
        (``"gaussian"`` for the default sky's sources; ``"compact"``,
        ``"core"``, ``"jet"``, ``"lobe"``, ``"hotspot"`` for radio
        galaxies), ``x``, ``y``, ``flux``, ``fwhm_major``, ``fwhm_minor``,
        ``pa``. `source_images` renders them source by source.
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
    components: QTable = None

    def source_images(self):
        """The true sky of each source on its own, as `sky` renders it.

        Returns
        -------
        images : `~astropy.units.Quantity`
            ``(n_sources, npix, npix)`` in Jy/pixel (without primary beam), in
            the order of `truth`'s rows; their sum is `sky` (up to float32
            rounding) unless the sky was given as an image.
        """
        c = self.components
        parts = {name: u.Quantity(c[name]).value for name in ("x", "y", "flux", "fwhm_major", "fwhm_minor", "pa")}
        parts["source"] = np.asarray(c["source"])
        npix = self.parameters["npix"]
        pixel = self.parameters["pixel_scale"].to_value(u.arcsec)
        return render_sources(parts, len(self.truth), npix, pixel) * (u.Jy / u.pix)

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
        same parameters; an integer in ``[0, 2**63 - 1]``. None draws a
        seed (recorded in ``dirty.meta``).
    index : int
        Image number (>= 0) within the seed's sequence.
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

    Raises
    ------
    TypeError
        If ``seed`` or ``index`` is not an integer, or a parameter is of the
        wrong kind.
    ValueError
        If ``seed`` or ``index`` is out of range, or a parameter is.
    """
    from astropy.nddata import CCDData

    seed = secrets.randbits(63) if seed is None else check_seed(seed)
    index = check_int(index, "index", minimum=0)
    params = resolve_parameters(preset, **overrides)
    if phase_center is not None:
        icrs = phase_center.icrs
        phase_center = (float(icrs.ra.deg), float(icrs.dec.deg))
    method = method or ("visibility" if return_uv else "image")
    if method not in ("image", "visibility"):
        raise ValueError(f"method must be 'image' or 'visibility', not {method!r}")
    if return_uv and method != "visibility":
        raise ValueError("return_uv=True returns the visibility path's visibilities: use method='visibility'")
    r = simulate_image(params, seed, index, sky=sky, centre=phase_center, method=method)
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
        components=components_table(0, r["parts"]),
    )
    if return_uv:
        result.uvw, result.weights, result.visibilities = cov.uvw * u.m, cov.weights, r["visibilities"]
    return result
