"""Train a conditional DDPM on cut-outs of simulated full-field observations.

The recipe (defaults of this script) is STAR's (``examples/train_star.py``):
512x512 observations of the default preset (ALMA cycle 5.3, 0.1" pixels,
50 uJy/beam, 1-5 sources anywhere in the primary beam and empty fields at
the preset's rate, the full PSF with its sidelobes), each cut to a 128x128
window around the sources' region (`radiorecon.simulate.SimulatedPairs`
with ``crop``), and networks that see the field through a pixel-unshuffle
stem (``stem="unshuffle"``, ``downsample=4``: 4x4 blocks of pixels as 16
channels of a 32x32 grid)::

    python examples/train_ddpm.py ddpm.rrm --threads 1 --workers 1 --seed 11

Diffusion needs many more optimisation steps than STAR, and simulating a
pair (a whole 512x512 observation) costs more than a step, so ``--pairs``
fields are simulated once, kept in ``--cache`` (memory-mapped on disk,
``<output>.pairs/`` by default; ``--no-cache`` simulates them again every
epoch) and seen in all eight flips and quarter turns (the backend's
augmentation) over ``--epochs`` epochs. Interrupt at any time: the same command resumes from
``<output>.ckpt`` to the same weights; the checkpoint is kept once the
model is written, so that a larger ``--epochs`` (with ``--overwrite``)
extends a finished run to the weights of a longer one. The model file records the training
domain (preset, beam, pixel size, noise; see ``radiorecon info``), against
which ``predict`` checks images. The training seed is never the
benchmark's (2026).

The shipped model (``Reconstructor.pretrained("ddpm")``,
``radiorecon/data/models/ddpm.rrm``) is this recipe run for 60 epochs
(``--pairs 6000 --seed 11 --threads 1 --epochs 60``, with ``--cache``):
11280 optimisation steps, 360000 pair visits (15x the 24000 of the
64x64 models shipped first), 57.6 minutes of wall time on one thread of a
2-core AMD EPYC (torch 2.13.0+cpu, next to other work): 34.3 minutes for
epochs 1-36, a run stopped there whose model shipped for a while, then
23.3 minutes for epochs 37-60, resumed from its epoch-36 checkpoint with
``--epochs 60`` (the same weights as one run of 60 epochs). Last epoch's
loss 0.00068 (epoch 36: 0.00069). It was given ``dead_zone=0.05`` and
calibrated on all 120 images of ``radiorecon simulate 120 cal120 --seed
7`` with 20 samples, through the calls this command makes::

    radiorecon calibrate ddpm.rrm --set dead_zone=0.05 --data cal120 --samples 20 --floor \
        --reliability -o ddpm.rrm

(54 minutes on 2 threads next to other work; the detection probability
was fitted again to the same 73 detections once the power of the fraction
of samples was added to its form): catalog threshold 3.25 sigma (purity
0.93), uncertainty scale 1.27 and floor 0.037, flux error floor 1.14 times
the noise, detection probability ``fraction**0.415 / (1 + exp(-(1.70 +
3.39 ln S/N)))``; the flux error floor was later chosen again, 1.22, on
the 200 sources it finds in 400 more images (``radiorecon simulate 400
cal400 --seed 8``, 20 samples, ``Reconstructor.calibrate_flux_errors``
inside ``reusing_predictions``, which ``radiorecon calibrate ... --only
flux-errors`` does now; 1.14 covered 0.675 of them, 1.22 covers
0.685), and a detection probability for 5 draws was added, fitted to the
263 detections of the same 400 images with 5 draws (``radiorecon
calibrate pretrained:ddpm --data cal400 --samples 5 --only reliability
--cache draws5``, 66 minutes on one thread next to other work):
``1 / (1 + exp(-(-15.87 + 12.90 ln S/N)))``, the fraction of 5 draws
telling nothing more than the S/N. On the first 40 images of cal120, at 2.75 sigma, it found 39 of
110 sources with 2 spurious detections, where the 36-epoch
model found 37 with 5. On the 200 test images of docs/ddpm.rst's table
(``radiorecon simulate 240 ds240 --seed 2026``, 20 samples): F1 0.304 at
3.25 sigma (purity 0.89), 0.372 with 1.0 spurious sources per image under
the papers' protocol, source-pixel coverage 0.72 / 0.95 at 1 / 2 sigma,
catalog flux coverage 0.62 / 0.95 at 1 / 2 sigma with the floor of 1.22
(0.58 / 0.92 with 1.14, chosen on only 68 sources). An earlier run of
this recipe predicting the noise (``--prediction eps``, measured after 53 epochs) drew half-noise
skies and was not shipped.

The model shipped before (``radiorecon/data/models/ddpm.rrm`` at commit abf6290)
was trained with ``--crop 0 --npix 64
--placement 3 --stem bin --downsample 2 --pairs 4000 --epochs 60 --batch-size
32``: 64x64 fields with the sources within 3" of the centre, 7500
optimisation steps, 240000 pair visits, 37.9 minutes of wall time on a
2-core CPU (AMD EPYC, torch 2.13.0+cpu, one thread, next to other work);
last epoch's loss 0.0045. Its training domain was added to its metadata
afterwards (its tensors are unchanged byte for byte).
"""

import argparse
import os
import time

import astropy.units as u
import torch

from radiorecon import Reconstructor
from radiorecon.simulate import SimulatedPairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="model file to write (.rrm)")
    parser.add_argument("--preset", default=None, help="DDPM preset (default: the small CPU network)")
    parser.add_argument("--pairs", type=int, default=4000, help="distinct training fields (default 4000)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--npix", type=int, default=None, help="field size (default: the preset's, 512)")
    parser.add_argument("--crop", type=int, default=128, help="cut-out size; 0 for whole fields (default 128)")
    parser.add_argument("--placement", type=float, default=None,
                        help="sources within this many arcsec of the centre (default: the preset's)")
    parser.add_argument("--stem", choices=("unshuffle", "bin"), default="unshuffle")
    parser.add_argument("--downsample", type=int, default=4)
    parser.add_argument("--sky-softening", type=float, default=None,
                        help="the DDPM's sky_softening (default: 0.025 with the unshuffle stem, 0.1 with bins)")
    parser.add_argument("--prediction", choices=("x0", "eps"), default="x0",
                        help="what the network predicts (default x0, the clean sky: a 16-channel network on the "
                             "16 channels of the unshuffle stem cannot carry the noise through, eps-prediction "
                             "kept a noise error of 0.13 at every step and drew half-noise skies)")
    parser.add_argument("--dead-zone", type=float, default=0.0,
                        help="the DDPM's dead_zone, applied at prediction only (default 0)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", metavar="DIR",
                        help="where the simulated pairs are kept (SimulatedPairs cache=; default <output>.pairs, "
                             "0.5 GB for the default 4000 cut-outs): every epoch after the first, and a resumed run, reads them instead "
                             "of simulating them again (the same pairs, so the same weights)")
    parser.add_argument("--no-cache", action="store_true", help="simulate the pairs again in every epoch")
    parser.add_argument("--workers", type=int, default=0, help="data-loader processes simulating pairs")
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
    overrides = {}
    if args.npix:
        overrides["npix"] = args.npix
    if args.placement is not None:
        overrides["placement_radius"] = args.placement * u.arcsec
    cache = None if args.no_cache else args.cache or args.output + ".pairs"
    pairs = SimulatedPairs(args.pairs, seed=args.seed, crop=args.crop or None, cache=cache, **overrides)
    # The softening is per predicted pixel: a 2x2 bin holds 4 native pixels' flux.
    softening = args.sky_softening or (0.025 if args.stem == "unshuffle" else 0.1)
    rec = Reconstructor("ddpm", preset=args.preset, stem=args.stem, downsample=args.downsample,
                        sky_softening=softening, prediction=args.prediction, dead_zone=args.dead_zone)
    rec.fit(
        pairs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        checkpoint=args.output + ".ckpt",
        workers=args.workers,
    )
    rec.save(args.output, overwrite=args.overwrite)
    # The checkpoint stays, with the optimiser's state: a larger --epochs extends this run.
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {args.output}: {args.epochs} epochs of {args.pairs} pairs in {minutes:.1f} min; "
          f"last epoch {rec.history[-1]}")


if __name__ == "__main__":
    main()
