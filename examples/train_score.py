"""Train a score-based (EDM) sky prior on simulated skies, fresh in every epoch.

Two recipes (``--recipe``), one per model the ``score`` backend is to ship:

``lotss``
    The generator in the seed's setting (Vicanek Martinez & Brüggen):
    noise-free 80x80 sky cut-outs of the ``lotss`` preset (1.5" pixels, one
    radio galaxy or compact source near the centre, 5-100 mJy), the sky
    half of `radiorecon.simulate.SimulatedPairs` (`radiorecon.backends.score.SkyImages`).
    80 is divisible by the U-Net's multiple (8 with four levels), so the
    cut-outs are used as they are::

        python examples/train_score.py score-lotss.rrm --recipe lotss --threads 1 --workers 1 --seed 11

``alma``
    The reconstruction prior: 128x128 cut-outs (``crop``) of 512x512
    apparent skies (sky times primary beam, 0.1" pixels) of the default ALMA
    preset (Gaussian sources) and of ``extended`` (its radio galaxies at the
    same resolution), alternating image by image::

        python examples/train_score.py score.rrm --recipe alma --threads 1 --workers 1 --seed 11

Every epoch sees ``--images`` skies no earlier epoch saw (epoch ``e``
trains on images ``e * images`` to ``(e + 1) * images - 1`` of one
simulated stream), simulated on the fly from ``(seed, index)`` in
``--workers`` data-loader processes: a prior learns from as many distinct
skies as the run has steps, and no set is held in memory. Each epoch is one
`~radiorecon.Reconstructor.fit` call resuming from ``<output>.ckpt``, so an
interrupted run continues, with the same command, to the same weights as an
uninterrupted one, and a larger ``--epochs`` extends a run whose checkpoint
is kept (``--keep-checkpoint``). The training seed is never the
benchmark's (2026).

The network (both recipes): `radiorecon.nn.UNet` with 16 base channels,
channel multipliers (1, 2, 4, 4) and self-attention at the lowest
resolution (10x10 for LoTSS cut-outs, 16x16 for the ALMA crops), so that
its field of view spans a whole radio galaxy; 1.13 M parameters (the file
holds them twice: the weights and their moving average).

Measured (one torch thread, ``--workers 1``, 2-core AMD EPYC shared with
other work, torch 2.13.0+cpu; from the progress bar of a one-epoch run of
``--images 640`` and ``--images 480``): a step of 16 images takes 1.1-1.5 s
for the ``lotss`` recipe (0.07-0.09 s per image) and 2.9 s for ``alma``
(0.18 s per image). Simulating an image takes 0.004 s (``lotss``) and
0.09 s (``alma``: a whole 512x512 observation is made for each cut-out), so
on a GPU ``alma`` needs about one worker per 10 images a second it trains
on. With the defaults (``lotss``: 60 epochs of 4000 images, 15000 steps,
240000 images; ``alma``: 40 epochs of 2000, 5000 steps, 80000 images) that
is about 5-6 and 4 hours on one CPU thread. The model file is 9.1 MB.

The shipped models (``radiorecon/data/models/``), trained with the commands
above, stopped early with ``--epochs N --keep-checkpoint`` (a constant
learning rate and an EMA of the weights, so a shorter run is a complete
model), on one torch thread each of a 2-core AMD EPYC (torch 2.13.0+cpu,
one data-loader worker), the two runs side by side and next to other work:

``score-lotss.rrm``
    12 epochs of 4000 skies: 48000 images seen, 3000 steps of 16; 67.6
    minutes of wall time (2026-12-05 11:19-12:27 UTC); last epoch's loss 1.34.
``score.rrm``
    12 epochs of 2000 skies: 24000 images seen, 1500 steps of 16; 87.8
    minutes of wall time (2026-12-05 11:19-12:47 UTC); last epoch's loss
    9.59. Written again from its kept checkpoint after
    ``posterior_sigma_max`` was added to the recipe (an inference setting:
    the weights are those of the run).
"""

import argparse
import os
import time

import torch

from radiorecon import Reconstructor, modelfile
from radiorecon.backends.score import ScoreBackend, SkyImages
from radiorecon.simulate import SimulatedPairs

RECIPES = {
    # images per epoch, epochs
    "lotss": (4000, 60),
    "alma": (2000, 40),
}

#: Noise levels per recipe, normalised units. ``sigma_max`` is about the
#: 90th percentile of the distances between training skies (Song & Ermon
#: 2020: 420 for ``lotss``, 12300 for ``alma``, whose 128x128 crops hold
#: faint Gaussian sources, bright radio galaxies or nothing); two standard
#: deviations of the log-normal training levels (``p_mean``, ``p_std``) span
#: about 0.02 to ``sigma_max``. ``lotss``'s are the backend's defaults. The
#: ``alma`` prior's posterior ODE starts at 80 (``posterior_sigma_max``, an
#: inference setting): from 10000 the data's noise becomes sky (docs/score.rst).
NOISE_LEVELS = {
    "lotss": {"sigma_max": 500.0, "p_mean": 1.0, "p_std": 2.4},
    "alma": {"sigma_max": 10000.0, "p_mean": 2.3, "p_std": 3.2, "posterior_sigma_max": 80.0},
}


class Alternating:
    """Items of two data sets of images in turn: item ``2 k`` is ``a[k]``, ``2 k + 1`` is ``b[k]``.

    Its ``units`` are ``a``'s (the two must share them); its training
    domain is the pixel size they share (no preset: they have two).
    """

    def __init__(self, a, b):
        if a.units != b.units:
            raise ValueError(f"the data sets have different units: {a.units} and {b.units}")
        pixels = {(d or {}).get("pixel_scale_arcsec") for d in (a.domain, b.domain)}
        if len(pixels) != 1:
            raise ValueError(f"the data sets have different pixels: {sorted(map(str, pixels))} arcsec")
        self.a, self.b, self.units = a, b, a.units
        self.domain = {**a.domain, "preset": None} if a.domain else None

    def __len__(self):
        return 2 * min(len(self.a), len(self.b))

    def __getitem__(self, i):
        return (self.a if i % 2 == 0 else self.b)[i // 2]


class Window:
    """Items ``start`` to ``start + n - 1`` of a data set (with its ``units`` and ``domain``)."""

    def __init__(self, items, start, n):
        # Not ``self.data``: objects with a ``data`` attribute are taken for images.
        self.items, self.start, self.n = items, start, n
        self.units, self.domain = items.units, items.domain

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(f"item {i} out of range for a window of {self.n}")
        return self.items[self.start + i]


def sky_stream(recipe, n, seed, crop):
    """The training skies of ``recipe``: ``n`` images, each made from ``(seed, index)`` when indexed."""
    if recipe == "lotss":
        return SkyImages(SimulatedPairs(n, preset="lotss", seed=seed))
    # Gaussian sources and radio galaxies from independent streams (seed, seed + 1).
    half = (n + 1) // 2
    return Alternating(
        SkyImages(SimulatedPairs(half, seed=seed, crop=crop)),
        SkyImages(SimulatedPairs(half, preset="extended", seed=seed + 1, crop=crop)),
    )


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="model file to write (.rrm)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    parser.add_argument("--images", type=int, default=None,
                        help="new skies per epoch (default: 4000 for lotss, 2000 for alma)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 60 for lotss, 40 for alma")
    parser.add_argument("--crop", type=int, default=128, help="alma: cut-out size of the 512x512 skies (default 128)")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--channel-mult", type=int_list, default=[1, 2, 4, 4], help="comma-separated (default 1,2,4,4)")
    parser.add_argument("--attention-levels", type=int_list, default=[3], help="comma-separated (default 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0, help="data-loader processes simulating skies")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep <output>.ckpt, to extend the run later with a larger --epochs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    default_images, default_epochs = RECIPES[args.recipe]
    images = args.images or default_images
    epochs = args.epochs or default_epochs

    stream = sky_stream(args.recipe, images * epochs, args.seed, args.crop)
    rec = Reconstructor(ScoreBackend(
        base_channels=args.base_channels, channel_mult=args.channel_mult, attention_levels=args.attention_levels,
        **NOISE_LEVELS[args.recipe],
    ))
    checkpoint = args.output + ".ckpt"
    done = modelfile.read_header(checkpoint)["training"]["epoch"] if os.path.exists(checkpoint) else 0
    start = time.perf_counter()
    for epoch in range(done, epochs):
        rec.fit(
            Window(stream, epoch * images, images),
            epochs=epoch + 1,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            checkpoint=checkpoint,
            workers=args.workers,
        )
        print(f"epoch {epoch + 1}/{epochs}: {rec.history[-1]}", flush=True)
    if done >= epochs:  # a kept, finished checkpoint: fit only loads it
        rec.fit(Window(stream, 0, images), epochs=done, seed=args.seed, device=args.device, progress=False,
                checkpoint=checkpoint)
    rec.save(args.output, overwrite=args.overwrite)
    if not args.keep_checkpoint:
        os.remove(checkpoint)
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {args.output}: {epochs} epochs of {images} new skies ({epochs * images} images seen, "
          f"{epochs * -(-images // args.batch_size)} steps); {max(epochs - done, 0)} epochs in {minutes:.1f} min "
          f"this run")


if __name__ == "__main__":
    main()
