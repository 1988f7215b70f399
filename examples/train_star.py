"""Train a STAR model on cut-outs of simulated full-field observations.

The recipe (defaults of this script): 512x512 observations of the default
preset (ALMA cycle 5.3, 0.1" pixels, 50 uJy/beam, 1-5 sources anywhere in
the primary beam and empty fields at the preset's rate, the full PSF with
its sidelobes), each observed whole and cut to a 128x128 window around the
sources' region (`radiorecon.simulate.SimulatedPairs` with ``crop``),
simulated on the fly in ``--workers`` data-loader processes: no fixed set of
pairs is held. The networks see the field through a pixel-unshuffle stem
(``stem="unshuffle"``, ``downsample=4``: each 4x4 block of pixels is 16
channels of a 32x32 grid, 4x cheaper than the 2x2 bins of the earlier
models at the same crop, and lossless), predict a non-negative sky
(``nonnegative=True``) and learn the median sky rather than the mean
(``content_loss="l1"``, weighted 10 against the composite terms), and its
predictions set the network's faint floor to exactly 0 (``--dead-zone``),
so that empty sky comes out empty:

    python examples/train_star.py star.rrm --threads 1 --workers 1 --seed 11

Each epoch sees the same ``--pairs`` distinct fields (default 6000 fields x
40 epochs = 240000 pair visits, 10x the earlier model's; a checkpoint after
every epoch); the fields are simulated in the first epoch and kept in
``<output>.pairs/`` (``--cache DIR`` elsewhere, 0.8 GB; ``--no-cache``
simulates them in every epoch, which costs more than the training steps),
so later epochs and resumed runs read them; the same command resumes an
interrupted run from ``<output>.ckpt`` to the same weights, and the
checkpoint is kept once the model is written, so that a larger
``--epochs`` (with ``--overwrite``) extends a finished run to the weights
of a longer one. The model file records the
training domain (preset, beam, pixel size, noise; see ``radiorecon info``),
against which ``predict`` checks images. The training seed is never the
benchmark's (2026).

Measured (one thread per process, 2-core AMD EPYC, torch 2.13.0+cpu, next
to other work): a training step of 16 cut-outs of 128x128 takes 0.93 s with
the unshuffle stem against 3.75 s with 2x2 bins (same widths, 1.3M
parameters), and a 512x512 prediction 0.07 s against 0.25 s
(``python benchmarks/bench_stem.py``).

A first run with the content loss weighted 1 (as the shipped model's MSE
was) had, after two epochs, 17 spurious sources per image at 5 sigma and a
content loss rising from epoch to epoch: the composite terms' gradients,
reaching the content through the decoder, outweighed the bounded gradient
of the L1 loss and made the content carry the noise.

The defaults (L1 weighted 10) fail too: after 4 epochs (1500 steps) the
content was the same faint floor for every image, its L1 error on fresh
cut-outs (0.0058) worse than an empty sky's (0.0054), and no source was
found in 12 test images. Measured on one cache of 1500 fields
(``--pairs 1500``; correlation of predicted and true normalised
sky over 32 fresh cut-outs, ``--content-loss l1+mse`` for all):

=============================================  ======  ===========
run                                            epochs  correlation
=============================================  ======  ===========
full STAR                                      8       -0.002
``--preset no-dcor`` (content carries noise)   4       0.034
``--isolate-content``                          4       0.081
``--isolate-content``                          8       0.389
``--isolate-content``                          16      0.457
``--preset only-mse`` (a plain U-Net)          4       0.530
``--preset only-mse``                          16      0.540
=============================================  ======  ===========

Where the sky is sparse the content loss is ~1 % of the composite's, so the
composite term makes the content carry the image's noise and the distance
correlation, blind to scale, then drives it to a constant;
``--isolate-content`` lets the content learn from the true sky alone. None
of these short runs found many sources at the thresholds the calibration
grid then offered (2.5 sigma and up; the 16-epoch ``--isolate-content``
and ``only-mse`` runs: F1 0.17 on 12 test images, the estimate shrinking
faint sources to a third of their brightness).

Scored with calibrated thresholds (``CALIBRATION_GRID`` reaches 0.25 sigma
now; docs/star.rst has the table), the 16-epoch ``--isolate-content`` run
detects more than the matched filter on 200 test images (F1 0.383 +- 0.025
at 0.75 sigma against 0.365 +- 0.024), and the ablations at the same
budget (``--preset only-mse|no-dcor|dcor|two-branches --isolate-content
--content-loss l1+mse --pairs 1500 --epochs 16 --cache DIR --seed 11``,
3.3-14.3 min each on one thread, a benchmark on the other core; trained
again from these commands, they score the same) all score lower.
Under the papers' protocol, though, every one of them has 13-280 spurious
sources per 512x512 image (~1 % of the full method's background is not
exactly 0).

The shipped model (``radiorecon/data/models/star.rrm``) is epoch 16 of a
longer run, ``--isolate-content --content-loss l1+mse --pairs 6000 --seed
11 --threads 1 --workers 1`` (the defaults otherwise: 40 epochs asked for):
96000 pair visits (4x the 24000 of the model it replaced; the issue's aim
is 10x), 111 minutes on one thread of a 2-core AMD EPYC (torch
2.13.0+cpu) next to other work, the first epoch simulating the 6000
fields. The run went on to epoch 25 (150000 visits, about 7 minutes an
epoch) and was stopped there: scored on 60 images of the calibration set
at thresholds chosen on its other 60, epoch 25 found no more (F1 0.424 at
3 sigma against 0.448 at 2.5) and had more spurious sources under the
papers' protocol (1.9 per image against 1.1), so epoch 16 ships; its
checkpoint is kept off the repository. The model file was then given a
dead zone of 0.1 (``set_params(dead_zone=0.1)``: at epochs 11-16 some of
the 16 sub-pixel outputs of the unshuffle stem kept a floor of ~1e-9
Jy/pixel, in 72 % of the pixels of an empty field, which the published
protocol counted as 12 spurious sources per image) and calibrated on 120
images of seed 7 that neither training nor the benchmark uses::

    radiorecon simulate 120 cal120 --seed 7
    radiorecon calibrate star-e16.rrm --data cal120 --samples 10 --floor --reliability -o star.rrm

(then ``Reconstructor.calibrate_flux_errors(cal120, n_samples=10)`` once
more, after its default became the 1-sigma coverage, and later on 400
more images, ``radiorecon simulate 400 cal400 --seed 8``, where the floor
of cal120's 81 sources covered only 0.57 of 224): catalog threshold
2.5 sigma (purity 0.93 on those images), uncertainty scale 253.5 and floor
0.0422 (normalised; 2.1 uJy/pixel), flux error floor 0.999 times the noise
for 10 styles and 1.56 for one run (the same 400 images, ``radiorecon
calibrate ... --samples 1 --only flux-errors``, 3.5 minutes; the floor of
10 styles covered 0.46 of the fluxes of one run, 1.56 covers 0.683),
detection probability ``1 / (1 + exp(4.41 - 5.82 ln S/N))``. docs/star.rst
has its benchmark.

The shipped model was then fine-tuned to the issue's 10x budget, on
fields it had not seen, at a third of the learning rate (``--init``,
``--learning-rate``: the networks keep their normalisation)::

    python examples/train_star.py star-ft.rrm --init radiorecon/data/models/star.rrm \
        --learning-rate 3e-4 --pairs 24000 --epochs 6 --seed 12 --threads 2 --workers 1

144000 more pair visits (240000 in all, 10x the 24000 of the first
model; 24000 new fields of seed 12, simulated by the worker in the first
epoch and cached, 3.2 GB), 77.5 minutes on 2 threads of the 2-core AMD
EPYC (torch 2.13.0+cpu). It is not shipped. Scored on ``cal400`` (images
0-159, thresholds chosen on its images 320-399, ``radiorecon benchmark
--data cal400 --n-images 160 --calibration 80 --backends
pretrained:star@1,star-ft.rrm@1``; neither the benchmark's ``ds240`` nor
training uses them), its significance-limited F1 is 0.371 +- 0.025
against the shipped model's 0.346 +- 0.025, but at a purity of 0.84
against 0.89 on those images, and under the papers' protocol it has 3.4
spurious sources per image against 1.5 (F1 0.252 against 0.286). The
extra sources are not a faint floor: with ``dead_zone`` 0.4 instead of
0.1 it still has 2.5 (F1 0.365). Its epoch 2 (48000 visits into the
fine-tuning) scored 0.375 at a purity of 0.80 with 2.0 spurious sources.
The absolute error of the direct sky, summed over the pixels of 60 of
cal400's images (200-259), grew with the epochs
(0.0300 Jy for the shipped model; 0.0311, 0.0296, 0.0327, 0.0309,
0.0364, 0.0379 after epochs 1-6) while the training loss fell: a sign that
more visits of 128x128 cut-outs placed on the sources teach the network
to expect sources where a full field's sky is empty (the continued run's
epoch 25 showed the same). Cut-outs placed anywhere in the field, or a
lower rate still, are what to try next.

Most of the spurious sources of the papers' protocol (72 % for the
shipped model on cal400's images 200-259) lie beyond the sources' region,
which few windows centred on it reach; on those images the dirty image
peaks at a median S/N of 4.0 where they lie, so they are noise peaks.
Fine-tuned with half of the windows anywhere in the field::

    python examples/train_star.py star-fa.rrm --init radiorecon/data/models/star.rrm \
        --learning-rate 3e-4 --pairs 12000 --epochs 4 --crop-anywhere 0.5 --seed 12 \
        --threads 2 --workers 1

(48000 more pair visits, 144000 in all; 21.9 minutes on 2 threads of the
2-core AMD EPYC, torch 2.13.0+cpu, the worker simulating the 12000
fields in epoch 1), epoch 3 scored 0.354 +- 0.024 (purity 0.86) on
cal400 against the shipped model's 0.346, 0.318 under the papers'
protocol with 0.96 spurious sources per image (shipped: 0.286, 1.48), and
epoch 4 0.341, 0.303 and 1.31: the spurious count moves as much between
epochs (59, 139, 50, 80 on images 200-259 after epochs 1-4; shipped 81)
as it gained, most of them still lie outside the sources' region, and
the fluxes fall (flux R² -1.65 against -0.29). Not shipped.

The model shipped before (``--crop 0 --npix 64 --placement 3 --stem bin
--downsample 2 --content-loss mse --no-nonnegative --pairs 2000 --epochs
12``: 64x64 fields with all sources within 3" of the centre, 24000 pair
visits, 26.8 minutes, at commit b48dabb) had a catalog threshold of 2.75
sigma and an uncertainty scale of 169 calibrated on 40 images of seed 7.
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
    parser.add_argument("--preset", default=None, help="STAR preset (default: the full method)")
    parser.add_argument("--pairs", type=int, default=6000, help="distinct fields per epoch (default 6000)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--npix", type=int, default=None, help="field size (default: the preset's, 512)")
    parser.add_argument("--crop", type=int, default=128, help="cut-out size; 0 for whole fields (default 128)")
    parser.add_argument("--crop-anywhere", type=float, default=0.0,
                        help="fraction of cut-outs placed anywhere in the field rather than on the sources' region")
    parser.add_argument("--placement", type=float, default=None,
                        help="sources within this many arcsec of the centre (default: the preset's)")
    parser.add_argument("--stem", choices=("unshuffle", "bin"), default="unshuffle")
    parser.add_argument("--downsample", type=int, default=4)
    parser.add_argument("--content-loss", choices=("l1+mse", "l1", "mse"), default="l1")
    parser.add_argument("--no-nonnegative", dest="nonnegative", action="store_false")
    parser.add_argument("--isolate-content", action="store_true",
                        help="the composite and dCor terms do not train the content net (STAR's isolate_content)")
    parser.add_argument("--sky-softening", type=float, default=None,
                        help="STAR's sky_softening (default: 0.025 with the unshuffle stem, 0.1 with bins)")
    parser.add_argument("--dead-zone", type=float, default=0.1,
                        help="STAR's dead_zone, applied at prediction only (default 0.1: chosen on 40 calibration "
                             "images of seed 7, where it cut spurious sources under the published protocol from "
                             "7.7 to 1.2 per image with the same significance-limited catalog)")
    parser.add_argument("--content-weight", type=float, default=10.0,
                        help="weight of the content loss (default 10: against the composite terms, whose "
                             "gradients would otherwise make the content carry the noise)")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache", metavar="DIR",
                        help="where the simulated pairs are kept (SimulatedPairs cache=; default <output>.pairs, "
                             "0.8 GB for the default 6000 cut-outs): every epoch after the first, and a resumed run, reads them instead "
                             "of simulating them again (the same pairs, so the same weights)")
    parser.add_argument("--no-cache", action="store_true", help="simulate the pairs again in every epoch")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this trained STAR model file instead of training fresh networks (its "
                             "network options and normalisation are kept; the options above that shape the "
                             "networks are ignored)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam's learning rate (default: the model's, 1e-3 for fresh networks)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0, help="data-loader processes simulating pairs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {}
    if args.npix:
        overrides["npix"] = args.npix
    if args.placement is not None:
        overrides["placement_radius"] = args.placement * u.arcsec
    cache = None if args.no_cache else args.cache or args.output + ".pairs"
    try:
        pairs = SimulatedPairs(args.pairs, seed=args.seed, crop=args.crop or None, cache=cache,
                               crop_anywhere=args.crop_anywhere if args.crop else 0.0, **overrides)
    except ValueError as exc:  # bad sizes or fractions, or a cache of other settings: say so as usage
        parser.error(str(exc))
    # The softening is per predicted pixel: a 2x2 bin holds 4 native pixels' flux.
    softening = args.sky_softening or (0.025 if args.stem == "unshuffle" else 0.1)
    if args.init:
        rec = Reconstructor.load(args.init)
        if rec.backend_name != "star":
            parser.error(f"{args.init} holds a {rec.backend_name!r} model, not a STAR one")
    else:
        rec = Reconstructor(
            "star", preset=args.preset, stem=args.stem, downsample=args.downsample, content_loss=args.content_loss,
            nonnegative=args.nonnegative, sky_softening=softening, base_channels=args.base_channels,
            content_weight=args.content_weight, isolate_content=args.isolate_content, dead_zone=args.dead_zone,
        )
    if args.learning_rate is not None:
        rec.set_params(learning_rate=args.learning_rate)
    start = time.perf_counter()
    rec.fit(
        pairs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        checkpoint=args.output + ".ckpt",
        warm_start=bool(args.init),
        **({"workers": args.workers} if args.workers else {}),
    )
    rec.save(args.output, overwrite=args.overwrite)
    # The checkpoint stays, with the optimiser's state: a larger --epochs extends this run.
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {args.output}: {args.epochs} epochs of {args.pairs} pairs ({args.epochs * args.pairs} pair "
          f"visits) in {minutes:.1f} min this run; last epoch {rec.history[-1] if rec.history else 'resumed'}")


if __name__ == "__main__":
    main()
