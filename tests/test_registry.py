import subprocess
import sys

import pytest

import radiorecon
from radiorecon import Backend, registry
from radiorecon.exceptions import BackendLoadWarning

from plugins import activate, deactivate, make_distribution

GOOD = """
from radiorecon import Backend, Prediction

class Echo(Backend):
    '''Returns its input unchanged.'''
    capabilities = {"reconstruct"}
    version = "2.1"
    default_config = {"factor": 1.0}

    def predict(self, inputs, *, n_samples=1, psf=None):
        return Prediction(mean=inputs * self.config["factor"])
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    yield tmp_path
    deactivate(["rr_echo", "rr_broken", "rr_notbackend"])


def test_builtin_clean_is_registered_through_entry_points():
    import importlib.metadata

    names = {ep.name for ep in importlib.metadata.entry_points(group="radiorecon.backends")}
    assert "clean" in names
    assert "clean" in radiorecon.available_backends()


def test_listing_imports_neither_torch_nor_backends():
    code = (
        "import sys, radiorecon; names = radiorecon.available_backends(); "
        "assert 'clean' in names, names; "
        "heavy = [m for m in ('torch', 'radiorecon.backends.clean', 'astropy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_third_party_plugin_found_and_described(plugin_dir, monkeypatch):
    make_distribution(plugin_dir, "rr-echo", "0.3", {"echo": "rr_echo:Echo"}, {"rr_echo": GOOD})
    activate(monkeypatch, plugin_dir)
    assert "echo" in radiorecon.available_backends()
    info = radiorecon.backend_info("echo")
    assert info["capabilities"] == ["reconstruct"]
    assert info["version"] == "2.1"
    assert info["description"] == "Returns its input unchanged."
    assert info["default_config"] == {"factor": 1.0}
    assert "rr-echo 0.3" in info["origin"]
    assert issubclass(registry.get_backend("echo"), Backend)


def test_plugin_that_fails_to_import_is_skipped_with_warning(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-broken", "1.4", {"broken": "rr_broken:Thing"},
        {"rr_broken": "raise ImportError('needs libfoo')\n"},
    )
    activate(monkeypatch, plugin_dir)
    assert "broken" in radiorecon.available_backends()  # listing does not import
    with pytest.warns(BackendLoadWarning, match=r"rr-broken 1\.4.*ImportError: needs libfoo"):
        with pytest.raises(ValueError, match="Unknown radiorecon backend 'broken'"):
            registry.get_backend("broken")
    assert "broken" not in radiorecon.available_backends()
    # The package keeps working: other backends still load.
    assert registry.get_backend("clean").__name__ == "CleanBackend"


def test_plugin_whose_object_is_not_a_backend(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-notbackend", "0.1", {"notbackend": "rr_notbackend:thing"},
        {"rr_notbackend": "thing = object()\n"},
    )
    activate(monkeypatch, plugin_dir)
    with pytest.warns(BackendLoadWarning, match="not a subclass of radiorecon.Backend"):
        with pytest.raises(ValueError):
            radiorecon.Reconstructor("notbackend")


def test_unknown_name_lists_names_and_closest_match():
    with pytest.raises(ValueError) as err:
        radiorecon.Reconstructor("claen")
    message = str(err.value)
    assert "Did you mean 'clean'?" in message
    assert "Available backends:" in message and "clean" in message


def test_runtime_registration_rules():
    class Local(Backend):
        capabilities = {"reconstruct"}

    with pytest.raises(TypeError, match="not a subclass"):
        registry.register_backend("local", object)
    registry.register_backend("local", Local)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register_backend("local", Local)
        with pytest.raises(ValueError, match="already registered"):
            registry.register_backend("clean", Local)
        assert registry.get_backend("local") is Local
        assert registry.name_of(Local) == "local"
    finally:
        registry.unregister_backend("local")
    with pytest.raises(ValueError):
        registry.unregister_backend("local")
