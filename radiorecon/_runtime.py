"""Device choice and seeding shared by training and prediction."""

import contextlib
import logging

log = logging.getLogger("radiorecon")


def resolve_device(device):
    """Turn ``"auto"`` (CUDA when present, else CPU) or a name into a torch.device."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} asked for, but CUDA is not available here")
    return dev


@contextlib.contextmanager
def seeded(seed, device):
    """Run with torch's global generators seeded, restoring them afterwards.

    With ``seed=None`` the generators run on unseeded and are left as they
    are. Backends draw random numbers with torch's global functions
    (``torch.randn`` and friends), so this makes their results repeatable.
    """
    import torch

    if seed is None:
        yield
        return
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
