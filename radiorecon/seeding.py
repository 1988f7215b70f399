"""Random numbers that do not depend on how work is batched.

`predict` cuts images into tiles and splits many samples into several backend
calls; how it does so depends on ``batch_size`` and on the other images in
the call. So that an image's result depends only on the seed and its own
position in the list, every draw has its own generator, seeded from
``(seed, image, tile, sample)``: `Draws` hands a backend one generator per
(sample, batch row) of a call. Training, where batches are shuffled anyway,
uses torch's global generators under `seeded`.
"""

import contextlib

import numpy as np

__all__ = ["Draws", "stream_seed", "seeded"]


def stream_seed(seed, *keys):
    """A 63-bit seed for the random stream named by ``keys`` under ``seed``.

    Different keys give statistically independent streams (numpy's
    `~numpy.random.SeedSequence` hashes them); ``seed=None`` takes fresh
    entropy from the operating system.
    """
    words = np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in keys)).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & (2**63 - 1)


class Draws:
    """One torch generator per (sample, batch row) of a backend call.

    Backends draw every random number they use for a prediction through
    `randn` (or `generator`), so that results do not change with the batch
    size or with the neighbours of an image in the batch.

    Parameters
    ----------
    seeds : array of int, shape ``(n_samples, B)``
        Seed of each generator, e.g. from `stream_seed`.
    device : str or torch.device
        Where the numbers are drawn.

    Examples
    --------
    >>> from radiorecon.seeding import Draws
    >>> draws = Draws.from_seed(0, n_samples=3, batch=2)
    >>> draws.randn(4, 4).shape
    torch.Size([3, 2, 4, 4])
    """

    def __init__(self, seeds, device="cpu"):
        import torch

        seeds = np.asarray(seeds, dtype=np.int64)
        if seeds.ndim != 2:
            raise ValueError(f"Draws needs a (n_samples, batch) array of seeds, got shape {seeds.shape}")
        self.device = torch.device(device)
        self._generators = [
            [torch.Generator(device=self.device).manual_seed(int(s)) for s in row] for row in seeds
        ]

    @classmethod
    def from_seed(cls, seed, n_samples, batch, device="cpu"):
        """Generators for ``n_samples`` draws of ``batch`` independent rows under one seed."""
        seeds = [[stream_seed(seed, row, k) for row in range(batch)] for k in range(n_samples)]
        return cls(seeds, device)

    @property
    def shape(self):
        """``(n_samples, B)``: the grid of generators."""
        return (len(self._generators), len(self._generators[0]) if self._generators else 0)

    def generator(self, sample, row):
        """The `torch.Generator` of one sample of one batch row."""
        return self._generators[sample][row]

    def randn(self, *shape, dtype=None):
        """Standard-normal numbers of shape ``(n_samples, B, *shape)``.

        Each ``[k, b]`` slice comes from its own generator, in order, so a
        backend that draws several times (a diffusion sampler, once per
        step) gets the same numbers however the front door batches.
        """
        import torch

        return torch.stack(
            [
                torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in row])
                for row in self._generators
            ]
        )


@contextlib.contextmanager
def seeded(seed, device):
    """Run with torch's global generators seeded, restoring them afterwards.

    With ``seed=None`` the generators run on unseeded and are left as they
    are. Training draws with torch's global functions (``torch.randn`` and
    friends); a backend that does so in `predict` instead of using its
    `Draws` is repeatable under a seed too, but its results depend on
    batching.
    """
    import torch

    if seed is None:
        yield
        return
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
