"""Where torch runs: the device, the number of threads, the memory a job may take.

Internal to radiorecon (the front door, the pipeline and the trainer use it);
not part of the public API.
"""

import contextlib
import logging
import os

from ._validate import check_int

log = logging.getLogger("radiorecon")

__all__ = ["resolve_device", "threads", "available_memory", "check_memory"]


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
def threads(n):
    """Run torch's CPU work on ``n`` threads, restoring the previous number afterwards.

    ``None`` leaves torch's setting alone: ``OMP_NUM_THREADS`` when set,
    else one thread per core. On a busy machine fewer threads than cores
    are often much faster (torch's threads spin while they wait for each
    other).
    """
    import torch

    if n is None:
        yield
        return
    n = check_int(n, "threads")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_memory():
    """Bytes of memory this process may use: the machine's, or its container's limit if lower.

    None if neither can be read.
    """
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        pass
    # cgroup v2, then v1: a container may allow far less than the machine has.
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def check_memory(nbytes, what, fix, fraction=0.5):
    """Refuse up front a job that needs more than ``fraction`` of the memory.

    Raises
    ------
    MemoryError
        Naming ``what`` needs the memory, the estimate, and ``fix``.
    """
    total = available_memory()
    if total is not None and nbytes > fraction * total:
        raise MemoryError(
            f"{what} would need about {nbytes / 2**30:.1f} GiB, more than half of this machine's "
            f"{total / 2**30:.1f} GiB; {fix}"
        )
