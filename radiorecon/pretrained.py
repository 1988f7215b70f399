"""Trained models that ship inside the package.

Each is a model file (``.rrm``) in ``radiorecon/data/models``, trained by a
script in the repository's ``examples/`` directory whose header records the
command, the wall time and the hardware. Nothing is downloaded: listing them
imports neither torch nor astropy, and `~radiorecon.Reconstructor.pretrained`
loads one.
"""

import difflib
import importlib.resources

__all__ = ["available_pretrained", "pretrained_path"]

_SUFFIX = ".rrm"


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
    ValueError
        If no such model ships with this version, naming the ones that do.
    """
    names = available_pretrained()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"No pretrained model {name!r} ships with radiorecon; available: "
            f"{', '.join(names) or 'none'}.{hint}"
        )
    return str(_directory() / f"{name}{_SUFFIX}")
