"""Every bad input of issue 12, section 4: its error, one clear line, and nothing lost.

One section per item of the list, in its order:

1. Damaged files: a corrupt ``.fits.gz``, a malformed model-file header, a
   corrupt checkpoint.
2. A model file whose config asks for a huge network.
3. More samples than fit in memory; seeds that are not integers in range.
4. Plugins: one that fails in ``__init__`` or at import, an entry point named
   like a built-in backend, a package in the working directory named like a
   plugin's.
5. ``radiorecon simulate --overwrite`` and someone else's files; a corrupt
   shard.
6. Outputs of ``radiorecon predict``: checked before predicting, written
   together, their permissions and links kept.
7. An image larger than a backend's largest tile.
8. The command line: one line for each input problem, a traceback for bugs.
9. ``make_dataset`` called from a script without a main guard.

Each case checks the exact type of the error, that its message is one line
naming the problem (and the user's path where there is one), and that no
file in the test's directory changed, appeared or vanished.
"""

import contextlib
import errno
import gzip
import io
import json
import logging
import multiprocessing
import os
import re
import stat
import struct
import sys

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.io import fits
from astropy.table import QTable

import radiorecon
from radiorecon import Reconstructor, modelfile, registry, simulate
from radiorecon.cli import main
from radiorecon.exceptions import (
    BackendError, BackendLoadWarning, CapabilityError, InputError, ModelFileError, NotFittedError,
)
from radiorecon.io import read_image, read_result
from radiorecon.result import Reconstruction

import _backends
from conftest import celestial_header, gaussian_psf, make_unwritable, record_build_devices
from plugins import ECHO, activate, deactivate, make_distribution


def _snapshot(root):
    """Every entry under ``root``: relative path -> (type, permission bits, contents or link target)."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    content = f.read()
            else:
                content = None
            entries[os.path.relpath(path, root)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return entries


def _unchanged(root, before):
    """No file under ``root`` changed (contents or mode), appeared or vanished since ``before``."""
    assert _snapshot(root) == before


@contextlib.contextmanager
def _nothing_changes(root):
    before = _snapshot(root)
    yield
    _unchanged(root, before)


@contextlib.contextmanager
def _refuses(root, error, match, *names):
    """Expect exactly ``error``, in one line naming ``names``, and no change under ``root``."""
    before = _snapshot(root)
    with pytest.raises(error, match=match) as err:
        yield err
    assert type(err.value) is error, f"{type(err.value).__name__}, not {error.__name__}"
    message = str(err.value)
    assert message and "\n" not in message, message
    for name in names:
        assert str(name) in message, message
    _unchanged(root, before)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Work in the test's directory, so that a file written anywhere relative shows in its snapshot."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def radiorecon_log():
    """``main(["-v", ...])`` adds a log handler and sets the level: take them back."""
    logger = logging.getLogger("radiorecon")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in set(logger.handlers) - set(handlers):
        logger.removeHandler(handler)
    logger.setLevel(level)


def _cli(capsys, argv):
    """Run ``radiorecon argv`` and again under ``-v``.

    Returns
    -------
    status : int
    line : str
        What it wrote to standard error (without ``-v``).
    error : str
        The name of the exception's type, from the traceback ``-v`` shows.
    """
    status = main(argv)
    line = capsys.readouterr().err
    assert main(["-v", *argv]) == status
    verbose = capsys.readouterr().err.splitlines()
    assert "Traceback (most recent call last):" in verbose and verbose[-1] == line.rstrip("\n")
    # The exception's line follows the last source line (indented) of the traceback.
    last_frame = max(i for i, text in enumerate(verbose) if text.startswith("  "))
    error = verbose[last_frame + 1].partition(":")[0].rpartition(".")[2]
    return status, line, error


def _refused(capsys, argv, error, *names):
    """``radiorecon argv`` refuses with status 1 and one line naming ``names``; -v shows ``error``."""
    status, line, shown = _cli(capsys, argv)
    assert status == 1 and shown == error
    assert line.startswith(f"radiorecon {argv[0]}: error: ") and line.count("\n") == 1, line
    for name in names:
        assert str(name) in line, line
    return line


# == 1. Damaged files ==========================================================

# -- FITS images and results -----------------------------------------------------


def _good_fits():
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    fits.PrimaryHDU(rng.normal(size=(48, 48)).astype(np.float32)).writeto(buffer)
    return buffer.getvalue()


def _with_extension():
    """A result-like FITS file: a primary image and an UNCERT extension."""
    buffer = io.BytesIO()
    image = np.ones((48, 48), np.float32)
    fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(image, name="UNCERT")]).writeto(buffer)
    return buffer.getvalue()


def _gzip(raw):
    return gzip.compress(raw, mtime=0)


def _flip(raw, at, n=1):
    raw = bytearray(raw)
    for i in range(at, at + n):
        raw[i] ^= 0xFF
    return bytes(raw)


# name: (suffix, damaged bytes from the good FITS bytes, what the message says)
FITS_CASES = {
    "gzip cut in half": (".fits.gz", lambda g: _gzip(g)[: len(_gzip(g)) // 2], "corrupted or cut short"),
    "gzip without its trailer": (".fits.gz", lambda g: _gzip(g)[:-8], "corrupted or cut short"),
    "gzip with one flipped byte": (
        ".fits.gz", lambda g: _flip(_gzip(g), len(_gzip(g)) // 3), "corrupted or cut short"
    ),
    "gzip with a garbled block": (
        ".fits.gz", lambda g: _flip(_gzip(g), len(_gzip(g)) - 40, 30), "corrupted or cut short"
    ),
    "gzip of a text file": (".fits.gz", lambda g: _gzip(b"not a FITS file\n" * 300), "not a readable FITS file"),
    "gzip of a truncated FITS": (".fits.gz", lambda g: _gzip(g[: 2880 + 1000]), "truncated or corrupted"),
    "empty file": (".fits", lambda g: b"", "it is empty"),
    "empty .fits.gz": (".fits.gz", lambda g: b"", "it is empty"),
    "header cut before END": (".fits", lambda g: g[:1500], "not a readable FITS file"),
    "header with truncated data": (".fits", lambda g: g[: 2880 + 1000], "is truncated"),
    "garbage": (".fits", lambda g: bytes(range(256)) * 20, "not a readable FITS file"),
    "extension with truncated data": (".fits", lambda g: _with_extension()[:-3000], "is truncated"),
    # Cut inside the extension's header: astropy drops the extension with a warning.
    "extension with a cut header": (
        ".fits", lambda g: _with_extension()[: _with_extension().index(b"XTENSION") + 100], "is truncated or damaged"
    ),
}



@pytest.mark.parametrize("reader", [read_image, read_result], ids=["read_image", "read_result"])
@pytest.mark.parametrize("case", FITS_CASES)
def test_damaged_fits_is_an_input_error(tmp_path, case, reader):
    suffix, damage, reason = FITS_CASES[case]
    path = tmp_path / f"image{suffix}"
    path.write_bytes(damage(_good_fits()))
    with _refuses(tmp_path, InputError, reason, path):
        reader(path)


def test_damaged_fits_through_unified_io(tmp_path):
    # astropy's registry hands the reader an open, decompressing file object.
    path = tmp_path / "result.fits.gz"
    path.write_bytes(_flip(_gzip(_good_fits()), 3000))
    with _refuses(tmp_path, InputError, "the compressed data are corrupted", path):
        Reconstruction.read(path)


def test_damaged_fits_on_the_command_line(observation, tmp_path, capsys):
    image, psf = observation
    path = tmp_path / "broken.fits.gz"
    path.write_bytes(_gzip(_good_fits())[:-8])
    with _nothing_changes(tmp_path):
        _refused(capsys, ["predict", "clean", str(path), "--psf", str(psf), "-o", str(tmp_path / "sky.fits")],
                 "InputError", path, "corrupted or cut short")


def test_intact_compressed_fits_still_reads(tmp_path):
    good = _good_fits()
    plain, packed = tmp_path / "a.fits", tmp_path / "a.fits.gz"
    plain.write_bytes(good)
    packed.write_bytes(_gzip(good))
    expected = read_image(plain).data
    np.testing.assert_array_equal(read_image(packed).data, expected)
    with open(packed, "rb") as fh:  # an open file is read and left open
        np.testing.assert_array_equal(read_image(fh).data, expected)
        assert not fh.closed
    np.testing.assert_array_equal(Reconstruction.read(packed).data, expected)


# -- model files -------------------------------------------------------------------

_TENSOR = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
_DOC = '{"format": "radiorecon-model", "format_version": 1}'


def _safetensors(header, data=b"\0" * 8):
    """Raw safetensors bytes: ``header`` (dict or JSON text) and the data section."""
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(text.encode())) + text.encode() + data


def _with_doc(doc_text):
    return _safetensors(json.dumps({"w": _TENSOR, "__metadata__": {"radiorecon": doc_text}}))


def _tensor(**changes):
    return _safetensors({"w": {**_TENSOR, **changes}, "__metadata__": {"radiorecon": _DOC}})


MODEL_CASES = {
    "empty data_offsets": (_tensor(data_offsets=[]), "data_offsets"),
    "string data_offsets": (_tensor(data_offsets="0,8"), "data_offsets"),
    "data_offsets of strings": (_tensor(data_offsets=["0", "8"]), "data_offsets"),
    "boolean shape": (_tensor(shape=[True, 2]), "shape"),
    "negative shape": (_tensor(shape=[-2]), "shape"),
    "unknown dtype": (_tensor(dtype="F128"), "dtype"),
    "dtype that is a list": (_tensor(dtype=["F32"]), "dtype"),
    "span that does not fit the shape": (_tensor(data_offsets=[0, 800]), "takes 8"),
    "offsets past the data": (_tensor(data_offsets=[8, 16]), "starts at byte 8"),
    "bytes after the tensors": (
        _safetensors({"w": _TENSOR, "__metadata__": {"radiorecon": _DOC}}, b"\0" * 16),
        "after the last tensor",
    ),
    "overlapping tensors": (
        _safetensors({"a": _TENSOR, "b": _TENSOR, "__metadata__": {"radiorecon": _DOC}}),
        "overlap",
    ),
    "duplicate tensor name": (
        _safetensors('{"w": %s, "w": %s, "__metadata__": {"radiorecon": "{}"}}' % ((json.dumps(_TENSOR),) * 2)),
        "duplicate key 'w'",
    ),
    "metadata that is not a string": (
        _safetensors({"w": _TENSOR, "__metadata__": {"radiorecon": json.loads(_DOC)}}),
        "metadata values must be strings",
    ),
    "NaN in the document": (_with_doc(_DOC[:-1] + ', "scale": NaN}'), "NaN is not a JSON number"),
    "overflowing number in the document": (_with_doc(_DOC[:-1] + ', "scale": 1e999}'), "out of range"),
    "duplicate key in the document": (_with_doc(_DOC[:-1] + ', "format": "other"}'), "duplicate key 'format'"),
    "deeply nested document": (_with_doc(_DOC[:-1] + ', "x": ' + "[" * 100 + "]" * 100 + "}"), "nested more than 64"),
    "recursion-deep document": (_with_doc("[" * 100_000 + "]" * 100_000), "nested more than 64"),
    "recursion-deep header": (_safetensors("[" * 100_000 + "]" * 100_000), "nested more than 64"),
    "huge header length": (struct.pack("<Q", 2**62) + b"{}", "header of 4611686018427387904 bytes"),
    "header longer than the file": (struct.pack("<Q", 1000) + b"{}", "truncated"),
}


@pytest.mark.parametrize("reader", [Reconstructor.load, modelfile.read_header], ids=["load", "read_header"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_malformed_model_file_is_a_model_file_error(tmp_path, case, reader):
    content, reason = MODEL_CASES[case]
    path = tmp_path / "model.rrm"
    path.write_bytes(content)
    with _refuses(tmp_path, ModelFileError, reason, path):
        reader(path)


@pytest.mark.parametrize("command", ["info", "predict"])
def test_malformed_model_file_on_the_command_line(command, observation, tmp_path, capsys):
    image, _ = observation
    path = tmp_path / "model.rrm"
    path.write_bytes(MODEL_CASES["string data_offsets"][0])
    argv = ["info", str(path)] if command == "info" else ["predict", str(path), str(image), "-o", "sky.fits"]
    with _nothing_changes(tmp_path):
        _refused(capsys, argv, "ModelFileError", path, "data_offsets")


# -- training checkpoints ----------------------------------------------------------

_FIELDS = {"backend": "test-conv", "backend_version": "1", "config": {}, "fitted": False, "history": []}


def _resume(path):
    images = np.zeros((4, 32, 32), np.float32)
    Reconstructor("test-conv").fit(images, images, epochs=2, checkpoint=path, progress=False)


@pytest.mark.parametrize("reader", [modelfile.load, Reconstructor.load, _resume], ids=["read", "load", "resume"])
@pytest.mark.parametrize(
    "training, reason",
    [
        (5, "training is not a mapping"),
        ({"epoch": 1, "state": {"__tensor__": "train/missing"}}, "tensor 'train/missing' the file lacks"),
        ({"epoch": 1, "state": {"__items__": "step"}}, "unexpected entry"),
        ({"epoch": 1, "state": {"__items__": [[["key"], 1]]}}, "key is a list"),
    ],
)
def test_corrupt_checkpoint_is_a_model_file_error(tmp_path, training, reason, reader):
    path = tmp_path / "checkpoint.rrm"
    weights = _backends.ConvBackend().state_dict()  # whole but for its training state
    modelfile.save(path, {**_FIELDS, "training": training},
                   {**weights, "train/rng": torch.zeros(4, dtype=torch.uint8)})
    with _refuses(tmp_path, ModelFileError, reason, path):
        reader(path)


# == 2. A model file asking for a huge network ===================================


def test_huge_network_is_refused_before_it_is_built(tmp_path, monkeypatch, observation, capsys):
    cls = registry.get_backend("star")
    doc = {
        "radiorecon_version": "0", "backend": "star", "backend_version": cls.version,
        "config": {**cls.default_config, "base_channels": 100_000},
        "normalisation": {"method": "scale", "scale": 1.0}, "units": {"input": "Jy/beam", "target": "Jy/pixel"},
        "fitted": True, "history": [],
    }
    path = tmp_path / "huge.rrm"
    modelfile.save(path, doc, cls().state_dict())  # the tensors of the default network
    built_on = record_build_devices(monkeypatch, cls)
    with _refuses(tmp_path, ModelFileError, "refusing to build backend 'star': its config asks for more than",
                  path):
        Reconstructor.load(path)
    assert built_on == ["meta"]  # only where tensors take no memory
    image, _ = observation
    with _nothing_changes(tmp_path):
        _refused(capsys, ["predict", str(path), str(image), "-o", "sky.fits"], "ModelFileError",
                 path, "refusing to build")


# == 3. Samples and seeds ===========================================================


@pytest.fixture(scope="module")
def star():
    return Reconstructor.pretrained("star", device="cpu")


@pytest.fixture
def never_predicts(star, monkeypatch):
    """Fail the test if STAR's network runs: these requests are refused before it."""

    def predict(self, *args, **kwargs):
        raise AssertionError("the backend predicted before the request was refused")

    monkeypatch.setattr(type(star.backend), "predict", predict)


def test_too_many_samples_are_refused_up_front(star, never_predicts, observation, tmp_path, capsys):
    image, _ = observation
    estimate = r"10000000000 samples of 1 image\(s\) would need about \d+\.\d GiB, more than half"
    with _refuses(tmp_path, MemoryError, estimate + r".*ask for fewer samples"):
        star.predict(image, n_samples=10**10, progress=False)
    with _nothing_changes(tmp_path):
        line = _refused(capsys, ["predict", "pretrained:star", str(image), "-o", "sky.fits",
                                 "--samples", str(10**10)], "MemoryError")
    assert "10000000000 samples" in line


@pytest.mark.parametrize(
    "seed, error, match",
    [
        (1.5, TypeError, "seed must be None or a non-negative integer, not 1.5"),
        (-1, ValueError, "seed must be at least 0, not -1"),
        (2**64, ValueError, "seed must be at most 9223372036854775807, not 18446744073709551616"),
        (True, TypeError, "seed must be None or a non-negative integer, not True"),
        ("7", TypeError, "seed must be None or a non-negative integer, not '7'"),
    ],
    ids=["float", "negative", "2**64", "bool", "str"],
)
def test_a_seed_is_an_integer_in_range(star, never_predicts, observation, tmp_path, seed, error, match):
    image, _ = observation
    with _refuses(tmp_path, error, match, "seed"):
        star.predict(image, seed=seed, progress=False)


# == 4. Plugins ======================================================================


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder for installed-looking distributions; their modules are forgotten after the test."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ among the files checked
    before = set(sys.modules)
    yield tmp_path / "site"
    deactivate([m for m in set(sys.modules) - before if m.startswith("rr_")])


FAILS_TO_START = ECHO.replace("class Echo", "class Fragile") + """
    def __init__(self, **config):
        super().__init__(**config)
        FAILURE
"""


@pytest.mark.parametrize(
    "failure, reason",
    [
        ("raise RuntimeError('no licence server')", "RuntimeError"),
        ("import sys; sys.exit('no licence server')", "SystemExit"),
    ],
    ids=["raises", "exits"],
)
def test_a_plugin_failing_in_init_is_a_backend_error(failure, reason, site, monkeypatch, observation, tmp_path,
                                                     capsys):
    make_distribution(site, "rr-fragile", "1.0", {"fragile": "rr_fragile:Fragile"},
                      {"rr_fragile": FAILS_TO_START.replace("FAILURE", failure)})
    activate(monkeypatch, site)
    message = ("The radiorecon backend 'fragile' (distribution rr-fragile 1.0) failed to start: "
               f"{reason}: no licence server")
    with _refuses(tmp_path, BackendError, f"^{re.escape(message)}$"):
        Reconstructor("fragile")
    image, _ = observation
    with _nothing_changes(tmp_path):
        _refused(capsys, ["predict", "fragile", str(image), "-o", "sky.fits"], "BackendError", message)
    assert type(Reconstructor("clean").backend).__name__ == "CleanBackend"


def test_plugins_failing_at_import_leave_the_listing_and_the_others(site, monkeypatch, tmp_path, capsys):
    make_distribution(site, "rr-echo", "0.3", {"echo": "rr_echo:Echo"}, {"rr_echo": ECHO})
    make_distribution(site, "rr-exits", "0.2", {"exits": "rr_exits:Thing"},
                      {"rr_exits": "import sys\nsys.exit('no licence server')\n"})
    make_distribution(site, "rr-raises", "0.1", {"raises": "rr_raises:Thing"},
                      {"rr_raises": "raise ImportError('needs libfoo')\n"})
    activate(monkeypatch, site)
    with _nothing_changes(tmp_path):
        assert main(["backends"]) == 0  # lists names without importing any plugin
        listed = capsys.readouterr().out.split()
        assert main(["backends", "-l"]) == 0  # broken plugins are listed as such, not warned about
        described = capsys.readouterr().out
    assert {"clean", "echo"} <= set(listed)
    assert "clean (version " in described and "echo (version 2.1, distribution rr-echo 0.3)" in described
    assert "exits (broken: SystemExit: no licence server; distribution rr-exits 0.2)" in described
    assert "raises (broken: ImportError: needs libfoo; distribution rr-raises 0.1)" in described
    with _refuses(tmp_path, ValueError, "cannot be loaded", "'exits'", "distribution rr-exits 0.2",
                  "SystemExit: no licence server"):
        Reconstructor("exits")
    assert type(Reconstructor("echo").backend).__name__ == "Echo"


def test_an_entry_point_named_like_a_builtin_is_ignored(site, monkeypatch, tmp_path):
    make_distribution(site, "rr-evil", "6.6", {"clean": "rr_evil:Echo"}, {"rr_evil": ECHO})
    activate(monkeypatch, site)
    with _nothing_changes(tmp_path), pytest.warns(BackendLoadWarning) as warned:
        rec = Reconstructor("clean")
    assert type(rec.backend).__name__ == "CleanBackend" and "rr_evil" not in sys.modules
    assert [str(w.message) for w in warned] == [
        "distribution rr-evil 6.6 declares the radiorecon backend 'clean', the name of a built-in backend: "
        "the built-in one is used and this one ignored. Ask its authors to choose another name."
    ]


def test_the_working_directory_does_not_shadow_a_backend(site, monkeypatch, observation, tmp_path, capsys):
    make_distribution(site, "rr-shadowed", "1.0", {"shadowed": "rr_shadowed:Echo"}, {"rr_shadowed": ECHO})
    work = tmp_path / "work"
    # A copy of the plugin's sources, and a folder named like a built-in backend.
    (work / "rr_shadowed").mkdir(parents=True)
    (work / "rr_shadowed" / "__init__.py").write_text(ECHO.replace('"2.1"', '"0.0-copy"'))
    (work / "clean").mkdir()
    activate(monkeypatch, site)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", ["", *sys.path])  # as under python -c and at the prompt
    with _nothing_changes(tmp_path):
        assert Reconstructor("shadowed").backend.version == "2.1"
    assert sys.modules["rr_shadowed"].__file__ == str(site / "rr_shadowed.py")
    image, psf = observation
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", "sky.fits", "--set", "niter=5", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert fits.getheader(work / "sky.fits")["RRBACKND"] == "clean"


# == 5. radiorecon simulate: the user's files and damaged shards =====================

TINY = {"npix": 32, "placement_radius": 1 * u.arcsec, "workers": 1, "progress": False}
TINY_ARGS = ["--set", "npix=32", "--set", 'placement_radius="1 arcsec"', "--workers", "1", "--no-progress"]


def test_simulate_overwrite_removes_only_what_it_wrote(tmp_path):
    out = tmp_path / "ds"
    assert main(["simulate", "2", str(out), "--seed", "1", *TINY_ARGS]) == 0
    (out / "notes.txt").write_text("keep me")
    (out / "notes.txt").chmod(0o600)
    (out / "results").mkdir()
    (out / "results" / "config.json").write_text('{"lr": 0.1}')
    mine = {k: v for k, v in _snapshot(out).items() if k.startswith(("notes", "results"))}
    assert main(["simulate", "1", str(out), "--seed", "2", "--overwrite", *TINY_ARGS]) == 0
    after = _snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert simulate.load_dataset(out).config["seed"] == 2
    assert not (out / "shards" / "dirty_00001.npy").exists()  # the old data set's second shard


def test_simulate_refuses_someone_elses_config(tmp_path, capsys):
    user = tmp_path / "user"
    (user / "shards").mkdir(parents=True)
    (user / "config.json").write_text('{"lr": 0.1}')
    (user / "shards" / "part-0.csv").write_text("1,2")
    config = user / "config.json"
    for overwrite in (False, True):
        with _refuses(tmp_path, InputError, "is not the config.json of a radiorecon simulated data set", config):
            simulate.make_dataset(2, seed=1, out=user, overwrite=overwrite, **TINY)
    with _nothing_changes(tmp_path):
        _refused(capsys, ["simulate", "2", str(user), "--overwrite", *TINY_ARGS], "InputError", config)


@pytest.mark.parametrize(
    "damage, reason",
    [(lambda raw: raw[:-100], r"is \d+ bytes where \d+ belong"), (lambda raw: b"garbage" * 50, "not a readable array")],
    ids=["truncated", "garbage"],
)
def test_a_corrupt_shard_is_named(damage, reason, tmp_path):
    out = tmp_path / "ds"
    simulate.make_dataset(2, seed=1, out=out, shard_size=1, **TINY)
    shard = out / "shards" / "dirty_00001.npy"
    shard.write_bytes(damage(shard.read_bytes()))
    data = simulate.load_dataset(out)
    with _refuses(tmp_path, InputError, reason + ".*call make_dataset again", shard):
        data[1]


# == 6. Outputs of radiorecon predict =================================================


def _write_image(path, n=32, *, without=(), bunit="Jy/beam"):
    """A CASA-like 2-D image with two point sources, without the header cards ``without``."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:n, :n]
    data = 5e-5 * rng.normal(size=(n, n))
    for y, x, flux in ((10, 12, 2e-3), (22, 20, 1e-3)):
        data += flux * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
    header = celestial_header(n, n, bunit=bunit)
    for key in without:
        del header[key]
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(path)
    return path


@pytest.fixture
def observation(tmp_path):
    """A dirty image and its PSF, as FITS files in the test's directory."""
    psf = tmp_path / "field.psf.fits"
    fits.PrimaryHDU(gaussian_psf((32, 32), 2.0), celestial_header(32, 32, bunit="")).writeto(psf)
    return _write_image(tmp_path / "field.fits"), psf






# name: (input, options after the PSF, error type, message; {tmp} is the test's directory)
OUTPUT_CASES = {
    "-o in a missing directory": (
        "field.fits", ["-o", "{tmp}/missing/sky.fits"], "InputError",
        "cannot write {tmp}/missing/sky.fits: directory {tmp}/missing does not exist",
    ),
    "-o in a read-only directory": (
        "field.fits", ["-o", "{tmp}/ro/sky.fits"], "InputError",
        "cannot write {tmp}/ro/sky.fits: no permission to write in {tmp}/ro",
    ),
    "-o an existing file": (
        "field.fits", ["-o", "{tmp}/old.fits"], "FileExistsError",
        "{tmp}/old.fits already exists; pass --overwrite to replace it",
    ),
    "-o a directory": ("field.fits", ["-o", "{tmp}/ro"], "InputError", "-o {tmp}/ro is a directory; give a file name"),
    "--catalog in a read-only directory": (
        "field.fits", ["-o", "{tmp}/sky.fits", "--catalog", "{tmp}/ro/sky.ecsv"], "InputError",
        "cannot write {tmp}/ro/sky.ecsv: no permission to write in {tmp}/ro",
    ),
    "--catalog and -o the same file": (
        "field.fits", ["-o", "{tmp}/sky.fits", "--catalog", "{tmp}/sky.fits"], "InputError",
        "--catalog and -o name the same file",
    ),
    "--catalog of an image without a beam": (
        "nobeam.fits", ["-o", "{tmp}/sky.fits", "--catalog", "{tmp}/sky.ecsv"], "InputError",
        "--catalog needs the clean beam, but {tmp}/nobeam.fits records none",
    ),
    "--catalog of an image without a WCS": (
        "nowcs.fits", ["-o", "{tmp}/sky.fits", "--catalog", "{tmp}/sky.ecsv"], "InputError",
        "--catalog needs sky coordinates, but {tmp}/nowcs.fits has no celestial WCS",
    ),
    "an input that does not exist": (
        "missing.fits", ["-o", "{tmp}/sky.fits"], "FileNotFoundError", "{tmp}/missing.fits does not exist",
    ),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_predict_output_problems_are_refused_before_predicting(case, observation, tmp_path, monkeypatch, capsys,
                                                                no_prediction):
    name, options, error, message = OUTPUT_CASES[case]
    _, psf = observation
    _write_image(tmp_path / "nobeam.fits", without=("BMAJ", "BMIN", "BPA"))
    _write_image(tmp_path / "nowcs.fits", without=("CTYPE1", "CTYPE2"))
    (tmp_path / "old.fits").write_bytes(b"old")
    (tmp_path / "ro").mkdir()
    make_unwritable(monkeypatch, tmp_path / "ro")
    argv = ["predict", "clean", str(tmp_path / name), "--psf", str(psf), *(o.format(tmp=tmp_path) for o in options)]
    with _nothing_changes(tmp_path):
        _refused(capsys, argv, error, message.format(tmp=tmp_path))


def test_a_failed_catalog_leaves_no_outputs(observation, tmp_path, monkeypatch, capsys):
    image, psf = observation
    catalog = tmp_path / "sky.ecsv"

    def full_disk(self, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(QTable, "write", full_disk)
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", str(tmp_path / "sky.fits"),
            "--catalog", str(catalog), "--set", "niter=20", "--no-progress"]
    with _nothing_changes(tmp_path):
        line = _refused(capsys, argv, "OSError", f"No space left on device: '{catalog}'")
    assert ".tmp." not in line  # the user's path, not the hidden temporary's


def test_overwriting_keeps_permissions_and_writes_through_links(observation, tmp_path, capsys):
    image, psf = observation
    target, link = tmp_path / "models" / "sky.fits", tmp_path / "sky.fits"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o640)
    link.symlink_to(target)
    argv = ["predict", "clean", str(image), "--psf", str(psf), "-o", str(link), "--set", "niter=20",
            "--no-progress", "--overwrite"]
    before = _snapshot(tmp_path)
    assert main(argv) == 0, capsys.readouterr().err
    after = _snapshot(tmp_path)
    assert after.keys() == before.keys() and after["sky.fits"] == before["sky.fits"]  # the link itself
    assert after["models/sky.fits"][:2] == before["models/sky.fits"][:2]  # a file, still 0o640
    assert fits.getheader(target)["RRBACKND"] == "clean"
    assert sorted(os.listdir(target.parent)) == ["sky.fits"]  # no temporary left beside it


# == 7. Large images ===================================================================


def test_an_image_larger_than_the_largest_tile_goes_through_in_tiles(star, tmp_path, monkeypatch):
    image = _write_image(tmp_path / "large.fits", n=40)
    shapes = []
    real = type(star.backend).predict

    def spy(self, inputs, **kwargs):
        shapes.append(tuple(inputs.shape))
        return real(self, inputs, **kwargs)

    monkeypatch.setattr(type(star.backend), "predict", spy)
    monkeypatch.setattr(type(star.backend), "max_tile_shape", (32, 32))
    monkeypatch.setattr(type(star.backend), "tile_margin", 4)
    with _nothing_changes(tmp_path):
        result = star.predict(image, batch_size=2, progress=False, threads=1)
    assert result.data.shape == (40, 40) and np.isfinite(result.data).all()
    # Two or more tiles a side (how many depends on the model's grid: 16 pixels for the shipped STAR).
    assert all(s[1:] == (32, 32) for s in shapes) and sum(s[0] for s in shapes) >= 4


# == 8. The command line: one line for input problems, tracebacks for bugs ==============

INPUT_PROBLEMS = [
    InputError("x.fits: not a readable FITS file"),
    ModelFileError("m.rrm: radiorecon metadata is corrupted"),
    CapabilityError("backend 'clean' needs the PSF: give it with --psf PSF.fits"),
    BackendError("The radiorecon backend 'x' failed to start: RuntimeError: no licence"),
    NotFittedError("Backend 'star' needs training"),
    FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "x.fits"),
    PermissionError(errno.EACCES, os.strerror(errno.EACCES), "x.fits"),
    MemoryError("10 samples would need about 9.0 GiB"),
    u.UnitConversionError("'Jy / beam' and 'm' (length) are not convertible"),
    ValueError("first line\nsecond line"),
]


@pytest.mark.parametrize("problem", INPUT_PROBLEMS, ids=lambda e: type(e).__name__)
def test_every_input_problem_is_one_line(problem, monkeypatch, tmp_path, capsys):
    def fails():
        raise problem

    monkeypatch.setattr(radiorecon, "available_backends", fails)
    with _nothing_changes(tmp_path):
        line = _refused(capsys, ["backends"], type(problem).__name__)
    assert line == f"radiorecon backends: error: {str(problem).splitlines()[0]}\n"


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["predict", "test-conv", "{image}", "-o", "sky.fits"], "NotFittedError", "needs training"),
        (["predict", "clean", "{image}", "-o", "sky.fits"], "CapabilityError", "needs the PSF: give it with --psf"),
    ],
    ids=["not fitted", "no PSF"],
)
def test_real_input_problems_are_one_line(argv, error, message, observation, tmp_path, capsys):
    image, _ = observation
    with _nothing_changes(tmp_path):
        _refused(capsys, [a.format(image=image) for a in argv], error, message)


@pytest.mark.parametrize(
    "bug", [TypeError("unsupported operand"), AttributeError("'NoneType' object has no attribute 'data'"),
            KeyError("beam")],
    ids=lambda e: type(e).__name__,
)
def test_a_bug_keeps_its_traceback(bug, monkeypatch):
    def fails():
        raise bug

    monkeypatch.setattr(radiorecon, "available_backends", fails)
    with pytest.raises(type(bug)) as err:
        main(["backends"])
    assert err.value is bug


# == 9. make_dataset from a script without a main guard =================================


def test_small_jobs_start_no_worker_processes(tmp_path, monkeypatch):
    def no_pool(workers):
        raise AssertionError("started worker processes for a small job")

    monkeypatch.setattr(simulate.dataset, "_start_pool", no_pool)
    data = simulate.make_dataset(2, seed=1, out=tmp_path / "ds", shard_size=1, **{**TINY, "workers": 2})
    assert len(data) == 2


def test_a_worker_rerunning_an_unguarded_script_explains_the_fix(tmp_path, monkeypatch):
    # A pool even for this small job, started as if in a worker that imports
    # the calling script (multiprocessing marks it as inheriting meanwhile).
    monkeypatch.setattr(simulate.dataset, "_IN_PROCESS_PIXELS", 0)
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with _refuses(tmp_path, RuntimeError, r'called by a worker process .* `if __name__ == "__main__":`'):
        simulate.make_dataset(2, seed=1, out=tmp_path / "ds", shard_size=1, **{**TINY, "workers": 2})
