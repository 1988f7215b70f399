import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.table import QTable
from astropy.wcs.utils import proj_plane_pixel_scales

from radiorecon import Reconstructor, simulate
from radiorecon.benchmark import COLUMNS, plot_report, published_catalog, run_benchmark, to_markdown
from radiorecon.calibration import apparent_sources
from radiorecon.catalog import find_sources_in_model
from radiorecon.cli import main
from radiorecon.exceptions import InputError
from radiorecon.metrics import coverage, reliability, score_catalog


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Bright sources so that detection is easy and the scores are meaningful.
    out = tmp_path_factory.mktemp("bench") / "data"
    return simulate.make_dataset(
        4, seed=3, out=out, workers=1, progress=False, npix=128,
        flux_range=["1 mJy", "5 mJy"], n_sources=[1, 2], empty_fraction=0.0,
        placement_radius="4 arcsec",
    )


@pytest.fixture(scope="module")
def sampler(dataset):
    """A sampling method of known behaviour: its estimate is the dirty image over the beam area
    (Jy/beam to Jy/pixel), and its samples add white noise of 0.3 times the images' noise."""
    rec = Reconstructor("test-conv", noise=0.3)
    rec.fit(dataset, epochs=1, batch_size=4, seed=0, progress=False)  # for the normalisation
    pixel = proj_plane_pixel_scales(dataset.image(0).wcs)[1] * u.deg
    area = float((dataset.beam(0).sr / pixel**2).decompose())
    with torch.no_grad():
        rec.backend.net.weight.zero_()
        rec.backend.net.weight[0, 0, 1, 1] = 1 / area
        rec.backend.net.bias.zero_()
    return rec


def test_benchmark_scores_truth_dirty_and_clean(dataset):
    rec = Reconstructor("clean", niter=500)
    table, examples = run_benchmark(dataset, [("clean", rec, 1)], progress=False)
    assert table.colnames == COLUMNS
    assert list(table["method"]) == ["truth limit", "dirty", "clean"] * 2
    assert list(table["protocol"]) == ["significance"] * 3 + ["published"] * 3
    rows = {row["method"]: row for row in table[table["protocol"] == "significance"]}
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
    assert text.splitlines()[0].startswith("| method | protocol | n_samples | threshold | purity")
    assert list(examples["results"]) == ["clean"]
    assert "| truth limit | significance | 1 | 5 | 1 | 1 |" in text
    # The published protocol's threshold comes from each image, not from the dirty image's noise.
    assert "| truth limit | published | 1 | — | 1 | 1 |" in text
    assert not np.isfinite(rows["dirty"]["coverage_1sigma"])


def test_report_of_default_threshold_rows_with_a_sampling_method(dataset, sampler, tmp_path, monkeypatch):
    from radiorecon import benchmark

    monkeypatch.setattr(benchmark, "RELIABILITY_MIN_COUNT", 1)
    table, examples = run_benchmark(dataset, [("prior", sampler, 4)], threshold="default", n_images=2,
                                    progress=False)
    plot_report(table, examples, str(tmp_path))
    for name in ("panels.png", "fluxes.png", "reliability.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_default_threshold_rows_use_each_models_catalog_threshold(dataset):
    """As predict --catalog and the demo do: a model's calibrated threshold, else 5 sigma."""
    calibrated = Reconstructor("clean", niter=500)
    calibrated.catalog_threshold = 20.0
    methods = [("calibrated", calibrated, 1), ("plain", Reconstructor("clean", niter=500), 1)]
    table, examples = run_benchmark(dataset, methods, threshold="default", progress=False)
    rows = table[table["protocol"] == "significance"]
    assert list(rows["method"]) == ["truth limit", "dirty", "calibrated", "plain"]
    assert list(rows["threshold"]) == [5.0, 5.0, 20.0, 5.0]
    # Each row's counts are those of its threshold given explicitly.
    explicit, more = run_benchmark(dataset, methods, threshold=[20.0, 5.0], progress=False)
    assert np.array_equal(examples["counts"][("calibrated", "default")], more["counts"][("calibrated", 20.0)])
    assert np.array_equal(examples["counts"][("plain", "default")], more["counts"][("plain", 5.0)])
    assert not np.array_equal(more["counts"][("calibrated", 20.0)], more["counts"][("calibrated", 5.0)])
    for bad in ("defaults", 0, [5, np.inf]):
        with pytest.raises(InputError, match="threshold must be a positive S/N"):
            run_benchmark(dataset, methods, threshold=bad, progress=False)


def test_benchmark_thresholds_and_calibration(dataset, sampler, monkeypatch):
    """Several thresholds from one prediction; a sampling method gets detection probabilities."""
    from radiorecon import benchmark

    # Bins of 5 detections count here (10 by default), so that the few of these images give one.
    monkeypatch.setattr(benchmark, "RELIABILITY_MIN_COUNT", 5)
    methods = [("prior", sampler, 4), ("direct", sampler, 1)]
    table, examples = run_benchmark(dataset, methods, threshold=[5, 3], progress=False)
    assert list(table["threshold"][:8]) == [5] * 4 + [3] * 4 and np.isnan(table["threshold"][8:]).all()
    assert list(table["method"]) == ["truth limit", "dirty", "prior", "direct"] * 3
    rows = {(r["method"], r["threshold"]): r for r in table[table["protocol"] == "significance"]}
    # A lower threshold never finds fewer true sources.
    for name in ("truth limit", "dirty", "prior"):
        assert rows[(name, 3.0)]["completeness"] >= rows[(name, 5.0)]["completeness"]
    # Coverage pools the source pixels of all images (apparent sky above a
    # tenth of its maximum), from the same seeded predictions; flux coverage
    # the matched sources of all images, at each threshold.
    within, pixels = np.zeros(2), 0
    flux_within, matched = {5.0: np.zeros(2), 3.0: np.zeros(2)}, {5.0: 0, 3.0: 0}
    for i in range(len(dataset)):
        result = sampler.predict(dataset.image(i), n_samples=4, seed=i, progress=False, return_samples=True)
        sky = dataset.sky(i).data * dataset.primary_beam
        c = coverage(result.data, result.uncertainty.array, sky, mask=sky > 0.1 * sky.max())
        within += [c[1.0] * c["n"], c[2.0] * c["n"]]
        pixels += c["n"]
        for t in (5.0, 3.0):
            found = find_sources_in_model(result, dataset.image(i), t)
            s = score_catalog(found, apparent_sources(dataset, i), found.meta["beam_fwhm_pix"].value)
            c = coverage(s["flux_found"], s["flux_err"], s["flux_true"])
            flux_within[t] += [c[1.0] * c["n"], c[2.0] * c["n"]]
            matched[t] += c["n"]
    for t in (5.0, 3.0):
        assert rows[("prior", t)]["coverage_1sigma"] == pytest.approx(within[0] / pixels, rel=1e-12)
        assert rows[("prior", t)]["coverage_2sigma"] == pytest.approx(within[1] / pixels, rel=1e-12)
        assert matched[t] == pytest.approx(rows[("prior", t)]["completeness"] * len(dataset.truth))
        assert rows[("prior", t)]["flux_coverage_1sigma"] == pytest.approx(flux_within[t][0] / matched[t])
        assert rows[("prior", t)]["flux_coverage_2sigma"] == pytest.approx(flux_within[t][1] / matched[t])
        # One sample, or no samples at all: no flux errors to cover with.
        for name in ("direct", "dirty", "truth limit"):
            assert np.isnan(rows[(name, t)]["flux_coverage_1sigma"])
            assert np.isnan(rows[(name, t)]["flux_coverage_2sigma"])
    assert 0 < within[0] < within[1] < pixels  # fractions that tell 1 and 2 sigma apart
    assert 0 < flux_within[3.0][0] < flux_within[3.0][1] < matched[3.0]
    snr, matched = examples["recovered"][("truth limit", 3.0)]
    assert len(snr) == len(matched) == len(dataset.truth) and matched.all()
    # Probabilities are fractions of the 4 samples, one per detection.
    p, ok = examples["calibration"][("prior", 3.0)]
    counts = examples["counts"][("prior", 3.0)]
    assert len(p) == len(ok) == counts[:, :2].sum() and ok.sum() == counts[:, 0].sum()
    np.testing.assert_array_equal(p * 4, np.round(p * 4))
    # Reliability: the largest miss over the bins holding at least 5 detections.
    for t, expected in ((5.0, False), (3.0, True)):
        bins = reliability(*examples["calibration"][("prior", t)])
        full = bins[bins["n"] >= 5]
        error = rows[("prior", t)]["reliability_max_error"]
        assert np.isfinite(error) == expected == (len(full) > 0)
        if expected:
            assert error == pytest.approx(np.max(np.abs(full["true_positive_rate"] - full["mean_probability"])))
    published = table[table["protocol"] == "published"]
    assert np.isnan(published["reliability_max_error"]).all() and np.isnan(published["flux_coverage_1sigma"]).all()
    assert np.isnan(rows[("direct", 3.0)]["reliability_max_error"])


def test_plot_report_keeps_the_users_backend(dataset, sampler, tmp_path, monkeypatch):
    import matplotlib

    table, examples = run_benchmark(dataset, [("prior", sampler, 4)], n_images=1, progress=False)
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    plot_report(table, examples, tmp_path)
    assert matplotlib.rcParams["backend"] == "svg"
    # A sampling method's detection probabilities get a reliability diagram.
    for name in ("panels.png", "fluxes.png", "reliability.png"):
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
    assert len(table) == 6 and list(table["protocol"]) == ["significance"] * 3 + ["published"] * 3
    assert "fp_per_image" in table.colnames
    for name in ("benchmark.md", "panels.png", "fluxes.png"):
        assert (report / name).stat().st_size > 0
    assert not (report / "reliability.png").exists()  # no detection probabilities to show
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


def _blobs(shape=(64, 64), centres=((16.0, 20.0), (44.0, 24.0), (30.0, 48.0)), sigma=1.5):
    """Gaussian blobs of peak 1 at ``(x, y)`` centres on a zero background."""
    y, x = np.indices(shape, dtype=float)
    return sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres)


def _patches(shape=(64, 64), amplitude=1.0):
    """Four 3x3 squares of ``amplitude`` in the corners, away from the blobs."""
    texture = np.zeros(shape)
    for y0, x0 in ((2, 2), (2, 58), (58, 2), (58, 58)):
        texture[y0 : y0 + 3, x0 : x0 + 3] = amplitude
    return texture


def test_published_catalog_on_known_images():
    """The published protocol finds the blobs, and a texture exactly when it clears the threshold."""
    blobs = _blobs()
    found = published_catalog(blobs)
    # An empty background has a clipped std of 0: the floor, 1e-3 of the peak, decides.
    assert found.meta["threshold"] == pytest.approx(1e-3)
    order = np.argsort(found["x"])
    np.testing.assert_allclose(found["x"][order], [16, 30, 44], atol=1e-6)
    np.testing.assert_allclose(found["y"][order], [20, 48, 24], atol=1e-6)
    # Each blob's pixels above 1e-3 hold nearly all of its 2 pi sigma^2.
    np.testing.assert_allclose(found["flux"], 2 * np.pi * 1.5**2, rtol=2e-3)
    # A faint texture in a few patches is spurious sources above the floor, nothing below it.
    assert len(published_catalog(blobs + _patches(amplitude=2e-3))) == 3 + 4
    assert len(published_catalog(blobs + _patches(amplitude=5e-4))) == 3
    # Four pixels are not a source, five are.
    dots = blobs.copy()
    dots[5, 30:34] = 0.5
    dots[10, 30:35] = 0.5
    assert len(published_catalog(dots)) == 4
    # A texture over the whole background sets the threshold through its
    # clipped spread (std about 0.005), above the floor: a texture of peak 0.01 never
    # exceeds median + 3 std and adds nothing.
    y, x = np.indices(blobs.shape)
    textured = blobs + 0.01 * np.sin(2 * np.pi * x / 7) * np.sin(2 * np.pi * y / 5)
    found = published_catalog(textured)
    assert len(found) == 3 and 0.01 < found.meta["threshold"] < 0.03
    # Blended neighbours are split unless deblend=False; blank images find nothing.
    pair = _blobs(centres=((30.0, 32.0), (36.0, 32.0)))
    assert len(published_catalog(pair)) == 2 and len(published_catalog(pair, deblend=False)) == 1
    assert len(published_catalog(np.zeros((32, 32)))) == 0
    assert len(published_catalog(np.full((32, 32), np.nan))) == 0


def test_published_protocol_in_the_benchmark(dataset):
    """Published rows: CLEAN's restored image against the same detection on the apparent sky."""
    from radiorecon.metrics import score_catalog

    rec = Reconstructor("clean", niter=500)
    table, examples = run_benchmark(dataset, [("clean", rec, 1)], progress=False)
    rows = {r["method"]: r for r in table[table["protocol"] == "published"]}
    counts = examples["published"]
    # The reference scores itself perfectly: it is the truth of this protocol.
    assert rows["truth limit"]["f1"] == 1.0 and rows["truth limit"]["fp_per_image"] == 0.0
    expected = []
    for i in range(len(dataset)):
        sky = dataset.sky(i).data * dataset.primary_beam
        result = rec.predict(dataset.image(i), psf=dataset.psf(i, full=True), progress=False)
        restored = result.extras["restored"].to_value(u.Jy / u.beam)
        s = score_catalog(published_catalog(restored), published_catalog(sky), 3.0, flux=None)
        expected.append([s["tp"], s["fp"], s["fn"]])
    np.testing.assert_array_equal(counts["clean"], expected)
    for label, row in rows.items():
        assert row["fp_per_image"] == pytest.approx(counts[label][:, 1].mean())
    # Significance rows count their own spurious detections.
    sig = table[table["protocol"] == "significance"]
    for row in sig:
        assert row["fp_per_image"] == pytest.approx(examples["counts"][(row["method"], 5.0)][:, 1].mean())


def test_a_filtered_image_is_scored_in_itself(dataset):
    # The matched filter returns an image in Jy/beam, not a sky model: it is
    # detected against its own noise, and its fluxes are read through its
    # response to a point source.
    table, examples = run_benchmark(dataset, [("matched filter", Reconstructor("matched-filter"), 1)],
                                    progress=False)
    rows = {(r["method"], r["protocol"]): r for r in table}
    mf = rows[("matched filter", "significance")]
    assert mf["completeness"] == 1.0 and mf["purity"] == 1.0
    assert not np.isfinite(mf["ssim"]) and not np.isfinite(mf["coverage_1sigma"])  # not a model
    true, found = (np.concatenate([p[k] for p in examples["fluxes"]["matched filter"]]) for k in (0, 1))
    ratio = (found / true).decompose().value
    assert np.all((ratio > 0.8) & (ratio < 1.05))
    assert ("matched filter", "published") in rows
    assert examples["results"]["matched filter"].unit == u.Jy / u.beam


@pytest.fixture
def coarse_grid(monkeypatch):
    """A calibration grid of 3/4-sigma steps: each threshold is one more detection per image and row."""
    from radiorecon import benchmark

    monkeypatch.setattr(benchmark, "CALIBRATION_GRID", np.arange(2.5, 8.01, 0.75))
    return benchmark.CALIBRATION_GRID


def test_curve_of_a_sampling_method_counts_what_its_rows_count(dataset, sampler, coarse_grid):
    """The curve detects without the samples' columns; its counts are the catalogs' all the same."""
    thresholds = [float(t) for t in coarse_grid[:3]]
    table, examples = run_benchmark(dataset, [("prior", sampler, 4)], calibration=2, threshold=thresholds,
                                    progress=False)
    curve = examples["curves"]["prior"]
    for t in thresholds:
        k = int(np.flatnonzero(np.isclose(curve["threshold"], t))[0])
        counts = examples["counts"][("prior", t)].sum(axis=0)
        assert [curve["tp"][k], curve["fp"][k], curve["fn"][k]] == counts.tolist()
    assert examples["calibration"][("prior", thresholds[0])][0].size  # rows still have detection probabilities


def test_calibration_split_chooses_thresholds_on_its_own_images(dataset, tmp_path, coarse_grid):
    from radiorecon.benchmark import completeness_table
    from radiorecon.calibration import TARGET_PURITY
    from radiorecon.exceptions import InputError

    methods = [("clean", Reconstructor("clean", niter=200), 1)]
    table, examples = run_benchmark(dataset, methods, calibration=2, progress=False)
    calibration = table.meta["calibration"]
    assert calibration["images"] == [2, 3]
    calibrated = table[table["protocol"] == "significance (calibrated)"]
    assert list(calibrated["method"]) == ["truth limit", "dirty", "clean"]
    assert (table["n_images"] == 2).all()  # only the test images 0 and 1 are scored
    chosen = {label: c["threshold"] for label, c in calibration["thresholds"].items()}
    assert list(calibrated["threshold"]) == list(chosen.values())
    # The dirty image's sidelobes are spurious sources at low thresholds:
    # the calibration has something to choose.
    assert chosen["dirty"] > coarse_grid[0]
    # Recomputed by scoring the calibration images as test images over the
    # whole grid: the chosen threshold is the lowest reaching the purity.
    lower = [t for t in coarse_grid if t <= max(chosen.values())]
    check, _ = run_benchmark(dataset, methods, calibration=[0, 1], threshold=lower, progress=False)
    for label, t in chosen.items():
        purity = {r["threshold"]: r["purity"] for r in check[(check["method"] == label)
                                                             & (check["protocol"] == "significance")]}
        assert purity[t] >= TARGET_PURITY and calibration["thresholds"][label]["reached"]
        assert all(p < TARGET_PURITY for s, p in purity.items() if s < t)
    n_true = sum((dataset.truth["image_id"] == i).sum() for i in (0, 1))
    for label, curve in examples["curves"].items():
        # A higher threshold never finds more true sources on these isolated ones.
        assert (np.diff(curve["completeness"]) <= 0).all() and (np.diff(curve["tp"]) <= 0).all()
        assert (curve["tp"] + curve["fn"] == n_true).all()
        counts = examples["counts"][(label, "calibrated")].sum(axis=0)
        assert list(counts) == list(curve[curve["threshold"] == chosen[label]]["tp", "fp", "fn"][0])
        bins = examples["completeness_by_snr"][label]
        assert bins["n_found"].sum() == counts[0] and bins["n_true"].sum() == n_true
    bins = completeness_table(table, examples)
    assert len(bins) == 3 * 7 and set(bins["method"]) == set(chosen)
    plot_report(table, examples, tmp_path)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    # A calibration image is never a test image.
    with pytest.raises(InputError, match="need 5 images"):
        run_benchmark(dataset, methods, n_images=3, calibration=2, progress=False)
    with pytest.raises(InputError, match="distinct"):
        run_benchmark(dataset, methods, calibration=[1, 1], progress=False)
    with pytest.raises(ValueError, match="at most 3"):
        run_benchmark(dataset, methods, calibration=4, progress=False)


def test_cli_benchmark_with_calibration(dataset, tmp_path, capsys, coarse_grid):
    report = tmp_path / "report"
    assert main(["benchmark", "--data", str(dataset.path), "--backends", "clean", "--calibration", "2",
                 "--out", str(report), "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "significance (calibrated)" in out and "calibrated threshold of clean:" in out
    bins = QTable.read(report / "completeness_by_snr.ecsv")
    assert list(bins.colnames[:3]) == ["method", "threshold", "snr_min"]
    assert "Completeness per true peak S/N" in (report / "benchmark.md").read_text()
    assert (report / "curves.png").stat().st_size > 0
    assert main(["benchmark", "--data", str(dataset.path), "--calibration", "4", "--out", str(tmp_path / "r2"),
                 "--no-progress"]) == 1
    assert "calibration must be at most 3" in capsys.readouterr().err


def test_rows_of_one_model_share_its_draws(dataset, sampler, monkeypatch):
    from radiorecon import pipeline

    alone, _ = run_benchmark(dataset, [("x2", sampler, 2)], n_images=2, threshold=3, progress=False)
    calls = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: calls.append(k["n_samples"]) or real_run(*a, **k))
    table, _ = run_benchmark(dataset, [("x2", sampler, 2), ("x5", sampler, 5)], n_images=2, threshold=3,
                             progress=False)
    assert calls == [5, 5]  # one prediction per image, for the larger count
    assert list(table["method"]) == ["truth limit", "dirty", "x2", "x5"] * 2
    shared = table[table["method"] == "x2"]
    own = alone[alone["method"] == "x2"]
    # The first 2 of 5 draws are the 2 draws: the same scores, but no time of their own.
    for name in ("purity", "completeness", "f1", "fp_per_image", "coverage_1sigma", "coverage_2sigma", "l2"):
        np.testing.assert_allclose(shared[name], own[name], rtol=1e-6, equal_nan=True)
    assert np.isnan(shared["seconds_per_image"]).all() and np.isfinite(own["seconds_per_image"]).all()
    assert np.isfinite(table[table["method"] == "x5"]["seconds_per_image"]).all()
    assert list(shared["network_runs"]) == list(own["network_runs"])


def test_a_cached_benchmark_resumes_to_the_same_table(dataset, sampler, tmp_path, monkeypatch):
    from radiorecon import pipeline

    calls = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: calls.append(k["seed"]) or real_run(*a, **k))
    clean = Reconstructor("clean", niter=50)
    cache = tmp_path / "predictions"
    # Interrupted after the second image: its predictions are on disk.
    first, _ = run_benchmark(dataset, [("x3", sampler, 3)], n_images=2, threshold=3, progress=False, cache=cache)
    assert calls == [0, 1]
    # The same call with one more image and one more row predicts only what is new.
    calls.clear()
    table, _ = run_benchmark(dataset, [("x3", sampler, 3), ("clean", clean, 1)], n_images=3, threshold=3,
                             progress=False, cache=cache)
    assert sorted(calls) == [0, 1, 2, 2]
    calls.clear()
    again, _ = run_benchmark(dataset, [("x3", sampler, 3), ("clean", clean, 1)], n_images=3, threshold=3,
                             progress=False, cache=cache)
    assert calls == []
    # The table of predictions read back is the one of predictions made,
    # seconds included (those recorded when they were made).
    for name in COLUMNS[3:]:
        np.testing.assert_array_equal(again[name], table[name], err_msg=name)
    assert np.isfinite(again["seconds_per_image"][again["method"] == "x3"]).all()
    # And the same as without a cache, but for the times.
    fresh, _ = run_benchmark(dataset, [("x3", sampler, 3), ("clean", clean, 1)], n_images=3, threshold=3,
                             progress=False)
    for name in COLUMNS[3:-2]:
        np.testing.assert_array_equal(again[name], fresh[name], err_msg=name)
    assert list(first["method"]) == ["truth limit", "dirty", "x3"] * 2
    # What a backend says of its result (CLEAN's beam and iterations) comes back as it was.
    psf = dataset.psf(2, full=True)
    calls.clear()
    with clean.reusing_predictions(cache=cache) as rec:
        read = rec.predict(dataset.image(2), psf=psf, seed=2, progress=False)
    made = clean.predict(dataset.image(2), psf=psf, seed=2, progress=False)
    assert calls == [2]  # only the one made afresh
    assert read.meta == made.meta and read.meta["CLNITER"] > 0
    for name in made.extras:
        np.testing.assert_array_equal(read.extras[name], made.extras[name])
