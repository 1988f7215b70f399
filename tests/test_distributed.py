"""Data-parallel training: two CPU processes (gloo) against one process."""

import pytest

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _backends
from radiorecon import Reconstructor
from radiorecon.exceptions import InputError
from radiorecon.training import Trainer

# 12 images in batches of 5: shards of 3 and 2 images (so the gradients must
# be weighted by shard size), and a final batch of 2, one image each.
FIT = dict(epochs=2, batch_size=5, seed=3, progress=False)


class Dcor4Backend(_backends.ConvBackend):
    """A backend with a term on the batch as a whole, like STAR's distance correlation."""

    min_batch_size = 4


def weights(rec):
    return {k: v.clone() for k, v in rec.backend.state_dict().items()}


def _train(rank, store, data, out):
    """One of two processes: trains straight, in two runs through a checkpoint, and is refused."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        dirty, sky = data
        # Each process starts from weights of its own; process 0's are shared.
        straight = Reconstructor("test-conv").fit(dirty, sky, **{**FIT, "seed": 3 + rank})
        ckpt = f"{out}/ckpt.rrm"
        Reconstructor("test-conv").fit(dirty, sky, **{**FIT, "epochs": 1}, checkpoint=ckpt)
        resumed = Reconstructor("test-conv").fit(dirty, sky, **FIT, checkpoint=ckpt)
        errors = []
        for backend, batch_size in [(_backends.PriorBackend(), 8), (Dcor4Backend(), 6)]:
            try:
                Trainer(backend, epochs=1, batch_size=batch_size)
            except ValueError as exc:
                errors.append(str(exc))
        torch.save({"straight": weights(straight), "resumed": weights(resumed), "history": straight.history,
                    "errors": errors}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_train_as_one(pairs, tmp_path):
    dirty, sky = pairs[0][:12], pairs[1][:12]
    # First, so that the children inherit what training imports (torch's optimisers take seconds).
    one = Reconstructor("test-conv").fit(dirty, sky, **FIT)
    # fork: the children inherit the test backends and start in a fraction of a second.
    mp.start_processes(_train, args=(tmp_path / "store", (dirty, sky), tmp_path), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank in ranks:
        for run in ("straight", "resumed"):
            for key, value in weights(one).items():
                torch.testing.assert_close(rank[run][key], value, rtol=0, atol=1e-6)
        assert [h["epoch"] for h in rank["history"]] == [1, 2]
        np.testing.assert_allclose([h["mse"] for h in rank["history"]], [h["mse"] for h in one.history], rtol=1e-5)
    prior, dcor = ranks[0]["errors"]
    assert "no trainable parameters" in prior
    assert "shards of 3 images" in dcor and "batch_size=8" in dcor


def test_distributed_needs_a_process_group(pairs):
    with pytest.raises(InputError, match="init_process_group"):
        Reconstructor("test-conv").fit(*pairs, epochs=1, progress=False, distributed=True)
    with pytest.raises(TypeError, match="distributed must be"):
        Reconstructor("test-conv").fit(*pairs, epochs=1, progress=False, distributed="yes")
