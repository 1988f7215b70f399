"""Calibrated uncertainty: the scale on the standard deviation, its model-file field and provenance."""

import json

import numpy as np
import pytest

from radiorecon import Reconstructor, modelfile, simulate
from radiorecon.calibration import calibrate_uncertainty, gaussian_coverage, uncertainty_coverage
from radiorecon.cli import main
from radiorecon.exceptions import CapabilityError, ModelFileError

N_SAMPLES = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Bright sources near the centre, so that every image has source pixels.
    return simulate.make_dataset(
        4, seed=3, out=tmp_path_factory.mktemp("cal") / "data", workers=1, progress=False, npix=64,
        flux_range=["1 mJy", "5 mJy"], n_sources=[1, 2], empty_fraction=0.0, placement_radius="2 arcsec",
    )


@pytest.fixture(scope="module")
def overconfident(dataset, test_backends):
    # One epoch leaves errors far larger than the samples' spread of 0.01
    # (in units of the noise): the std is much too small.
    return Reconstructor("test-conv", noise=0.01).fit(dataset, epochs=1, batch_size=4, seed=0, progress=False)


def test_calibration_makes_one_sigma_coverage_0683(overconfident, dataset):
    report = calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, progress=False)
    assert overconfident.uncertainty_scale == 1.0  # the function alone changes nothing
    assert report.n_images == 4 and report.n_samples == N_SAMPLES and report.n_pixels > 50
    assert report.before[1.0] < 0.2  # overconfident, as built
    assert report.scale > 5
    # Coverage steps by one pixel in n_pixels as the scale passes each
    # pixel's |error| / std (errors are continuous: no ties); the scale is
    # at the step nearest 0.683 (half a step), and rounding may move the
    # pixel at that step across (one more).
    assert report.after[1.0] == pytest.approx(gaussian_coverage(1), abs=1.5 / report.n_pixels)
    assert report.after[2.0] > report.after[1.0]
    # The same numbers as measured afresh with the scale set.
    overconfident.uncertainty_scale = report.scale
    try:
        again = uncertainty_coverage(overconfident, dataset, n_samples=N_SAMPLES, progress=False)
    finally:
        overconfident.uncertainty_scale = 1.0
    assert again[1.0] == pytest.approx(report.after[1.0], abs=1 / report.n_pixels)
    assert again["n"] == report.n_pixels


def test_matching_two_levels_trades_one_sigma_for_two(overconfident, dataset):
    def worst_miss(coverage):
        return max(abs(coverage[k] - gaussian_coverage(k)) / np.sqrt(gaussian_coverage(k) * (1 - gaussian_coverage(k)))
                   for k in (1.0, 2.0))

    one = calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, progress=False)
    both = calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, match=(1, 2), progress=False)
    # These errors have heavy tails: at 1-sigma coverage 0.683, 2-sigma falls short of 0.954.
    assert one.after[2.0] < gaussian_coverage(2) - 0.02
    assert both.scale > one.scale
    assert both.after[2.0] > one.after[2.0] and both.after[1.0] > one.after[1.0]
    assert worst_miss(both.after) < worst_miss(one.after)
    with pytest.raises(ValueError, match="match must hold positive levels"):
        calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, match=(), progress=False)


def test_predict_applies_the_scale_to_the_std_only_and_records_it(overconfident, dataset):
    image = dataset.image(0)
    plain = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
    overconfident.uncertainty_scale = 12.5
    try:
        scaled = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
    finally:
        overconfident.uncertainty_scale = 1.0
    np.testing.assert_allclose(scaled.uncertainty.array, 12.5 * plain.uncertainty.array, rtol=1e-6)
    np.testing.assert_array_equal(scaled.data, plain.data)
    np.testing.assert_array_equal(scaled.samples, plain.samples)  # samples as drawn
    assert plain.meta["RRUSCALE"] == 1.0 and plain.meta["RRUNCERT"] == f"std of {N_SAMPLES} samples"
    assert scaled.meta["RRUSCALE"] == 12.5
    assert scaled.meta["RRUNCERT"] == f"std of {N_SAMPLES} samples, times 12.5 (calibrated)"


def test_backend_std_is_scaled_too(dataset):
    rec = Reconstructor("clean", niter=20)
    psf = dataset.psf(0, full=True)
    plain = rec.predict(dataset.image(0), psf=psf, progress=False)
    rec.uncertainty_scale = 3
    scaled = rec.predict(dataset.image(0), psf=psf, progress=False)
    np.testing.assert_allclose(scaled.uncertainty.array, 3 * plain.uncertainty.array, rtol=1e-6)
    assert scaled.meta["RRUNCERT"] == "from backend clean, times 3 (calibrated)"


def test_the_calibration_is_kept_by_the_model_and_its_file(overconfident, dataset, tmp_path, capsys):
    report = overconfident.calibrate_uncertainty(dataset, n_samples=N_SAMPLES, images=[0, 1], progress=False)
    try:
        assert report.n_images == 2
        assert overconfident.uncertainty_scale == {N_SAMPLES: report.scale}
        assert overconfident.uncertainty_floor == {N_SAMPLES: 0.0}
        overconfident.save(tmp_path / "calibrated.rrm")
    finally:
        overconfident.uncertainty_scale = 1.0
        overconfident.uncertainty_floor = 0.0
    loaded = Reconstructor.load(tmp_path / "calibrated.rrm")
    assert loaded.uncertainty_scale == {N_SAMPLES: report.scale}
    assert loaded.predict(dataset.image(0), n_samples=2, progress=False).meta["RRUSCALE"] == report.scale
    assert main(["info", str(tmp_path / "calibrated.rrm")]) == 0
    out = capsys.readouterr().out
    assert f"uncertainty scale: {N_SAMPLES} samples: {report.scale:.4g} (predict multiplies" in out
    assert f"uncertainty floor: {N_SAMPLES} samples: 0 in normalised units" in out
    # Calibrating a calibrated model replaces its scale rather than compounding it.
    again = calibrate_uncertainty(loaded, dataset, n_samples=N_SAMPLES, images=[0, 1], progress=False)
    assert again.scale == pytest.approx(report.scale, rel=1e-5)
    assert again.before[1.0] == pytest.approx(report.after[1.0], abs=1e-9)


def test_the_scale_and_floor_are_kept_per_number_of_samples(overconfident, dataset, tmp_path):
    image = dataset.image(0)
    plain = {n: overconfident.predict(image, n_samples=n, seed=1, progress=False).uncertainty.array for n in (2, 3)}
    overconfident.uncertainty_scale = 7.0  # by hand: for no recorded number of samples
    try:
        with pytest.warns(UserWarning, match="uncertainty_scale 7 was made for an unrecorded number of samples"):
            few = overconfident.calibrate_uncertainty(dataset, n_samples=2, floor=True, progress=False)
        many = overconfident.calibrate_uncertainty(dataset, n_samples=N_SAMPLES, floor=True, progress=False)
        # The spread of 2 draws is another estimate than that of 4: each count has its own.
        assert few.scale != many.scale
        assert overconfident.uncertainty_scale == {2: few.scale, N_SAMPLES: many.scale}
        assert overconfident.uncertainty_floor == {2: few.floor, N_SAMPLES: many.floor}
        # 3 draws take those of 4, the nearer count by ratio.
        used = {n: overconfident.predict(image, n_samples=n, seed=1, progress=False) for n in (2, 3)}
        overconfident.save(tmp_path / "counts.rrm")
    finally:
        overconfident.uncertainty_scale = 1.0
        overconfident.uncertainty_floor = 0.0
    unit = overconfident.normalisation.scale
    for n, report in ((2, few), (3, many)):
        assert used[n].meta["RRUSCALE"] == report.scale
        assert used[n].meta["RRUFLOOR"] == pytest.approx(report.floor * unit, rel=1e-6)
        np.testing.assert_allclose(used[n].uncertainty.array, np.hypot(report.scale * plain[n], report.floor * unit),
                                   rtol=1e-5)
    loaded = Reconstructor.load(tmp_path / "counts.rrm")
    assert loaded.uncertainty_scale == {2: few.scale, N_SAMPLES: many.scale}
    assert loaded.uncertainty_floor == {2: few.floor, N_SAMPLES: many.floor}
    # A new calibration for one count reports against that count's own calibration.
    again = calibrate_uncertainty(loaded, dataset, n_samples=2, floor=True, progress=False)
    assert again.before[1.0] == pytest.approx(few.after[1.0], abs=1e-9)
    for name, bad in (("uncertainty_scale", {2: 0.0}), ("uncertainty_scale", {0: 2.0}),
                      ("uncertainty_floor", {3: -1.0}), ("uncertainty_floor", {3: None}), ("uncertainty_scale", {})):
        with pytest.raises(ValueError, match=name):
            setattr(loaded, name, bad)


def test_files_without_the_field_load_with_scale_one(overconfident, tmp_path, capsys):
    overconfident.save(tmp_path / "new.rrm")
    doc, tensors = modelfile.load(tmp_path / "new.rrm")
    assert doc["uncertainty_scale"] == 1.0
    del doc["uncertainty_scale"]
    modelfile.save(tmp_path / "old.rrm", doc, tensors)
    assert "uncertainty_scale" not in modelfile.read_header(tmp_path / "old.rrm")
    assert Reconstructor.load(tmp_path / "old.rrm").uncertainty_scale == 1.0
    assert main(["info", str(tmp_path / "old.rrm")]) == 0
    assert "uncertainty scale: 1 (not calibrated" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), float("inf"), True, "2", None])
def test_bad_scales_are_refused(bad, tmp_path, monkeypatch):
    rec = Reconstructor("clean")
    with pytest.raises(ValueError, match="uncertainty_scale must be a positive, finite number"):
        rec.uncertainty_scale = bad
    assert rec.uncertainty_scale == 1.0
    if bad is None or isinstance(bad, float) and not np.isfinite(bad):
        return  # None means "not recorded" in a file; JSON holds no NaN or infinity
    # A crafted file carries a valid checksum; its fields are checked all the same.
    with monkeypatch.context() as m:
        m.setattr(modelfile, "check_uncertainty_scale", lambda value: value)
        rec.uncertainty_scale = bad  # unchecked here
        rec.save(tmp_path / "crafted.rrm")
    with pytest.raises(ModelFileError, match="uncertainty_scale must be a positive"):
        Reconstructor.load(tmp_path / "crafted.rrm")


def test_calibration_needs_a_spread_and_sources(overconfident, dataset, tmp_path):
    with pytest.raises(ValueError, match="use n_samples > 1"):
        calibrate_uncertainty(overconfident, dataset, n_samples=1, progress=False)
    with pytest.raises(CapabilityError, match="gives no uncertainty"):
        calibrate_uncertainty(Reconstructor("test-smooth"), dataset, n_samples=1, progress=False)
    with pytest.raises(ValueError, match="n_images or images, not both"):
        calibrate_uncertainty(overconfident, dataset, n_samples=2, n_images=1, images=[0], progress=False)
    empty = simulate.make_dataset(1, seed=0, out=tmp_path / "empty", workers=1, progress=False, npix=64,
                                  empty_fraction=1.0)
    with pytest.raises(ValueError, match="hold no sources"):
        calibrate_uncertainty(overconfident, empty, n_samples=2, progress=False)
    # A spread of exactly zero cannot be scaled into coverage.
    zero = Reconstructor("test-conv", noise=0.0).fit(dataset, epochs=1, batch_size=4, seed=0, progress=False)
    with pytest.raises(ValueError, match="spread is zero on every source pixel"):
        calibrate_uncertainty(zero, dataset, n_samples=2, progress=False)


def test_threshold_is_the_lowest_of_the_grid_reaching_the_purity():
    from radiorecon.calibration import choose_threshold, detection_curve

    grid = np.array([3.0, 4.0, 5.0])
    reached = choose_threshold(detection_curve(grid, [[5, 5, 0], [5, 0, 0], [4, 0, 1]]))
    assert reached == {"threshold": 4.0, "purity": 1.0, "reached": True}
    missed = choose_threshold(detection_curve(grid, [[5, 10, 0], [5, 5, 0], [4, 4, 1]]))
    assert missed == {"threshold": 4.0, "purity": 0.5, "reached": False}


def test_calibrated_threshold_is_kept_by_the_model_and_its_file(overconfident, dataset, tmp_path):
    from radiorecon.calibration import calibrate_threshold

    grid = [2.5, 4.0, 6.0, 9.0]
    report = calibrate_threshold(overconfident, dataset, grid=grid, target_purity=0.8, progress=False)
    curve = report.curve
    assert list(curve["threshold"]) == grid and report.n_images == 4 and report.n_samples == 1
    assert curve["tp"][0] > 0 and curve["fp"][0] > curve["fp"][-1]
    above = np.flatnonzero(curve["purity"] >= 0.8)
    assert report.reached == bool(above.size)
    assert report.threshold == (grid[above[0]] if above.size else grid[int(np.argmax(curve["purity"]))])
    # The front door keeps it as the catalog threshold, and the model file too.
    rec = overconfident
    assert rec.calibrate_threshold(dataset, images=[0, 1, 2, 3], progress=False).threshold == rec.catalog_threshold
    rec.save(tmp_path / "m.rrm")
    assert Reconstructor.load(tmp_path / "m.rrm").catalog_threshold == rec.catalog_threshold
    with pytest.raises(ValueError, match="target_purity"):
        calibrate_threshold(rec, dataset, target_purity=1.5, progress=False)
    with pytest.raises(ValueError, match="grid"):
        calibrate_threshold(rec, dataset, grid=[], progress=False)


def test_cli_calibrate_writes_the_threshold_and_scale(overconfident, dataset, tmp_path, capsys):
    model = tmp_path / "in.rrm"
    overconfident.save(model)
    out = tmp_path / "calibrated.rrm"
    args = ["calibrate", str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "-o", str(out),
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "catalog threshold:" in printed and "uncertainty scale:" in printed
    rec = Reconstructor.load(out)
    assert rec.catalog_threshold is not None and rec.uncertainty_scale[N_SAMPLES] > 1
    assert main(args) == 1 and "exists" in capsys.readouterr().err


def test_a_floor_covers_what_no_scale_of_the_samples_can(overconfident, dataset, tmp_path, capsys):
    def worst_miss(coverage):
        return max(abs(coverage[k] - gaussian_coverage(k)) / np.sqrt(gaussian_coverage(k) * (1 - gaussian_coverage(k)))
                   for k in (1.0, 2.0))

    scaled = calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, match=(1, 2), progress=False)
    both = calibrate_uncertainty(overconfident, dataset, n_samples=N_SAMPLES, match=(1, 2), floor=True,
                                 progress=False)
    assert scaled.floor == 0 and both.floor > 0
    assert worst_miss(both.after) < worst_miss(scaled.after)
    # A spread of exactly zero: no scale helps, a floor alone does.
    zero = Reconstructor("test-conv", noise=0.0).fit(dataset, epochs=1, batch_size=4, seed=0, progress=False)
    alone = calibrate_uncertainty(zero, dataset, n_samples=2, floor=True, progress=False)
    assert alone.floor > 0 and alone.after[1.0] == pytest.approx(gaussian_coverage(1), abs=0.02)

    image = dataset.image(0)
    plain = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False)
    report = overconfident.calibrate_uncertainty(dataset, n_samples=N_SAMPLES, match=(1, 2), floor=True,
                                                 progress=False)
    try:
        assert (overconfident.uncertainty_scale, overconfident.uncertainty_floor) == ({N_SAMPLES: report.scale},
                                                                                       {N_SAMPLES: report.floor})
        calibrated = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False)
        # The same numbers as measured afresh with both set.
        again = uncertainty_coverage(overconfident, dataset, n_samples=N_SAMPLES, progress=False)
        overconfident.save(tmp_path / "floor.rrm")
    finally:
        overconfident.uncertainty_scale, overconfident.uncertainty_floor = 1.0, 0.0
    for k in (1.0, 2.0):
        assert again[k] == pytest.approx(report.after[k], abs=1.5 / report.n_pixels)
    floor = report.floor * overconfident.normalisation.scale  # in the unit of the result
    np.testing.assert_allclose(calibrated.uncertainty.array, np.hypot(report.scale * plain.uncertainty.array, floor),
                               rtol=1e-5)
    np.testing.assert_array_equal(calibrated.data, plain.data)
    assert calibrated.meta["RRUFLOOR"] == pytest.approx(floor) and plain.meta["RRUFLOOR"] == 0
    assert calibrated.meta["RRUNCERT"].endswith("added in quadrature (calibrated floor)")
    loaded = Reconstructor.load(tmp_path / "floor.rrm")
    assert loaded.uncertainty_floor == {N_SAMPLES: report.floor}
    assert main(["info", str(tmp_path / "floor.rrm")]) == 0
    assert f"uncertainty floor: {N_SAMPLES} samples: {report.floor:.4g} in normalised units" in capsys.readouterr().out
    # Calibrating again without a floor replaces it.
    assert calibrate_uncertainty(loaded, dataset, n_samples=N_SAMPLES, progress=False).floor == 0


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), True, "2", None])
def test_bad_floors_are_refused(bad, tmp_path, monkeypatch):
    rec = Reconstructor("clean")
    assert rec.uncertainty_floor == 0.0
    with pytest.raises(ValueError, match="uncertainty_floor must be a finite number >= 0"):
        rec.uncertainty_floor = bad
    assert rec.uncertainty_floor == 0.0
    if bad is None or isinstance(bad, float) and not np.isfinite(bad):
        return
    with monkeypatch.context() as m:
        m.setattr(modelfile, "check_uncertainty_floor", lambda value: value)
        rec.uncertainty_floor = bad
        rec.save(tmp_path / "crafted.rrm")
    with pytest.raises(ModelFileError, match="uncertainty_floor must be a finite number >= 0"):
        Reconstructor.load(tmp_path / "crafted.rrm")


def test_files_without_a_floor_load_with_none(overconfident, tmp_path, capsys):
    overconfident.save(tmp_path / "new.rrm")
    doc, tensors = modelfile.load(tmp_path / "new.rrm")
    assert doc["uncertainty_floor"] == 0.0
    del doc["uncertainty_floor"]
    modelfile.save(tmp_path / "old.rrm", doc, tensors)
    assert Reconstructor.load(tmp_path / "old.rrm").uncertainty_floor == 0.0
    assert main(["info", str(tmp_path / "old.rrm")]) == 0
    assert "uncertainty floor: 0 (none added)" in capsys.readouterr().out


def test_cli_calibrate_with_a_floor(overconfident, dataset, tmp_path, capsys):
    model = tmp_path / "in.rrm"
    overconfident.save(model)
    out = tmp_path / "calibrated.rrm"
    assert main(["calibrate", str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "-o", str(out),
                 "--floor", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "floor " in printed and "flux error floor:" in printed
    loaded = Reconstructor.load(out)
    assert loaded.uncertainty_floor[N_SAMPLES] > 0 and loaded.flux_error_floor[N_SAMPLES] > 0


def test_cli_calibrate_only_keeps_the_other_calibrations(overconfident, dataset, tmp_path, capsys, monkeypatch):
    from radiorecon import pipeline

    model = tmp_path / "in.rrm"
    overconfident.save(model)
    base = ["calibrate", str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "--no-progress"]
    # The flux error floor alone: the threshold and scale the model carries are kept.
    assert main([*base, "--only", "flux-errors", "-o", str(tmp_path / "flux.rrm")]) == 0
    printed = capsys.readouterr().out
    assert "flux error floor:" in printed and "catalog threshold:" not in printed and "scale:" not in printed
    flux = Reconstructor.load(tmp_path / "flux.rrm")
    assert list(flux.flux_error_floor) == [N_SAMPLES] and flux.flux_error_floor[N_SAMPLES] > 0
    assert flux.catalog_threshold == overconfident.catalog_threshold and flux.uncertainty_scale == 1.0
    # The same floor as the full run's when the model carries that run's threshold and scale.
    assert main([*base, "--floor", "-o", str(tmp_path / "all.rrm")]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "all.rrm"), *base[2:], "--floor", "--only", "flux-errors",
                 "-o", str(tmp_path / "again.rrm")]) == 0
    capsys.readouterr()
    full, again = Reconstructor.load(tmp_path / "all.rrm"), Reconstructor.load(tmp_path / "again.rrm")
    assert again.flux_error_floor[N_SAMPLES] == pytest.approx(full.flux_error_floor[N_SAMPLES])
    # Another number of samples gets its own floor beside it.
    assert main(["calibrate", str(tmp_path / "again.rrm"), *base[2:4], "--samples", "1", "--no-progress",
                 "--only", "flux-errors", "-o", str(tmp_path / "one.rrm")]) == 0
    capsys.readouterr()
    one = Reconstructor.load(tmp_path / "one.rrm").flux_error_floor
    assert set(one) == {1, N_SAMPLES} and one[N_SAMPLES] == again.flux_error_floor[N_SAMPLES] and one[1] > 0
    assert again.uncertainty_floor == full.uncertainty_floor and again.uncertainty_scale == full.uncertainty_scale
    # Names that are no calibration, or clash with the options --only replaces, are refused before any work.
    runs = []
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(k))
    for extra, message in [(["--only", "threshold,scale"], "expected one or more of threshold, uncertainty"),
                           (["--only", ","], "expected one or more of"),
                           (["--only", "threshold", "--reliability"], "either --only or"),
                           (["--only", "uncertainty", "--samples", "1"], "no spread with --samples 1")]:
        assert main([*base, *extra, "-o", str(tmp_path / "refused.rrm")]) == 1
        assert message in capsys.readouterr().err
    assert not runs and not (tmp_path / "refused.rrm").exists()


def test_flux_error_floor_is_chosen_kept_and_used_by_catalogs(overconfident, dataset, tmp_path, capsys):
    from radiorecon.calibration import calibrate_flux_errors
    from radiorecon.catalog import find_sources_in_model

    report = calibrate_flux_errors(overconfident, dataset, n_samples=N_SAMPLES, threshold=4.0, progress=False)
    assert overconfident.flux_error_floor == 0.0  # the function alone changes nothing
    assert report.threshold == 4.0 and report.n_images == 4 and report.after["n"] >= 4
    # The samples' spread (0.01 of the noise) covers almost none of the flux errors; a floor does.
    assert report.before[1.0] < 0.3 and report.floor > 0.1
    assert abs(report.after[1.0] - gaussian_coverage(1)) < abs(report.before[1.0] - gaussian_coverage(1))
    # One run has no spread: the floor alone, still chosen.
    alone = calibrate_flux_errors(overconfident, dataset, n_samples=1, threshold=4.0, progress=False)
    assert alone.floor > 0 and alone.after["n"] == report.after["n"]

    image = dataset.image(0)
    plain = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
    try:
        assert overconfident.calibrate_flux_errors(dataset, n_samples=N_SAMPLES, threshold=4.0,
                                                   progress=False).floor == report.floor
        floored = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
        direct = overconfident.predict(image, progress=False)  # the floor of the nearest count
        # One run's own floor is kept beside the samples' one.
        overconfident.calibrate_flux_errors(dataset, n_samples=1, threshold=4.0, progress=False)
        own = overconfident.predict(image, progress=False)
        again = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False)
        overconfident.save(tmp_path / "f.rrm")
    finally:
        overconfident.flux_error_floor = 0.0
    assert plain.meta["RRFFLOOR"] == 0 and floored.meta["RRFFLOOR"] == report.floor
    assert own.meta["RRFFLOOR"] == alone.floor and again.meta["RRFFLOOR"] == report.floor
    a, b = (find_sources_in_model(r, image, 4.0) for r in (plain, floored))
    assert len(a) == len(b) > 0
    noise = a.meta["noise"].to_value("Jy / beam")
    np.testing.assert_allclose(b["flux_err"].value, np.hypot(a["flux_err"].value, report.floor * noise), rtol=1e-6)
    # Without samples, the floor is the flux error.
    c = find_sources_in_model(direct, image, 4.0)
    np.testing.assert_allclose(c["flux_err"].value, report.floor * noise)
    assert np.all(np.isnan(find_sources_in_model(overconfident.predict(image, progress=False), image,
                                                 4.0)["flux_err"]))
    assert Reconstructor.load(tmp_path / "f.rrm").flux_error_floor == {1: alone.floor, N_SAMPLES: report.floor}
    assert main(["info", str(tmp_path / "f.rrm")]) == 0
    assert (f"flux error floor: 1 sample: {alone.floor:.4g}; {N_SAMPLES} samples: {report.floor:.4g} x the dirty "
            "image's noise") in capsys.readouterr().out
    with pytest.raises(ValueError, match="match must hold positive levels"):
        calibrate_flux_errors(overconfident, dataset, match=(0,), progress=False)
    with pytest.raises(ValueError, match="threshold must be a positive"):
        calibrate_flux_errors(overconfident, dataset, threshold=-1, progress=False)


@pytest.mark.parametrize("bad", [-1.0, True, "2", None, {2: -1.0}, {2: None}, {0: 1.0}, {"1.5": 1.0}, {}])
def test_bad_flux_error_floors_are_refused(bad):
    rec = Reconstructor("clean")
    assert rec.flux_error_floor == 0.0
    with pytest.raises(ValueError, match="flux_error_floor"):
        rec.flux_error_floor = bad
    assert rec.flux_error_floor == 0.0


def test_detection_probability_is_calibrated_on_snr_and_kept(overconfident, dataset, tmp_path, capsys):
    from radiorecon.calibration import calibrate_detection_probability
    from radiorecon.catalog import calibrated_probability, find_sources_in_model

    # A low threshold, so that some detections are noise.
    report = calibrate_detection_probability(overconfident, dataset, n_samples=N_SAMPLES, threshold=2.0,
                                             progress=False)
    assert overconfident.detection_calibration is None
    assert report.n_detections > 4 and report.threshold == 2.0
    a, b, c = (*report.coefficients, 1.0)[:3]
    assert b > 0 and c >= 0  # brighter detections are likelier real
    image = dataset.image(0)
    plain = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
    try:
        assert overconfident.calibrate_detection_probability(
            dataset, n_samples=N_SAMPLES, threshold=2.0, progress=False).coefficients == report.coefficients
        calibrated = overconfident.predict(image, n_samples=N_SAMPLES, seed=1, progress=False, return_samples=True)
        direct = overconfident.predict(image, progress=False)
        overconfident.save(tmp_path / "p.rrm")
    finally:
        overconfident.detection_calibration = None
    assert "RRDCAL" not in plain.meta and json.loads(calibrated.meta["RRDCAL"]) == report.coefficients
    before, after = (find_sources_in_model(r, image, 2.0) for r in (plain, calibrated))
    assert len(before) == len(after) > 0
    expected = before["detection_probability"] ** c / (1 + np.exp(-(a + b * np.log(np.asarray(before["snr"])))))
    np.testing.assert_allclose(after["detection_probability"], expected)
    np.testing.assert_allclose(calibrated_probability(before, report.coefficients), expected)
    # One run: the calibrated probability alone.
    one = find_sources_in_model(direct, image, 2.0)
    np.testing.assert_allclose(one["detection_probability"],
                               1 / (1 + np.exp(-(a + b * np.log(np.asarray(one["snr"]))))))
    # Kept for the number of samples it was fitted with.
    assert Reconstructor.load(tmp_path / "p.rrm").detection_calibration == {N_SAMPLES: report.coefficients}
    assert main(["info", str(tmp_path / "p.rrm")]) == 0
    shown = capsys.readouterr().out.split("detection probability:")[1].splitlines()[0]
    assert shown.startswith(f" {N_SAMPLES} samples: ") and "(calibrated; other counts use the nearest)" in shown
    for bad in ([1.0], [1.0, float("nan")], "ab", [True, 1.0], [1.0, 2.0, -0.5], [1.0, 2.0, 1.0, 1.0],
                {5: [1.0]}):
        with pytest.raises(ValueError, match="detection_calibration must be two or three finite numbers"):
            overconfident.detection_calibration = bad
    for bad in ({0: [1.0, 2.0]}, {"5.5": [1.0, 2.0]}, {True: [1.0, 2.0]}, {}):
        with pytest.raises(ValueError, match="sample count"):
            overconfident.detection_calibration = bad
    assert overconfident.detection_calibration is None


def test_detection_probability_is_calibrated_per_number_of_samples(overconfident, dataset, tmp_path):
    from radiorecon.calibration import calibrate_detection_probability

    # 2 and 10 sort one way as numbers and the other as the file's string keys.
    few, many = (calibrate_detection_probability(overconfident, dataset, n_samples=n, threshold=2.0,
                                                 progress=False) for n in (2, 10))
    # The fraction of 2 draws is coarser than that of 10: it tells less, and the fit differs.
    assert few.coefficients != many.coefficients
    image = dataset.image(0)
    try:
        overconfident.detection_calibration = [0.5, 1.0]  # a file's single list, count unknown: replaced
        with pytest.warns(UserWarning, match=r"detection_calibration \[0.5, 1.0\] was made for an unrecorded"):
            overconfident.calibrate_detection_probability(dataset, n_samples=10, threshold=2.0, progress=False)
        overconfident.calibrate_detection_probability(dataset, n_samples=2, threshold=2.0, progress=False)
        assert overconfident.detection_calibration == {2: few.coefficients, 10: many.coefficients}
        used = {n: json.loads(overconfident.predict(image, n_samples=n, seed=1, progress=False).meta["RRDCAL"])
                for n in (1, 2, 4, 5, 10, 20)}
        overconfident.save(tmp_path / "n.rrm")
        # A threshold chosen anew (2.1 is on no grid) makes other catalogs: their calibrations go.
        overconfident.catalog_threshold = 2.1
        overconfident.calibrate_threshold(dataset, n_samples=N_SAMPLES, progress=False)
        assert overconfident.detection_calibration is None
    finally:
        overconfident.detection_calibration = None
        overconfident.catalog_threshold = None
    # Each count its own; others the nearest by ratio (4 takes 2's, 5 takes 10's).
    assert used == {1: few.coefficients, 2: few.coefficients, 4: few.coefficients, 5: many.coefficients,
                    10: many.coefficients, 20: many.coefficients}
    doc = modelfile.read_header(tmp_path / "n.rrm")
    assert doc["detection_calibration"] == {"2": few.coefficients, "10": many.coefficients}
    assert Reconstructor.load(tmp_path / "n.rrm").detection_calibration == {2: few.coefficients,
                                                                            10: many.coefficients}
    # Equally near by ratio: the larger count, whose fraction is the finer.
    assert modelfile.for_sample_count({2: [1.0, 2.0], 8: [3.0, 4.0]}, 4) == [3.0, 4.0]
    assert modelfile.for_sample_count([1.0, 2.0], 7) == [1.0, 2.0]


def test_detection_probability_fit_recovers_how_much_the_fraction_of_samples_tells():
    from astropy.table import Table

    from radiorecon.calibration import fit_detection_probability
    from radiorecon.catalog import calibrated_probability

    rng = np.random.default_rng(3)
    n = 20000
    snr = rng.uniform(2.0, 8.0, n)
    fraction = rng.integers(1, 21, n) / 20
    truth = [-2.0, 2.5, 0.4]
    catalog = Table({"snr": snr, "detection_probability": fraction})
    real = rng.random(n) < calibrated_probability(catalog, truth)
    a, b, c = fit_detection_probability(snr, fraction, real)
    assert abs(a - truth[0]) < 0.4 and abs(b - truth[1]) < 0.25 and abs(c - truth[2]) < 0.05, (a, b, c)
    # The old form, fraction times the logistic, is c = 1.
    np.testing.assert_allclose(calibrated_probability(catalog, [a, b]), calibrated_probability(catalog, [a, b, 1.0]))
    # Fractions that never vary say nothing about c: two coefficients, as before.
    ones = fit_detection_probability(snr, np.ones(n), real)
    assert len(ones) == 2 and ones[1] > 0


def test_detection_probability_fit_bounds_the_power_and_keeps_the_mean():
    from astropy.table import Table

    from radiorecon.calibration import fit_detection_probability
    from radiorecon.catalog import calibrated_probability

    rng = np.random.default_rng(5)
    n = 4000
    snr = rng.uniform(3.0, 6.0, n)
    fraction = rng.integers(1, 6, n) / 5
    # Detections found in fewer of 5 draws are the likelier real: the best power is below 0.
    p_true = np.minimum(1.0, (1.3 - 0.5 * fraction) / (1 + np.exp(-(-6.0 + 4.0 * np.log(snr)))))
    real = rng.random(n) < p_true
    a, b, c = fit_detection_probability(snr, fraction, real)
    assert c == 0.0 and b > 0
    # With c at its bound, a and b are fitted for it: as many real detections as the probabilities say.
    p = calibrated_probability(Table({"snr": snr, "detection_probability": fraction}), [a, b, c])
    assert abs(p.mean() - real.mean()) < 0.005


def test_cli_calibrate_reliability(overconfident, dataset, tmp_path, capsys):
    model = tmp_path / "in.rrm"
    overconfident.save(model)
    out = tmp_path / "calibrated.rrm"
    assert main(["calibrate", str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "-o", str(out),
                 "--reliability", "--no-uncertainty", "--no-progress"]) == 0
    assert "detection probability: a " in capsys.readouterr().out
    calibrated = Reconstructor.load(out)
    assert list(calibrated.detection_calibration) == [N_SAMPLES]
    # Another threshold: the calibration of the old one's detections goes, and the user is told.
    calibrated.catalog_threshold = 2.1  # on no grid
    calibrated.save(tmp_path / "moved.rrm")
    assert main(["calibrate", str(tmp_path / "moved.rrm"), "--data", str(dataset.path), "--samples", str(N_SAMPLES),
                 "-o", str(tmp_path / "dropped.rrm"), "--no-uncertainty", "--no-progress"]) == 0
    assert "its calibration was for the old threshold and is dropped" in capsys.readouterr().out
    assert Reconstructor.load(tmp_path / "dropped.rrm").detection_calibration is None


def test_a_restored_image_catalog_takes_the_flux_error_floor(dataset):
    from radiorecon.catalog import find_sources_in_model

    rec = Reconstructor("clean", niter=50)
    image, psf = dataset.image(0), dataset.psf(0, full=True)
    plain = rec.predict(image, psf=psf, progress=False)
    rec.flux_error_floor = 1.5
    floored = rec.predict(image, psf=psf, progress=False)
    a, b = (find_sources_in_model(r, image, 4.0) for r in (plain, floored))
    assert len(a) == len(b) > 0 and a.meta["detected_in"] == "the method's restored image"
    assert np.all(np.isnan(a["flux_err"]))
    np.testing.assert_allclose(b["flux_err"].value, 1.5 * b.meta["noise"].to_value("Jy / beam"))


def test_reusing_predictions_runs_each_seeded_prediction_once(overconfident, dataset, monkeypatch):
    from radiorecon import pipeline

    runs = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(k["seed"]) or real_run(*a, **k))
    dirty = dataset.image(0)
    kept = (overconfident.uncertainty_scale, overconfident.uncertainty_floor)
    try:
        with overconfident.reusing_predictions() as rec:
            a = rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            a.data[:] = 0  # the caller's arrays are its own: nothing kept changes
            rec.uncertainty_scale, rec.uncertainty_floor = 3.0, 0.0
            b = rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            assert runs == [5]
            assert np.array_equal(b.samples, a.samples) and not np.array_equal(b.data, a.data)
            np.testing.assert_allclose(b.data, np.median(b.samples, axis=0), rtol=1e-6)
            # The calibration is applied afresh to the kept outputs.
            np.testing.assert_allclose(b.uncertainty.array, 3.0 * np.std(b.samples, axis=0, ddof=1), rtol=1e-5)
            # Another seed, sample count or setting, another image, or no seed: predicted again.
            rec.predict(dirty, n_samples=N_SAMPLES, seed=6, return_samples=True, progress=False)
            rec.predict(dirty, n_samples=N_SAMPLES + 1, seed=5, return_samples=True, progress=False)
            rec.predict(dataset.image(1), n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            rec.predict(dirty, n_samples=N_SAMPLES, seed=None, return_samples=True, progress=False)
            rec.predict(dirty, n_samples=N_SAMPLES, seed=None, return_samples=True, progress=False)
            rec.set_params(noise=0.02)
            rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            assert runs == [5, 6, 5, 5, None, None, 5]
            with rec.reusing_predictions():  # nested: it keeps to the outer block's outputs
                rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
            assert len(runs) == 7
        rec.predict(dirty, n_samples=N_SAMPLES, seed=5, return_samples=True, progress=False)
        assert len(runs) == 8  # the block is over: nothing is kept
    finally:
        overconfident.set_params(noise=0.01)
        overconfident.uncertainty_scale, overconfident.uncertainty_floor = kept


def test_predictions_kept_on_disk_serve_a_later_block(overconfident, dataset, tmp_path, monkeypatch):
    import torch

    from radiorecon import pipeline

    runs = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(k["n_samples"]) or real_run(*a, **k))
    dirty, cache = dataset.image(1), tmp_path / "draws"
    fresh = overconfident.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
    with overconfident.reusing_predictions(cache=cache) as rec:
        rec.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
        assert rec._kept_outputs == {}  # on disk, not in memory
        rec.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
    (stored,) = cache.iterdir()
    assert runs == [N_SAMPLES, N_SAMPLES] and stored.suffix == ".npz"
    # Another block (as another process would be): read from disk, not predicted;
    # the same draws and, after the model's calibration, the same result.
    with overconfident.reusing_predictions(cache=cache) as rec:
        again = rec.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
        fewer = rec.predict(dirty, n_samples=2, seed=4, return_samples=True, progress=False)
        seconds, from_cache = rec._last_run
    assert runs == [N_SAMPLES, N_SAMPLES] and from_cache and seconds is None  # cut from the stored draws
    np.testing.assert_array_equal(again.samples, fresh.samples)
    np.testing.assert_array_equal(again.data, fresh.data)
    np.testing.assert_array_equal(again.uncertainty.array, fresh.uncertainty.array)
    np.testing.assert_array_equal(fewer.samples, fresh.samples[:2])
    assert again.meta == fresh.meta
    # Other weights are another model: predicted again, beside the first file.
    net = overconfident.backend.net
    kept = net.bias.detach().clone()
    try:
        with torch.no_grad():
            net.bias.add_(1e-3)
        with overconfident.reusing_predictions(cache=cache) as rec:
            rec.predict(dirty, n_samples=N_SAMPLES, seed=4, progress=False)
    finally:
        with torch.no_grad():
            net.bias.copy_(kept)
    assert runs == [N_SAMPLES] * 3 and len(list(cache.iterdir())) == 2
    # So are other settings of the backend.
    try:
        with overconfident.reusing_predictions(cache=cache) as rec:
            rec.set_params(noise=0.02)
            rec.predict(dirty, n_samples=N_SAMPLES, seed=4, progress=False)
    finally:
        overconfident.set_params(noise=0.01)
    assert runs == [N_SAMPLES] * 4 and len(list(cache.iterdir())) == 3
    # A damaged file is predicted again, and replaced: cut short, with a
    # compressed member garbled, or not a prediction file at all.
    whole = stored.read_bytes()
    middle = len(whole) // 2
    for damaged in (whole[:middle], whole[:middle] + bytes(64) + whole[middle + 64:], b"not a prediction"):
        stored.write_bytes(damaged)
        with overconfident.reusing_predictions(cache=cache) as rec:
            again = rec.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
        np.testing.assert_array_equal(again.samples, fresh.samples)
    assert runs == [N_SAMPLES] * 7 and pipeline.load_outputs(stored, 1)[0] == N_SAMPLES
    # So is a file of another radiorecon version.
    monkeypatch.setattr(pipeline, "__version__", "0.0.1")
    with overconfident.reusing_predictions(cache=cache) as rec:
        rec.predict(dirty, n_samples=N_SAMPLES, seed=4, return_samples=True, progress=False)
    assert runs == [N_SAMPLES] * 8


def test_a_prediction_cache_that_cannot_be_written_costs_no_result(overconfident, dataset, tmp_path, monkeypatch):
    from radiorecon import pipeline
    from radiorecon.exceptions import RadioreconWarning

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "save_outputs", full_disk)
    dirty = dataset.image(0)
    with overconfident.reusing_predictions(cache=tmp_path) as rec:
        with pytest.warns(RadioreconWarning, match="Could not keep this prediction.*in memory instead.*No space"):
            kept = rec.predict(dirty, n_samples=2, seed=1, progress=False)
        # Kept in memory all the same; a block elsewhere inside it is refused.
        np.testing.assert_array_equal(rec.predict(dirty, n_samples=2, seed=1, progress=False).data, kept.data)
        with pytest.raises(ValueError, match="inside a block that keeps its outputs in"):
            with rec.reusing_predictions(cache=tmp_path / "other"):
                pass
    np.testing.assert_array_equal(kept.data, overconfident.predict(dirty, n_samples=2, seed=1, progress=False).data)


def test_cli_calibrate_predicts_each_image_once(overconfident, dataset, tmp_path, monkeypatch, capsys):
    from radiorecon import pipeline

    runs = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(k["seed"]) or real_run(*a, **k))
    model = tmp_path / "in.rrm"
    overconfident.save(model)
    out = tmp_path / "calibrated.rrm"
    assert main(["calibrate", str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "-o", str(out),
                 "--floor", "--reliability", "--no-progress"]) == 0
    # Threshold, uncertainty, reliability and flux errors: one prediction per image.
    assert sorted(runs) == list(range(len(dataset)))
    printed = capsys.readouterr().out
    assert "flux error floor:" in printed
    # With a cache, the same command again (as after an interruption) predicts nothing.
    cached = [str(model), "--data", str(dataset.path), "--samples", str(N_SAMPLES), "--floor", "--reliability",
              "--no-progress", "--cache", str(tmp_path / "draws")]
    assert main(["calibrate", *cached, "-o", str(tmp_path / "a.rrm")]) == 0
    assert len(runs) == 2 * len(dataset) and len(list((tmp_path / "draws").iterdir())) == len(dataset)
    assert main(["calibrate", *cached, "-o", str(tmp_path / "b.rrm")]) == 0
    assert len(runs) == 2 * len(dataset)
    # The same calibration each time (all but the line naming the file written).
    report = printed.splitlines()[:-1]
    assert capsys.readouterr().out.splitlines() == [*report, f"wrote {tmp_path / 'a.rrm'}", *report,
                                                    f"wrote {tmp_path / 'b.rrm'}"]


def test_reused_draws_serve_fewer_samples(overconfident, dataset, monkeypatch):
    from radiorecon import pipeline

    dirty = dataset.image(2)
    two = overconfident.predict(dirty, n_samples=2, seed=3, return_samples=True, progress=False)
    runs = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(k["n_samples"]) or real_run(*a, **k))
    with overconfident.reusing_predictions() as rec:
        five = rec.predict(dirty, n_samples=5, seed=3, return_samples=True, progress=False)
        cut = rec.predict(dirty, n_samples=2, seed=3, progress=False)
        rec.predict(dirty, n_samples=1, seed=3, progress=False)  # one draw is not the first of several
        rec.predict(dirty, n_samples=6, seed=3, progress=False)  # more than were drawn
        rec.predict(dirty, n_samples=6, seed=3, progress=False)
    assert runs == [5, 1, 6]
    np.testing.assert_array_equal(five.samples[:2], two.samples)
    np.testing.assert_allclose(cut.data, two.data, rtol=1e-6)
    np.testing.assert_allclose(cut.uncertainty.array, two.uncertainty.array, rtol=1e-5)
    assert cut.meta["RRNSAMP"] == 2


def test_a_reused_single_draw_keeps_its_samples_when_asked(overconfident, dataset):
    dirty = dataset.image(3)
    with overconfident.reusing_predictions() as rec:
        bare = rec.predict(dirty, seed=2, progress=False)
        kept = rec.predict(dirty, seed=2, return_samples=True, progress=False)
    assert bare.samples is None and kept.samples.shape == (1, *dirty.data.shape)
    np.testing.assert_array_equal(kept.samples[0], bare.data)
