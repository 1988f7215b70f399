"""The training domain and catalog threshold a model file records, and what uses them."""

import functools

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import QTable
from astropy.wcs import WCS

from radiorecon import Reconstructor, modelfile, simulate
from radiorecon.cli import main
from radiorecon.demo import run_demo
from radiorecon.exceptions import ModelFileError, RadioreconWarning
from radiorecon.pretrained import resolve_model_path
from radiorecon.training import training_domain

from conftest import celestial_header

PRESET = "alma-cycle5-c43-3"


@pytest.fixture(scope="module")
def pairs():
    return simulate.SimulatedPairs(4, seed=2, npix=32, placement_radius=1.0 * u.arcsec)


@pytest.fixture(scope="module")
def trained(pairs, test_backends):
    rec = Reconstructor("test-conv", noise=0.0)
    return rec.fit(pairs, epochs=1, batch_size=4, seed=0, progress=False)


def image(beam_arcsec, pixel_arcsec, size=32):
    """A Jy/beam NDData with a celestial WCS of ``pixel_arcsec`` pixels and a round beam."""
    header = celestial_header(size, size)
    header["CDELT1"], header["CDELT2"] = -pixel_arcsec / 3600, pixel_arcsec / 3600
    header["BMAJ"] = header["BMIN"] = beam_arcsec / 3600
    data = np.random.default_rng(0).normal(0, 5e-5, (size, size)).astype(np.float32)
    return NDData(data, wcs=WCS(header), unit=u.Jy / u.beam, meta=dict(header))


def test_fit_records_the_domain_of_simulated_pairs(pairs, trained):
    domain = trained.domain
    assert domain == training_domain(pairs)
    assert domain["preset"] == PRESET
    assert domain["pixel_scale_arcsec"] == pytest.approx(0.1)
    # The preset's clean beam (Taran et al. 2023: ~0.9" x 0.8") and image noise.
    assert 0.85 < domain["beam_major_arcsec"] < 0.95 and 0.78 < domain["beam_minor_arcsec"] < 0.86
    assert domain["noise_jy_beam"] == pytest.approx(pairs.parameters["noise_rms"].to_value(u.Jy / u.beam))


def test_a_new_fit_forgets_the_previous_models_calibration(pairs):
    rec = Reconstructor("test-conv", noise=0.0)
    rec.catalog_threshold, rec.uncertainty_scale, rec.domain = 4.0, 3.0, None
    rec.fit(pairs, epochs=1, batch_size=4, seed=0, progress=False)
    assert rec.catalog_threshold is None and rec.uncertainty_scale == 1.0
    assert rec.domain == training_domain(pairs)


def test_a_simulated_data_set_on_disk_has_the_domain_of_its_pairs(pairs, tmp_path):
    ds = simulate.make_dataset(3, seed=2, out=tmp_path / "ds", npix=32, placement_radius=1.0 * u.arcsec,
                               workers=1, progress=False)
    domain, expected = training_domain(ds), training_domain(pairs)
    # Its images' declinations differ a little from the field's centre, and so do their beams.
    assert domain == pytest.approx(expected, rel=0.01)
    assert domain["preset"] == PRESET


def test_fit_reads_the_domain_of_fits_images(tmp_path, test_backends):
    paths = []
    for i in range(2):
        nd = image(0.6, 0.05)
        paths.append(tmp_path / f"{i}.fits")
        fits.PrimaryHDU(nd.data, fits.Header({**nd.meta, "SIMPRSET": "mine"})).writeto(paths[-1])
    rec = Reconstructor("test-conv").fit(paths, [np.zeros((32, 32))] * 2, epochs=1, progress=False)
    assert rec.domain["preset"] == "mine"
    assert rec.domain["beam_major_arcsec"] == pytest.approx(0.6)
    assert rec.domain["pixel_scale_arcsec"] == pytest.approx(0.05)
    assert rec.domain["noise_jy_beam"] == pytest.approx(5e-5, rel=0.2)
    # Plain arrays say nothing of their beam or pixels.
    assert Reconstructor("test-conv").fit(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)), progress=False).domain is None


def test_domain_and_threshold_survive_save_and_load(trained, tmp_path, capsys):
    trained.catalog_threshold = 4
    path = tmp_path / "model.rrm"
    try:
        trained.save(path)
    finally:
        trained.catalog_threshold = None
    loaded = Reconstructor.load(path)
    assert loaded.domain == trained.domain
    assert loaded.catalog_threshold == 4.0
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f'domain: preset {PRESET}; beam 0.89" x 0.822"; pixels 0.1"; noise 50 uJy/beam' in out
    assert "catalog threshold: S/N 4 (the default of predict --catalog, demo and benchmark)" in out


def test_a_metadata_edit_keeps_the_tensors_and_the_creation_time(trained, tmp_path):
    # How the shipped models got their domain: load, add the field, save.
    trained.save(tmp_path / "old.rrm")
    doc, tensors = modelfile.load(tmp_path / "old.rrm")
    doc = {**doc, "created": "2020-01-01T00:00:00+00:00", "catalog_threshold": 3.5}
    modelfile.save(tmp_path / "new.rrm", doc, tensors)
    new, new_tensors = modelfile.load(tmp_path / "new.rrm")
    assert new["created"] == "2020-01-01T00:00:00+00:00" and new["catalog_threshold"] == 3.5
    assert new["sha256"] == doc["sha256"]  # the digest of the same tensors' bytes
    assert all(new_tensors[k].equal(t) for k, t in tensors.items())


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "4"])
def test_catalog_threshold_is_validated(bad):
    rec = Reconstructor("clean")
    with pytest.raises(ValueError, match="catalog_threshold must be a positive, finite S/N"):
        rec.catalog_threshold = bad
    assert rec.catalog_threshold is None


def test_malformed_domain_is_refused_when_saved_and_when_read(tmp_path, monkeypatch):
    rec = Reconstructor("clean")
    rec.domain = {"preset": PRESET, "beam_major_arcsec": 0.9}  # keys missing
    with pytest.raises(ValueError, match="domain must be a mapping of preset"):
        rec.save(tmp_path / "refused.rrm")
    rec.domain = dict.fromkeys(modelfile.DOMAIN_KEYS) | {"beam_major_arcsec": -1}
    with pytest.raises(ValueError, match="beam_major_arcsec must be a positive number"):
        rec.save(tmp_path / "refused.rrm")
    # A crafted file carries a valid checksum; its fields are checked all the same.
    rec.domain = dict.fromkeys(modelfile.DOMAIN_KEYS) | {"pixel_scale_arcsec": -0.1}
    with monkeypatch.context() as m:
        m.setattr(modelfile, "check_domain", lambda domain: domain)
        rec.save(tmp_path / "crafted.rrm")
    with pytest.raises(ModelFileError, match="domain pixel_scale_arcsec must be a positive number"):
        modelfile.read_header(tmp_path / "crafted.rrm")


def test_predict_warns_once_on_an_image_unlike_the_training_data(trained):
    odd = image(0.59, 0.05)
    with pytest.warns(RadioreconWarning) as record:
        trained.predict([odd, odd], progress=False)
    assert len(record) == 1
    w = record[0]
    assert w.filename == __file__
    message = str(w.message)
    assert message.startswith(
        'Image 0 (and 1 other(s)) is unlike the data the model was trained on: beam 0.59" x 0.59", pixels 0.05"')
    assert f'against beam 0.89" x 0.822", pixels 0.1" (preset {PRESET}), more than 20% apart' in message


def test_no_warning_on_matching_or_unknown_images(trained):
    # filterwarnings = error: any warning fails these.
    trained.predict(image(0.86, 0.1), progress=False)  # 3 % off: within the tolerance
    trained.predict(np.zeros((32, 32), np.float32) * u.Jy / u.beam, progress=False)  # no beam, no WCS
    blank = Reconstructor("test-conv").fit(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)), progress=False)
    blank.predict(image(0.59, 0.05).data, progress=False)  # a model without a domain


def test_beam_alone_or_pixels_alone_trigger_the_warning(trained):
    for beam, pixel in ((0.6, 0.1), (0.89, 0.13)):
        with pytest.warns(RadioreconWarning, match="unlike the data the model was trained on"):
            trained.predict(image(beam, pixel), progress=False)


def test_predict_catalog_defaults_to_the_models_threshold(trained, tmp_path):
    obs = simulate.observe(seed=3, npix=32, placement_radius=1.0 * u.arcsec)
    dirty = tmp_path / "dirty.fits"
    obs.dirty.write(dirty)
    model = tmp_path / "model.rrm"

    def threshold(*options, model_threshold):
        trained.catalog_threshold = model_threshold
        try:
            trained.save(model, overwrite=True)
        finally:
            trained.catalog_threshold = None
        catalog = tmp_path / "sources.ecsv"
        argv = ["predict", str(model), str(dirty), "-o", str(tmp_path / "sky.fits"), "--catalog", str(catalog),
                "--overwrite", "--no-progress", *options]
        assert main(argv) == 0
        return QTable.read(catalog).meta["threshold"]

    assert threshold(model_threshold=4.0) == 4.0
    assert threshold("--threshold", "6", model_threshold=4.0) == 6.0
    assert threshold(model_threshold=None) == 5.0


def test_demo_defaults_to_the_models_threshold(trained, tmp_path, monkeypatch):
    trained.catalog_threshold = 4.5
    try:
        trained.save(tmp_path / "model.rrm")
    finally:
        trained.catalog_threshold = None
    # A small observation keeps the test fast; the demo's path is the same.
    monkeypatch.setattr(simulate, "observe", functools.partial(simulate.observe, npix=64))
    out = run_demo(tmp_path / "demo", model=str(tmp_path / "model.rrm"), n_samples=1, progress=False)
    assert out["threshold"] == 4.5
    assert out["catalog"].meta["threshold"] == 4.5
    assert run_demo(tmp_path / "demo", model=str(tmp_path / "model.rrm"), n_samples=1, threshold=2.0,
                    overwrite=True, progress=False)["catalog"].meta["threshold"] == 2.0


# What examples/train_star.py and examples/train_ddpm.py train on: 128x128 cut-outs of full fields.
@pytest.mark.parametrize("name, fields", [("star", dict(crop=128)), ("ddpm", dict(crop=128))])
def test_shipped_models_carry_their_domain(name, fields):
    doc = modelfile.read_header(resolve_model_path(f"pretrained:{name}"))
    pairs = simulate.SimulatedPairs(1, seed=11, **fields)
    assert doc["domain"] == training_domain(pairs)
    assert doc["domain"]["preset"] == simulate.DEFAULT_PRESET
    assert Reconstructor.pretrained(name).domain == doc["domain"]
