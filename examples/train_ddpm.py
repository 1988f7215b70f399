"""Train a conditional DDPM on simulated default-preset observations.

This is the script that trained the model shipped as
``Reconstructor.pretrained("ddpm")`` (``radiorecon/data/models/ddpm.rrm``):

    python examples/train_ddpm.py ddpm.rrm --threads 1 --seed 11

With the defaults (4000 pairs simulated once, 60 epochs, batch 32: 7500
optimisation steps) it took 37.9 minutes of wall time on a 2-core CPU (AMD
EPYC, torch 2.13.0+cpu, one thread, next to other work); the last epoch's
loss was 0.0045. The shipped file's training domain was added to its
metadata afterwards (its tensors are unchanged byte for byte).

Training pairs are 64x64-pixel observations of the default preset (0.1"
pixels) with the sources within 3" of the centre, the cut-outs STAR trains
on (seed ``--seed``, never the benchmark's). Diffusion needs many more
optimisation steps than STAR, and simulating a pair costs as much as
several steps, so ``--pairs`` pairs are simulated once, kept in memory and
seen in all eight flips and quarter turns (the backend's augmentation) over
``--epochs`` epochs. Networks work on 2x2 bins (32x32 grids) and, being
convolutional with per-pixel normalisation, run on images of any size.
Interrupt at any time: the same command resumes from ``<output>.ckpt``.
The model file records the training domain (preset, beam, pixel size,
noise; see ``radiorecon info``), against which ``predict`` checks images.
"""

import argparse
import os
import time

import astropy.units as u
import numpy as np
import torch
from tqdm.auto import tqdm

from radiorecon import Reconstructor
from radiorecon.simulate import SimulatedPairs
from radiorecon.training import training_domain


class InMemoryPairs:
    """The pairs of a `SimulatedPairs`, simulated once and kept as arrays.

    Its ``units`` and ``domain`` (the preset, beam, pixel size and noise)
    are those of the pairs, so the model file records them.
    """

    def __init__(self, pairs, progress=True):
        self.units = pairs.units
        self.domain = training_domain(pairs)
        items = [pairs[i] for i in tqdm(range(len(pairs)), desc="simulate", disable=not progress)]
        self.inputs = np.stack([d for d, _ in items])
        self.targets = np.stack([s for _, s in items])

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.targets[i]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="model file to write (.rrm)")
    parser.add_argument("--preset", default=None, help="DDPM preset (default: the small CPU network)")
    parser.add_argument("--pairs", type=int, default=4000, help="distinct training pairs (default 4000)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--npix", type=int, default=64, help="size of the training cut-outs (default 64)")
    parser.add_argument("--placement", type=float, default=3.0,
                        help="sources within this many arcsec of the centre (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    pairs = InMemoryPairs(
        SimulatedPairs(args.pairs, seed=args.seed, npix=args.npix, placement_radius=args.placement * u.arcsec),
        progress=not args.no_progress,
    )
    rec = Reconstructor("ddpm", preset=args.preset)
    rec.fit(
        pairs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        checkpoint=args.output + ".ckpt",
    )
    rec.save(args.output, overwrite=args.overwrite)
    os.remove(args.output + ".ckpt")
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {args.output}: {args.epochs} epochs of {args.pairs} pairs in {minutes:.1f} min; "
          f"last epoch {rec.history[-1]}")


if __name__ == "__main__":
    main()
