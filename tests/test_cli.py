import errno
import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import QTable

import radiorecon
from radiorecon import Backend, Prediction, registry
from radiorecon._files import atomic_path
from radiorecon.cli import _methods, main
from radiorecon.reconstructor import Reconstructor

from conftest import celestial_header, gaussian_psf, make_unwritable


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
    assert "Hogbom CLEAN" in out and "capabilities: needs_psf, reconstruct, std" in out


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
        (["predict", "nosuch", "{image}", "-o", "y.fits"], "neither a model file, pretrained:NAME, nor an installed"),
        (["predict", "clean", "missing.fits", "-o", "y.fits"], "missing.fits"),
        (["info", "missing.rrm"], "does not exist"),
        (["predict", "clean", "{image}", "-o", "{tmp}/o.fits"], "needs the PSF: give it with --psf"),
        (["predict", "clean", "{image}", "--psf", "{psf}", "--samples", "3", "-o", "{tmp}/o.fits"], "--samples 1"),
        (["predict", "clean", "{image}", "--psf", "{psf}", "--set", "nosuch=1", "-o", "{tmp}/o.fits"],
         "--set nosuch: backend 'clean' has no such setting"),
        (["predict", "clean", "{image}", "--psf", "{psf}", "--set", "gain=NaN", "-o", "{tmp}/o.fits"],
         "--set gain=NaN: a setting cannot be NaN"),
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
    assert main(["demo", "--out", str(out), "--samples", "3", "--no-progress", "--threads", "2"]) == 0
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


def test_demo_gives_the_psf_to_a_backend_that_needs_it(tmp_path, capsys):
    model = tmp_path / "clean.rrm"
    Reconstructor("clean").save(model)
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(model), "--out", str(out), "--samples", "1", "--no-progress"]) == 0
    assert "true sources" in capsys.readouterr().out
    with fits.open(out / "sky.fits") as hdul:
        assert hdul[0].header["RRBACKND"] == "clean"
    assert len(QTable.read(out / "sources.ecsv")) > 0  # CLEAN finds some of the five sources


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


# -- errors: one line for input problems, tracebacks for bugs ---------------------------------


def test_a_bug_keeps_its_traceback(monkeypatch):
    # A TypeError that is not radiorecon's own is a bug, not bad input: it must not be hidden.
    def broken():
        raise TypeError("a bug")

    monkeypatch.setattr(radiorecon, "available_backends", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["backends"])


@pytest.fixture
def log_handlers():
    """The radiorecon logger's handlers before the test; any the test adds are removed after it."""
    logger = logging.getLogger("radiorecon")
    before = list(logger.handlers)
    yield before
    for handler in set(logger.handlers) - set(before):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_verbose_shows_the_traceback_of_an_input_error(observation, tmp_path, capsys, log_handlers):
    image, _ = observation
    assert main(["-v", "predict", "clean", str(image), "-o", str(tmp_path / "o.fits")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "CapabilityError" in err
    assert err.splitlines()[-1].startswith("radiorecon predict: error: backend 'clean' needs the PSF")


@pytest.mark.parametrize("option", ["--samples", "--threads"])
def test_a_count_that_is_not_positive_is_a_usage_error(option, observation, tmp_path, capsys):
    image, psf = observation
    with pytest.raises(SystemExit) as exit:
        main(["predict", "clean", str(image), "--psf", str(psf), "-o", str(tmp_path / "o.fits"), option, "0"])
    assert exit.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_train_workers_may_be_zero_but_not_negative(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "star", "--inputs", "x.fits", "-o", str(tmp_path / "m.rrm"), "--workers", "-1"])
    assert exit.value.code == 2
    assert "expected a non-negative integer, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("command, value", [("predict", "nan"), ("predict", "-1"), ("demo", "0"),
                                            ("benchmark", "5,inf")])
def test_a_bad_threshold_is_a_usage_error_before_any_work(command, value, observation, tmp_path, capsys):
    image, psf = observation
    argv = {
        "predict": ["predict", "clean", str(image), "--psf", str(psf), "-o", str(tmp_path / "o.fits"),
                    "--catalog", str(tmp_path / "o.ecsv")],
        "demo": ["demo", "--out", str(tmp_path / "demo")],
        "benchmark": ["benchmark", "--data", str(tmp_path), "--backends", "clean", "--out", str(tmp_path / "r")],
    }[command]
    with pytest.raises(SystemExit) as exit:
        main(argv + ["--threshold", value])
    assert exit.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image.name, psf.name])


def test_verbose_adds_one_log_handler_however_often_main_runs(capsys, log_handlers):
    logger = logging.getLogger("radiorecon")
    assert main(["-v", "backends"]) == 0
    assert main(["-v", "backends"]) == 0
    assert len(logger.handlers) == len(log_handlers) + 1
    capsys.readouterr()
    logger.info("hello")
    assert capsys.readouterr().err == "INFO: hello\n"
    assert main(["backends"]) == 0  # without -v, none of the command line's
    assert logger.handlers == log_handlers


# -- outputs: checked before predicting, written together, permissions and links kept ----------






@pytest.mark.parametrize(
    "where, message",
    [
        ("{tmp}/missing/o.fits", "cannot write {tmp}/missing/o.fits: directory {tmp}/missing does not exist"),
        ("{tmp}", "-o {tmp} is a directory; give a file name"),
        ("{ro}/o.fits", "cannot write {ro}/o.fits: no permission to write in {ro}"),
    ],
)
def test_output_problems_are_found_before_predicting(where, message, observation, tmp_path, monkeypatch,
                                                     capsys, no_prediction):
    image, psf = observation
    ro = tmp_path / "ro"
    ro.mkdir()
    make_unwritable(monkeypatch, ro)
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", where.format(tmp=tmp_path, ro=ro)]
    assert main(argv) == 1
    assert message.format(tmp=tmp_path, ro=ro) in capsys.readouterr().err


def _image_without(tmp_path, *keys):
    header = celestial_header(32, 32)
    for key in keys:
        del header[key]
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.ones((32, 32), np.float32), header).writeto(path)
    return path


@pytest.mark.parametrize(
    "missing, message",
    [
        (("BMAJ", "BMIN", "BPA"), "--catalog needs the clean beam, but {image} records none"),
        (("CTYPE1", "CTYPE2"), "--catalog needs sky coordinates, but {image} has no celestial WCS"),
    ],
)
def test_catalog_problems_are_found_before_predicting(missing, message, observation, tmp_path, capsys,
                                                      no_prediction):
    _, psf = observation
    image = _image_without(tmp_path, *missing)
    out, cat = tmp_path / "o.fits", tmp_path / "o.ecsv"
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", str(out), "--catalog", str(cat)]
    assert main(argv) == 1
    assert message.format(image=image) in capsys.readouterr().err
    assert not out.exists() and not cat.exists()


def test_catalog_path_is_checked_before_predicting(observation, tmp_path, monkeypatch, capsys, no_prediction):
    image, psf = observation
    ro = tmp_path / "ro"
    ro.mkdir()
    make_unwritable(monkeypatch, ro)
    out = tmp_path / "o.fits"
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", str(out), "--catalog", str(ro / "c.ecsv")]
    assert main(argv) == 1
    assert f"cannot write {ro / 'c.ecsv'}" in capsys.readouterr().err


def test_a_failed_catalog_leaves_no_outputs(observation, tmp_path, monkeypatch, capsys):
    image, psf = observation
    out, cat = tmp_path / "sky.fits", tmp_path / "sky.ecsv"

    def full_disk(self, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(QTable, "write", full_disk)
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", str(out), "--catalog", str(cat),
            "--set", "niter=20", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"No space left on device: '{cat}'" in err and ".tmp." not in err
    assert sorted(os.listdir(tmp_path)) == sorted(["field.image.fits", "field.psf.fits"])


def test_atomic_path_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")
    path.chmod(0o600)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_path_errors_name_the_users_path(tmp_path):
    path = tmp_path / "missing" / "out.fits"
    with pytest.raises(FileNotFoundError) as exc:
        with atomic_path(path) as tmp:
            open(tmp, "wb").close()
    assert exc.value.filename == str(path) and ".tmp." not in str(exc.value)


# -- messages, models and threads ------------------------------------------------------------


def test_one_source_is_singular(tmp_path, capsys):
    n = 64
    header = celestial_header(n, n)
    dirty = 1e-5 * np.random.default_rng(0).normal(size=(n, n)) + 2e-3 * gaussian_psf((n, n), 2.0)
    image, psf = tmp_path / "one.fits", tmp_path / "psf.fits"
    fits.PrimaryHDU(dirty.astype(np.float32), header).writeto(image)
    fits.PrimaryHDU(gaussian_psf((n, n), 2.0), celestial_header(n, n, bunit="")).writeto(psf)
    cat = tmp_path / "one.ecsv"
    assert main(["predict", "clean", str(image), "--psf", str(psf), "-o", str(tmp_path / "o.fits"),
                 "--catalog", str(cat), "--set", "niter=50", "--no-progress"]) == 0
    assert f"wrote {cat} (1 source)\n" in capsys.readouterr().out


def test_demo_help_is_backend_neutral(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "styles for STAR, diffusion draws for DDPM" in text


class _Draws(Backend):
    """Draws without a network: sampling does not depend on network evaluations."""

    capabilities = {"reconstruct", "draws"}

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        return Prediction(samples=inputs[None] + draws.randn(*inputs.shape[1:]))


class _Tiled(Backend):
    """Cuts images into tiles whose size is part of its configuration."""

    capabilities = {"reconstruct"}
    default_config = {"size": 24}

    def __init__(self, **config):
        super().__init__(**config)
        self.tile_shape = (self.config["size"], self.config["size"])
        self.tile_margin = 3

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        return Prediction(mean=inputs.clone())


@pytest.fixture
def registered():
    names = {"test-draws": _Draws, "test-tiled": _Tiled}
    for name, cls in names.items():
        registry.register_backend(name, cls, force=True)
    yield
    for name in names:
        registry.unregister_backend(name)


def test_benchmark_samples_backends_that_draw(registered):
    labels = [label for label, _, _ in _methods(["test-draws", "clean"], [1, 4])]
    assert labels == ["test-draws (1)", "test-draws (4)", "clean"]
    # NAME@N: that many samples for that one (a backend without draws ignores it).
    rows = _methods(["test-draws@10", "test-draws@1", "clean@3"], [1, 4])
    assert [(label, n) for label, _, n in rows] == [("test-draws (10)", 10), ("test-draws (1)", 1), ("clean", 1)]
    with pytest.raises(ValueError, match="test-draws@0.*must be positive"):
        _methods(["test-draws@0"], [1])


def test_info_reads_shipped_models_and_shows_the_tiles(registered, tmp_path, capsys):
    assert main(["info", "pretrained:star"]) == 0
    out = capsys.readouterr().out
    assert "star (version" in out and "pretrained:star (" in out
    assert "tiles: whole images up to 512 x 512 pixels; larger ones in tiles" in out
    model = tmp_path / "tiled.rrm"
    Reconstructor("test-tiled", size=40).save(model)
    assert main(["info", str(model)]) == 0
    assert "tiles: 40 x 40 pixels, overlapping by at least 6" in capsys.readouterr().out


def test_a_model_file_wins_over_a_shipped_name_and_a_directory_does_not(tmp_path, monkeypatch):
    from radiorecon.cli import _open_model
    from radiorecon.demo import _open

    monkeypatch.chdir(tmp_path)
    (tmp_path / "clean").mkdir()  # a directory named like a backend ...
    assert _open_model("clean", {}).backend_name == "clean"
    (tmp_path / "star").mkdir()  # ... or like a shipped model does not shadow it
    assert _open("star").origin == "pretrained:star"
    Reconstructor("test-smooth").save(tmp_path / "ddpm")  # but an existing file wins over a bare name
    assert _open("ddpm").backend_name == "test-smooth"
    assert _open("pretrained:ddpm").backend_name == "ddpm"  # unless pretrained: says otherwise
    with pytest.raises(ValueError, match="'nope' is neither a model file nor a shipped model"):
        _open("nope")


def test_threads_reach_the_prediction(observation, tmp_path, monkeypatch, capsys):
    image, psf = observation
    seen = []
    predict = Reconstructor.predict

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("threads"))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Reconstructor, "predict", spy)
    argv = ["predict", "clean", str(image), "--psf", str(psf), "--set", "niter=20", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "a.fits"), "--threads", "1"]) == 0, capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "b.fits")]) == 0, capsys.readouterr().err
    assert seen == [1, None]


def test_predict_with_a_catalog_reads_the_input_once(observation, tmp_path, monkeypatch):
    import radiorecon.io

    image, psf = observation
    opened = []
    real = radiorecon.io.open_fits

    def counting(source):
        opened.append(os.path.basename(os.fspath(source)))
        return real(source)

    monkeypatch.setattr(radiorecon.io, "open_fits", counting)
    assert main(["predict", "clean", str(image), "--psf", str(psf), "-o", str(tmp_path / "o.fits"),
                 "--catalog", str(tmp_path / "o.ecsv"), "--set", "niter=50", "--no-progress"]) == 0
    assert opened.count(image.name) == 1  # checks, prediction and catalog share one read


def test_predict_components_need_a_deblending_backend(observation, tmp_path, capsys):
    dirty, psf = observation
    out = tmp_path / "m.fits"
    assert main(["predict", "clean", str(dirty), "--psf", str(psf), "-o", str(out), "--components",
                 "--no-progress"]) == 1
    assert "gives no per-source components (no 'deblend' capability)" in capsys.readouterr().err
    assert not out.exists()
