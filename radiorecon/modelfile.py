"""Model files: one safetensors file whose header carries radiorecon's JSON.

A model file is a standard `safetensors <https://huggingface.co/docs/safetensors>`_
file: a JSON header followed by raw tensor bytes. radiorecon stores its own
JSON document (format version, package and backend versions, backend config,
normalisation, units, training domain, catalog threshold, uncertainty scale,
and for checkpoints the training state) as one string
in the header's ``__metadata__``, plus a SHA-256 digest of the tensors, so a
file is checked before use. Loading never unpickles anything: it cannot run
code, whatever the file holds.

Reading is strict and bounded, since a model file may come from anyone: the
header is JSON of at most 100 MB, nested at most 64 levels, without duplicate
keys or non-finite numbers; the tensor table must describe the data section
exactly (known dtypes, byte spans that match the shapes, no gap, overlap or
trailing bytes). `read_model` then checks the tensors' names and shapes
against the backend that the file's config describes, built on PyTorch's
``meta`` device (shapes without storage), before any network is built: a file
cannot make loading allocate much more than its own size.

Nested training state (optimiser states) is stored without pickle too: the
tensors go to the tensor section under ``train/...`` keys and the structure to
JSON (`flatten_state` and `unflatten_state`).
"""

import datetime
import hashlib
import json
import math
import os
import numbers
import struct

from ._files import atomic_path, check_new
from .exceptions import ModelFileError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save",
    "load",
    "read_header",
    "read_model",
    "expected_tensors",
    "check_tensors",
    "check_domain",
    "check_catalog_threshold",
    "check_uncertainty_scale",
    "check_uncertainty_floor",
    "check_flux_error_floor",
    "check_detection_calibration",
    "for_sample_count",
    "DOMAIN_KEYS",
    "flatten_state",
    "unflatten_state",
]

FORMAT = "radiorecon-model"
FORMAT_VERSION = 1
_KEY = "radiorecon"
_TRAIN = "train/"
# safetensors caps its JSON header at 100 MB; anything larger is not one of ours.
_MAX_HEADER = 100_000_000
# A checkpoint's optimiser states nest about 20 levels deep.
_MAX_DEPTH = 64
# Bytes of JSON in a backend config: the built-in ones need under 1 kB.
_MAX_CONFIG = 1_000_000
# Building a backend on the meta device may make tensors of up to this many
# times the bytes the file holds, plus a constant (non-state tensors such as
# a noise schedule, copies like an EMA network), and this many torch calls
# per stored tensor, plus a constant (about 5 per tensor for the built-in ones).
_BUILD_BYTES = (4, 64 * 2**20)
_BUILD_CALLS = (50, 10_000)
# Bytes per element of safetensors' dtypes.
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# Top-level fields of every document `save` writes, and what they must be.
_FIELDS = {
    "backend": (str, "a string"),
    "backend_version": (str, "a string"),
    "config": (dict, "a mapping"),
    "sha256": (str, "a string"),
    "fitted": (bool, "true or false"),
    "history": (list, "a list"),
}

#: The fields of a model's training domain (``document["domain"]``): the
#: simulator preset (str) and the beam, pixel size and image noise of the
#: training inputs (positive numbers, arcsec and Jy/beam); any may be None
#: (unknown).
DOMAIN_KEYS = ("preset", "beam_major_arcsec", "beam_minor_arcsec", "pixel_scale_arcsec", "noise_jy_beam")


def _is_positive(value):
    """Whether ``value`` is a positive, finite real number (numpy's included, booleans not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _is_nonnegative(value):
    """Whether ``value`` is a finite real number >= 0 (numpy's included, booleans not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_domain(domain):
    """Check a training domain as a model file stores it.

    Parameters
    ----------
    domain : dict or None
        ``None`` (unknown), or a mapping with exactly the keys of
        `DOMAIN_KEYS`: ``preset`` a string or None, the others positive
        finite numbers (arcsec; Jy/beam for ``noise_jy_beam``) or None.

    Returns
    -------
    domain : dict or None
        A copy, numbers as floats.

    Raises
    ------
    ValueError
        Naming what is wrong.
    """
    if domain is None:
        return None
    if not isinstance(domain, dict) or set(domain) != set(DOMAIN_KEYS):
        keys = sorted(domain) if isinstance(domain, dict) else type(domain).__name__
        raise ValueError(f"domain must be a mapping of {', '.join(DOMAIN_KEYS)}, not {keys}")
    preset = domain["preset"]
    if preset is not None and not isinstance(preset, str):
        raise ValueError(f"domain preset must be a string or null, not {preset!r}")
    out = {"preset": preset}
    for key in DOMAIN_KEYS[1:]:
        value = domain[key]
        if value is not None and not _is_positive(value):
            raise ValueError(f"domain {key} must be a positive number or null, not {value!r}")
        out[key] = None if value is None else float(value)
    return out


def check_catalog_threshold(value):
    """A model's catalog threshold (an S/N) as a float, or None.

    Raises
    ------
    ValueError
        If ``value`` is not None and not a positive, finite number.
    """
    if value is None:
        return None
    if not _is_positive(value):
        raise ValueError(f"catalog_threshold must be a positive, finite S/N (such as 5) or None, not {value!r}")
    return float(value)


def check_uncertainty_scale(value):
    """A model's uncertainty scale: a float, floats per sample count, or 1 for None.

    The factor `~radiorecon.Reconstructor.predict` applies to the standard
    deviation, chosen by `~radiorecon.calibration.calibrate_uncertainty`
    for a number of samples: one number holds for every count, a mapping
    from sample counts to numbers one per count (`for_sample_count` picks
    one), since the spread of 3 draws is a smaller and noisier estimate
    than that of 20. None (files written before it was recorded) is 1.

    Raises
    ------
    ValueError
        If ``value`` is not None, not a positive, finite number and not a
        non-empty mapping from positive sample counts to such numbers.
    """
    if isinstance(value, dict):
        return _per_count(value, _count_scale, "uncertainty_scale")
    if value is None:
        return 1.0
    return _count_scale(value)


def _count_scale(value):
    if not _is_positive(value):
        raise ValueError(f"uncertainty_scale must be a positive, finite number (such as 1), not {value!r}")
    return float(value)


def check_uncertainty_floor(value):
    """A model's uncertainty floor: a float, floats per sample count, or 0 for None.

    The standard deviation, in the model's normalised units, that
    `~radiorecon.Reconstructor.predict` adds in quadrature to the scaled
    one, chosen with the scale by
    `~radiorecon.calibration.calibrate_uncertainty` (so kept per number of
    samples as the scale is). None (files written before it was recorded)
    is 0.

    Raises
    ------
    ValueError
        If ``value`` is not None, not a finite number >= 0 and not a
        non-empty mapping from positive sample counts to such numbers.
    """
    if isinstance(value, dict):
        return _per_count(value, lambda v: _count_floor(v, "uncertainty_floor"), "uncertainty_floor")
    return _floor(value, "uncertainty_floor")


def check_flux_error_floor(value):
    """A model's flux error floor: a float, floats per sample count, or 0 for None.

    The flux error, in units of the dirty image's noise, that catalogs add
    in quadrature, chosen by `~radiorecon.calibration.calibrate_flux_errors`
    for a number of samples: one number holds for every count, a mapping
    from sample counts to numbers one per count (`for_sample_count` picks
    one), since one run has no spread of its own and the floor carries its
    whole flux error. None (files written before it was recorded) is 0.

    Raises
    ------
    ValueError
        If ``value`` is not None, not a finite number >= 0 and not a
        non-empty mapping from positive sample counts to such numbers.
    """
    if isinstance(value, dict):
        return _per_count(value, lambda v: _count_floor(v, "flux_error_floor"), "flux_error_floor")
    return _floor(value, "flux_error_floor")


def _count_floor(value, name):
    # None means "not recorded" for the whole field, never for one count.
    if value is None:
        raise ValueError(f"{name} must be a finite number >= 0 (such as 0) for each sample count, not None")
    return _floor(value, name)


def _floor(value, name):
    """A floor as a float: 0 for None (not recorded), else a finite number >= 0."""
    if value is None:
        return 0.0
    if not _is_nonnegative(value):
        raise ValueError(f"{name} must be a finite number >= 0 (such as 0), not {value!r}")
    return float(value)


def check_detection_calibration(value):
    """A model's detection-probability calibration: coefficients, coefficients per sample count, or None.

    The coefficients ``[a, b]`` or ``[a, b, c]`` of ``p = fraction**c /
    (1 + exp(-(a + b ln(S/N))))``
    (`~radiorecon.calibration.calibrate_detection_probability`); ``c`` is
    1 when only ``[a, b]`` are given (the form calibrations took before
    ``c`` was fitted). One list holds for every number of samples; a
    mapping from sample counts to lists holds one calibration per count
    (`for_sample_count` picks one), since the fraction of 5
    draws that find a source does not say what the fraction of 20 says.

    Returns
    -------
    list of float, dict of int to list of float, or None
        The keys of a mapping as int (JSON gives them as strings).

    Raises
    ------
    ValueError
        If ``value`` is not None, not two or three finite numbers (the
        third one >= 0), and not a non-empty mapping from positive sample
        counts to such numbers.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return _per_count(value, _coefficients, "detection_calibration")
    return _coefficients(value)


def _per_count(value, check, name):
    """A calibration per number of samples, ``{count: check(entry)}`` in the order of the counts."""
    if not value:
        raise ValueError(f"{name} per sample count must hold at least one count, not {{}}")
    counts = {}
    for n, entry in value.items():
        text = str(n) if isinstance(n, (int, str)) and not isinstance(n, bool) else ""
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise ValueError(f"{name}'s sample counts must be whole numbers >= 1, not {n!r}")
        counts[int(text)] = check(entry)
    return dict(sorted(counts.items()))


def _coefficients(value):
    if (not isinstance(value, (list, tuple)) or len(value) not in (2, 3)
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or (len(value) == 3 and value[2] < 0)):
        raise ValueError("detection_calibration must be two or three finite numbers [a, b] or [a, b, c] with "
                         f"c >= 0 (or a mapping from sample counts to such numbers), or None, not {value!r}")
    return [float(v) for v in value]


def for_sample_count(calibration, n_samples):
    """The value of a calibration kept per number of samples that predictions of ``n_samples`` use.

    Parameters
    ----------
    calibration : object or dict
        A model's ``uncertainty_scale``, ``uncertainty_floor``,
        ``flux_error_floor`` or ``detection_calibration``, as the
        ``check_*`` functions of this module return them.
    n_samples : int
        Draws per prediction.

    Returns
    -------
    object
        Anything but a mapping as it is; from a mapping, the entry for
        ``n_samples``, else the one of the nearest count (by ratio; the
        larger of two equally near): a similar number of draws spreads and
        agrees most similarly.
    """
    if not isinstance(calibration, dict):
        return calibration
    if n_samples in calibration:
        return calibration[n_samples]
    nearest = min(calibration, key=lambda m: (abs(math.log(m / n_samples)), -m))
    return calibration[nearest]


def tensor_digest(tensors):
    """SHA-256 (hex) of named tensors: their names, dtypes, shapes and bytes, in name order."""
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
        ``sha256`` are added, and ``created`` (now) unless it has one.
    tensors : dict of str to torch.Tensor
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If the document is beyond what `load` accepts (nested more than 64
        levels, a config of more than 1 MB of JSON, a malformed ``domain``,
        ``catalog_threshold``, ``uncertainty_scale``,
        ``uncertainty_floor``, ``flux_error_floor`` or
        ``detection_calibration``).
    """
    from safetensors.torch import save as st_save

    path = os.fspath(path)
    check_new(path, overwrite)  # before the work, not only after
    # Never write a file that reading would refuse.
    _check_depth(document)
    config_size = len(json.dumps(document.get("config", {})))
    if config_size > _MAX_CONFIG:
        raise ValueError(f"a config of {config_size} bytes of JSON is over the {_MAX_CONFIG} a model file may hold")
    check_domain(document.get("domain"))
    check_catalog_threshold(document.get("catalog_threshold"))
    check_uncertainty_scale(document.get("uncertainty_scale"))
    check_uncertainty_floor(document.get("uncertainty_floor"))
    check_flux_error_floor(document.get("flux_error_floor"))
    check_detection_calibration(document.get("detection_calibration"))
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    # As JSON gives it back (a calibration per sample count has int keys,
    # which become strings: {5, 20} and {"20", "5"} sort apart), so that the
    # digest is of what will be read.
    document = json.loads(json.dumps(document, allow_nan=False))
    doc = {
        **document,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        # Kept when a file's own document is saved again (a metadata edit): the weights are that old.
        "created": document.get("created") or now,
        "sha256": tensor_digest(tensors),
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
        If the file is not a radiorecon model file of a supported version, or
        its header is malformed.
    """
    return _read(path)[0]


def load(path):
    """Read a model file: its document and tensors, checked against the digest.

    The tensors are not checked against a backend: `read_model` does that
    too, before building one.

    Returns
    -------
    document : dict
    tensors : dict of str to torch.Tensor
        On the CPU.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        If the file is truncated, corrupted, foreign or too new, or a
        checkpoint's training state refers to tensors it lacks.
    """
    path = os.fspath(path)
    doc, _ = _read(path)
    return doc, _load_tensors(path, doc)


def read_model(path, get_backend=None):
    """Read a model file after checking it against the backend it needs.

    The file's tensors must be exactly those (names and shapes) the backend
    holds when built with the file's config. That is checked on a copy of
    the backend built on the ``meta`` device, which stops as soon as it would
    make far more tensor bytes than the file holds, so no network is built
    (and nothing large allocated) for a file that asks for more than it
    holds.

    Parameters
    ----------
    path : str or os.PathLike
    get_backend : callable, optional
        ``get_backend(name)`` returns the backend class of that name and
        raises ValueError if there is none. Default:
        `radiorecon.registry.get_backend`.

    Returns
    -------
    document : dict
    backend_cls : type
        The `~radiorecon.Backend` subclass to build with
        ``document["config"]``.
    tensors : dict of str to torch.Tensor
        On the CPU; for checkpoints also the ``train/...`` entries.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        As `load`, and if the backend is not installed or older than the
        file's, refuses the config, or would hold other tensors than the file.
        Also if the backend's ``__init__`` reads tensor values, which the
        ``meta`` device does not have (a bug of the backend).
    """
    path = os.fspath(path)
    if get_backend is None:
        from .registry import get_backend
    doc, table = _read(path)
    name = doc["backend"]
    try:
        backend_cls = get_backend(name)
    except ValueError as exc:
        raise ModelFileError(f"{path}: needs backend {name!r}, which is not available. {exc}") from None
    if _version_tuple(doc["backend_version"]) > _version_tuple(backend_cls.version):
        raise ModelFileError(
            f"{path}: written by backend {name!r} version {doc['backend_version']}, "
            f"newer than the installed version {backend_cls.version}; upgrade the backend"
        )
    config_size = len(json.dumps(doc["config"]))
    if config_size > _MAX_CONFIG:
        raise ModelFileError(f"{path}: config is {config_size} bytes of JSON, over the {_MAX_CONFIG} allowed")
    held = sum(_ITEMSIZE[dtype] * math.prod(shape) for dtype, shape in table.values())
    try:
        expected = expected_tensors(
            backend_cls,
            doc["config"],
            max_bytes=_BUILD_BYTES[0] * held + _BUILD_BYTES[1],
            max_calls=_BUILD_CALLS[0] * len(table) + _BUILD_CALLS[1],
        )
    except MemoryError as exc:
        raise ModelFileError(
            f"{path}: refusing to build backend {name!r}: {exc}, but the file holds {_size(held)}"
        ) from None
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        if "meta" in str(exc):  # torch refusing to give a meta tensor's values: a bug of the backend
            raise ModelFileError(
                f"{path}: backend {name!r} cannot be built on the meta device to check the file ({exc}); "
                "its __init__ must make tensors without reading their values"
            ) from None
        raise ModelFileError(f"{path}: config does not fit backend {name!r}: {exc}") from None
    stored = {key: shape for key, (_, shape) in table.items() if not key.startswith(_TRAIN)}
    check_tensors(path, stored, expected, name)
    return doc, backend_cls, _load_tensors(path, doc)


def expected_tensors(backend_cls, config, *, max_bytes=None, max_calls=None):
    """Shapes of the tensors a backend holds, found without allocating them.

    ``backend_cls(**config)`` is built on PyTorch's ``meta`` device, where
    tensors have a shape and dtype but no storage; a device the backend names
    explicitly is replaced by ``meta`` too. A backend's ``__init__`` must
    therefore build its tensors without reading their values.

    Parameters
    ----------
    backend_cls : type
        A `~radiorecon.Backend` subclass.
    config : dict
        Keyword arguments of ``backend_cls``.
    max_bytes : int, optional
        Stop building once the tensors made add up to more than this many
        bytes (counting every tensor the constructor makes, state or not).
    max_calls : int, optional
        Stop building after this many torch calls.

    Returns
    -------
    shapes : dict of str to tuple of int
        By name, as in ``backend.state_dict()``.

    Raises
    ------
    TypeError, ValueError
        If the backend refuses the config.
    MemoryError
        If building passes ``max_bytes`` or ``max_calls``.
    RuntimeError, NotImplementedError
        From torch, if ``__init__`` reads a tensor's values.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class Budget(TorchFunctionMode):
        nbytes = calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if kwargs.get("device") is not None:
                kwargs["device"] = "meta"  # an explicit device would allocate for real
            out = func(*args, **kwargs)
            self.calls += 1
            # New tensors only: in-place methods return their input, views share its storage.
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and not (args and t is args[0]) and t._base is None:
                    self.nbytes += t.nbytes
            if max_bytes is not None and self.nbytes > max_bytes:
                raise MemoryError(f"its config asks for more than {_size(max_bytes)} of tensors")
            if max_calls is not None and self.calls > max_calls:
                raise MemoryError(f"building it takes more than {max_calls} torch operations")
            return out

    # The device context handles factory calls without a device; Budget,
    # entered last, sees every call first.
    with torch.device("meta"), Budget():
        backend = backend_cls(**config)
    return {name: tuple(t.shape) for name, t in backend.state_dict().items()}


def check_tensors(path, stored, expected, backend):
    """Check that a file holds exactly the tensors a backend will hold.

    With the same names and shapes, the backend holds as many elements as
    the file, so restoring them allocates no more than the file's size (up
    to a ratio of dtypes).

    Parameters
    ----------
    path : str
        The file, for the message.
    stored, expected : dict of str to tuple of int
        Shapes by name: in the file, and of the backend (`expected_tensors`).
    backend : str
        The backend's name, for the message.

    Raises
    ------
    ModelFileError
        Naming the missing, unexpected and differently shaped tensors.
    """
    problems = []
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    shapes = [
        f"{key} {list(stored[key])} instead of {list(expected[key])}"
        for key in sorted(stored.keys() & expected.keys())
        if tuple(stored[key]) != tuple(expected[key])
    ]
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{what} {', '.join(items[:3])}{more}")
    if problems:
        raise ModelFileError(f"{path}: tensors do not fit backend {backend!r} with its config: {'; '.join(problems)}")


# -- reading ----------------------------------------------------------------


def _read(path):
    """The checked document of a model file and its tensor table (name to dtype and shape)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise ModelFileError(f"{path}: not a radiorecon model file (too short to be safetensors)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise ModelFileError(
                    f"{path}: not a radiorecon model file (a header of {n} bytes is over safetensors' "
                    f"limit of {_MAX_HEADER})"
                )
            raw = fh.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"Model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a directory, not a model file") from None
    if len(raw) < n:
        raise ModelFileError(f"{path}: file is truncated (header cut short)")
    try:
        header = _strict_json(raw)
    except ValueError as exc:
        raise ModelFileError(f"{path}: not a radiorecon model file (header is not valid JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a radiorecon model file (unexpected header)")
    meta = header.pop("__metadata__", None)
    table, end = _tensor_table(header, path)
    data = size - 8 - n
    if end > data:
        raise ModelFileError(f"{path}: file is truncated ({size} bytes, expected {8 + n + end})")
    if end < data:
        raise ModelFileError(f"{path}: file is corrupted ({data - end} bytes after the last tensor)")
    if not isinstance(meta, dict) or _KEY not in meta:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a radiorecon model file (no radiorecon metadata)"
        )
    if not all(isinstance(value, str) for value in meta.values()):
        raise ModelFileError(f"{path}: file is corrupted (safetensors metadata values must be strings)")
    try:
        doc = _strict_json(meta[_KEY])
    except ValueError as exc:
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted (not valid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelFileError(f"{path}: not a radiorecon model file (format is {found!r})")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted (no format version)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this radiorecon "
            f"supports ({FORMAT_VERSION}); upgrade radiorecon to read it"
        )
    if doc.get("document_sha256") != _document_digest(doc):
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted or was edited (checksum mismatch)")
    # The checksum only shows that nobody edited the file by hand; a crafted
    # file carries a matching one, so the fields are checked all the same.
    for key, (kind, what) in _FIELDS.items():
        if not isinstance(doc.get(key), kind):
            raise ModelFileError(f"{path}: radiorecon metadata is corrupted ({key} is not {what})")
    if "training" in doc and not isinstance(doc["training"], dict):
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted (training is not a mapping)")
    # Optional: files written before radiorecon recorded them have none of these.
    try:
        check_domain(doc.get("domain"))
        check_catalog_threshold(doc.get("catalog_threshold"))
        check_uncertainty_scale(doc.get("uncertainty_scale"))
        check_uncertainty_floor(doc.get("uncertainty_floor"))
        check_flux_error_floor(doc.get("flux_error_floor"))
        check_detection_calibration(doc.get("detection_calibration"))
    except ValueError as exc:
        raise ModelFileError(f"{path}: radiorecon metadata is corrupted ({exc})") from None
    return doc, table


def _tensor_table(header, path):
    """Check safetensors' tensor table; returns ``{name: (dtype, shape)}`` and the end of the data."""

    def malformed(reason):
        return ModelFileError(f"{path}: not a radiorecon model file (malformed tensor table: {reason})")

    table, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise malformed(f"{name!r} is not a mapping of dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not (isinstance(dtype, str) and dtype in _ITEMSIZE):
            raise malformed(f"{name!r} has dtype {dtype!r}, not one of {', '.join(_ITEMSIZE)}")
        if not (isinstance(shape, list) and all(map(_is_count, shape))):
            raise malformed(f"{name!r} has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            raise malformed(f"{name!r} has data_offsets {offsets!r}, not two non-negative integers")
        nbytes = _ITEMSIZE[dtype] * math.prod(shape)
        if offsets[1] - offsets[0] != nbytes:
            raise malformed(f"{name!r} spans bytes {offsets}, but {dtype} of shape {shape} takes {nbytes}")
        table[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise malformed(f"{name!r} starts at byte {begin} of the data, not {end} (a gap or an overlap)")
        end = stop
    return table, end


def _load_tensors(path, doc):
    """The file's tensors, checked against the document's digest (and training state)."""
    from safetensors.torch import load as st_load

    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: tensors cannot be read ({exc})") from None
    if tensor_digest(tensors) != doc["sha256"]:
        raise ModelFileError(f"{path}: file is corrupted (tensor checksum mismatch)")
    if "training" in doc:
        try:
            unflatten_state(doc["training"].get("state"), tensors)
        except ValueError as exc:
            raise ModelFileError(f"{path}: the checkpoint's training state is corrupted ({exc})") from None
    return tensors


def _strict_json(text):
    """Parse JSON refusing NaN and infinities, duplicate keys and deep nesting (ValueError)."""

    def constant(name):
        raise ValueError(f"{name} is not a JSON number")

    def finite(literal):
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal} is out of range")
        return value

    def unique(pairs):
        value = dict(pairs)
        if len(value) < len(pairs):
            seen = set()
            duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise ValueError(f"duplicate key {duplicate!r}")
        return value

    try:
        value = json.loads(text, parse_constant=constant, parse_float=finite, object_pairs_hook=unique)
    except RecursionError:
        raise ValueError(f"nested more than {_MAX_DEPTH} levels deep") from None
    _check_depth(value)
    return value


def _check_depth(value):
    """Raise ValueError if ``value`` nests lists and dicts more than ``_MAX_DEPTH`` deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > _MAX_DEPTH:
                raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _size(nbytes):
    """``nbytes`` for people: '5.1 MB'."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000:
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} TB"


def _version_tuple(text):
    """``"1.10rc1"`` -> ``(1, 10)``-like tuple for comparing backend versions."""
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# -- nested training state ---------------------------------------------------


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
    """Inverse of `flatten_state`.

    Raises
    ------
    ValueError
        If ``obj`` is not something `flatten_state` makes, or refers to a
        tensor that ``tensors`` lacks.
    """
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"__tensor__"}:
        key = obj["__tensor__"]
        if not (isinstance(key, str) and key in tensors):
            raise ValueError(f"it refers to a tensor {key!r} the file lacks")
        return tensors[key]
    if set(obj) == {"__float__"} and obj["__float__"] in ("inf", "-inf", "nan"):
        return float(obj["__float__"])
    items = obj.get("__items__") if set(obj) == {"__items__"} else None
    if not (isinstance(items, list) and all(isinstance(p, list) and len(p) == 2 for p in items)):
        raise ValueError(f"unexpected entry with keys {sorted(obj)}")
    if any(isinstance(k, (list, dict)) for k, _ in items):
        raise ValueError("a mapping key is a list or mapping")
    return {k: unflatten_state(v, tensors) for k, v in items}
