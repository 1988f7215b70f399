import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from radiorecon import Reconstructor, modelfile
from radiorecon.exceptions import ModelFileError


@pytest.fixture
def trained(pairs):
    dirty, sky = pairs
    return Reconstructor("test-conv").fit(dirty, sky, epochs=2, batch_size=8, seed=3, progress=False)


def test_round_trip_restores_everything(trained, pairs, tmp_path):
    path = tmp_path / "conv.rrm"
    trained.save(path)
    loaded = Reconstructor.load(path)
    assert loaded.backend_name == "test-conv"
    assert loaded.config == trained.config
    assert loaded.scale == trained.scale
    assert loaded.history == trained.history
    assert loaded.fitted
    for key, value in trained.backend.state_dict().items():
        assert torch.equal(value, loaded.backend.state_dict()[key])
    a = trained.predict(pairs[0][0], seed=1, progress=False)
    b = loaded.predict(pairs[0][0], seed=1, progress=False)
    np.testing.assert_array_equal(a.data, b.data)
    assert b.meta["RRMODEL"] == "conv.rrm"


def test_file_is_plain_safetensors_with_json(trained, tmp_path):
    path = tmp_path / "conv.rrm"
    trained.save(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    doc = json.loads(header["__metadata__"]["radiorecon"])
    assert doc["format"] == "radiorecon-model" and doc["format_version"] == 1
    assert doc["backend"] == "test-conv" and doc["backend_version"] == "1"
    assert doc["normalisation"]["scale"] == pytest.approx(trained.scale)
    assert set(header) - {"__metadata__"} == {"net.weight", "net.bias"}
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:2]


def test_overwrite_protection(trained, tmp_path):
    path = tmp_path / "m.rrm"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.save(path)
    assert path.read_bytes() == b"precious"
    trained.save(path, overwrite=True)
    assert Reconstructor.load(path).fitted


def _damaged(tmp_path, trained, how):
    path = tmp_path / "m.rrm"
    trained.save(path)
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) - 10]
    elif how == "flipped":
        raw[-5] ^= 0xFF
    elif how == "header":
        raw[8] = ord("#")  # the opening brace of the JSON header
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    "how, reason",
    [("truncated", "truncated"), ("flipped", "corrupted"), ("header", "not valid JSON")],
)
def test_damaged_files_are_refused(trained, tmp_path, how, reason):
    path = _damaged(tmp_path, trained, how)
    with pytest.raises(ModelFileError, match=reason) as err:
        Reconstructor.load(path)
    assert str(path) in str(err.value)


def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, other)
    with pytest.raises(ModelFileError, match="no radiorecon metadata"):
        Reconstructor.load(other)
    text = tmp_path / "notes.rrm"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a radiorecon model file"):
        Reconstructor.load(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Reconstructor.load(tmp_path / "missing.rrm")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_payload_cannot_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.rrm"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ModelFileError):
        Reconstructor.load(path)
    torch_file = tmp_path / "evil.pt"
    torch.save({"x": _Exploit()}, torch_file)
    with pytest.raises(ModelFileError):
        Reconstructor.load(torch_file)
    assert not (tmp_path / "pwned").exists()


def test_newer_format_and_backend_refused(trained, tmp_path):
    # save() always writes the current version; write a newer one by hand.
    payload = {"format": "radiorecon-model", "format_version": 2}
    newer = tmp_path / "newer.rrm"
    save_file({}, newer, metadata={"radiorecon": json.dumps(payload)})
    with pytest.raises(ModelFileError, match="version 2 is newer.*upgrade radiorecon"):
        Reconstructor.load(newer)
    later = tmp_path / "later.rrm"
    modelfile.save(later, {**trained._document(), "backend_version": "7"}, trained.backend.state_dict())
    with pytest.raises(ModelFileError, match="backend 'test-conv' version 7, newer than the installed version 1"):
        Reconstructor.load(later)


def test_unknown_backend_and_bad_tensors(trained, tmp_path):
    path = tmp_path / "m.rrm"
    modelfile.save(path, {**trained._document(), "backend": "nonexistent"}, {})
    with pytest.raises(ModelFileError, match="needs backend 'nonexistent'"):
        Reconstructor.load(path)
    path2 = tmp_path / "m2.rrm"
    modelfile.save(path2, trained._document(), {"net.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelFileError, match="tensors do not fit"):
        Reconstructor.load(path2)


def test_nested_state_round_trip():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "eps": float("inf"), "params": [0]}],
    }
    tensors = {}
    tree = modelfile.flatten_state(state, tensors)
    json.dumps(tree)
    back = modelfile.unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert back["state"][0]["step"] == 3.0 and list(back["state"].keys()) == [0]
    assert back["param_groups"][0]["betas"] == [0.9, 0.999]
    assert back["param_groups"][0]["eps"] == float("inf")
    with pytest.raises(TypeError, match="cannot store"):
        modelfile.flatten_state({"f": object()}, {})


def _rewrite(path, edit):
    """Rewrite a model file with its JSON document changed by ``edit``."""
    from safetensors.torch import load_file

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    doc = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["radiorecon"])
    edit(doc)
    save_file(load_file(path), path, metadata={"radiorecon": json.dumps(doc)})


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["config"].update(noise=0.9),
        lambda d: d.update(normalisation=None),
        lambda d: d.update(units="Jy"),
    ],
)
def test_hand_edited_metadata_is_refused(trained, tmp_path, edit):
    path = tmp_path / "m.rrm"
    trained.save(path)
    _rewrite(path, edit)
    with pytest.raises(ModelFileError, match="corrupted or was edited"):
        Reconstructor.load(path)


def test_malformed_documents_are_model_file_errors(trained, tmp_path):
    path = tmp_path / "m.rrm"
    doc = trained._document()
    for bad, reason in [
        ({**doc, "config": {"noise": "loud", "learning_rate": 0.1}}, None),
        ({**doc, "config": ["noise"]}, "config is not a mapping"),
        ({**doc, "normalisation": {"scale": -1}}, "not a positive number"),
        ({**doc, "units": {"input": "furlong/fortnight/beamz"}}, "not readable"),
    ]:
        modelfile.save(path, bad, trained.backend.state_dict(), overwrite=True)
        if reason is None:
            Reconstructor.load(path)  # a config the backend accepts loads
            continue
        with pytest.raises(ModelFileError, match=reason):
            Reconstructor.load(path)
    header_only = tmp_path / "h.rrm"
    body = json.dumps({"w": "nonsense", "__metadata__": {"radiorecon": "{}"}}).encode()
    header_only.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(ModelFileError, match="malformed tensor table"):
        Reconstructor.load(header_only)
    listed = tmp_path / "l.rrm"
    body = json.dumps({"__metadata__": ["radiorecon"]}).encode()
    listed.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(ModelFileError, match="no radiorecon metadata"):
        Reconstructor.load(listed)
