"""vae-deblend against photutils on simulated radio blends: fluxes, shapes, errors, speed.

Trains (or loads) a vae-deblend model on isolated noise-free sources of a
simulation preset's radio-galaxy population, makes blended scenes of the same
population (`radiorecon.simulate.blends.blended_scenes`: dirty images for the
ALMA-like ``extended`` preset, restored ones for ``lotss``), deblends each
scene at its true source positions and measures, per source:

- the relative flux residual ``(F_hat - F) / F`` against the true apparent
  flux, summarised per bin of blendedness by its median and its scatter
  (1.4826 x the median absolute deviation);
- SSIM (`radiorecon.metrics.ssim`) and the cosine similarity between the
  deblended component and the true source image;
- the flux-error coverage: the fraction of sources with ``|F_hat - F| <
  k sigma_F`` (k = 1, 2; ideal 0.683 and 0.954), of the model's errors and
  of the Laplace errors alone (without the share ``flux_model_error`` of a
  calibrated model, `examples/calibrate_vae_deblend.py`);
- seconds per blend and optimiser iterations.

The baseline is photutils: `~photutils.segmentation.detect_sources` at
``--threshold`` times the image noise and `~photutils.segmentation.deblend_sources`,
fluxes from `~photutils.segmentation.SourceCatalog` (``segment_flux``, Jy/beam
summed over the segment, divided by the clean beam's area in pixels to give
Jy), each true source taking the segment under its position (sources of one
segment share its flux; a source on no segment gets 0).

``--optical`` runs the same comparison on the seed's own setting: single-band
LSST i-band-like galsim scenes of bulge + disk galaxies
(`radiorecon.simulate.optical`: 0.2 arcsec pixels, a 0.7 arcsec Kolmogorov
PSF, 10-year depth, images in electrons per pixel). The model learns
PSF-convolved noise-free galaxies and deblends with the identity operator and
white noise (``likelihood="white"``); photutils fluxes are the segment sums.
Its stamps are 44 pixels by default, the nearest to the paper's 45 that the
VAE's two downsamplings divide.

Usage::

    python benchmarks/bench_deblend.py --quick              # a couple of minutes on a CPU
    python benchmarks/bench_deblend.py --n-blends 500 --train 20000 --epochs 30 --out report/
    python benchmarks/bench_deblend.py --model vae.rrm --n-blends 500 --out report/
    python benchmarks/bench_deblend.py --optical --quick --threads 1   # optical galsim blends

``--quick`` trains a small model briefly: its numbers test the pipeline, not
the method.
"""

import argparse
import json
import math
import os
import time

import astropy.units as u
import numpy as np
from astropy.table import QTable

from radiorecon import Reconstructor, registry
from radiorecon.backends.vae_deblend import VaeDeblendBackend
from radiorecon.metrics import ssim
from radiorecon.simulate.blends import blended_scenes, isolated_stamps

BINS = (0.0, 0.05, 0.2, 0.5, 1.0)
METHODS = ("vae", "photutils", "scarlet2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small, fast run that checks the pipeline end to end")
    p.add_argument("--optical", action="store_true",
                   help="LSST-like optical galsim blends (radiorecon.simulate.optical) instead of radio ones")
    p.add_argument("--preset", default="extended", help="radio simulation preset (default: extended)")
    p.add_argument("--pixel-scale", type=float, help="arcsec per pixel (default 0.3; optical 0.2)")
    p.add_argument("--npix", type=int, default=64, help="scene size in pixels")
    p.add_argument("--stamp", type=int, help="source stamp size in pixels (default 32; optical 44)")
    p.add_argument("--n-blends", type=int, default=500)
    p.add_argument("--n-sources", type=int, nargs=2, default=(2, 3))
    p.add_argument("--separation", type=float, nargs=2, default=(3.0, 12.0), help="pixels")
    p.add_argument("--train", type=int, default=20000, help="isolated training stamps")
    p.add_argument("--epochs", type=int, default=30, help="VAE epochs; the flow gets a third as many more")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--softening", type=float, default=VaeDeblendBackend.default_config["sky_softening"],
                   help="sky_softening of the model's stretch")
    p.add_argument("--model", help="a trained vae-deblend model file (skips training)")
    p.add_argument("--threshold", type=float, default=3.0, help="photutils detection threshold (S/N)")
    p.add_argument("--max-iterations", type=int, default=200)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch (--quick: 1; more oversubscribe a busy machine)")
    p.add_argument("--out", help="directory for the trained model, per-source results (ECSV) and the summary (JSON)")
    p.add_argument("--export-scenes", metavar="NPZ",
                   help="also write the scenes to this .npz, for a deblender run elsewhere (benchmarks/bench_scarlet2.py)")
    p.add_argument("--scarlet2", metavar="NPZ",
                   help="results of benchmarks/bench_scarlet2.py on the --export-scenes file, compared too")
    args = p.parse_args(argv)
    args.pixel_scale = args.pixel_scale or (0.2 if args.optical else 0.3)
    args.stamp = args.stamp or (44 if args.optical else 32)
    if args.quick:
        args.n_blends, args.train, args.epochs, args.batch_size = 20, 2048, 6, 64
        args.threads = args.threads or 1
    return args


def make_stamps(args, overrides):
    if args.optical:
        from radiorecon.simulate.optical import optical_stamps

        return optical_stamps(args.train, stamp_size=args.stamp, seed=args.seed, progress=True, **overrides)
    return isolated_stamps(args.train, preset=args.preset, stamp_size=args.stamp, seed=args.seed, progress=True,
                           **overrides)


def make_scenes(args, overrides):
    kwargs = dict(npix=args.npix, n_sources=tuple(args.n_sources), separation=tuple(args.separation),
                  seed=args.seed + 1, progress=True, **overrides)
    if args.optical:
        from radiorecon.simulate.optical import optical_scenes

        return optical_scenes(args.n_blends, **kwargs)
    return blended_scenes(args.n_blends, preset=args.preset, **kwargs)


def train(args, overrides):
    stamps = make_stamps(args, overrides)
    steps = math.ceil(len(stamps) / args.batch_size)
    flow_epochs = max(1, args.epochs // 3)
    small = dict(base_channels=8, flow_hidden=[32, 32]) if args.quick else {}
    rec = Reconstructor("vae-deblend", stamp_size=args.stamp, vae_steps=args.epochs * steps,
                        sky_softening=args.softening, **small)
    t0 = time.perf_counter()
    # Plain arrays: the model learns the sky (Jy/pixel) and deblends images in
    # Jy/beam, two units the front door would refuse to relate.
    rec.fit(stamps, epochs=args.epochs + flow_epochs, batch_size=args.batch_size, seed=args.seed,
            device=args.device, threads=args.threads)
    print(f"trained in {time.perf_counter() - t0:.0f} s: {rec.history[-1]}")
    return rec


def export_scenes(path, scenes):
    """The scenes as plain arrays: positions padded with NaN to the most sources of a scene."""
    k = max(len(xy) for xy in scenes.positions)
    n, ny, nx = scenes.images.shape
    positions = np.full((n, k, 2), np.nan)
    truth = np.zeros((n, k, ny, nx), np.float32)
    for i, (xy, src) in enumerate(zip(scenes.positions, scenes.sources)):
        positions[i, : len(xy)] = xy
        truth[i, : len(xy)] = src
    np.savez_compressed(path, images=scenes.images, psf=np.asarray(scenes.psf[0]), positions=positions,
                        noise_rms=np.asarray(scenes.noise_rms), truth=truth)


def photutils_fluxes(image, positions, noise, beam_area, threshold):
    """Flux (Jy) of the photutils segment under each position."""
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    segm = detect_sources(image, threshold * noise, 5)  # at least 5 connected pixels
    if segm is None:
        return np.zeros(len(positions))
    segm = deblend_sources(image, segm, 5, progress_bar=False)
    cat = SourceCatalog(image, segm)
    flux = dict(zip(cat.labels, np.asarray(cat.segment_flux) / beam_area))
    labels = [segm.data[int(y), int(x)] for x, y in positions]
    return np.array([flux.get(label, 0.0) for label in labels])


def cosine(a, b):
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-300))


def summarise(table):
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (table["blendedness"] >= lo) & (table["blendedness"] < hi)
        row = {"blendedness": f"[{lo}, {hi})", "n": int(sel.sum())}
        for method in METHODS:
            if f"{method}_residual" not in table.colnames:
                continue
            r = np.asarray(table[f"{method}_residual"][sel])
            row[f"{method}_median"] = float(np.median(r)) if len(r) else float("nan")
            row[f"{method}_scatter"] = float(1.4826 * np.median(np.abs(r - np.median(r)))) if len(r) else float("nan")
        rows.append(row)
    pulls = np.abs(np.asarray(table["vae_flux"] - table["true_flux"]) / np.asarray(table["vae_flux_err"]))
    laplace = np.abs(np.asarray(table["vae_flux"] - table["true_flux"]) / np.asarray(table["vae_laplace_err"]))
    summary = {
        "bins": rows,
        "vae_ssim_median": float(np.median(table["vae_ssim"])),
        "vae_cosine_median": float(np.median(table["vae_cosine"])),
        "vae_coverage_1sigma": float(np.mean(pulls < 1)),
        "vae_coverage_2sigma": float(np.mean(pulls < 2)),
        "vae_laplace_coverage_1sigma": float(np.mean(laplace < 1)),
        "vae_laplace_coverage_2sigma": float(np.mean(laplace < 2)),
    }
    if "scarlet2_ssim" in table.colnames:
        summary["scarlet2_ssim_median"] = float(np.median(table["scarlet2_ssim"]))
        summary["scarlet2_cosine_median"] = float(np.median(table["scarlet2_cosine"]))
    return summary


def main(argv=None):
    args = parse_args(argv)
    if "vae-deblend" not in registry.available_backends():  # until its entry point is installed
        registry.register_backend("vae-deblend", VaeDeblendBackend)
    overrides = {"pixel_scale": args.pixel_scale if args.optical else args.pixel_scale * u.arcsec}
    rec = Reconstructor.load(args.model, device=args.device) if args.model else train(args, overrides)
    if args.out and not args.model:
        os.makedirs(args.out, exist_ok=True)
        rec.save(os.path.join(args.out, "vae-deblend.rrm"), overwrite=True)
    rec.backend.set_config(max_iterations=args.max_iterations)
    scenes = make_scenes(args, overrides)
    if args.export_scenes:
        export_scenes(args.export_scenes, scenes)
    other = dict(np.load(args.scarlet2)) if args.scarlet2 else None
    if other is not None and other["flux"].shape[0] != len(scenes):
        raise SystemExit(f"{args.scarlet2} holds {other['flux'].shape[0]} scenes, not the {len(scenes)} made here")
    if args.optical:  # the images are at the model's resolution: identity operator, white noise
        likelihood = "white"
    else:
        likelihood = "restored" if scenes.parameters["imaging"] == "restored" else "dirty"
    rec.backend.set_config(likelihood=likelihood)
    pixel = scenes.parameters["pixel_scale"]  # arcsec: a Quantity for radio scenes, a float for optical ones
    rows, seconds, iterations, photutils_seconds = [], [], [], []
    model_error = rec.backend.config["flux_model_error"]
    for i in range(len(scenes)):
        xy = scenes.positions[i]
        rec.backend.set_config(positions=xy.tolist())
        t0 = time.perf_counter()
        psf = None if args.optical else scenes.psf[i]
        result = rec.predict(scenes.images[i], psf=psf, progress=False, device=args.device,
                             threads=args.threads)
        seconds.append(time.perf_counter() - t0)
        iterations.append(int(result.meta["DBNITER"]))
        truth = scenes.sources[i]
        # Optical images are per pixel (no beam): their segment sums are fluxes.
        beam = scenes.beam[i]
        beam_area = 1.0 if beam is None else beam.sr.to_value(u.arcsec**2) / pixel.to_value(u.arcsec) ** 2
        t0 = time.perf_counter()
        base = photutils_fluxes(scenes.images[i], xy, scenes.noise_rms[i], beam_area, args.threshold)
        photutils_seconds.append(time.perf_counter() - t0)
        for j in range(len(xy)):
            comp, true = np.asarray(result.components[j], float), truth[j].astype(float)
            f_true = true.sum()
            f_hat = comp.sum()
            err = float(result.meta[f"DBFE{j + 1}"]) * float(result.meta["RRSCALE"])
            # The Laplace error alone: without the calibrated share of the flux.
            laplace = math.sqrt(max(err**2 - (model_error * f_hat) ** 2, 0.0))
            rows.append({
                "scene": i, "source": j, "blendedness": float(scenes.blendedness[i][j]), "true_flux": f_true,
                "vae_flux": f_hat, "vae_flux_err": err, "vae_laplace_err": laplace,
                "vae_residual": (f_hat - f_true) / f_true,
                "photutils_flux": base[j], "photutils_residual": (base[j] - f_true) / f_true,
                "vae_ssim": float(ssim(comp, true)), "vae_cosine": cosine(comp, true),
            })
            if other is not None:
                f_other, comp_other = float(other["flux"][i, j]), other["components"][i, j].astype(float)
                rows[-1].update(scarlet2_flux=f_other, scarlet2_residual=(f_other - f_true) / f_true,
                                scarlet2_ssim=float(ssim(comp_other, true)), scarlet2_cosine=cosine(comp_other, true))
    rec.backend.set_config(positions=None)
    table = QTable(rows=rows)
    summary = summarise(table)
    summary.update(
        seconds_per_blend=float(np.median(seconds)), iterations_median=float(np.median(iterations)),
        photutils_seconds_per_blend=float(np.median(photutils_seconds)),
        n_blends=len(scenes), n_sources=len(table), preset="optical" if args.optical else args.preset,
        likelihood=likelihood,
        quick=bool(args.quick),
    )
    methods = [m for m in METHODS if f"{m}_median" in summary["bins"][0]]
    print(f"{'blendedness':>14} {'n':>5} " + " ".join(f"{m + ' median':>16} {m + ' scatter':>17}" for m in methods))
    for row in summary["bins"]:
        print(f"{row['blendedness']:>14} {row['n']:>5} "
              + " ".join(f"{row[m + '_median']:>16.3f} {row[m + '_scatter']:>17.3f}" for m in methods))
    if other is not None:
        summary["scarlet2_seconds_per_blend"] = float(np.median(other["seconds"]))
    print(json.dumps({k: v for k, v in summary.items() if k != "bins"}, indent=1))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        table.write(os.path.join(args.out, "deblend_sources.ecsv"), overwrite=True)
        with open(os.path.join(args.out, "deblend_summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
