import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from radiorecon import Reconstructor, parallel
from radiorecon.catalog import DEFAULT_THRESHOLD
from radiorecon.cli import main
from radiorecon.exceptions import InputError
from radiorecon.io import read_image
from radiorecon.result import read_result

from conftest import celestial_header

distributed = pytest.importorskip("distributed")

SEED, SAMPLES = 7, 3


@pytest.fixture(scope="module")
def client():
    """Two single-thread workers in this process: the cluster of every test here, started once."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def model(tmp_path_factory, test_backends):
    """A tiny trained model that draws samples, and its model file."""
    from scipy.signal import fftconvolve

    from conftest import gaussian_psf

    rng = np.random.default_rng(1)
    sky = np.zeros((8, 32, 32), np.float32)
    for image in sky:
        image[rng.integers(4, 28), rng.integers(4, 28)] = 2.0
    dirty = np.stack([fftconvolve(s, gaussian_psf((32, 32), 1.5), mode="same") for s in sky])
    rec = Reconstructor("test-conv").fit(dirty + rng.normal(0, 0.05, dirty.shape), sky, epochs=2, seed=0,
                                         progress=False)
    path = tmp_path_factory.mktemp("model") / "conv.rrm"
    rec.save(path)
    return rec, str(path)


@pytest.fixture
def fields(tmp_path):
    """Three 32x32 fields with a bright source each, with WCS and beam, as FITS files."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:32, :32]
    paths = []
    for i, (y, x) in enumerate([(10, 12), (20, 8), (16, 24)]):
        data = 0.05 * rng.normal(size=(32, 32)) + 3 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
        header = celestial_header(32, 32)
        header["CRVAL1"] += i * 0.01  # three pointings
        paths.append(tmp_path / "in" / f"field{i}.fits")
        paths[-1].parent.mkdir(exist_ok=True)
        fits.PrimaryHDU(data.astype(np.float32), header).writeto(paths[-1])
    return [str(p) for p in paths]


def survey(inputs, model, out, client, **kwargs):
    return parallel.predict_many(inputs, model, out, client=client, n_samples=SAMPLES, seed=SEED,
                                 threads=None, progress=False, **kwargs)


def test_results_equal_serial_predictions_and_catalogs_merge(model, fields, tmp_path, client):
    rec, _ = model
    out = tmp_path / "out"
    done = survey(fields, rec, out, client)
    assert list(done.fields["status"]) == ["done"] * 3
    assert list(done.fields["field"]) == ["field0", "field1", "field2"]
    for path, row in zip(fields, done.fields):
        serial = rec.predict(path, n_samples=SAMPLES, seed=SEED, progress=False, return_samples=True)
        mine = read_result(row["result"])
        np.testing.assert_array_equal(mine.data, serial.data)
        np.testing.assert_array_equal(mine.uncertainty.array, serial.uncertainty.array)
        table = QTable.read(row["catalog"])
        expected = parallel.field_catalog(serial, read_image(path), DEFAULT_THRESHOLD)
        np.testing.assert_allclose(table["x"], expected["x"])
        assert "detection_probability" in table.colnames and len(table) == row["n_sources"] >= 1
    # The merged catalog: every field's sources, ids unique across fields, sky positions in ICRS.
    merged = QTable.read(out / parallel.MERGED_CATALOG)
    assert len(merged) == sum(done.fields["n_sources"]) == len(done.catalog)
    assert list(merged["id"]) == list(range(1, len(merged) + 1))
    assert set(merged["field"]) == {"field0", "field1", "field2"}
    assert merged["ra"].unit == "deg" and merged["sky_centroid"].frame.name == "icrs"
    np.testing.assert_allclose(merged["ra"].value, merged["sky_centroid"].ra.deg)
    # The pointings differ by 0.01 deg in RA: each field's sources lie near its own centre.
    for i in range(3):
        ra = merged["ra"][merged["field"] == f"field{i}"].value
        assert np.all(np.abs(ra - (150.119 + i * 0.01)) < 0.001)
    assert merged.meta["fields"] == ["field0", "field1", "field2"]


def test_a_rerun_skips_finished_inputs_and_redoes_a_truncated_one(model, fields, tmp_path, client):
    _, path = model
    out = tmp_path / "out"
    first = survey(fields, path, out, client)
    before = {row["result"]: os.stat(row["result"]).st_mtime_ns for row in first.fields}
    again = survey(fields, path, out, client)
    assert list(again.fields["status"]) == ["skipped"] * 3
    assert {r: os.stat(r).st_mtime_ns for r in before} == before
    # Half a file (a copy cut short) is not a result: it is predicted again, the same.
    broken = first.fields["result"][1]
    reference = read_result(broken).data
    with open(broken, "r+b") as fh:
        fh.truncate(os.path.getsize(broken) // 2)
    redone = survey(fields, path, out, client)
    assert list(redone.fields["status"]) == ["skipped", "done", "skipped"]
    np.testing.assert_array_equal(read_result(broken).data, reference)
    assert len(redone.catalog) == len(first.catalog)
    # Outputs made with another seed are not taken as finished, nor replaced without overwrite.
    with pytest.raises(FileExistsError, match="catalog.ecsv.*another run"):
        parallel.predict_many(fields, path, out, client=client, n_samples=SAMPLES, seed=SEED + 1, progress=False)
    other = parallel.predict_many(fields, path, out, client=client, n_samples=SAMPLES, seed=SEED + 1,
                                  progress=False, overwrite=True)
    assert list(other.fields["status"]) == ["done"] * 3


def test_a_model_file_is_opened_once_per_worker(model, fields, tmp_path, client, monkeypatch):
    _, path = model
    more = []
    for i in range(3):  # six inputs for two workers
        more.append(str(tmp_path / f"copy{i}.fits"))
        with fits.open(fields[i]) as hdul:
            hdul.writeto(more[-1])
    monkeypatch.setattr(parallel, "_MODELS", {})  # forget the models earlier tests opened
    opened = []
    real = Reconstructor.load.__func__
    monkeypatch.setattr(Reconstructor, "load", classmethod(lambda cls, *a, **k: opened.append(a) or real(cls, *a, **k)))
    parallel.predict_many(fields + more, path, tmp_path / "out", client=client, catalog=False, progress=False)
    # Once to check it here, then at most once on each of the two workers.
    assert 2 <= len(opened) <= 3


def test_a_bad_input_is_named_and_the_others_are_kept(model, fields, tmp_path, client):
    rec, _ = model
    bad = tmp_path / "in" / "broken.fits"
    bad.write_bytes(b"not a FITS file at all" * 200)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"1 of 4 inputs failed .*broken\.fits: .*not a readable FITS file"):
        survey(fields + [str(bad)], rec, out, client)
    assert sorted(os.listdir(out)) == sorted(f"field{i}{s}" for i in range(3) for s in (".model.fits", ".sources.ecsv"))
    assert list(survey(fields, rec, out, client).fields["status"]) == ["skipped"] * 3


def test_inputs_whose_outputs_collide_are_refused_before_any_work(model, fields, tmp_path, client):
    twin = tmp_path / "elsewhere" / "field0.fits.gz"
    twin.parent.mkdir()
    with pytest.raises(InputError, match="field0.fits.gz would both write field0.model.fits"):
        survey(fields + [str(twin)], model[0], tmp_path / "out", client)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="is one of the inputs"):
        survey([fields[0], str(tmp_path / "in" / "field0.model.fits")], model[0], tmp_path / "in", client)


def test_cli_predicts_a_glob_on_a_running_scheduler(model, fields, tmp_path, client, capsys):
    _, path = model
    out = tmp_path / "out"
    argv = ["predict", path, str(tmp_path / "in" / "*.fits"), "--out", str(out), "--scheduler",
            client.scheduler.address, "--samples", str(SAMPLES), "--seed", str(SEED), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "wrote the results of 3 inputs" in text and "in 3 fields" in text
    assert main(argv) == 0
    assert "(3 already finished)" in capsys.readouterr().out
    assert len(QTable.read(out / "catalog.ecsv")) >= 3


@pytest.mark.parametrize("extra, message", [
    (["-o", "x.fits"], "-o names one output file; with many inputs, give --out DIR"),
    (["--workers", "2", "--scheduler", "tcp://h:1"], "give one of them"),
    ([], "give the output directory with --out DIR"),
    (["--out", "o", "--components"], "--components is for one input"),
])
def test_cli_many_inputs_refuses_conflicting_options(extra, message, fields, tmp_path, capsys):
    argv = ["predict", "pretrained:star", *fields, *extra]
    if "--scheduler" in extra:
        argv += ["--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_cli_glob_matching_nothing_is_named(tmp_path, capsys):
    pattern = str(tmp_path / "none" / "*.fits")
    assert main(["predict", "pretrained:star", pattern, "--out", str(tmp_path / "o")]) == 1
    assert f"no files match {pattern!r}" in capsys.readouterr().err


def test_progress_shows_a_bar_over_inputs_and_can_be_turned_off(model, fields, tmp_path, client, capsys):
    parallel.predict_many(fields, model[0], tmp_path / "a", client=client, catalog=False, progress=True)
    assert "predict: 100%" in capsys.readouterr().err
    parallel.predict_many(fields, model[0], tmp_path / "b", client=client, catalog=False, progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture
def large(tmp_path):
    """A 192x160 CASA-like cube of one plane (Jy/beam, WCS, beam): noise and a few sources."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:192, :160]
    data = 0.05 * rng.normal(size=(192, 160))
    for y, x in [(30, 40), (64, 64), (100, 130), (170, 20)]:  # one on the seam of two blocks
        data += 2 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
    path = tmp_path / "large.fits"
    fits.PrimaryHDU(data[None, None].astype(np.float32), celestial_header(192, 160, naxis=4)).writeto(path)
    return str(path)


_WRITES = []
_write_window = parallel._write_window


def _recording_write(planes, window, *args):
    # A function of this module, pickled by reference: the in-process workers append to this _WRITES.
    _WRITES.append(planes.shape[1:])
    return _write_window(planes, window, *args)


def _large(image, model, out, client, progress=False, margin=16, **kwargs):
    return parallel.predict_large(image, model, out, client=client, tile=64, margin=margin, progress=progress,
                                  **kwargs)


def test_predict_large_equals_the_whole_image_prediction_of_a_local_model(large, tmp_path, client, monkeypatch):
    # A 3x3 smoothing reaches 1 pixel, well within the margin: the blocks' inner parts are exactly
    # those of one whole-image prediction, up to float rounding, but for the image's outermost pixels
    # (where each block's own normalisation offset meets the zero padding).
    reads = []
    read = parallel._FitsPlane.__getitem__
    monkeypatch.setattr(parallel._FitsPlane, "__getitem__", lambda self, key: reads.append(read(self, key)) or reads[-1])
    monkeypatch.setattr(parallel, "_write_window", _recording_write)
    _WRITES.clear()
    out = _large(large, "test-smooth", tmp_path / "sky.fits", client)
    whole = Reconstructor("test-smooth").predict(large, progress=False)
    mine = read_result(out)
    np.testing.assert_allclose(mine.data[1:-1, 1:-1], whole.data[1:-1, 1:-1], rtol=1e-5, atol=1e-6)
    assert mine.unit == whole.unit
    assert mine.uncertainty is None
    assert mine.wcs.to_header() == whole.wcs.to_header()
    assert mine.meta["RRBACKND"] == "test-smooth" and mine.meta["RRTILE"] == 64 and "RRSCALE" not in mine.meta
    # Bounded memory: the input was read, and the output written, one (widened) block at a time.
    assert len(reads) >= 3 * 3 and max(window.size for window in reads) <= (64 + 2 * 16) ** 2
    assert sorted(_WRITES) == sorted((s, t) for s in (64, 64, 64) for t in (64, 64, 32))


def test_predict_large_merges_a_last_block_narrower_than_the_margin(large, tmp_path, client):
    # 160 = 64 + 64 + 32 columns: with a margin of 40 the last 32 join the block before them.
    assert parallel._block_sides(160, 64, 40) == (64, 96)
    out = _large(large, "test-smooth", tmp_path / "sky.fits", client, margin=40)
    whole = Reconstructor("test-smooth").predict(large, progress=False)
    np.testing.assert_allclose(read_result(out).data[1:-1, 1:-1], whole.data[1:-1, 1:-1], rtol=1e-5, atol=1e-6)


def test_predict_large_writes_the_uncertainty_and_stays_within_the_noise(model, large, tmp_path, client):
    rec, path = model
    out = _large(large, rec, tmp_path / "sky.fits", client, n_samples=SAMPLES, seed=SEED)
    mine = read_result(out)
    whole = rec.predict(large, n_samples=SAMPLES, seed=SEED, progress=False)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT"]
        assert hdul["UNCERT"].header["CTYPE1"] == "RA---SIN" and hdul["UNCERT"].header["BUNIT"] == "Jy/pixel"
    assert mine.data.shape == (192, 160) and mine.unit == whole.unit
    assert np.all(mine.uncertainty.array > 0)
    # Blocks draw their own noise and are normalised on their own: they differ from the whole-image
    # prediction by about the spread of the estimate, not more.
    diff = np.abs(mine.data - whole.data)[16:-16, 16:-16]
    assert np.median(diff) < np.median(whole.uncertainty.array)
    again = read_result(_large(large, path, tmp_path / "again.fits", client, n_samples=SAMPLES, seed=SEED))
    np.testing.assert_array_equal(again.data, mine.data)


def test_predict_large_refuses_an_existing_output_before_any_work(large, tmp_path, client, capsys):
    out = tmp_path / "sky.fits"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="sky.fits already exists"):
        _large(large, "test-smooth", out, client)
    with pytest.raises(ValueError, match=r"margin \(65\) must not be larger than tile \(64\)"):
        _large(large, "test-smooth", tmp_path / "other.fits", client, margin=65)
    with pytest.raises(InputError, match="uncompressed FITS file, not .*sky.fits.gz"):
        _large(large, "test-smooth", tmp_path / "sky.fits.gz", client)
    assert out.read_bytes() == b"keep"
    _large(large, "test-smooth", out, client, overwrite=True, progress=True)
    assert "9/9" in capsys.readouterr().err  # a progress bar over the blocks
    assert read_result(out).data.shape == (192, 160)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.fits", "sky.fits"]  # no temporary left
