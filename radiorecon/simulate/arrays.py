"""Antenna configurations: the ALMA Cycle 5 tables shipped with radiorecon, or yours.

A configuration is a `~astropy.table.QTable` of antenna (pad) positions in the
local tangent plane of the array centre: ``x`` east, ``y`` north, ``z`` up,
in length units, with an optional ``diameter`` column (dish diameter).
"""

import importlib.resources
import os
import re

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table

__all__ = ["available_arrays", "load_array"]



def _shipped():
    """``{stem: Traversable}`` of the shipped ECSV tables."""
    folder = importlib.resources.files("radiorecon") / "data" / "alma_configs"
    return {f.name[: -len(".ecsv")]: f for f in folder.iterdir() if f.name.endswith(".ecsv")}


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def available_arrays():
    """Names of the shipped configurations.

    Returns
    -------
    names : list of str
        File stems such as ``"alma_cycle5_3"``; each is also known by its
        ALMA name (``"C43-3"``, case-insensitive).
    """
    return sorted(_shipped(), key=_natural_key)


def _shipped_name(name):
    """The stem of a shipped table called ``name`` (stem or ALMA name), or None."""
    key = name.strip().lower()
    match = re.fullmatch(r"c43-(\d+)", key)
    if match:
        key = f"alma_cycle5_{int(match[1])}"
    return key if key in _shipped() else None


def load_array(array):
    """Antenna positions of a configuration.

    Parameters
    ----------
    array : str, os.PathLike or `~astropy.table.Table`
        A shipped configuration by name (``"alma_cycle5_3"`` or ``"C43-3"``;
        see `~radiorecon.simulate.available_arrays`), a path to a table file astropy can read
        (e.g. ECSV), or a table. It needs columns ``x`` (east), ``y``
        (north), ``z`` (up), in length units or, for plain numbers, metres;
        ``diameter`` is optional.

    Returns
    -------
    positions : `~astropy.table.QTable`
        A new table with ``x``, ``y``, ``z`` (and ``diameter`` when given)
        in metres; ``meta["name"]`` names the source.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the shipped ones), a missing
        column, fewer than 2 antennas or non-finite positions.
    """
    if isinstance(array, Table):
        table, name = QTable(array, copy=True), "the given table"
    else:
        name = os.fspath(array) if isinstance(array, os.PathLike) else array
        if not isinstance(name, str):
            raise TypeError(f"array must be a name, a path or a table, not {type(array).__name__}")
        stem = _shipped_name(name)
        if stem is not None:
            with importlib.resources.as_file(_shipped()[stem]) as path:
                table = QTable.read(path, format="ascii.ecsv")
            name = stem
        elif os.path.exists(name):
            table = QTable.read(name)
        else:
            raise ValueError(
                f"unknown array configuration {name!r}: not a file, nor one of the shipped "
                f"configurations {', '.join(available_arrays())} (also known as C43-1 ... C43-10)"
            )
    missing = [c for c in ("x", "y", "z") if c not in table.colnames]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)} (x east, y north, z up)")
    out = QTable(meta={**table.meta, "name": name})
    for col in ("x", "y", "z", "diameter"):
        if col in table.colnames:
            value = table[col]
            out[col] = value.to(u.m) if isinstance(value, u.Quantity) else np.asarray(value, float) * u.m
    xyz = np.column_stack([out[c].value for c in ("x", "y", "z")])
    if len(out) < 2 or not np.isfinite(xyz).all():
        raise ValueError(f"{name} needs at least 2 antennas with finite positions")
    return out
