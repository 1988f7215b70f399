import numpy as np
import pytest
import torch

from radiorecon import Backend, Prediction
from radiorecon.backend import CAPABILITIES

import _backends


def test_capability_vocabulary():
    assert CAPABILITIES == {
        "reconstruct", "draws", "std", "sample", "generate", "deblend", "needs_training", "needs_psf",
        "paired",
    }
    with pytest.raises(TypeError, match="unknown capabilities"):
        type("Bad", (Backend,), {"capabilities": {"reconstruct", "teleport"}})


def test_config_is_checked_and_json_only():
    b = _backends.ConvBackend(noise=0.5)
    assert b.config == {"learning_rate": 0.05, "noise": 0.5}
    with pytest.raises(TypeError, match="Unknown configuration.*colour.*Valid keys: learning_rate, noise"):
        _backends.ConvBackend(colour="red")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        _backends.ConvBackend(noise=np.float32(0.1) * np.ones(2))


def test_presets_merge_under_the_config():
    class Preset(_backends.ConvBackend):
        presets = {"loud": {"noise": 2.0, "learning_rate": 0.5}}

    assert Preset(preset="loud").config == {"learning_rate": 0.5, "noise": 2.0}
    assert Preset(preset="loud", noise=3.0).config == {"learning_rate": 0.5, "noise": 3.0}
    with pytest.raises(ValueError, match="Unknown preset 'quiet'.*loud"):
        Preset(preset="quiet")
    with pytest.raises(ValueError, match="choose among none"):
        _backends.ConvBackend(preset="loud")


def test_state_dict_round_trip():
    a, b = _backends.ConvBackend(), _backends.ConvBackend()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.net.weight, b.net.weight)
    with pytest.raises(KeyError, match="unexpected tensor"):
        b.load_state_dict({"other.weight": torch.zeros(1)})


def test_prediction_validation():
    x = torch.zeros(2, 4, 4)
    assert Prediction(samples=x[None]).samples.shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="either samples or a mean"):
        Prediction()
    with pytest.raises(ValueError, match="either samples or a mean"):
        Prediction(samples=x[None], mean=x)
    with pytest.raises(ValueError, match="std goes with a mean"):
        Prediction(samples=x[None], std=x)
    with pytest.raises(ValueError, match=r"\(batch, ny, nx\)"):
        Prediction(mean=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="residual has shape"):
        Prediction(mean=x, extras={"residual": torch.zeros(2, 3, 3)})


def test_unimplemented_methods_say_which():
    class Bare(Backend):
        capabilities = {"reconstruct"}

    with pytest.raises(NotImplementedError, match="Bare does not implement predict"):
        Bare().predict(torch.zeros(1, 2, 2))


def test_network_evaluations_default():
    assert _backends.ConvBackend().network_evaluations(10) == 10
    assert _backends.SmoothBackend().network_evaluations(1) == 0
