import subprocess
import sys

import pytest

import radiorecon
from radiorecon import Backend, registry
from radiorecon.exceptions import BackendLoadWarning, RadioreconError

from plugins import ECHO as GOOD, activate, deactivate, make_distribution


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    before = set(sys.modules)
    yield tmp_path
    deactivate([m for m in set(sys.modules) - before if m.startswith("rr_")])


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
        with pytest.raises(ValueError, match=r"'broken' from distribution rr-broken 1\.4 cannot be loaded \(ImportError: needs libfoo\)"):
            registry.get_backend("broken")
    with pytest.raises(ValueError, match="needs libfoo"):  # the reason is kept, the warning given once
        radiorecon.backend_info("broken")
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


def test_plugin_that_exits_at_import_is_skipped(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-exits", "0.2", {"exits": "rr_exits:Thing"},
        {"rr_exits": "import sys\nsys.exit('no licence server')\n"},
    )
    activate(monkeypatch, plugin_dir)
    with pytest.warns(BackendLoadWarning, match=r"rr-exits 0\.2: SystemExit: no licence server"):
        with pytest.raises(ValueError, match="cannot be loaded"):
            radiorecon.Reconstructor("exits")
    assert radiorecon.backend_info("clean")["name"] == "clean"


def test_keyboard_interrupt_in_a_plugin_still_stops_the_program(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-interrupted", "0.1", {"interrupted": "rr_interrupted:Thing"},
        {"rr_interrupted": "raise KeyboardInterrupt\n"},
    )
    activate(monkeypatch, plugin_dir)
    with pytest.raises(KeyboardInterrupt):
        registry.get_backend("interrupted")


def test_backend_status_reports_broken_plugins_and_describes_the_rest(plugin_dir, monkeypatch):
    make_distribution(plugin_dir, "rr-echo", "0.3", {"echo": "rr_echo:Echo"}, {"rr_echo": GOOD})
    make_distribution(
        plugin_dir, "rr-exits", "0.2", {"exits": "rr_exits:Thing"},
        {"rr_exits": "import sys\nsys.exit(3)\n"},
    )
    odd = GOOD.replace("class Echo", "class Odd").replace('version = "2.1"', "version = Version()")
    make_distribution(
        plugin_dir, "rr-odd", "0.1", {"odd": "rr_odd:Odd"},
        {"rr_odd": "class Version:\n    def __str__(self):\n        raise RuntimeError('no version')\n" + odd},
    )
    activate(monkeypatch, plugin_dir)
    rows = {row["name"]: row for row in registry.backend_status()}  # no warning: errors are returned
    assert rows["exits"] == {
        "name": "exits", "origin": "distribution rr-exits 0.2", "status": "error",
        "error": "SystemExit: 3", "ignored": [],
    }
    assert rows["odd"]["status"] == "error" and rows["odd"]["error"] == "RuntimeError: no version"
    assert rows["echo"] == {**radiorecon.backend_info("echo"), "status": "ok", "error": None, "ignored": []}
    assert rows["clean"]["status"] == "ok" and rows["clean"]["origin"].startswith("distribution radiorecon ")
    assert rows["test-conv"]["origin"] == "registered at run time"
    assert list(rows) == sorted(rows)
    assert "exits" not in radiorecon.available_backends()


FAILS_TO_START = GOOD.replace("class Echo", "class Starter") + """
    def check_config(self):
        if self.config["factor"] < 0:
            raise ValueError("factor must be >= 0")
        if self.config["factor"] == 7:
            raise SystemExit("bye")
        if self.config["factor"] > 1:
            raise RuntimeError("no licence for factors above 1")
"""


def test_create_backend_names_the_backend_when_its_constructor_fails(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-starter", "1.0", {"starter": "rr_starter:Starter"},
        {"rr_starter": FAILS_TO_START},
    )
    activate(monkeypatch, plugin_dir)
    assert registry.create_backend("starter", factor=0.5).config["factor"] == 0.5
    with pytest.raises(RadioreconError) as err:
        registry.create_backend("starter", factor=2.0)
    assert str(err.value) == (
        "The radiorecon backend 'starter' (distribution rr-starter 1.0) failed to start: "
        "RuntimeError: no licence for factors above 1"
    )
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(RadioreconError, match="failed to start: SystemExit: bye"):
        registry.create_backend("starter", factor=7)
    # Configuration errors are the user's to fix: they come through unchanged.
    with pytest.raises(ValueError, match="factor must be >= 0") as err:
        registry.create_backend("starter", factor=-1.0)
    assert type(err.value) is ValueError
    with pytest.raises(TypeError, match="Unknown configuration") as err:
        registry.create_backend("starter", fcator=1.0)
    assert type(err.value) is TypeError
    with pytest.raises(ValueError, match="Unknown radiorecon backend 'startr'"):
        registry.create_backend("startr")


def test_third_party_entry_point_cannot_replace_a_builtin(plugin_dir, monkeypatch):
    make_distribution(
        plugin_dir, "rr-evil", "6.6", {"clean": "rr_evil:Echo"}, {"rr_evil": GOOD},
    )
    activate(monkeypatch, plugin_dir)  # first on sys.path, so first in entry_points()
    with pytest.warns(BackendLoadWarning, match=r"distribution rr-evil 6\.6 declares .* 'clean'.*built-in"):
        assert "clean" in radiorecon.available_backends()
    assert registry.get_backend("clean").__name__ == "CleanBackend"
    assert "rr_evil" not in sys.modules
    clean, = (row for row in registry.backend_status() if row["name"] == "clean")
    assert clean["ignored"] == ["distribution rr-evil 6.6"]


def test_same_name_from_two_distributions_resolved_by_distribution_name(tmp_path, plugin_dir, monkeypatch):
    zeta, alpha = tmp_path / "zeta", tmp_path / "alpha"
    make_distribution(zeta, "rr-zeta", "1.0", {"twin": "rr_zeta:Echo"}, {"rr_zeta": GOOD})
    make_distribution(alpha, "rr-alpha", "1.0", {"twin": "rr_alpha:Echo"}, {"rr_alpha": GOOD})
    monkeypatch.syspath_prepend(str(alpha))
    activate(monkeypatch, zeta)  # rr-zeta comes first on sys.path
    with pytest.warns(BackendLoadWarning, match=r"'twin': using distribution rr-alpha 1\.0 .* ignoring distribution rr-zeta 1\.0"):
        assert registry.get_backend("twin").__module__ == "rr_alpha"


def test_package_in_working_directory_does_not_shadow_plugin(tmp_path, plugin_dir, monkeypatch):
    site, work = tmp_path / "site", tmp_path / "work"
    make_distribution(site, "rr-shadowed", "1.0", {"shadowed": "rr_shadowed:Echo"}, {"rr_shadowed": GOOD})
    # A same-named package in the working directory, e.g. a copy of the plugin's sources.
    (work / "rr_shadowed").mkdir(parents=True)
    (work / "rr_shadowed" / "__init__.py").write_text(GOOD.replace('"2.1"', '"0.0-copy"'))
    activate(monkeypatch, site)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", ["", *sys.path])  # as under python -c and at the prompt
    path = list(sys.path)
    cls = registry.get_backend("shadowed")
    assert cls.version == "2.1"
    assert sys.modules["rr_shadowed"].__file__ == str(site / "rr_shadowed.py")
    assert sys.path == path


def test_plugin_found_only_in_working_directory_is_loaded(tmp_path, plugin_dir, monkeypatch):
    # A distribution installed in, or developed from, the working directory.
    make_distribution(tmp_path, "rr-local", "1.0", {"local-echo": "rr_local:Echo"}, {"rr_local": GOOD})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    registry.refresh()
    assert registry.get_backend("local-echo").version == "2.1"
    assert sys.path[0] == ""
