"""Pictures of images, sky models and catalogs on the sky, as astronomers read them.

Every panel is a `~astropy.visualization.wcsaxes.WCSAxes` (right ascension
and declination on the axes) with a colour bar labelled with the unit, the
restoring beam drawn in the lower left corner, a scale bar in arcseconds in
the lower right and a stretch that shows both the noise and the brightest
source (`~astropy.visualization.ImageNormalize`). Residuals are shown on a
symmetric, diverging scale.

`plot_image` draws one panel, `plot_catalog` overlays a catalog's source
ellipses (with their detection probability, and matched, spurious and
missed sources when the truth is known) and `plot_reconstruction` lays out
the whole story of one reconstruction: the dirty image, the sky model, its
uncertainty, the residual and the sources.
``Reconstruction.plot`` is `plot_reconstruction`.

The figures are `matplotlib.figure.Figure` objects made without pyplot, so
they draw without a display and leave the user's matplotlib backend alone.
An image without a celestial WCS raises `~radiorecon.exceptions.InputError`:
sky axes, the beam and the scale bar all need one.
"""

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.wcs.utils import proj_plane_pixel_scales

from ._noise import robust_std
from ._validate import FWHM_PER_SIGMA
from .exceptions import InputError

__all__ = ["plot_image", "plot_catalog", "plot_reconstruction", "image_norm", "legend_handles"]

#: Colour maps: images and sky models, uncertainties, residuals (diverging).
CMAPS = {"image": "inferno", "uncertainty": "viridis", "residual": "RdBu_r"}

# Sizes for a slide: one panel is 4.4 x 3.4 inches at 150 dpi, fonts of 11 pt.
_PANEL_SIZE = (4.4, 3.4)
_FONT = 11
_DPI = 150
_SPURIOUS = "#ff4d4d"


def image_norm(data, *, stretch="asinh", symmetric=False):
    """An `~astropy.visualization.ImageNormalize` that shows the noise and the brightest source.

    Parameters
    ----------
    data : array-like
        The pixels (non-finite ones are ignored).
    stretch : {'asinh', 'sqrt', 'log', 'linear'}, optional
        For ``symmetric=False``. The asinh stretch is linear up to about three
        times the robust noise and logarithmic above, so a noise-dominated
        dirty image and a sparse sky model both show their faint structure
        without saturating their peak.
    symmetric : bool, optional
        A linear scale from ``-L`` to ``L`` with ``L`` the 99.5th percentile
        of ``|data|``, for residuals (zero in the middle of a diverging
        colour map).

    Returns
    -------
    norm : `~astropy.visualization.ImageNormalize`
        From ``median - 3 sigma`` (but not below the minimum) to the maximum,
        sigma the robust (MAD) standard deviation.
    """
    from astropy.visualization import (AsinhStretch, ImageNormalize, LinearStretch, LogStretch,
                                       SqrtStretch)

    values = np.asarray(data, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ImageNormalize(vmin=0.0, vmax=1.0)
    if symmetric:
        limit = float(np.percentile(np.abs(values), 99.5)) or 1.0
        return ImageNormalize(vmin=-limit, vmax=limit, stretch=LinearStretch())
    sigma = robust_std(values)
    vmin = max(float(values.min()), float(np.median(values)) - 3.0 * sigma)
    vmax = float(values.max())
    if not vmax > vmin:  # a constant image: any range shows it as one colour
        vmin, vmax = vmin - 0.5, vmax + 0.5
    stretches = {
        # a: where asinh turns from linear to logarithmic, as a fraction of the range.
        "asinh": lambda: AsinhStretch(a=float(np.clip(3.0 * sigma / (vmax - vmin), 0.02, 1.0))),
        "sqrt": SqrtStretch,
        "log": LogStretch,
        "linear": LinearStretch,
    }
    if stretch not in stretches:
        raise InputError(f"stretch must be one of {', '.join(stretches)}, not {stretch!r}")
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=stretches[stretch]())


def plot_image(image, ax=None, *, title=None, kind="image", stretch="asinh", beam=None, size=None,
               colorbar=True, scalebar=True, fig=None):
    """Draw an image on sky axes with a colour bar, the beam and a scale bar.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`
        A dirty image (`~radiorecon.io.read_image`), a
        `~radiorecon.Reconstruction` or any 2-D NDData with a celestial WCS
        and, for a labelled colour bar, a unit. Fluxes are shown in Jy, mJy
        or μJy per beam or pixel, whichever gives readable numbers.
    ax : `~astropy.visualization.wcsaxes.WCSAxes`, optional
        Axes made with ``projection=image.wcs``; by default a new figure
        with one panel.
    title : str, optional
    kind : {'image', 'uncertainty', 'residual'}, optional
        Chooses the colour map; 'residual' also a symmetric linear scale.
    stretch : str, optional
        As for `image_norm`.
    beam : `radio_beam.Beam`, optional
        The beam to draw; by default the image's (``BMAJ``/``BMIN``/``BPA``,
        `~radiorecon.io.get_beam`, or the input beam that
        `~radiorecon.Reconstructor.predict` records as ``RRBMAJ``...). None
        found: no beam is drawn.
    size : int or `~astropy.units.Quantity`, optional
        Show only the central square of this side (pixels, or an angle).
    colorbar, scalebar : bool, optional
    fig : `~matplotlib.figure.Figure`, optional
        The figure to add a new panel to when ``ax`` is None.

    Returns
    -------
    ax : `~astropy.visualization.wcsaxes.WCSAxes`

    Raises
    ------
    InputError
        If the image is not 2-D or has no celestial WCS.
    """
    from matplotlib.figure import Figure

    data, unit, wcs = _unpack(image, "the image")
    if ax is None:
        if fig is None:
            fig = Figure(figsize=_PANEL_SIZE, layout="constrained", dpi=_DPI)
        ax = fig.add_subplot(projection=wcs)
    shown, label = _display(data, unit)
    norm = image_norm(shown, stretch=stretch, symmetric=kind == "residual")
    im = ax.imshow(shown, origin="lower", cmap=CMAPS[kind], norm=norm, interpolation="nearest")
    _sky_axes(ax, wcs)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    _zoom(ax, data.shape, wcs, size)
    if colorbar:
        bar = ax.get_figure().colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label(label, fontsize=_FONT)
        bar.ax.tick_params(labelsize=_FONT - 1)
    beam = _beam(image) if beam is None else beam
    dark = kind != "residual"
    colour = "white" if dark else "black"
    if beam is not None:
        from astropy.visualization.wcsaxes import add_beam

        add_beam(ax, major=beam.major, minor=beam.minor, angle=beam.pa, corner="bottom left",
                 frame=False, facecolor="none", edgecolor=colour, hatch="////", lw=1.2)
    if scalebar:
        from astropy.visualization.wcsaxes import add_scalebar

        length = _scalebar_length(ax, wcs)
        add_scalebar(ax, length, label=f'{length.to_value(u.arcsec):g}"', corner="bottom right",
                     color=colour, fontproperties={"size": _FONT - 1})
    return ax


def plot_catalog(ax, catalog, *, truth=None, radius=None, color="cyan", legend=True):
    """Overlay a catalog's sources: FWHM ellipses, detection probabilities, and the truth.

    Parameters
    ----------
    ax : `~astropy.visualization.wcsaxes.WCSAxes`
        Axes of an image on the catalog's pixel grid (`plot_image`).
    catalog : `~astropy.table.Table`
        From `~radiorecon.catalog.find_sources` or
        `~radiorecon.catalog.find_sources_in_model`: ``x``, ``y`` (0-based
        pixels), ``a``, ``b`` (standard deviations along the axes, pix),
        ``theta`` (major axis counter-clockwise from +x, deg) and, when it
        has one, ``detection_probability``, written next to each ellipse.
    truth : `~astropy.table.Table`, optional
        The true sources (``x``, ``y``). Then found sources matched to a
        true one (`~radiorecon.catalog.match`, one-to-one within
        ``radius``) are drawn as solid ellipses, spurious ones as dashed red
        ellipses, and true sources that were missed as yellow squares.
    radius : float, optional
        Matching radius, pix; by default the catalog's ``beam_fwhm_pix``
        (as `radiorecon.benchmark` matches), else 3.
    color : str, optional
        Colour of found (and matched) sources.
    legend : bool, optional
        Add a legend naming the markers.

    Returns
    -------
    match : `~radiorecon.catalog.Match` or None
        The match drawn, when ``truth`` was given.
    """
    from matplotlib.patches import Ellipse

    from .catalog import match as match_catalogs

    x, y = (np.asarray(u.Quantity(catalog[c]).value, float) for c in ("x", "y"))
    width, height = (np.asarray(u.Quantity(catalog[c]).value, float) * FWHM_PER_SIGMA for c in ("a", "b"))
    theta = np.asarray(u.Quantity(catalog["theta"], u.deg).value, float)
    spurious = np.zeros(len(catalog), bool)
    found = None
    if truth is not None:
        if radius is None:
            radius = catalog.meta.get("beam_fwhm_pix", 3.0)
        found = match_catalogs(catalog, truth, u.Quantity(radius, u.pix))
        spurious[found.false_positives] = True
    bad = _SPURIOUS
    for i in range(len(catalog)):
        ax.add_patch(Ellipse((x[i], y[i]), width[i], height[i], angle=theta[i], fill=False,
                             edgecolor=bad if spurious[i] else color, lw=1.6, ls="--" if spurious[i] else "-"))
    if "detection_probability" in catalog.colnames:
        for i, p in enumerate(np.asarray(catalog["detection_probability"], float)):
            ax.text(x[i] + 0.6 * max(width[i], height[i]) + 2, y[i], f"{p:.2f}", color=bad if spurious[i] else color,
                    fontsize=_FONT - 2, va="center", clip_on=True)
    if found is not None:
        missed = np.asarray(found.false_negatives, int)
        tx, ty = (np.asarray(u.Quantity(truth[c]).value, float) for c in ("x", "y"))
        ax.plot(tx[missed], ty[missed], "s", mfc="none", mec="yellow", ms=9, mew=1.5, ls="none")
    if legend:
        ax.legend(handles=legend_handles(truth=found is not None, probability="detection_probability" in catalog.colnames,
                                       found=found, color=color), loc="best", fontsize=_FONT - 2,
                  framealpha=0.7, handlelength=1.6)
    return found


def legend_handles(*, truth=True, probability=False, found=None, color="cyan"):
    """Legend entries for `plot_catalog`'s markers.

    Parameters
    ----------
    truth : bool, optional
        Include the markers drawn when the truth is given (spurious, missed).
    probability : bool, optional
        Include a line saying the numbers are detection probabilities.
    found : `~radiorecon.catalog.Match`, optional
        What `plot_catalog` returned: its counts go into the labels.
    color : str, optional
        The colour of found sources given to `plot_catalog`.

    Returns
    -------
    handles : list of `matplotlib.lines.Line2D`
        For ``legend(handles=...)`` of an axes or a figure.
    """
    from matplotlib.lines import Line2D

    def count(n):
        return "" if found is None else f" ({n})"

    handles = [Line2D([], [], color=color, lw=1.6, label=("detected, true" if truth else "detected")
                      + count(found.tp if found is not None else 0))]
    if truth:
        handles += [Line2D([], [], color=_SPURIOUS, lw=1.6, ls="--",
                           label="spurious" + count(found.fp if found is not None else 0)),
                    Line2D([], [], marker="s", mfc="none", mec="yellow", ms=8, mew=1.5, ls="none",
                           label="missed true source" + count(found.fn if found is not None else 0))]
    if probability:
        handles.append(Line2D([], [], ls="none", label="numbers: detection probability"))
    return handles


def plot_reconstruction(result, dirty=None, *, catalog=None, truth=None, truth_image=None, psf=None,
                        title=None, size=None, path=None, overwrite=False, dpi=_DPI, ncols=3):
    """The panels of one reconstruction: dirty image, sky model, uncertainty, residual, sources.

    Each panel appears only when its data exist: the dirty image when
    given; the sky model (for a method that makes a restored image, as
    CLEAN does, the restored image, since its point components show as
    isolated pixels); the uncertainty when it varies over the image; the
    residual (the method's ``extras["residual"]``, else ``dirty - model *
    psf`` when both are given, in the dirty image's unit); and, with a
    catalog, the sources over the true sky (``truth_image``) or else over
    the sky model.

    Parameters
    ----------
    result : `~radiorecon.Reconstruction`
        With a celestial WCS.
    dirty : `~astropy.nddata.NDData`, optional
        The dirty image it came from (Jy/beam), on the same pixel grid.
    catalog : `~astropy.table.Table`, optional
        Its sources (`~radiorecon.catalog.find_sources_in_model`).
    truth : `~astropy.table.Table`, optional
        True sources (``x``, ``y``, pix): matched, spurious and missed
        sources are marked (`plot_catalog`).
    truth_image : `~astropy.nddata.NDData` or `~astropy.units.Quantity`, optional
        The (apparent) true sky on the same grid, e.g. in Jy/pixel.
    psf : array-like or `~astropy.nddata.NDData`, optional
        The dirty beam (peak 1), for the residual of a method that makes
        none.
    title : str, optional
        The figure's title.
    size : int or `~astropy.units.Quantity`, optional
        Show the central square of this side (pixels or an angle).
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or any format matplotlib infers
        from the suffix).
    overwrite : bool, optional
        Replace an existing ``path``.
    dpi : float, optional
    ncols : int, optional
        Panels per row.

    Returns
    -------
    fig : `~matplotlib.figure.Figure`

    Raises
    ------
    InputError
        If the sky model has no celestial WCS.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked before drawing).
    """
    from matplotlib.figure import Figure

    from ._files import atomic_path, check_new
    from ._validate import check_int

    ncols = check_int(ncols, "ncols", minimum=1)
    if path is not None:
        check_new(path, overwrite, "pass overwrite=True to replace it")
    _, unit, wcs = _unpack(result, "the sky model")
    panels = []
    if dirty is not None:
        panels.append((dirty, "Dirty image", "image"))
    restored = result.extras.get("restored") if hasattr(result, "extras") else None
    model = result if restored is None else _like(result, restored, unit)
    panels.append((model, "Sky model" if restored is None else "Restored sky model", "image"))
    sigma = _std(result)
    if sigma is not None and np.ptp(sigma[np.isfinite(sigma)]) > 0:
        panels.append((_like(result, sigma, unit), "Uncertainty", "uncertainty"))
    residual = _residual(result, dirty, psf)
    if residual is not None:
        panels.append((residual, "Residual", "residual"))
    if catalog is not None:
        shown = model if truth_image is None else _like(result, truth_image, unit)
        what = "true sky" if truth_image is not None else "sky model"
        panels.append((shown, f"Sources on the {what}", "sources"))

    n = len(panels)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(_PANEL_SIZE[0] * cols, _PANEL_SIZE[1] * rows + (0.4 if title else 0)),
                 layout="constrained", dpi=dpi)
    grid = fig.add_gridspec(rows, cols)
    for k, (image, name, kind) in enumerate(panels):
        ax = fig.add_subplot(grid[k // cols, k % cols], projection=_unpack(image, name)[2])
        plot_image(image, ax, title=name, kind="image" if kind == "sources" else kind, size=size)
        if kind == "sources":
            # The legend goes into a free cell of the grid, off the sources, when there is one.
            found = plot_catalog(ax, catalog, truth=truth, legend=n == rows * cols)
            if n < rows * cols:
                key = fig.add_subplot(grid[rows - 1, n % cols:])
                key.set_axis_off()
                key.legend(handles=legend_handles(truth=found is not None,
                                                   probability="detection_probability" in catalog.colnames,
                                                   found=found), loc="center", fontsize=_FONT,
                           title=f"Sources ({name[len('Sources on the '):]})", title_fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 3)
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi)
    return fig


def _unpack(image, what):
    """Plain 2-D float data, unit (or None) and celestial WCS of an NDData."""
    if not isinstance(image, NDData):
        raise InputError(f"{what} must be an NDData (e.g. a CCDData or Reconstruction) with a WCS, "
                         f"not a {type(image).__name__}")
    data = np.asarray(image.data, dtype=float)
    if data.ndim != 2:
        raise InputError(f"{what} must be 2-D, not of shape {data.shape}")
    wcs = image.wcs
    if wcs is None or not getattr(wcs, "has_celestial", False):
        raise InputError(f"{what} has no celestial WCS: sky axes, the beam and the scale bar need one")
    if image.mask is not None:
        data = np.where(np.asarray(image.mask, bool), np.nan, data)
    return data, image.unit, wcs.celestial


def _like(template, values, unit):
    """An NDData of ``values`` (an array, a Quantity or an NDData) with the template's WCS and meta."""
    if isinstance(values, NDData):
        values, unit = u.Quantity(values.data, values.unit) if values.unit is not None else values.data, values.unit
    if isinstance(values, u.Quantity):
        values, unit = values.value, values.unit
    return NDData(np.asarray(values, float), wcs=template.wcs, unit=unit, meta=template.meta)


def _std(result):
    from .result import std_array

    sigma = std_array(result)
    return None if sigma is None else np.broadcast_to(sigma, np.shape(result.data))


def _residual(result, dirty, psf):
    """The method's residual map, or ``dirty - model * psf``, as an NDData; None when neither is possible."""
    extras = getattr(result, "extras", None) or {}
    if "residual" in extras:
        return _like(result, extras["residual"], dirty.unit if dirty is not None else None)
    if dirty is None or psf is None or result.unit is None or dirty.unit is None:
        return None
    from scipy.signal import fftconvolve

    from .tiling import center_psf

    beam = np.nan_to_num(np.asarray(getattr(psf, "data", psf), float))
    model = np.nan_to_num(np.asarray(result.data, float)) * result.unit
    # A model in flux per pixel times a peak-1 PSF is a flux per beam.
    predicted = fftconvolve(model.to_value(u.Jy / u.pix), center_psf(beam, model.shape), mode="same")
    values = np.asarray(dirty.data, float) - predicted * (u.Jy / u.beam).to(dirty.unit)
    return NDData(values, wcs=dirty.wcs, unit=dirty.unit, meta=dirty.meta)


def _display(data, unit):
    """The data in a unit whose numbers read well (Jy, mJy or μJy per beam or pixel), and its label."""
    if unit is None:
        return data, "(no unit)"
    for per in (u.beam, u.pix, u.dimensionless_unscaled):
        if unit.is_equivalent(u.Jy / per):
            finite = np.abs(data[np.isfinite(data)])
            top = float(np.max(finite)) * unit.to(u.Jy / per) if finite.size else 1.0
            for prefix in (u.Jy, u.mJy, u.uJy):
                if top >= prefix.to(u.Jy) or prefix is u.uJy:
                    unit, data = prefix / per, data * unit.to(prefix / per)
                    break
            break
    return data, unit.to_string("latex_inline")


def _beam(image):
    """The image's beam: its BMAJ/BMIN/BPA, else the input beam recorded by predict; or None."""
    from radio_beam import Beam

    from .io import get_beam

    meta = getattr(image, "meta", None) or {}
    try:
        beam = get_beam(image)
    except (ValueError, TypeError):
        beam = None
    if beam is None and all(key in meta for key in ("RRBMAJ", "RRBMIN", "RRBPA")):
        beam = Beam(major=meta["RRBMAJ"] * u.deg, minor=meta["RRBMIN"] * u.deg, pa=meta["RRBPA"] * u.deg)
    return beam


def _zoom(ax, shape, wcs, size):
    """Limit the axes to the central square of ``size`` (pixels or an angle)."""
    ny, nx = shape
    if size is not None:
        if isinstance(size, u.Quantity):
            size = (size / (proj_plane_pixel_scales(wcs)[1] * u.deg)).decompose().value
        half = 0.5 * min(float(size), nx, ny)
        ax.set_xlim(nx / 2 - half - 0.5, nx / 2 + half - 0.5)
        ax.set_ylim(ny / 2 - half - 0.5, ny / 2 + half - 0.5)


def _scalebar_length(ax, wcs):
    """A round length (1, 2 or 5 times a power of ten, arcsec) near a fifth of the shown width."""
    x0, x1 = ax.get_xlim()
    width = abs(x1 - x0) * proj_plane_pixel_scales(wcs)[0] * 3600.0 / 5.0
    power = 10.0 ** np.floor(np.log10(width))
    step = max(m for m in (1, 2, 5) if m * power <= width)
    return step * power * u.arcsec


def _sky_axes(ax, wcs):
    """Axis labels named after the WCS's frame, sexagesimal for equatorial ones, in a readable size."""
    lon, lat = ax.coords[0], ax.coords[1]
    equatorial = wcs.wcs.ctype[wcs.wcs.lng].startswith("RA")
    if equatorial:
        frame = (wcs.wcs.radesys or "ICRS").strip()
        lon.set_axislabel(f"Right ascension ({frame})", fontsize=_FONT)
        lat.set_axislabel(f"Declination ({frame})", fontsize=_FONT)
        lon.set_major_formatter("hh:mm:ss.s")
        lat.set_major_formatter("dd:mm:ss")
    else:
        name = wcs.wcs.ctype[wcs.wcs.lng][:4].rstrip("-")
        lon.set_axislabel(f"{name} (deg)", fontsize=_FONT)
        lat.set_axislabel(f"{wcs.wcs.ctype[wcs.wcs.lat][:4].rstrip('-')} (deg)", fontsize=_FONT)
    for coord in (lon, lat):
        coord.set_ticklabel(size=_FONT - 2)
        coord.set_ticks(number=3)
