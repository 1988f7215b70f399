"""The worked third-party plugin in examples/, discovered as pip would install it."""

import pathlib
import shutil
import tomllib

import numpy as np
import pytest
from scipy.signal import fftconvolve

import radiorecon
from radiorecon import Reconstructor
from radiorecon.cli import main

from conftest import gaussian_psf
from plugins import activate, deactivate

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "wiener_plugin"


@pytest.fixture
def wiener(tmp_path, monkeypatch):
    """Install examples/wiener_plugin: its package plus a dist-info made from its pyproject."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "radiorecon_wiener", site / "radiorecon_wiener")
    dist = site / f"radiorecon_wiener-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = ["[radiorecon.backends]"]
    for name, value in project["entry-points"]["radiorecon.backends"].items():
        lines.append(f"{name} = {value}")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    activate(monkeypatch, site)
    yield
    deactivate(["radiorecon_wiener"])


def _observations(n, rng, size=64):
    psf = gaussian_psf((size, size), 2.0) * (1 + 0.3 * np.cos(np.arange(size) / 2.0))
    sky = np.zeros((n, size, size), np.float32)
    for image in sky:
        for _ in range(3):
            image[rng.integers(8, size - 8), rng.integers(8, size - 8)] = rng.uniform(1, 5)
    dirty = np.stack([fftconvolve(s, psf, mode="same") for s in sky])
    dirty += rng.normal(0, 0.1, dirty.shape)
    return dirty.astype(np.float32), sky


def test_plugin_end_to_end(wiener, tmp_path):
    assert "wiener" in radiorecon.available_backends()
    info = radiorecon.backend_info("wiener")
    assert "radiorecon-wiener 0.1.0" in info["origin"]
    assert info["capabilities"] == ["needs_training", "paired", "reconstruct"]

    rng = np.random.default_rng(0)
    dirty, sky = _observations(120, rng)
    test_dirty, test_sky = _observations(10, rng)
    rec = Reconstructor("wiener", size=64)
    rec.fit(dirty, sky, epochs=1, batch_size=40, seed=0, progress=False, validation=(test_dirty, test_sky))

    predicted = rec.predict(list(test_dirty), progress=False)
    error = np.mean([(p.data - s) ** 2 for p, s in zip(predicted, test_sky)])
    # The learned filter deconvolves: far closer to the sky than the dirty image is.
    assert error < 0.5 * np.mean((test_dirty - test_sky) ** 2)
    assert predicted[0].uncertainty is None

    path = tmp_path / "wiener.rrm"
    rec.save(path)
    again = Reconstructor.load(path)
    np.testing.assert_array_equal(again.predict(test_dirty[0]).data, predicted[0].data)
    # Larger images go through in tiles.
    big = np.tile(test_dirty[0], (2, 3))
    assert again.predict(big, progress=False).data.shape == (128, 192)
    assert main(["info", str(path)]) == 0


def test_plugin_refuses_wrong_training_size(wiener):
    rec = Reconstructor("wiener", size=32)
    with pytest.raises(ValueError, match="trains on 32x32 images"):
        rec.fit(np.zeros((4, 16, 16)), np.zeros((4, 16, 16)), progress=False)
