"""Trained models that ship inside the package.

Each is a model file (``.rrm``) in ``radiorecon/data/models``, trained by a
script in the repository's ``examples/`` directory whose header records the
command, the wall time and the hardware. Nothing is downloaded: listing them
imports neither torch nor astropy, and `~radiorecon.Reconstructor.pretrained`
loads one. `resolve_model_path` turns what a user types for a model
(``pretrained:NAME`` or a path) into a file, the same way everywhere.
"""

import difflib
import importlib.resources
import os

from .exceptions import InputError

__all__ = ["available_pretrained", "pretrained_path", "resolve_model_path"]

_SUFFIX = ".rrm"
_PREFIX = "pretrained:"


def _directory():
    return importlib.resources.files("radiorecon") / "data" / "models"


def available_pretrained():
    """Names of the shipped models (sorted list of str), e.g. ``["ddpm", "star"]``."""
    folder = _directory()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(_SUFFIX)] for p in folder.iterdir() if p.name.endswith(_SUFFIX))


def pretrained_path(name):
    """Path of the shipped model ``name``.

    Raises
    ------
    radiorecon.exceptions.InputError
        If no such model ships with this version, naming the ones that do
        (a `ValueError`).
    """
    names = available_pretrained()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"No pretrained model {name!r} ships with radiorecon; available: "
            f"{', '.join(names) or 'none'}.{hint}"
        )
    return str(_directory() / f"{name}{_SUFFIX}")


def resolve_model_path(spec):
    """The model file ``spec`` names: ``pretrained:NAME`` or a path.

    ``pretrained:NAME`` is explicit and always means the shipped model
    ``NAME``; anything else is the path of a model file. Callers that also
    accept other names (a backend, a shipped model's bare name) try them
    when this raises `FileNotFoundError`.

    Parameters
    ----------
    spec : str or os.PathLike

    Returns
    -------
    path : str
        An existing file (not checked to be a model file: `radiorecon.modelfile`
        does that when reading it).

    Raises
    ------
    radiorecon.exceptions.InputError
        If ``NAME`` of ``pretrained:NAME`` is not a shipped model; the
        message lists those that are.
    FileNotFoundError
        If ``spec`` is not an existing file (a directory is never a model
        file). The message suggests ``pretrained:NAME`` when ``spec`` is the
        name of a shipped model.
    """
    spec = os.fspath(spec)
    if spec.startswith(_PREFIX):
        return pretrained_path(spec[len(_PREFIX) :])
    if os.path.isfile(spec):
        return spec
    problem = "is a directory, not a model file" if os.path.isdir(spec) else "does not exist"
    names = available_pretrained()
    stem = os.path.basename(spec)[: -len(_SUFFIX)] if spec.endswith(_SUFFIX) else spec
    if stem in names:
        hint = f"; for the shipped model, use {_PREFIX}{stem}"
    elif names:
        hint = f" (shipped models: {', '.join(_PREFIX + n for n in names)})"
    else:
        hint = ""
    raise FileNotFoundError(f"Model file {spec} {problem}{hint}")
