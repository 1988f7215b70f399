"""Tests of radiorecon.io: reading dirty images, writing reconstructions."""

import os
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS, FITSFixedWarning

from radiorecon.exceptions import InputError, RadioreconWarning
from radiorecon.io import get_beam, read_image, read_result, write_result
from radiorecon.result import Reconstruction

NY, NX = 24, 16  # unequal, so that a transposed image fails


def casa_header(naxis=4, nchan=1, bunit="Jy/beam", beam=True):
    """A header as CASA's exportfits writes it: RA, DEC, FREQ, STOKES."""
    cards = [
        ("BUNIT", bunit),
        ("OBJECT", "TW Hya"),
        ("TELESCOP", "ALMA"),
        ("DATE-OBS", "2024-05-01T02:03:04.000"),
        ("OBSGEO-X", 2225142.18),
        ("OBSGEO-Y", -5440307.37),
        ("OBSGEO-Z", -2481029.85),
        ("RADESYS", "FK5"),
        ("EQUINOX", 2000.0),
        ("LONPOLE", 180.0),
        ("LATPOLE", -34.704),
        ("CTYPE1", "RA---SIN"),
        ("CRVAL1", 165.466),
        ("CDELT1", -0.1 / 3600),
        ("CRPIX1", 9.0),
        ("CUNIT1", "deg"),
        ("CTYPE2", "DEC--SIN"),
        ("CRVAL2", -34.704),
        ("CDELT2", 0.1 / 3600),
        ("CRPIX2", 13.0),
        ("CUNIT2", "deg"),
        ("PV2_1", 0.0),
        ("PV2_2", 0.0),
    ]
    if beam:
        cards += [("BMAJ", 1.0 / 3600), ("BMIN", 0.5 / 3600), ("BPA", 30.0)]
    if naxis >= 3:
        cards += [
            ("CTYPE3", "FREQ"),
            ("CRVAL3", 230.0e9),
            ("CDELT3", 1.0e6 if nchan > 1 else 2.0e9),
            ("CRPIX3", 1.0),
            ("CUNIT3", "Hz"),
            ("RESTFRQ", 230.538e9),
            ("SPECSYS", "LSRK"),
        ]
    if naxis >= 4:
        cards += [
            ("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0), ("CRPIX4", 1.0), ("CUNIT4", "")
        ]
    return fits.Header(cards)


def header_wcs(header):
    """The header's full WCS, without astropy's notes on DATE-OBS and OBSGEO fix-ups."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def same_sky(wcs1, wcs2, x=10, y=20):
    return wcs1.pixel_to_world(x, y).separation(wcs2.pixel_to_world(x, y)) < 1e-6 * u.arcsec


def plane(dtype=np.float32):
    return (np.arange(NY * NX, dtype=np.float64).reshape(NY, NX) / 7.0).astype(dtype)


def write(path, data, header, *extra):
    fits.HDUList([fits.PrimaryHDU(data, header), *extra]).writeto(path)
    return path


@pytest.fixture
def files(tmp_path):
    image = plane()
    return {
        naxis: write(tmp_path / f"casa{naxis}d.fits", image.reshape((1,) * (naxis - 2) + image.shape),
                     casa_header(naxis))
        for naxis in (2, 3, 4)
    }


@pytest.mark.parametrize("naxis", [2, 3, 4])
def test_casa_image_becomes_2d(files, naxis):
    image = read_image(files[naxis])
    assert isinstance(image, CCDData)
    assert image.data.shape == (NY, NX)
    assert image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data, plane())
    assert image.unit == u.Jy / u.beam
    assert image.wcs.naxis == 2
    assert list(image.wcs.wcs.ctype) == ["RA---SIN", "DEC--SIN"]
    assert image.mask.dtype == bool and not image.mask.any()

    expected = header_wcs(casa_header(2)).pixel_to_world(10, 20)
    assert image.wcs.pixel_to_world(10, 20).separation(expected) < 1e-6 * u.arcsec
    assert image.wcs.proj_plane_pixel_scales()[0].to_value(u.arcsec) == pytest.approx(0.1)

    meta = image.meta
    assert isinstance(meta, fits.Header)
    assert meta["OBJECT"] == "TW Hya" and meta["TELESCOP"] == "ALMA"
    assert meta["DATE-OBS"].startswith("2024-05-01T02:03:04")
    assert meta["BMAJ"] == pytest.approx(1.0 / 3600)
    assert meta["CTYPE1"] == "RA---SIN" and meta["CTYPE2"] == "DEC--SIN"
    for key in ("NAXIS3", "CTYPE3", "CRVAL3", "CDELT3", "CTYPE4", "CRPIX4", "BUNIT", "NAXIS1", "PC3_3"):
        assert key not in meta

    beam = get_beam(image)
    assert beam.major.to_value(u.arcsec) == pytest.approx(1.0)
    assert beam.minor.to_value(u.arcsec) == pytest.approx(0.5)
    assert beam.pa.to_value(u.deg) == pytest.approx(30.0)


def test_frequency_cube_is_refused(tmp_path):
    cube = np.zeros((1, 4, NY, NX), np.float32)
    path = write(tmp_path / "cube.fits", cube, casa_header(4, nchan=4))
    with pytest.raises(ValueError, match=r"FREQ.*length 4.*plane") as info:
        read_image(path)
    assert "data[0, k, :, :]" in str(info.value)


def test_nonstandard_axis_order_keeps_data_and_wcs_consistent():
    # FREQ first, then DEC, then RA: numpy shape (n_ra, n_dec, 1).
    header = fits.Header()
    for i, (ctype, crval, cdelt, crpix, cunit) in enumerate(
        [("FREQ", 230e9, 1e9, 1.0, "Hz"), ("DEC--SIN", -34.7, 1e-4, 3.0, "deg"),
         ("RA---SIN", 165.4, -1e-4, 5.0, "deg")],
        start=1,
    ):
        header.update({f"CTYPE{i}": ctype, f"CRVAL{i}": crval, f"CDELT{i}": cdelt,
                       f"CRPIX{i}": crpix, f"CUNIT{i}": cunit})
    cube = np.random.default_rng(1).normal(size=(NY, NX, 1))
    image = read_image(fits.PrimaryHDU(cube, header))
    assert image.data.shape == (NY, NX)
    assert list(image.wcs.wcs.ctype) == ["DEC--SIN", "RA---SIN"]
    x, y = 7, 19
    assert image.data[y, x] == cube[y, x, 0]
    _, sky = header_wcs(header).pixel_to_world(0, x, y)
    assert image.wcs.pixel_to_world(x, y).separation(sky) < 1e-6 * u.arcsec


def test_nan_pixels_are_masked_and_kept(tmp_path):
    data = plane()
    data[3, 4] = np.nan
    data[5, 6] = np.inf
    image = read_image(write(tmp_path / "nan.fits", data[None, None], casa_header(4)))
    assert np.isnan(image.data[3, 4]) and np.isinf(image.data[5, 6])
    assert set(zip(*np.nonzero(image.mask))) == {(3, 4), (5, 6)}


def test_integer_image_with_blank(tmp_path):
    data = np.arange(NY * NX, dtype=np.int16).reshape(NY, NX)
    data[2, 3] = -32768
    header = casa_header(2)
    header["BLANK"] = -32768
    image = read_image(write(tmp_path / "int.fits", data, header))
    assert image.data.dtype == np.float64
    assert np.isnan(image.data[2, 3]) and image.data[2, 4] == data[2, 4]
    assert set(zip(*np.nonzero(image.mask))) == {(2, 3)}
    assert "BLANK" not in image.meta

    # In memory, the integer array is used as stored and left alone.
    hdu = fits.PrimaryHDU(data, header)
    image = read_image(hdu)
    assert np.isnan(image.data[2, 3]) and image.mask[2, 3]
    assert hdu.data[2, 3] == -32768 and hdu.data.dtype == np.int16


def test_unsigned_integer_image_with_blank(tmp_path):
    data = np.full((NY, NX), 40000, dtype=np.uint16)
    data[1, 1] = 65535  # stored as int16 32767 with BZERO = 32768
    header = casa_header(2)
    header["BLANK"] = 32767
    image = read_image(write(tmp_path / "uint.fits", data, header))
    assert image.data.dtype == np.float64 and image.data[0, 0] == 40000
    assert np.isnan(image.data[1, 1]) and image.mask.sum() == 1


@pytest.mark.parametrize(
    "bunit, unit", [("JY/BEAM", u.Jy / u.beam), ("Jy/Beam", u.Jy / u.beam), ("JY/PIXEL", u.Jy / u.pix)]
)
def test_casa_and_aips_unit_spellings(tmp_path, bunit, unit):
    image = read_image(write(tmp_path / "u.fits", plane(), casa_header(2, bunit=bunit)))
    assert image.unit == unit


def test_unparseable_bunit_warns_and_reads_unitless(tmp_path):
    path = write(tmp_path / "bad.fits", plane(), casa_header(2, bunit="MJY/SR"))
    with pytest.warns(RadioreconWarning, match="MJY/SR"):
        image = read_image(path)
    assert type(image) is NDData and image.unit is None
    assert read_image(path, unit="MJy/sr").unit == u.MJy / u.sr  # no warning with an explicit unit


def test_missing_bunit_gives_plain_nddata(tmp_path):
    header = casa_header(2)
    del header["BUNIT"]
    image = read_image(write(tmp_path / "nounit.fits", plane(), header))
    assert type(image) is NDData and image.unit is None
    assert isinstance(read_image(image, unit="Jy/beam"), CCDData)


def beams_table(major_arcsec):
    n = len(major_arcsec)
    return fits.BinTableHDU.from_columns(
        [
            fits.Column("BMAJ", "E", unit="arcsec", array=major_arcsec),
            fits.Column("BMIN", "E", unit="arcsec", array=[0.8] * n),
            fits.Column("BPA", "E", unit="deg", array=[-40.0] * n),
            fits.Column("CHAN", "J", array=np.arange(n)),
            fits.Column("POL", "J", array=np.zeros(n)),
        ],
        name="BEAMS",
    )


@pytest.mark.parametrize("majors", [[1.2], [1.2, 1.2, 1.2]])
def test_beam_from_casa_beams_table(tmp_path, majors):
    header = casa_header(4, beam=False)
    path = write(tmp_path / "beams.fits", plane()[None, None], header, beams_table(majors))
    image = read_image(path)
    assert image.meta["BMAJ"] == pytest.approx(1.2 / 3600)
    beam = get_beam(image)
    assert beam.major.to_value(u.arcsec) == pytest.approx(1.2)
    assert beam.minor.to_value(u.arcsec) == pytest.approx(0.8)
    assert beam.pa.to_value(u.deg) == pytest.approx(-40.0)


def test_differing_table_beams_are_not_guessed(tmp_path):
    header = casa_header(4, beam=False)
    path = write(tmp_path / "beams.fits", plane()[None, None], header, beams_table([1.2, 1.5]))
    with pytest.warns(RadioreconWarning, match="2 different beams"):
        image = read_image(path)
    assert "BMAJ" not in image.meta and get_beam(image) is None


def test_get_beam_from_mappings():
    assert get_beam(NDData(np.zeros((2, 2)))) is None
    beam = get_beam({"BMAJ": 2 / 3600, "BMIN": 1 / 3600, "BPA": 10.0})
    assert beam.major.to_value(u.arcsec) == pytest.approx(2.0)


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.fits"
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        read_image(missing)
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n" * 20)
    with pytest.raises(ValueError, match="notes.fits.*not a readable FITS"):
        read_image(text)
    table_only = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), beams_table([1.0])]).writeto(table_only)
    with pytest.raises(ValueError, match="table.fits.*no image"):
        read_image(table_only)


def test_truncated_file(tmp_path, files):
    path = tmp_path / "truncated.fits"
    path.write_bytes(files[2].read_bytes()[:4000])
    with pytest.raises(InputError, match="truncated.fits is truncated"):
        read_image(path)


def test_hdulist_and_hdu_selection(files):
    with fits.open(files[4]) as hdul:
        hdul.append(fits.ImageHDU(np.ones((3, 5)), name="OTHER"))
        assert read_image(hdul).data.shape == (NY, NX)
        assert read_image(hdul, hdu="OTHER").data.shape == (3, 5)
        assert read_image(hdul, hdu=1).data.shape == (3, 5)
        with pytest.raises(ValueError, match="no HDU 'MISSING'"):
            read_image(hdul, hdu="MISSING")
        hdu_image = read_image(hdul[0])
    assert same_sky(hdu_image.wcs, read_image(files[2]).wcs)


def test_compressed_image_extension(tmp_path):
    header = casa_header(2)
    path = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(plane(), header)]).writeto(path)
    image = read_image(path)
    assert image.data.shape == (NY, NX) and image.unit == u.Jy / u.beam
    assert image.wcs.wcs.ctype[0] == "RA---SIN"


def test_nddata_input_keeps_wcs_unit_mask_meta(files):
    with fits.open(files[4]) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header
    data[0, 0, 1, 2] = np.nan
    mask = np.zeros(data.shape, bool)
    mask[0, 0, 7, 8] = True
    # CCDData, not NDData: its .read classmethod must not pass for a file.
    source = CCDData(data, wcs=header_wcs(header), unit="Jy/beam", mask=mask, meta={"ORIGIN": "test"})
    image = read_image(source)
    assert isinstance(image, CCDData) and image.unit == u.Jy / u.beam
    assert image.wcs.naxis == 2 and image.meta == {"ORIGIN": "test"}
    assert set(zip(*np.nonzero(image.mask))) == {(1, 2), (7, 8)}
    assert np.isnan(source.data[0, 0, 1, 2]) and source.data.ndim == 4  # source untouched
    image.data[3, 3] = -1.0
    assert source.data[0, 0, 3, 3] != -1.0  # a copy, not a view


def test_quantity_and_ndarray_inputs():
    image = read_image(plane() * u.mJy / u.beam)
    assert isinstance(image, CCDData) and image.unit == u.mJy / u.beam
    assert image.wcs is None

    array = plane(np.float64)[None]
    image = read_image(array)
    assert type(image) is NDData and image.data.shape == (NY, NX) and image.data.dtype == np.float64
    assert isinstance(image.meta, fits.Header) and len(image.meta) == 0

    with pytest.raises(ValueError, match=r"\(16,\)"):
        read_image(np.zeros(16))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        read_image(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="hdu="):
        read_image(array, hdu=1)


@pytest.fixture
def reconstruction(files):
    image = read_image(files[4])
    rng = np.random.default_rng(0)
    mask = np.zeros((NY, NX), bool)
    mask[4, 5] = True
    meta = fits.Header([("RRMETHOD", "clean"), ("RRVERS", "0.1"), ("OBJECT", "TW Hya")])
    return Reconstruction(
        image.data.astype(np.float64),
        uncertainty=StdDevUncertainty(np.full((NY, NX), 0.01)),
        mask=mask,
        wcs=image.wcs,
        meta=meta,
        unit=u.Jy / u.pix,
        samples=rng.normal(size=(3, NY, NX)),
    )


def test_write_result_is_read_by_ccddata(tmp_path, reconstruction):
    path = tmp_path / "result.fits"
    write_result(reconstruction, path)
    with warnings.catch_warnings():
        # CCDData.read turns a FITSFixedWarning (OBSGEO-L/B/H derived from
        # OBSGEO-X/Y/Z) raised as an error into a missing WCS.
        warnings.simplefilter("ignore", FITSFixedWarning)
        ccd = CCDData.read(path)
    np.testing.assert_array_equal(ccd.data, reconstruction.data)
    np.testing.assert_array_equal(ccd.uncertainty.array, reconstruction.uncertainty.array)
    assert isinstance(ccd.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(ccd.mask, reconstruction.mask)
    assert ccd.unit == u.Jy / u.pix
    assert same_sky(ccd.wcs, reconstruction.wcs)
    assert ccd.meta["RRMETHOD"] == "clean" and ccd.meta["RRVERS"] == "0.1"
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "MASK"]
        assert hdul["UNCERT"].header["UTYPE"] == "StdDevUncertainty"
        assert hdul["MASK"].data.dtype == np.uint8


def test_result_files_speak_the_radio_viewers_language(tmp_path, reconstruction):
    # BUNIT as CASA and viewers write it, WCS on every image extension, and
    # each extra map with its own unit.
    result = Reconstruction(
        reconstruction.data, uncertainty=reconstruction.uncertainty, mask=reconstruction.mask,
        wcs=reconstruction.wcs, meta=reconstruction.meta, unit=u.Jy / u.pix,
        extras={"residual": np.ones((NY, NX)) * u.mJy / u.beam, "weights": np.ones((NY, NX))},
    )
    path = tmp_path / "result.fits"
    write_result(result, path, extras=True)
    with fits.open(path) as hdul:
        assert hdul[0].header["BUNIT"] == "Jy/pixel"
        assert hdul["UNCERT"].header["BUNIT"] == "Jy/pixel"
        assert hdul["RESIDUAL"].header["BUNIT"] == "mJy/beam"
        assert "BUNIT" not in hdul["WEIGHTS"].header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)  # OBSGEO-L/B/H derived from X/Y/Z
            for name in ("UNCERT", "MASK", "RESIDUAL", "WEIGHTS"):
                assert same_sky(WCS(hdul[name].header), reconstruction.wcs), name
    back = read_result(path)
    assert back.unit == u.Jy / u.pix
    assert back.extras["residual"].unit == u.mJy / u.beam
    np.testing.assert_array_equal(back.extras["weights"], 1.0)


def test_masked_arrays_keep_their_mask():
    data = np.ma.masked_array(np.ones((8, 8)), mask=np.eye(8, dtype=bool))
    image = read_image(data)
    np.testing.assert_array_equal(image.mask, np.eye(8, dtype=bool))
    np.testing.assert_array_equal(image.data, 1.0)  # the values under the mask are kept


def test_reconstruction_round_trip_with_samples(tmp_path, reconstruction):
    path = tmp_path / "result.fits.gz"
    reconstruction.write(path, samples=True)
    back = Reconstruction.read(path)
    assert isinstance(back, Reconstruction)
    np.testing.assert_array_equal(back.data, reconstruction.data)
    np.testing.assert_array_equal(back.samples, reconstruction.samples)
    np.testing.assert_array_equal(back.mask, reconstruction.mask)
    np.testing.assert_array_equal(back.uncertainty.array, reconstruction.uncertainty.array)
    assert back.unit == u.Jy / u.pix and back.n_samples == 3
    assert same_sky(back.wcs, reconstruction.wcs)
    assert back.meta["RRMETHOD"] == "clean" and "BUNIT" not in back.meta and "CTYPE1" not in back.meta
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip, as the suffix asks


def test_unitless_result_with_dict_meta(tmp_path):
    meta = {"RRMETHOD": "clean", "RR_LONG_PROVENANCE_KEY": 3, "rr.dotted": "x"}
    result = Reconstruction(np.ones((4, 5), np.float32), meta=meta)
    path = tmp_path / "plain.fits"
    write_result(result, path)
    back = read_result(path)
    assert back.unit is None and back.uncertainty is None and back.mask is None and back.samples is None
    assert back.data.dtype == np.float32
    assert back.meta["RRMETHOD"] == "clean"
    assert back.meta["RR_LONG_PROVENANCE_KEY"] == 3 and back.meta["rr.dotted"] == "x"


def test_overwrite_refusal_keeps_the_file(tmp_path, reconstruction):
    path = tmp_path / "result.fits"
    write_result(reconstruction, path)
    original = path.read_bytes()
    names = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="result.fits.*overwrite=True"):
        write_result(reconstruction, path)
    assert path.read_bytes() == original

    # A failing write leaves the old file and no temporary file behind.
    broken = Reconstruction(np.zeros((2, 2)), meta={"RRBAD": np.arange(3)})
    with pytest.raises(ValueError, match="RRBAD"):
        write_result(broken, path, overwrite=True)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == names

    reconstruction.data[0, 0] = 123.0
    reconstruction.write(path, overwrite=True)
    assert read_result(path).data[0, 0] == 123.0
    assert sorted(os.listdir(tmp_path)) == names


def test_registry_survives_reload_and_reads_hdulists(tmp_path, reconstruction):
    import importlib

    import radiorecon.io

    importlib.reload(radiorecon.io)  # must not raise IORegistryError
    path = tmp_path / "result.fit"
    reconstruction.write(path)
    with fits.open(path) as hdul:
        back = Reconstruction.read(hdul)
    np.testing.assert_array_equal(back.data, reconstruction.data)
    with open(path, "rb") as f:
        assert Reconstruction.read(f).unit == u.Jy / u.pix  # identified by content
        f.seek(0)
        image = read_image(f)  # read_image takes open files too
    assert image.unit == u.Jy / u.pix and image.meta["RRMETHOD"] == "clean"


def test_only_stddev_uncertainty_can_be_written(tmp_path):
    result = Reconstruction(np.ones((3, 3)), uncertainty=VarianceUncertainty(np.ones((3, 3))))
    with pytest.raises(ValueError, match="StdDevUncertainty"):
        write_result(result, tmp_path / "var.fits")
    assert not os.listdir(tmp_path)


def test_components_round_trip_with_wcs_and_unit(tmp_path):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.cdelt, wcs.wcs.crpix, wcs.wcs.crval = (
        ["RA---SIN", "DEC--SIN"], [-1e-4, 1e-4], [5, 4], [150.0, 2.0])
    cube = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8)
    result = Reconstruction(cube.sum(0), unit=u.Jy / u.pix, wcs=wcs, components=cube * u.Jy / u.pix)
    write_result(result, tmp_path / "plain.fits")
    assert read_result(tmp_path / "plain.fits").components is None  # only when asked for
    write_result(result, tmp_path / "m.fits", components=True)
    with fits.open(tmp_path / "m.fits") as hdul:
        header = hdul["COMPONENTS"].header
        assert header["BUNIT"] == "Jy/pixel" and header["CTYPE3"] == "SOURCE"
        cube_wcs = WCS(header)
    # The SOURCE axis counts sources from 1, as deblended_catalog's id; the sky axes are the image's.
    ra_dec, source = cube_wcs.pixel_to_world(3, 2, 1)[0], cube_wcs.pixel_to_world(3, 2, 1)[1]
    assert ra_dec.separation(wcs.pixel_to_world(3, 2)).arcsec < 1e-6 and source.value == 2
    back = read_result(tmp_path / "m.fits")
    assert back.components.unit == u.Jy / u.pix
    np.testing.assert_array_equal(back.components.value, cube)
    assert back.wcs.wcs.compare(wcs.wcs) and back.extras == {}
