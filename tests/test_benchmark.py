import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable

from radiorecon import Reconstructor, simulate
from radiorecon.benchmark import COLUMNS, plot_report, run_benchmark, to_markdown
from radiorecon.cli import main
from radiorecon.metrics import coverage


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Bright sources so that detection is easy and the scores are meaningful.
    out = tmp_path_factory.mktemp("bench") / "data"
    return simulate.make_dataset(
        4, seed=3, out=out, workers=1, progress=False, npix=128,
        flux_range=["1 mJy", "5 mJy"], n_sources=[1, 2], empty_fraction=0.0,
        placement_radius="4 arcsec",
    )


def test_benchmark_scores_truth_dirty_and_clean(dataset):
    rec = Reconstructor("clean", niter=500)
    table, examples = run_benchmark(dataset, [("clean", rec, 1)], progress=False)
    assert table.colnames == COLUMNS
    assert list(table["method"]) == ["truth limit", "dirty", "clean"]
    rows = {row["method"]: row for row in table}
    # Bright, isolated sources: everything finds them all, and fluxes agree.
    for name in ("truth limit", "clean"):
        assert rows[name]["completeness"] == 1.0 and rows[name]["purity"] == 1.0
    assert rows["truth limit"]["flux_r2"] > 0.9
    # CLEAN stops at 3 sigma and leaves the sources' faint wings in the
    # residual: its fluxes are low by about a fifth, but ordered right.
    true, found = (np.concatenate([p[k] for p in examples["fluxes"]["clean"]]) for k in (0, 1))
    ratio = (found / true).decompose().value
    assert 0.65 < np.median(ratio) < 1.0
    assert np.corrcoef(true.value, found.value)[0, 1] > 0.8
    assert rows["clean"]["seconds_per_image"] > 0
    # Every source found in every image: no bootstrap spread; counts per image kept.
    assert rows["clean"]["f1_err"] == 0.0
    counts = examples["counts"][("clean", 5.0)]
    assert counts.shape == (4, 3) and (counts[:, 0] > 0).all() and (counts[:, 1:] == 0).all()
    assert np.isfinite(rows["clean"]["ssim"]) and not np.isfinite(rows["truth limit"]["ssim"])
    again, _ = run_benchmark(dataset, [("clean", rec, 1)], progress=False)
    for column in ("purity", "completeness", "f1", "flux_r2", "l2"):
        assert np.array_equal(table[column], again[column], equal_nan=True)
    text = to_markdown(table)
    assert text.splitlines()[0].startswith("| method | n_samples | threshold | purity")
    assert list(examples["results"]) == ["clean"]
    assert "| truth limit | 1 | 5 | 1 | 1 |" in text
    assert not np.isfinite(rows["dirty"]["coverage_1sigma"])


def test_benchmark_thresholds_and_calibration(dataset):
    """Several thresholds from one prediction; a sampling method gets detection probabilities."""
    # A learned 3x3 convolution whose samples scatter around its estimate,
    # widely enough to cover some but not all of its errors.
    rec = Reconstructor("test-conv", noise=3.0)
    rec.fit(dataset, epochs=2, batch_size=2, seed=0, progress=False)
    table, examples = run_benchmark(dataset, [("prior", rec, 4)], threshold=[5, 3], progress=False)
    assert list(table["threshold"]) == [5, 5, 5, 3, 3, 3]
    assert list(table["method"]) == ["truth limit", "dirty", "prior"] * 2
    rows = {(r["method"], r["threshold"]): r for r in table}
    # A lower threshold never finds fewer true sources.
    for name in ("truth limit", "dirty", "prior"):
        assert rows[(name, 3.0)]["completeness"] >= rows[(name, 5.0)]["completeness"]
    # Coverage pools the source pixels of all images (apparent sky above a
    # tenth of its maximum), from the same seeded predictions.
    within, pixels = np.zeros(2), 0
    for i in range(len(dataset)):
        result = rec.predict(dataset.image(i), n_samples=4, seed=i, progress=False, return_samples=True)
        sky = dataset.sky(i).data * dataset.primary_beam
        c = coverage(result.data, result.uncertainty.array, sky, mask=sky > 0.1 * sky.max())
        within += [c[1.0] * c["n"], c[2.0] * c["n"]]
        pixels += c["n"]
    for t in (5.0, 3.0):
        assert rows[("prior", t)]["coverage_1sigma"] == pytest.approx(within[0] / pixels, rel=1e-12)
        assert rows[("prior", t)]["coverage_2sigma"] == pytest.approx(within[1] / pixels, rel=1e-12)
    assert 0 < within[0] < within[1] < pixels  # fractions that tell 1 and 2 sigma apart
    snr, matched = examples["recovered"][("truth limit", 3.0)]
    assert len(snr) == len(matched) == len(dataset.truth) and matched.all()
    # Probabilities are fractions of the 4 samples, one per detection.
    p, ok = examples["calibration"][("prior", 3.0)]
    counts = examples["counts"][("prior", 3.0)]
    assert len(p) == len(ok) == counts[:, :2].sum() and ok.sum() == counts[:, 0].sum()
    np.testing.assert_array_equal(p * 4, np.round(p * 4))


def test_plot_report_keeps_the_users_backend(dataset, tmp_path, monkeypatch):
    import matplotlib

    table, examples = run_benchmark(dataset, [("clean", Reconstructor("clean", niter=50), 1)],
                                    n_images=1, progress=False)
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    plot_report(table, examples, tmp_path)
    assert matplotlib.rcParams["backend"] == "svg"
    for name in ("panels.png", "fluxes.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_cli_simulate_and_benchmark(dataset, tmp_path, capsys):
    data = tmp_path / "cli-data"
    assert main(["simulate", "3", str(data), "--seed", "5", "--workers", "1", "--no-progress",
                 "--set", "npix=64", "--set", 'placement_radius="2 arcsec"']) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert main(["simulate", "--list-presets"]) == 0
    assert "alma-cycle5-c43-3" in capsys.readouterr().out
    report = tmp_path / "report"
    status = main(["benchmark", "--data", str(dataset.path), "--backends", "clean", "--out",
                   str(report), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "| clean |" in out
    table = QTable.read(report / "benchmark.ecsv")
    assert len(table) == 3
    for name in ("benchmark.md", "panels.png", "fluxes.png"):
        assert (report / name).stat().st_size > 0
    assert main(["benchmark", "--data", str(dataset.path), "--out", str(report), "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_point_source_survives_simulator_clean_and_find_sources():
    """A 1 mJy point source at a known place, through the whole chain."""
    from radiorecon.catalog import find_sources

    sky = QTable({"x": [150.0], "y": [110.0], "flux": [1.0e-3] * u.Jy})
    obs = simulate.observe(sky, seed=7, npix=256)
    gain = obs.truth["pb_gain"][0]
    result = Reconstructor("clean", niter=2000, threshold=2.0).predict(obs.dirty, psf=obs.psf, progress=False)
    # The restored image (Jy/beam of the clean beam) is where CLEAN users detect.
    restored = u.Quantity(result.extras["restored"], u.Jy / u.beam)
    from astropy.nddata import NDData

    found = find_sources(NDData(restored, wcs=result.wcs), threshold=5.0,
                         noise=np.std(u.Quantity(result.extras["residual"], u.Jy / u.beam)))
    assert len(found) == 1
    assert found["x"][0] == pytest.approx(150.0, abs=0.3)
    assert found["y"][0] == pytest.approx(110.0, abs=0.3)
    apparent = 1.0e-3 * gain  # the sky times the primary beam
    sigma = obs.noise_rms.to_value(u.Jy / u.beam)
    # The restored image (components + residual) carries the whole apparent flux;
    # the components alone miss what CLEAN left below its 2-sigma stop.
    assert np.nanmax(restored).to_value(u.Jy / u.beam) == pytest.approx(apparent, abs=3 * sigma)
    components = np.nansum(result.data[100:121, 140:161])
    assert apparent - 2 * sigma - 3 * sigma < components < apparent + 3 * sigma
