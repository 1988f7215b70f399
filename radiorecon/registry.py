"""Discovery of reconstruction backends through entry points.

Backends, the built-in ones included, are registered in the entry-point group
``radiorecon.backends``; the entry point's name is the backend's name and its
value points at a `~radiorecon.Backend` subclass. Entry points are read with
:mod:`importlib.metadata` from the standard library. Listing names imports no
backend module (and so neither torch); a backend class is imported the first
time it is asked for.

A plugin is third-party code, and it cannot break radiorecon:

- A plugin that fails to import (an exception or ``sys.exit``), or whose
  entry point is not a `~radiorecon.Backend` subclass, is skipped with a
  `~radiorecon.exceptions.BackendLoadWarning` naming its distribution and
  the error; the other backends keep working. `backend_status` lists every
  backend with its error, for listings that must not fail.
- The names of the built-in backends (the entry points of the ``radiorecon``
  distribution itself) cannot be taken over: another distribution declaring
  one is ignored with a warning naming it. Of two other distributions
  declaring the same name, the first by distribution name is used.
- A plugin's package is imported from where it is installed, not from a
  same-named package in the working directory.
- `create_backend` reports a failure inside a backend's constructor as a
  `~radiorecon.exceptions.BackendError` naming the backend and its
  distribution.
"""

import difflib
import importlib.metadata
import logging
import os
import re
import sys
import warnings

from .exceptions import BackendError, BackendLoadWarning, RadioreconError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_backends",
    "get_backend",
    "create_backend",
    "backend_info",
    "backend_status",
    "name_of",
    "register_backend",
    "unregister_backend",
    "refresh",
]

ENTRY_POINT_GROUP = "radiorecon.backends"

log = logging.getLogger("radiorecon")

# Entry points in use after the last scan, by name.
_entry_points = None
# Origins of the entry points set aside for a name in use, by name.
_ignored = {}
# Classes registered at run time with register_backend, by name.
_runtime = {}
# Classes already imported from entry points, by name.
_loaded = {}
# Why a name's entry point failed to load, by name, so it is reported once.
_broken = {}

# What a plugin may raise while it is imported or constructed without that
# stopping radiorecon. Not BaseException: Ctrl-C must still stop the program.
_PLUGIN_FAILURES = (Exception, SystemExit)


def _dist_name(ep):
    """The normalised (PEP 503) name of the distribution declaring ``ep``, or ''."""
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else None
    return re.sub(r"[-_.]+", "-", name).lower() if name else ""


def _is_builtin(ep):
    return _dist_name(ep) == "radiorecon"


def _origin(ep):
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"entry point {ep.value!r}"
    return f"distribution {dist.metadata['Name']} {dist.version}"


def _scan():
    global _entry_points
    if _entry_points is not None:
        return _entry_points
    found, ignored = {}, {}
    # Built-in first, then by distribution name: which entry point wins a name
    # must not depend on the order of sys.path or of a directory listing.
    eps = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (not _is_builtin(ep), _dist_name(ep), ep.value),
    )
    for ep in eps:
        kept = found.setdefault(ep.name, ep)
        if kept is ep or kept.value == ep.value:
            continue
        ignored.setdefault(ep.name, []).append(_origin(ep))
        if _is_builtin(kept):
            message = (
                f"{_origin(ep)} declares the radiorecon backend {ep.name!r}, the name of a "
                f"built-in backend: the built-in one is used and this one ignored. Ask its "
                f"authors to choose another name."
            )
        else:
            message = (
                f"Two installed distributions declare the radiorecon backend {ep.name!r}: "
                f"using {_origin(kept)} (first by name) and ignoring {_origin(ep)}; "
                f"uninstall one of them."
            )
        warnings.warn(message, BackendLoadWarning, stacklevel=3)
    _ignored.clear()
    _ignored.update(ignored)
    _entry_points = found
    return found


def refresh():
    """Forget what was discovered, so that newly installed plugins are found.

    Classes registered with `register_backend` are kept.
    """
    global _entry_points
    _entry_points = None
    _ignored.clear()
    _loaded.clear()
    _broken.clear()


def available_backends():
    """Names of the installed backends, sorted.

    This reads the entry points only: no backend is imported. A backend whose
    plugin turns out to be broken when loaded is dropped from later listings
    (`backend_status` keeps it, with its error).

    Returns
    -------
    names : list of str
    """
    names = (set(_scan()) | set(_runtime)) - set(_broken)
    return sorted(names)


def _is_cwd(entry, cwd):
    # '' and '.' mean the working directory, as does its absolute path
    # (sys.path[0] under ``python -c``, ``-m`` and the interactive prompt).
    return isinstance(entry, str) and os.path.realpath(entry or os.curdir) == cwd


def _import(ep):
    """``ep.load()``, not letting a package in the working directory stand in for the plugin's.

    Python finds a top-level module through `sys.path`, where the working
    directory often comes first: a folder ``./radiorecon_wiener/`` with an
    ``__init__.py`` (a source checkout, a copy) would be imported, and run,
    instead of the installed plugin. So the working directory is left out of
    the search while the plugin is imported, unless the plugin is found
    nowhere else (a distribution installed in, or developed from, the working
    directory), where its copy there is the plugin's own.
    """
    top = ep.module.partition(".")[0]
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # the working directory was deleted: nothing there to shadow
        return ep.load()
    removed = [(i, entry) for i, entry in enumerate(sys.path) if _is_cwd(entry, cwd)]
    if top in sys.modules or not removed:
        return ep.load()
    for i, _ in reversed(removed):
        del sys.path[i]
    try:
        return ep.load()
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise
    finally:
        for i, entry in removed:
            sys.path.insert(i, entry)
    log.debug("%s: %r is found only in the working directory; importing it from there", _origin(ep), top)
    return ep.load()


def _load(name, *, warn=True):
    """The class of entry point ``name``, or None (recorded in ``_broken``) if it is broken."""
    from .backend import Backend

    ep = _scan()[name]
    try:
        obj = _import(ep)
    except _PLUGIN_FAILURES as exc:
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(obj, type) and issubclass(obj, Backend):
            return obj
        reason = f"{ep.value!r} is {obj!r}, not a subclass of radiorecon.Backend"
    _broken[name] = reason
    if warn:
        warnings.warn(
            f"Skipping radiorecon backend {name!r} from {_origin(ep)}: {reason}",
            BackendLoadWarning,
            stacklevel=5,
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


def _get(name, *, warn=True):
    if name in _runtime:
        return _runtime[name]
    if name in _loaded:
        return _loaded[name]
    if name not in _scan():
        raise _unknown(name)
    cls = None if name in _broken else _load(name, warn=warn)
    if cls is None:
        raise ValueError(
            f"The radiorecon backend {name!r} from {_origin(_scan()[name])} cannot be "
            f"loaded ({_broken[name]}); reinstall or uninstall that package."
        )
    _loaded[name] = cls
    log.debug("loaded backend %r from %s", name, cls.__module__)
    return cls


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
        If no backend of that name is installed (the message lists the
        available names and the closest match), or its plugin failed to load
        (the message names the distribution and the error).
    """
    return _get(name)


def _origin_of(name):
    if name in _runtime:
        return "registered at run time"
    return _origin(_scan()[name])


def create_backend(name, **config):
    """An instance of the backend ``name``, made with ``config``.

    This is how `~radiorecon.Reconstructor` makes its backend: a failure
    inside third-party code is reported with the backend and the
    distribution it comes from.

    Parameters
    ----------
    name : str
        Backend name, as listed by `available_backends`.
    **config
        The backend's configuration (see `backend_info`'s ``default_config``).

    Returns
    -------
    backend : `~radiorecon.Backend`

    Raises
    ------
    ValueError
        If the backend is unknown or its plugin failed to load (see
        `get_backend`).
    TypeError, ValueError
        Unchanged from the backend, which raises them for a configuration it
        does not accept (an unknown key, a value out of range).
    radiorecon.exceptions.BackendError
        For any other error inside the backend's constructor (also a
        ``sys.exit`` there), naming the backend and its distribution; the
        original error is its ``__cause__``.
    """
    cls = get_backend(name)
    try:
        return cls(**config)
    except (TypeError, ValueError, RadioreconError):
        raise
    except _PLUGIN_FAILURES as exc:
        raise BackendError(
            f"The radiorecon backend {name!r} ({_origin_of(name)}) failed to start: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _describe(name, cls):
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "description": doc[0] if doc else "",
        "version": str(cls.version),
        "capabilities": sorted(cls.capabilities),
        "tile_shape": cls.tile_shape,
        "default_config": dict(cls.default_config),
        "origin": _origin_of(name),
    }


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
        list), ``tile_shape``, ``default_config``, ``origin`` (the
        distribution and its version, or ``"registered at run time"``).

    Raises
    ------
    ValueError
        If the backend is unknown or its plugin failed to load (see
        `get_backend`). `backend_status` describes every backend without
        raising.
    """
    return _describe(name, get_backend(name))


def backend_status():
    """Every backend found, each with whether it loads: for listings that must not fail.

    Unlike `available_backends`, this imports every backend (and so torch
    for the built-in networks), to find the broken ones. A broken plugin is
    reported in its entry, not with a warning; the warnings about names
    declared twice (see the module's description) are still given.

    Returns
    -------
    status : list of dict
        One per name, sorted by name, with the keys of `backend_info` and

        ``status``
            ``"ok"``, or ``"error"`` if the plugin cannot be loaded or
            described; then only ``name`` and ``origin`` of the other keys
            are there.
        ``error``
            None, or the error (``"ImportError: needs libfoo"``).
        ``ignored``
            Origins of other distributions declaring the same name, which are
            not used (list of str).
    """
    rows = []
    for name in sorted(set(_scan()) | set(_runtime)):
        row = {"name": name, "origin": _origin_of(name), "status": "error", "error": None,
               "ignored": list(_ignored.get(name, []))}
        try:
            cls = _get(name, warn=False)
        except ValueError:
            row["error"] = _broken[name]
            rows.append(row)
            continue
        try:
            row.update(_describe(name, cls), status="ok")
        except _PLUGIN_FAILURES as exc:  # odd class attributes of a plugin
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


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
