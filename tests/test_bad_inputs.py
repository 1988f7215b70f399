"""Damaged files get radiorecon's own error, naming the file, and change nothing.

Each case writes a damaged copy of a good file, reads it as a user would,
and checks the error type, that the message is one line naming the file,
and that no file was changed or left behind.
"""

import gzip
import io
import json
import struct

import numpy as np
import pytest
import torch
from astropy.io import fits

from radiorecon import Reconstructor, modelfile
from radiorecon.exceptions import InputError, ModelFileError
from radiorecon.io import read_image, read_result
from radiorecon.result import Reconstruction


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
}


def _unchanged(tmp_path, before):
    """No file in ``tmp_path`` changed, appeared or vanished."""
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("reader", [read_image, read_result], ids=["read_image", "read_result"])
@pytest.mark.parametrize("case", FITS_CASES)
def test_damaged_fits_is_an_input_error(tmp_path, case, reader):
    suffix, damage, reason = FITS_CASES[case]
    path = tmp_path / f"image{suffix}"
    path.write_bytes(damage(_good_fits()))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=reason) as err:
        reader(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    _unchanged(tmp_path, before)


def test_damaged_fits_through_unified_io(tmp_path):
    # astropy's registry hands the reader an open, decompressing file object.
    path = tmp_path / "result.fits.gz"
    path.write_bytes(_flip(_gzip(_good_fits()), 3000))
    with pytest.raises(InputError, match="result.fits.gz: the compressed data are corrupted"):
        Reconstruction.read(path)


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


# -- model files ---------------------------------------------------------------

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
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ModelFileError, match=reason) as err:
        reader(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    _unchanged(tmp_path, before)


_FIELDS = {"backend": "test-conv", "backend_version": "1", "config": {}, "fitted": False, "history": []}


@pytest.mark.parametrize(
    "training, reason",
    [
        (5, "training is not a mapping"),
        ({"epoch": 1, "state": {"__tensor__": "train/missing"}}, "tensor 'train/missing' the file lacks"),
        ({"epoch": 1, "state": {"__items__": "step"}}, "unexpected entry"),
        ({"epoch": 1, "state": {"__items__": [[["key"], 1]]}}, "key is a list"),
    ],
)
def test_corrupt_checkpoint_is_a_model_file_error(tmp_path, training, reason):
    path = tmp_path / "checkpoint.rrm"
    modelfile.save(path, {**_FIELDS, "training": training}, {"train/rng": torch.zeros(4, dtype=torch.uint8)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ModelFileError, match=reason) as err:
        modelfile.load(path)
    assert str(path) in str(err.value)
    _unchanged(tmp_path, before)
