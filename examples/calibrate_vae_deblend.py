"""Calibrate a vae-deblend model's flux errors on simulated blends held apart from any benchmark.

The Laplace errors of `radiorecon.backends.vae_deblend` describe the noise
alone; where the source model cannot draw a source exactly, a flux is off by
more than they say. This script deblends ``--blends`` simulated scenes of the
population the model learnt (at their true positions), finds with
`~radiorecon.backends.vae_deblend.calibrate_flux_errors` the fraction of the
flux to add in quadrature so that 68.3 % of the true fluxes lie within one
sigma, and writes the model with that ``flux_model_error``::

    python examples/calibrate_vae_deblend.py vae-deblend.rrm vae-deblend-calibrated.rrm --threads 1
    python examples/calibrate_vae_deblend.py vae-optical.rrm vae-optical-calibrated.rrm --optical

The scenes are those of ``benchmarks/bench_deblend.py`` (64 x 64 pixels, 2-3
sources 3-12 pixels apart) with another seed (default 111; the benchmark's
scenes use 2027), so the benchmark measures the calibrated errors on blends
they were not fitted to.
"""

import argparse
import os
import time

import astropy.units as u
import numpy as np
import torch
from tqdm.auto import tqdm

from radiorecon import Reconstructor
from radiorecon.backends.vae_deblend import calibrate_flux_errors
from radiorecon.catalog import deblended_catalog


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a trained vae-deblend model file")
    parser.add_argument("output", help="the calibrated model file to write")
    parser.add_argument("--optical", action="store_true", help="LSST-like optical galsim blends instead of radio ones")
    parser.add_argument("--preset", default="extended", help="radio simulation preset (default extended)")
    parser.add_argument("--pixel-scale", type=float, help="arcsec per pixel (default 0.3; optical 0.2)")
    parser.add_argument("--blends", type=int, default=100, help="simulated scenes (default 100)")
    parser.add_argument("--seed", type=int, default=111, help="seed of the scenes (never the benchmark's 2027)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    pixel = args.pixel_scale or (0.2 if args.optical else 0.3)
    layout = dict(npix=64, n_sources=(2, 3), separation=(3.0, 12.0), seed=args.seed, progress=not args.no_progress)
    if args.optical:
        from radiorecon.simulate.optical import optical_scenes

        scenes, likelihood = optical_scenes(args.blends, pixel_scale=pixel, **layout), "white"
    else:
        from radiorecon.simulate.blends import blended_scenes

        scenes = blended_scenes(args.blends, preset=args.preset, pixel_scale=pixel * u.arcsec, **layout)
        likelihood = "restored" if scenes.parameters["imaging"] == "restored" else "dirty"

    rec = Reconstructor.load(args.model)
    rec.backend.set_config(likelihood=likelihood, flux_model_error=0.0)
    start = time.perf_counter()
    flux, err, true = [], [], []
    for i in tqdm(range(len(scenes)), disable=args.no_progress, desc="deblending"):
        result = rec.predict(scenes.images[i], psf=None if args.optical else scenes.psf[i],
                             positions=scenes.positions[i].tolist(), progress=False)
        table = deblended_catalog(result)
        flux += list(u.Quantity(table["flux"]).value)
        err += list(u.Quantity(table["flux_err"]).value)
        true += list(scenes.sources[i].sum(axis=(1, 2)))
    flux, err, true = np.array(flux), np.array(err), np.array(true)
    fraction = calibrate_flux_errors(flux, err, true)
    before = np.mean(np.abs(flux - true) < err)
    after = np.mean(np.abs(flux - true) < np.hypot(err, fraction * flux))
    rec.backend.set_config(flux_model_error=round(fraction, 4))
    rec.save(args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: flux_model_error {fraction:.4f} from {len(flux)} sources of {len(scenes)} blends "
          f"(seed {args.seed}) in {(time.perf_counter() - start) / 60:.1f} min; one-sigma coverage of the flux "
          f"errors {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    main()
