"""Make installed-looking distributions on the fly: a dist-info with entry points."""

import importlib
import sys
import textwrap

# A working plugin: a backend that returns its input.
ECHO = """
from radiorecon import Backend, Prediction

class Echo(Backend):
    '''Returns its input unchanged.'''
    capabilities = {"reconstruct"}
    version = "2.1"
    default_config = {"factor": 1.0}

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        return Prediction(mean=inputs * self.config["factor"])
"""


def make_distribution(root, name, version, entry_points, modules=None):
    """Write ``name-version.dist-info`` (and module files) under ``root``.

    Parameters
    ----------
    entry_points : dict
        ``{backend_name: "module:attr"}`` in the ``radiorecon.backends`` group.
    modules : dict
        ``{module_name: source}`` written next to the dist-info.
    """
    dist = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[radiorecon.backends]\n{lines}\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return dist


def activate(monkeypatch, root):
    """Put ``root`` on sys.path and make radiorecon rescan entry points."""
    from radiorecon import registry

    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    registry.refresh()


def deactivate(modules=()):
    from radiorecon import registry

    for module in modules:
        sys.modules.pop(module, None)
    registry.refresh()
