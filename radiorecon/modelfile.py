"""Model files: one safetensors file whose header carries radiorecon's JSON.

A model file is a standard `safetensors <https://huggingface.co/docs/safetensors>`_
file: a JSON header followed by raw tensor bytes. radiorecon stores its own
JSON document (format version, package and backend versions, backend config,
normalisation, units, and for checkpoints the training state) as one string
in the header's ``__metadata__``, plus a SHA-256 digest of the tensors, so a
file is checked before use. Loading never unpickles anything: it cannot run
code, whatever the file holds.

Nested training state (optimiser states) is stored without pickle too: the
tensors go to the tensor section under ``train/...`` keys and the structure to
JSON (`flatten_state` and `unflatten_state`).
"""

import datetime
import hashlib
import json
import math
import os
import struct

from ._files import atomic_path
from .exceptions import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "save", "load", "read_header", "flatten_state", "unflatten_state"]

FORMAT = "radiorecon-model"
FORMAT_VERSION = 1
_KEY = "radiorecon"
# safetensors caps its JSON header at 100 MB; anything larger is not one of ours.
_MAX_HEADER = 100_000_000


def _digest(tensors):
    import torch

    sha = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        sha.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # A uint8 view gives the raw bytes of any dtype, bfloat16 included.
        sha.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _document_digest(doc):
    body = {k: v for k, v in doc.items() if k != "document_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def save(path, document, tensors, *, overwrite=False):
    """Write a model file atomically.

    Parameters
    ----------
    path : str or os.PathLike
    document : dict
        JSON-serialisable description; ``format``, ``format_version`` and
        ``sha256`` are added.
    tensors : dict of str to torch.Tensor
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save as st_save

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:  # before the work, not only after
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    doc = {
        **document,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sha256": _digest(tensors),
    }
    doc["document_sha256"] = _document_digest(doc)
    payload = st_save(tensors, metadata={_KEY: json.dumps(doc, allow_nan=False)})
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)


def read_header(path):
    """Read and check a model file's JSON document without loading tensors.

    Needs neither torch nor the backend, so it is cheap (``radiorecon info``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        If the file is not a radiorecon model file of a supported version.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelFileError(f"{path}: not a radiorecon model file (too short to be safetensors)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise ModelFileError(f"{path}: not a radiorecon model file (no safetensors header)")
            raw = fh.read(n)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"Model file {path} does not exist") from None
    if len(raw) < n:
        raise ModelFileError(f"{path}: file is truncated (header cut short)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: not a radiorecon model file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a radiorecon model file (unexpected header)")
    entries = [e for k, e in header.items() if k != "__metadata__"]
    if not all(isinstance(e, dict) and isinstance(e.get("data_offsets"), list) for e in entries):
        raise ModelFileError(f"{path}: not a radiorecon model file (malformed tensor table)")
    end = max((e["data_offsets"][1] for e in entries), default=0)
    if 8 + n + end > size:
        raise ModelFileError(f"{path}: file is truncated ({size} bytes, expected {8 + n + end})")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or _KEY not in meta:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a radiorecon model file (no radiorecon metadata)"
        )
    try:
        doc = json.loads(meta[_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelFileError(f"{path}: not a radiorecon model file (format is {found!r})")
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted (no format version)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this radiorecon "
            f"supports ({FORMAT_VERSION}); upgrade radiorecon to read it"
        )
    if doc.get("document_sha256") != _document_digest(doc):
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted or was edited (checksum mismatch)")
    return doc


def load(path):
    """Read a model file: its document and tensors, checked against the digest.

    Returns
    -------
    document : dict
    tensors : dict of str to torch.Tensor
        On the CPU.

    Raises
    ------
    ModelFileError
        If the file is truncated, corrupted, foreign or too new.
    """
    from safetensors.torch import load as st_load

    path = os.fspath(path)
    doc = read_header(path)
    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: tensors cannot be read ({exc})") from None
    if _digest(tensors) != doc.get("sha256"):
        raise ModelFileError(f"{path}: file is corrupted (tensor checksum mismatch)")
    return doc, tensors


def flatten_state(obj, tensors, prefix="train"):
    """Turn nested state into JSON, moving tensors into ``tensors``.

    Dicts with non-string keys (torch optimisers index states by integer)
    and non-finite floats are encoded so that `unflatten_state` restores
    them exactly.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__items__": [
                [k, flatten_state(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()
            ]
        }
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a model file")


def unflatten_state(obj, tensors):
    """Inverse of `flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: unflatten_state(v, tensors) for k, v in obj["__items__"]}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj
