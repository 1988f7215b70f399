"""Train a vae-deblend model (VAE, then its normalizing-flow prior) on isolated simulated sources.

The recipe (defaults of this script): noise-free 32x32 stamps of single
sources of the ``extended`` preset's population (compact sources, FR I and
FR II radio galaxies) at 0.3" pixels, the population and pixel scale of the
scenes of ``benchmarks/bench_deblend.py``, one source centred on each
(`radiorecon.simulate.blends.isolated_stamps`); then the backend's two
stages in one `~radiorecon.Reconstructor.fit`: ``--vae-epochs`` epochs of
the VAE (``vae_steps`` = those epochs' optimisation steps), then
``--flow-epochs`` epochs of the masked autoregressive flow on draws of the
encoder's posterior (``flow_latents="sample"``), with the VAE fixed::

    python examples/train_vae_deblend.py vae-deblend.rrm --threads 1 --seed 11

``--refit-flow MODEL`` keeps the VAE of a trained model and fits a fresh
flow alone (`~radiorecon.backends.vae_deblend.VaeDeblendBackend.with_new_prior`),
on draws of the posterior; give it the stamps the VAE was trained on (the
same ``--seed``, ``--stamps`` and ``--optical``/``--preset``: the script
checks their normalisation against the model's)::

    python examples/train_vae_deblend.py vae-deblend-sf.rrm --refit-flow vae-deblend.rrm --threads 1 --seed 11

``--preset lotss`` trains on the LoTSS-like population at its own 1.5"
pixels instead (``--pixel-scale 0`` keeps a preset's pixels). ``--optical``
trains on the LSST i-band-like galsim galaxies of
`radiorecon.simulate.optical` (0.2" pixels, PSF-convolved, electrons per
pixel; stamps of 44 pixels, the nearest to the paper's 45 that the VAE's
downsamplings divide), the model ``benchmarks/bench_deblend.py --optical
--model`` measures::

    python examples/train_vae_deblend.py vae-optical.rrm --optical --stamps 10000 --vae-epochs 20 --flow-epochs 7

The ``--stamps`` stamps (default 20000) are simulated once (a few
milliseconds each) and held in memory, so the data loader only slices an
array and needs no worker processes. The radio stamps are a Quantity in
Jy/pixel, the unit the model records: it then deblends dirty images in
Jy/beam and returns components in Jy/pixel. Interrupt at any
time: the same command simulates the same stamps again and resumes from
``<output>.ckpt`` in the right stage, to the same weights. The training
seed is never the benchmark's (2026).

The networks are the backend's defaults (latent size 16 as in MADNESS,
encoder and decoder of 16 base channels, a MAF of 6 transforms with hidden
layers of 64): 0.49 M parameters.

Measured (one torch thread, 2-core AMD EPYC shared with other work, torch
2.13.0+cpu; from the progress bar of a run of ``--stamps 2048 --vae-epochs
3 --flow-epochs 2``): a VAE step of 64 stamps takes 0.39 s (6 ms per
stamp), a flow step 0.04 s; simulating a stamp 1-2.5 ms. With the defaults
(30 + 10 epochs of 313 steps: 12520 steps, 800000 stamps seen) that is
about 65 minutes on one CPU thread. The model file is 2.0 MB.

The shipped model (``radiorecon/data/models/vae-deblend.rrm``,
``Reconstructor.pretrained("vae-deblend")``, 2.0 MB) is this script's
default run, its flow then refitted to posterior draws, then calibrated::

    python examples/train_vae_deblend.py vae-means.rrm --threads 1 --seed 11 --no-progress
    python examples/train_vae_deblend.py vae-deblend.rrm --refit-flow vae-means.rrm --threads 1 --seed 11 \
        --no-progress
    python examples/calibrate_vae_deblend.py vae-deblend.rrm vae-deblend-calibrated.rrm --threads 1

The first run, on one torch thread of a shared 2-core AMD EPYC (torch
2.13.0+cpu, other training on the other core), when the flow's default was
the encoder's means: 30 VAE + 10 flow epochs of 20000 stamps, 12520 steps,
800000 stamps seen, in 92 minutes of wall time over two sessions (epochs
1-7 in 34 min, then 8-40 in 57.8 min resumed from the checkpoint); last VAE
epoch reconstruction 0.159 and KL 22.3, last flow epoch NLL -4.22. Its
checkpoint predates the Jy/pixel stamps of this script, so the unit was set
on the saved file (``rec.units["target"] = "Jy / pix"``; the weights are
those of the run). The refit: 10 flow epochs on draws of the posterior,
3130 steps, 200000 stamps seen, 2.3 minutes on the same machine (last
epoch NLL 18.59: the draws are spread far wider than the means); rerun, it
gives the same weights bit for bit. The calibration on 100 blends held
apart from the benchmark (252 sources, seed 111, 5.9 min) set
``flux_model_error`` 0.288: the Laplace errors alone covered 37.7 % of the
true fluxes at one sigma, 68.3 % with that share of the flux added. (The
first run's own flow, calibrated the same way, needed 0.386 and covered
30.2 % alone; ``bench_deblend.py`` measured both: see docs/deblending.rst.)

The optical model of ``bench_deblend.py --optical`` (not shipped), made the
same way::

    python examples/train_vae_deblend.py vae-optical-means.rrm --optical --stamps 10000 --vae-epochs 20 \
        --flow-epochs 7 --threads 1 --seed 11
    python examples/train_vae_deblend.py vae-optical.rrm --refit-flow vae-optical-means.rrm --optical \
        --stamps 10000 --flow-epochs 7 --threads 1 --seed 11
    python examples/calibrate_vae_deblend.py vae-optical.rrm vae-optical-calibrated.rrm --optical --threads 1

The first run: 4239 steps, 270000 stamps seen, 52 minutes on one thread of
the same machine (84 minutes of wall time, 32 of them paused); its flow on
the means needed ``flux_model_error`` 0.543 (Laplace coverage 37.3 % at one
sigma). The refit: 1099 steps, 70000 stamps seen, 2.0 minutes; calibrated
(8.4 min), ``flux_model_error`` 0.048 (Laplace coverage 51.2 % at one
sigma, 68.3 % with it).
"""

import argparse
import math
import os
import time

import astropy.units as u
import torch

from radiorecon import Reconstructor
from radiorecon.backends.vae_deblend import VaeDeblendBackend
from radiorecon.normalisation import Normalisation
from radiorecon.simulate.blends import isolated_stamps


def refit_flow_model(path, seed):
    """A model with the encoder and decoder of ``path`` and a fresh flow, to fit to posterior draws."""
    source = Reconstructor.load(path, device="cpu")
    torch.manual_seed(seed)  # the fresh flow's initial weights
    return Reconstructor(source.backend.with_new_prior(flow_latents="sample")), source


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="model file to write (.rrm)")
    parser.add_argument("--preset", default="extended", help="simulation preset of the sources (default extended)")
    parser.add_argument("--optical", action="store_true",
                        help="LSST-like optical galsim galaxies (radiorecon.simulate.optical) instead of radio sources")
    parser.add_argument("--pixel-scale", type=float, default=None,
                        help="arcsec per pixel (default 0.3, the benchmark's; optical 0.2); 0 for the preset's")
    parser.add_argument("--stamp", type=int, default=None, help="stamp size in pixels (default 32; optical 44)")
    parser.add_argument("--stamps", type=int, default=20000, help="distinct training stamps (default 20000)")
    parser.add_argument("--vae-epochs", type=int, default=30)
    parser.add_argument("--flow-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--softening", type=float, default=VaeDeblendBackend.default_config["sky_softening"],
                        help="sky_softening of the model's stretch")
    parser.add_argument("--refit-flow", metavar="MODEL",
                        help="keep the VAE of this trained model and fit only a fresh flow prior to draws of its "
                             "posterior (--flow-epochs epochs; --vae-epochs is ignored); give the stamps it was "
                             "trained on (the same --seed, --stamps, --optical or --preset)")
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
    if args.stamp is None:
        args.stamp = 44 if args.optical else 32
    if args.pixel_scale is None:
        args.pixel_scale = 0.2 if args.optical else 0.3
    if args.optical:
        from radiorecon.simulate.optical import optical_stamps

        overrides = {"pixel_scale": args.pixel_scale} if args.pixel_scale else {}
        stamps = optical_stamps(args.stamps, stamp_size=args.stamp, seed=args.seed, progress=not args.no_progress,
                                **overrides)
    else:
        overrides = {"pixel_scale": args.pixel_scale * u.arcsec} if args.pixel_scale else {}
        # In Jy/pixel, recorded in the model: it then takes dirty images in Jy/beam.
        stamps = isolated_stamps(args.stamps, preset=args.preset, stamp_size=args.stamp, seed=args.seed,
                                 progress=not args.no_progress, **overrides) * (u.Jy / u.pix)
    steps = math.ceil(args.stamps / args.batch_size)  # optimisation steps per epoch
    if args.refit_flow:
        rec, source = refit_flow_model(args.refit_flow, args.seed)
        args.vae_epochs = 0
        # fit measures the normalisation on the stamps; the VAE only works with its own.
        measured = Normalisation.fit(stamps, rec.backend.input_scale)
        if measured.to_dict() != source.normalisation.to_dict():
            parser.error(
                f"the stamps given are not those {args.refit_flow} was trained on (their normalisation "
                f"{measured.to_dict()} differs from its {source.normalisation.to_dict()}); "
                "give the same --seed, --stamps and --optical/--preset"
            )
    else:
        rec = Reconstructor(VaeDeblendBackend(
            stamp_size=args.stamp, latent_dim=args.latent_dim, base_channels=args.base_channels,
            sky_softening=args.softening, vae_steps=args.vae_epochs * steps,
        ))
    epochs = args.vae_epochs + args.flow_epochs
    rec.fit(
        stamps,
        epochs=epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        checkpoint=args.output + ".ckpt",
        warm_start=bool(args.refit_flow),
    )
    if args.refit_flow:
        # Inference settings and a calibration belong to the user of the source
        # model; carry them over (flux_model_error is for the old prior: recalibrate).
        rec.backend.set_config(**{k: v for k, v in source.backend.config.items()
                                  if k in rec.backend.inference_keys and k != "flux_model_error"})
        # The history tells how the networks were trained: the VAE's epochs, then the new flow's.
        rec.history = [h for h in source.history if "flow_nll" not in h] + rec.history
    rec.save(args.output, overwrite=args.overwrite)
    os.remove(args.output + ".ckpt")
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {args.output}: {args.vae_epochs} VAE + {args.flow_epochs} flow epochs of {args.stamps} stamps "
          f"({epochs * steps} steps, {epochs * args.stamps} stamps seen) in {minutes:.1f} min this run; "
          f"last epoch {rec.history[-1] if rec.history else 'resumed'}")


if __name__ == "__main__":
    main()
