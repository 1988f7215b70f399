"""Sky-axes pictures: WCSAxes, colour bars with units, beam, scale bar, catalog overlays."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.table import QTable
from astropy.visualization.wcsaxes import WCSAxes
from astropy.wcs import WCS
from matplotlib.patches import Ellipse

from radiorecon import Reconstruction
from radiorecon.exceptions import InputError
from radiorecon.visualization import image_norm, plot_catalog, plot_image, plot_reconstruction

from conftest import celestial_header, gaussian_psf

N = 48
SOURCES = [(14.0, 30.0), (33.0, 12.0)]  # x, y of the true sources


@pytest.fixture
def scene():
    """A dirty image (Jy/beam, with beam), its sky model with uncertainty, a catalog and the truth."""
    header = celestial_header(N, N)
    wcs = WCS(header)
    rng = np.random.default_rng(1)
    model = np.zeros((N, N))
    for x, y in SOURCES:
        model[int(y), int(x)] = 2e-3
    psf = gaussian_psf((N, N), 3.0)
    dirty = CCDData(np.real(np.fft.ifft2(np.fft.fft2(model) * np.fft.fft2(np.fft.ifftshift(psf))))
                    + rng.normal(0, 5e-5, (N, N)), unit="Jy/beam", wcs=wcs, meta=header)
    sigma = 1e-5 * (1 + model / 2e-3)
    result = Reconstruction(model, uncertainty=StdDevUncertainty(sigma), unit=u.Jy / u.pix, wcs=wcs,
                            meta={"RRBMAJ": header["BMAJ"], "RRBMIN": header["BMIN"], "RRBPA": header["BPA"]})
    # The first source is found, the second missed; one detection is spurious.
    catalog = QTable({"x": [14.2, 40.0], "y": [29.8, 40.0], "a": [2.0, 1.5] * u.pix, "b": [1.0, 1.5] * u.pix,
                      "theta": [30.0, 0.0] * u.deg, "detection_probability": [0.9, 0.3]})
    truth = QTable({"x": [x for x, _ in SOURCES], "y": [y for _, y in SOURCES]})
    return dirty, result, catalog, truth, psf


def _colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if not isinstance(ax, WCSAxes) and ax.get_ylabel()]


def _beam_ellipses(ax):
    """The ellipses that add_beam anchors in a corner of the axes."""
    found = []
    for artist in ax.artists:
        for child in artist.get_child().get_children() if hasattr(artist, "get_child") else ():
            if isinstance(child, Ellipse):
                found.append(child)
    return found


def test_plot_image_has_sky_axes_unit_colorbar_beam_and_scalebar(scene):
    dirty = scene[0]
    ax = plot_image(dirty, title="dirty")
    assert isinstance(ax, WCSAxes)
    assert ax.coords[0].get_axislabel() == "Right ascension (ICRS)"
    assert ax.coords[1].get_axislabel() == "Declination (ICRS)"
    # Peak ~2 mJy/beam: shown in mJy per beam, and the bar says so.
    (label,) = _colorbar_labels(ax.get_figure())
    assert label == (u.mJy / u.beam).to_string("latex_inline")
    # BMAJ 0.89", BMIN 0.82" on 0.1" pixels: an ellipse of 8.2 x 8.9 pixels, at BPA 30 deg.
    (beam,) = _beam_ellipses(ax)
    assert beam.height == pytest.approx(8.9, rel=1e-3)
    assert beam.width == pytest.approx(8.2, rel=1e-3)
    assert beam.angle == pytest.approx(30.0)
    # A round scale bar: 4.8" wide image / 5 -> 0.5".
    texts = [t.get_text() for a in ax.artists for t in _texts(a)]
    assert '0.5"' in texts


def _texts(artist):
    from matplotlib.text import Text

    out = []
    for child in artist.get_children():
        out += [child] if isinstance(child, Text) else _texts(child)
    return out


def test_image_norm_is_symmetric_for_residuals_and_spans_noise_to_peak():
    data = np.random.default_rng(0).normal(0, 1.0, (64, 64))
    data[10, 10] = 50.0
    norm = image_norm(data)
    assert norm.vmax == 50.0
    assert -3.5 < norm.vmin < -2.5  # median - 3 robust sigma
    sym = image_norm(data, symmetric=True)
    assert sym.vmin == -sym.vmax and 2.0 < sym.vmax < 4.0


def test_catalog_overlay_marks_matched_spurious_and_missed(scene):
    dirty, result, catalog, truth, _ = scene
    ax = plot_image(result)
    found = plot_catalog(ax, catalog, truth=truth, radius=2.0)
    assert (found.tp, found.fp, found.fn) == (1, 1, 1)
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert [e.center for e in ellipses] == [(14.2, 29.8), (40.0, 40.0)]
    # FWHM ellipses: 2.355 times the standard deviations, at theta.
    assert ellipses[0].width == pytest.approx(2.0 * 2.3548, rel=1e-3)
    assert ellipses[0].angle == 30.0
    assert ellipses[0].get_linestyle() == "-" and ellipses[1].get_linestyle() == "--"
    (missed,) = [line for line in ax.lines if line.get_marker() == "s"]
    assert list(zip(missed.get_xdata(), missed.get_ydata())) == [SOURCES[1]]
    assert {t.get_text() for t in ax.texts} == {"0.90", "0.30"}
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"spurious (1)", "missed true source (1)"}


def test_catalog_overlay_without_truth_draws_no_truth_markers(scene):
    _, result, catalog, _, _ = scene
    ax = plot_image(result)
    assert plot_catalog(ax, catalog) is None
    assert not [line for line in ax.lines if line.get_marker() == "s"]
    assert len([p for p in ax.patches if isinstance(p, Ellipse)]) == 2


def test_plot_reconstruction_panels_units_and_file(scene, tmp_path):
    dirty, result, catalog, truth, psf = scene
    path = tmp_path / "rec.png"
    fig = result.plot(dirty, catalog=catalog, truth=truth, psf=psf, path=path)
    wcs_axes = [ax for ax in fig.axes if isinstance(ax, WCSAxes)]
    assert [ax.get_title() for ax in wcs_axes] == ["Dirty image", "Sky model", "Uncertainty", "Residual",
                                                   "Sources on the sky model"]
    # Every image panel has its colour bar, labelled with the unit.
    labels = _colorbar_labels(fig)
    assert len(labels) == len(wcs_axes)
    assert all("Jy" in label and ("beam" in label or "pix" in label) for label in labels)
    assert all(_beam_ellipses(ax) for ax in wcs_axes)
    # The residual of a perfect model is the noise alone (5e-5 Jy/beam): shown in uJy/beam.
    assert labels[3] == (u.uJy / u.beam).to_string("latex_inline")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        plot_reconstruction(result, path=path)
    plot_reconstruction(result, path=path, overwrite=True)


def test_plot_reconstruction_leaves_out_panels_with_nothing_to_show(scene):
    _, result, _, _, _ = scene
    constant = Reconstruction(result.data, uncertainty=StdDevUncertainty(np.full((N, N), 1e-5)), unit=result.unit,
                              wcs=result.wcs, meta=result.meta)
    # No dirty image, a constant uncertainty, no residual, no catalog: the sky model alone.
    fig = plot_reconstruction(constant)
    assert [ax.get_title() for ax in fig.axes if isinstance(ax, WCSAxes)] == ["Sky model"]


def test_a_method_with_a_restored_image_is_shown_restored(scene):
    dirty, result, _, _, _ = scene
    restored = Reconstruction(result.data, unit=result.unit, wcs=result.wcs, meta=result.meta,
                              extras={"restored": u.Quantity(dirty.data, u.Jy / u.beam)})
    fig = plot_reconstruction(restored)
    (ax,) = [ax for ax in fig.axes if isinstance(ax, WCSAxes)]
    assert ax.get_title() == "Restored sky model"
    assert ax.images[0].get_array().max() == pytest.approx(dirty.data.max() * 1e3)  # mJy/beam


@pytest.mark.parametrize("image, message", [
    (NDData(np.zeros((8, 8)), unit="Jy/beam"), "no celestial WCS"),
    (np.zeros((8, 8)), "must be an NDData"),
    (NDData(np.zeros((2, 8, 8)), unit="Jy/beam"), "must be 2-D"),
])
def test_images_without_a_sky_are_refused(image, message):
    with pytest.raises(InputError, match=message):
        plot_image(image)
