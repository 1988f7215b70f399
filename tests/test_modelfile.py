import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from radiorecon import Backend, Reconstructor, available_pretrained, modelfile, registry
from radiorecon.exceptions import InputError, ModelFileError
from radiorecon.pretrained import pretrained_path, resolve_model_path

from conftest import record_build_devices


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
        ({**doc, "normalisation": {"scale": -1}}, "scale must be a positive"),
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


# -- checking a file against its backend before building it --------------------


def _document(cls, **config):
    """A model document for ``cls`` with ``config`` over its defaults."""
    return {
        "radiorecon_version": "0",
        "backend": cls.__name__,
        "backend_version": cls.version,
        "config": {**cls.default_config, **config},
        "normalisation": {"method": "scale", "scale": 1.0},
        "units": {"input": "Jy/beam", "target": "Jy/pixel"},
        "fitted": True,
        "history": [],
    }


@pytest.mark.parametrize(
    "name, config",
    [("star", {"base_channels": 100_000}), ("ddpm", {"base_channels": 100_000})],
)
def test_huge_config_is_refused_before_anything_is_built(tmp_path, monkeypatch, name, config):
    cls = registry.get_backend(name)
    path = tmp_path / "huge.rrm"
    doc = {**_document(cls, **config), "backend": name}
    state = cls().state_dict()
    modelfile.save(path, doc, state)
    held = sum(t.nbytes for t in state.values()) / 1e6
    built_on = record_build_devices(monkeypatch, cls)
    with pytest.raises(ModelFileError, match=f"refusing to build backend '{name}'.*asks for more than") as err:
        modelfile.read_model(path)
    assert str(path) in str(err.value) and str(err.value).endswith(f"but the file holds {held:.3g} MB")
    assert built_on == ["meta"]


class _Backend(Backend):
    """``layers`` linear layers of ``width``, and ``scratch`` floats outside the state.

    Records the device of a tensor it asks to make on the CPU.
    """

    default_config = {"layers": 1, "width": 2, "scratch": 1}
    devices = []

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.net = torch.nn.Sequential(*(torch.nn.Linear(c["width"], c["width"]) for _ in range(c["layers"])))
        self.scratch = torch.zeros(c["scratch"], device="cpu")
        self.devices.append(self.scratch.device.type)

    def modules(self):
        return {"net": self.net}


def test_expected_tensors_match_a_real_build_and_allocate_nothing():
    _Backend.devices.clear()
    expected = modelfile.expected_tensors(_Backend, {"layers": 2, "width": 3})
    assert _Backend.devices == ["meta"]  # even where the backend asks for the CPU
    real = _Backend(layers=2, width=3).state_dict()
    assert expected == {k: tuple(v.shape) for k, v in real.items()}
    star = registry.get_backend("star")
    assert modelfile.expected_tensors(star, {}) == {k: tuple(v.shape) for k, v in star().state_dict().items()}


def test_building_stops_at_its_budget():
    with pytest.raises(MemoryError, match="torch operations"):
        modelfile.expected_tensors(_Backend, {"layers": 100_000}, max_calls=1000)
    with pytest.raises(MemoryError, match="more than 1 kB of tensors"):
        modelfile.expected_tensors(_Backend, {"width": 1000}, max_bytes=1000)
    # Tensors outside the state count too: 4 TB, never allocated.
    with pytest.raises(MemoryError, match="more than 1 MB of tensors"):
        modelfile.expected_tensors(_Backend, {"scratch": 10**12}, max_bytes=10**6)
    with pytest.raises(TypeError, match="Unknown configuration"):
        modelfile.expected_tensors(_Backend, {"depth": 3})


def test_tensors_must_match_the_backend_exactly(tmp_path):
    path = tmp_path / "m.rrm"
    real = _Backend(layers=2, width=3).state_dict()
    tensors = {**real, "net.0.weight": torch.zeros(3, 4), "extra": torch.zeros(1)}
    del tensors["net.1.bias"]
    modelfile.save(path, _document(_Backend, layers=2, width=3), tensors)
    with pytest.raises(ModelFileError) as err:
        modelfile.read_model(path, get_backend=lambda name: _Backend)
    assert str(err.value) == (
        f"{path}: tensors do not fit backend '_Backend' with its config: missing net.1.bias; "
        "unexpected extra; shape of net.0.weight [3, 4] instead of [3, 3]"
    )
    modelfile.save(path, _document(_Backend, layers=2, width=3), real, overwrite=True)
    doc, cls, loaded = modelfile.read_model(path, get_backend=lambda name: _Backend)
    assert cls is _Backend and doc["config"] == {"layers": 2, "width": 3, "scratch": 1}
    assert all(torch.equal(loaded[k], real[k]) for k in real) and loaded.keys() == real.keys()


def test_read_model_refuses_unknown_newer_and_bad_configs(tmp_path):
    path = tmp_path / "m.rrm"

    def unknown(name):
        raise ValueError(f"Unknown radiorecon backend {name!r}")

    modelfile.save(path, _document(_Backend), {})
    with pytest.raises(ModelFileError, match="needs backend '_Backend', which is not available"):
        modelfile.read_model(path, get_backend=unknown)
    modelfile.save(path, {**_document(_Backend), "backend_version": "1.10"}, {}, overwrite=True)
    with pytest.raises(ModelFileError, match="version 1.10, newer than the installed version 1"):
        modelfile.read_model(path, get_backend=lambda name: _Backend)
    modelfile.save(path, {**_document(_Backend), "config": {"depth": 2}}, {}, overwrite=True)
    with pytest.raises(ModelFileError, match="config does not fit backend '_Backend': Unknown configuration"):
        modelfile.read_model(path, get_backend=lambda name: _Backend)
    modelfile.save(path, _document(_Backend, width=-5), {}, overwrite=True)  # torch's RuntimeError
    with pytest.raises(ModelFileError, match="config does not fit backend '_Backend': .*negative dimension"):
        modelfile.read_model(path, get_backend=lambda name: _Backend)


class _Peeking(_Backend):
    """Reads a value in ``__init__``, which the meta device cannot give."""

    def __init__(self, **config):
        super().__init__(**config)
        self.first = self.net[0].weight[0, 0].item()


def test_a_backend_that_cannot_be_checked_is_refused(tmp_path):
    path = tmp_path / "m.rrm"
    modelfile.save(path, _document(_Peeking), _Peeking().state_dict())
    reason = "'_Peeking' cannot be built on the meta device.*must make tensors without reading"
    with pytest.raises(ModelFileError, match=reason):
        modelfile.read_model(path, get_backend=lambda name: _Peeking)


@pytest.mark.parametrize("name", available_pretrained())
def test_shipped_models_pass_the_checks(name):
    doc, cls, tensors = modelfile.read_model(pretrained_path(name))
    # A shipped model is named for its backend, alone or with a suffix ("score-lotss").
    assert name.split("-")[0] == doc["backend"].split("-")[0] and doc["fitted"]
    assert cls is registry.get_backend(doc["backend"])
    assert {k: tuple(v.shape) for k, v in tensors.items()} == modelfile.expected_tensors(cls, doc["config"])


def test_save_refuses_what_reading_would_refuse(tmp_path):
    path = tmp_path / "m.rrm"
    nested = []
    for _ in range(70):
        nested = [nested]
    with pytest.raises(ValueError, match="nested more than 64"):
        modelfile.save(path, {**_document(_Backend), "history": nested}, {})
    with pytest.raises(ValueError, match="config of .* bytes"):
        modelfile.save(path, {**_document(_Backend), "config": {"layers": "x" * 1_000_001}}, {})
    assert not path.exists()


def test_unflatten_state_refuses_what_flatten_state_does_not_make():
    tensors = {"train/a": torch.ones(1)}
    for bad, reason in [
        ({"__tensor__": "train/b"}, "tensor 'train/b'"),
        ({"__tensor__": ["train/a"]}, "tensor \\['train/a'\\]"),
        ({"__float__": "1e5"}, "unexpected entry"),
        ({"__items__": [["a", 1, 2]]}, "unexpected entry"),
        ({"__items__": [[{"k": 1}, 1]]}, "key is a list or mapping"),
        ({"state": 1}, "unexpected entry with keys \\['state'\\]"),
    ]:
        with pytest.raises(ValueError, match=reason):
            modelfile.unflatten_state(bad, tensors)


# -- naming a model ------------------------------------------------------------


def test_resolve_model_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("pretrained:star") == pretrained_path("star")
    with pytest.raises(InputError, match="No pretrained model 'stra'.*available: .*star.*Did you mean 'star'"):
        resolve_model_path("pretrained:stra")
    hint = "^Model file star does not exist; for the shipped model, use pretrained:star$"
    with pytest.raises(FileNotFoundError, match=hint):
        resolve_model_path("star")
    with pytest.raises(FileNotFoundError, match="other.rrm does not exist \\(shipped models: .*pretrained:star"):
        resolve_model_path("other.rrm")
    (tmp_path / "star").mkdir()  # a directory is never a model file
    with pytest.raises(FileNotFoundError, match="star is a directory, not a model file"):
        resolve_model_path("star")
    (tmp_path / "m.rrm").write_bytes(b"")
    assert resolve_model_path(tmp_path / "m.rrm") == str(tmp_path / "m.rrm")
