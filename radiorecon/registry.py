"""Discovery of reconstruction backends through entry points.

Backends, the built-in ones included, are registered in the entry-point group
``radiorecon.backends``; the entry point's name is the backend's name and its
value points at a `~radiorecon.Backend` subclass. Entry points are read with
:mod:`importlib.metadata` from the standard library. Listing names imports no
backend module (and so neither torch); a backend class is imported the first
time it is asked for.
"""

import difflib
import importlib.metadata
import logging
import warnings

from .exceptions import BackendLoadWarning

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_backends",
    "get_backend",
    "backend_info",
    "name_of",
    "register_backend",
    "unregister_backend",
    "refresh",
]

ENTRY_POINT_GROUP = "radiorecon.backends"

log = logging.getLogger("radiorecon")

# Entry points found on the last scan, by name.
_entry_points = None
# Classes registered at run time with register_backend, by name.
_runtime = {}
# Classes already imported from entry points, by name.
_loaded = {}
# Names whose entry point failed to load, so the warning is given once.
_broken = set()


def _scan():
    global _entry_points
    if _entry_points is None:
        found = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found and found[ep.name].value != ep.value:
                warnings.warn(
                    f"Two installed distributions register the radiorecon backend "
                    f"{ep.name!r} ({_origin(found[ep.name])} and {_origin(ep)}); "
                    f"using the first.",
                    BackendLoadWarning,
                    stacklevel=3,
                )
                continue
            found.setdefault(ep.name, ep)
        _entry_points = found
    return _entry_points


def _origin(ep):
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"entry point {ep.value!r}"
    return f"distribution {dist.metadata['Name']} {dist.version}"


def refresh():
    """Forget what was discovered, so that newly installed plugins are found.

    Classes registered with `register_backend` are kept.
    """
    global _entry_points
    _entry_points = None
    _loaded.clear()
    _broken.clear()


def available_backends():
    """Names of the installed backends, sorted.

    This reads the entry points only: no backend is imported. A backend whose
    plugin turns out to be broken when loaded is dropped from later listings.

    Returns
    -------
    names : list of str
    """
    names = (set(_scan()) | set(_runtime)) - _broken
    return sorted(names)


def _load(name):
    from .backend import Backend

    ep = _scan()[name]
    try:
        obj = ep.load()
    except Exception as exc:  # any failure inside third-party code
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(obj, type) and issubclass(obj, Backend):
            return obj
        reason = f"{ep.value!r} is {obj!r}, not a subclass of radiorecon.Backend"
    _broken.add(name)
    warnings.warn(
        f"Skipping radiorecon backend {name!r} from {_origin(ep)}: {reason}",
        BackendLoadWarning,
        stacklevel=4,
    )
    return None


def _unknown(name):
    names = available_backends()
    msg = f"Unknown radiorecon backend {name!r}."
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    msg += f" Available backends: {', '.join(names) if names else 'none'}."
    return ValueError(msg)


def get_backend(name):
    """Return the backend class registered under ``name``.

    Parameters
    ----------
    name : str
        Entry-point name, as listed by `available_backends`.

    Returns
    -------
    cls : type
        A subclass of `~radiorecon.Backend`.

    Raises
    ------
    ValueError
        If no backend of that name is installed, or its plugin failed to load.
        The message lists the available names and the closest match.
    """
    if name in _runtime:
        return _runtime[name]
    if name in _loaded:
        return _loaded[name]
    if name in _broken or name not in _scan():
        raise _unknown(name)
    cls = _load(name)
    if cls is None:
        raise _unknown(name)
    _loaded[name] = cls
    log.debug("loaded backend %r from %s", name, cls.__module__)
    return cls


def backend_info(name):
    """Describe a backend: its class, version, capabilities and default config.

    Imports the backend on demand.

    Parameters
    ----------
    name : str

    Returns
    -------
    info : dict
        Keys ``name``, ``description``, ``version``, ``capabilities`` (sorted
        list), ``tile_shape``, ``default_config``, ``origin``.
    """
    cls = get_backend(name)
    doc = (cls.__doc__ or "").strip().splitlines()
    if name in _runtime:
        origin = "registered at run time"
    else:
        origin = _origin(_scan()[name])
    return {
        "name": name,
        "description": doc[0] if doc else "",
        "version": str(cls.version),
        "capabilities": sorted(cls.capabilities),
        "tile_shape": cls.tile_shape,
        "default_config": dict(cls.default_config),
        "origin": origin,
    }


def name_of(cls):
    """The registered name of a backend class, or its class name if it has none."""
    for name, known in _runtime.items():
        if known is cls:
            return name
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, ep in _scan().items():
        if ep.value.replace(" ", "") == target:
            return name
    return cls.__name__


def register_backend(name, cls, *, force=False):
    """Register a backend class at run time, without an entry point.

    Meant for interactive work and tests; a distributed backend should declare
    an entry point in the group ``radiorecon.backends`` instead, so that model
    files that use it can be loaded in any session.

    Parameters
    ----------
    name : str
    cls : type
        A subclass of `~radiorecon.Backend`.
    force : bool
        Replace an existing registration of the same name.
    """
    from .backend import Backend

    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{cls!r} is not a subclass of radiorecon.Backend")
    if not force and (name in _runtime or name in _scan()):
        raise ValueError(
            f"A radiorecon backend named {name!r} is already registered; "
            "pass force=True to replace it."
        )
    _runtime[name] = cls


def unregister_backend(name):
    """Remove a backend registered with `register_backend`."""
    if name not in _runtime:
        raise ValueError(f"No backend named {name!r} was registered at run time.")
    del _runtime[name]
