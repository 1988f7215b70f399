import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import QTable

from radiorecon.cli import main

from conftest import celestial_header, gaussian_psf


@pytest.fixture
def observation(tmp_path):
    """A CASA-like dirty image with two point sources and its PSF, as FITS files."""
    rng = np.random.default_rng(3)
    n = 64
    yy, xx = np.mgrid[:n, :n]
    dirty = 5e-5 * rng.normal(size=(n, n))
    for y, x, flux in ((20, 25, 2e-3), (44, 40, 1e-3)):
        dirty += flux * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
    image = tmp_path / "field.image.fits"
    fits.PrimaryHDU(dirty[None, None].astype(np.float32), celestial_header(n, n, naxis=4)).writeto(image)
    psf = tmp_path / "field.psf.fits"
    fits.PrimaryHDU(gaussian_psf((n, n), 2.0)[None, None], celestial_header(n, n, naxis=4, bunit="")).writeto(psf)
    return image, psf


def test_backends_lists_and_describes(capsys):
    assert main(["backends"]) == 0
    assert "clean" in capsys.readouterr().out.split()
    assert main(["backends", "-l"]) == 0
    out = capsys.readouterr().out
    assert "Hogbom CLEAN" in out and "capabilities: needs_psf, reconstruct, uncertainty" in out


def test_predict_clean_with_catalog(observation, tmp_path, capsys):
    image, psf = observation
    out, cat = tmp_path / "sky.fits", tmp_path / "sky.ecsv"
    status = main([
        "predict", "clean", str(image), "--psf", str(psf), "-o", str(out),
        "--set", "niter=300", "--no-progress", "--catalog", str(cat),
    ])
    assert status == 0, capsys.readouterr().err
    sky = CCDData.read(out)
    assert sky.unit.to_string() == "Jy / pix"
    assert sky.header["RRBACKND"] == "clean" and '"niter": 300' in sky.header["RRCONFIG"]
    assert sky.uncertainty is not None
    with fits.open(out) as hdul:  # CLEAN's extra maps travel with the result
        assert "RESTORED" in hdul and "RESIDUAL" in hdul
    # PSF-shaped sources of 2 and 1 mJy/beam peak are point sources of 3 mJy in all.
    assert np.nansum(sky.data) == pytest.approx(3e-3, rel=0.05)
    # The catalog of a CLEAN model comes from its restored image, against the input's noise.
    table = QTable.read(cat)
    assert table.meta["detected_in"] == "the method's restored image"
    assert sorted(np.round(table["y"].value).astype(int)) == [20, 44]
    assert table["snr"].min() > 10
    # Refuses to overwrite, says how.
    assert main(["predict", "clean", str(image), "--psf", str(psf), "-o", str(out)]) == 1
    assert CCDData.read(out).header["RRBACKND"] == "clean"
    assert "--overwrite" in capsys.readouterr().err


def test_train_info_and_predict_with_a_model(pairs, tmp_path, capsys):
    dirty, sky = pairs
    inputs, targets = [], []
    for i in range(8):
        inputs.append(tmp_path / f"d{i}.fits")
        targets.append(tmp_path / f"s{i}.fits")
        fits.PrimaryHDU(dirty[i]).writeto(inputs[-1])
        fits.PrimaryHDU(sky[i]).writeto(targets[-1])
    model = tmp_path / "conv.rrm"
    status = main([
        "train", "test-conv", "--inputs", *map(str, inputs), "--targets", *map(str, targets),
        "-o", str(model), "--epochs", "2", "--seed", "1", "--no-progress", "--set", "noise=0.2",
    ])
    assert status == 0, capsys.readouterr().err
    assert "after 2 epochs" in capsys.readouterr().out
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "test-conv (version 1)" in out and '"noise": 0.2' in out
    result = tmp_path / "out.fits"
    assert main(["predict", str(model), str(inputs[0]), "-o", str(result), "--samples", "4", "--seed", "2"]) == 0
    with fits.open(result) as hdul:
        assert hdul[0].header["RRNSAMP"] == 4 and "UNCERT" in hdul


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "nosuch", "{image}", "-o", "y.fits"], "neither a model file nor an installed backend"),
        (["predict", "clean", "missing.fits", "-o", "y.fits"], "missing.fits"),
        (["info", "missing.rrm"], "does not exist"),
        (["predict", "clean", "{image}", "-o", "{tmp}/o.fits"], "needs the PSF"),
        (["train", "clean", "--inputs", "{image}", "-o", "{tmp}/m.rrm"], "cannot be trained"),
        (["predict", "clean", "{image}", "--psf", "{psf}", "--set", "bad", "-o", "{tmp}/o.fits"], "KEY=VALUE"),
    ],
)
def test_bad_input_gives_one_line_and_status_1(argv, message, observation, tmp_path, capsys):
    image, psf = observation
    argv = [a.format(image=image, psf=psf, tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_everywhere():
    for argv in ([], ["predict"], ["train"], ["info"], ["backends"], ["demo"], ["benchmark"]):
        out = subprocess.run(
            [sys.executable, "-m", "radiorecon.cli", *argv, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and "usage: radiorecon" in out.stdout


def test_corrupted_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.rrm"
    bad.write_bytes(b"\x00" * 64)
    assert main(["predict", str(bad), str(bad), "-o", str(tmp_path / "o.fits")]) == 1
    assert "bad.rrm" in capsys.readouterr().err


def test_demo_writes_everything_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--samples", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "purity" in text and "completeness" in text and "true sources" in text
    for name in ("sky.fits", "sources.ecsv", "sources.reg", "demo.png"):
        assert (out / name).stat().st_size > 0
    with fits.open(out / "sky.fits") as hdul:
        assert {"UNCERT", "MASK"} <= {h.name for h in hdul}
        assert hdul[0].header["RRMODEL"] == "pretrained:star" and hdul[0].header["RRNSAMP"] == 3
    catalog = QTable.read(out / "sources.ecsv")
    # The default observation has five sources; the shipped model finds some of them.
    assert len(catalog) > 0 and "detection_probability" in catalog.colnames
    assert catalog.meta["detected_in"] == "the model convolved with the clean beam"
    # Nothing is overwritten without being asked.
    assert main(["demo", "--out", str(out), "--samples", "3", "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_predict_with_a_shipped_model(observation, tmp_path, capsys):
    image, _ = observation
    out = tmp_path / "star.fits"
    assert main(["predict", "pretrained:star", str(image), "-o", str(out), "--samples", "2",
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert CCDData.read(out).unit == "Jy / pix"
    assert main(["predict", "pretrained:nope", str(image), "-o", str(tmp_path / "x.fits")]) == 1
    assert "No pretrained model 'nope'" in capsys.readouterr().err


def test_set_changes_prediction_settings_of_a_trained_model(observation, tmp_path, capsys):
    image, _ = observation
    out = tmp_path / "star.fits"
    assert main(["predict", "pretrained:star", str(image), "-o", str(out), "--samples", "2", "--no-progress",
                 "--set", "style_temperature=0.5"]) == 0, capsys.readouterr().err
    assert '"style_temperature": 0.5' in fits.getheader(out)["RRCONFIG"]
    assert main(["predict", "pretrained:star", str(image), "-o", str(tmp_path / "x.fits"),
                 "--set", "base_channels=4"]) == 1
    err = capsys.readouterr().err
    assert "base_channels" in err and "cannot change after construction" in err
