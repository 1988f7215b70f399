"""scarlet2 on the optical blends of bench_deblend.py: per-source fluxes and component images.

The comparison point of issue 15 section 4: scarlet2 (Melchior et al. 2018 for
scarlet; Sampson et al. 2024, A&C 49, 100875 and https://scarlet2.readthedocs.io
for scarlet2) deblends the single-band LSST i-band-like galsim scenes that
``bench_deblend.py --optical --export-scenes`` writes, at the true source
positions, and this script stores what ``bench_deblend.py --scarlet2`` reads.

scarlet2 (with jax) is not a dependency of radiorecon, so this script runs in
its own environment (``python -m venv s2 && s2/bin/pip install scarlet2``;
measured with scarlet2 0.5.1 and jax 0.10.2 on the CPU) and uses only numpy
and scarlet2; it never imports radiorecon.

Settings, those of scarlet2's (0.5.1) real-world example and quickstart for
free-form galaxy models:

- observation: the scene in electrons per pixel, weights ``1 / noise_rms**2``,
  the PSF a ``2 * PSF_RADIUS + 1`` = 41 pixel cut-out around the peak of the
  scene file's Kolmogorov PSF (99.5 % of its flux), normalised to sum 1, one
  channel;
- model frame: `scarlet2.Frame.from_observations`, whose model PSF is its
  default narrow Gaussian (sigma 0.7 pixel); the observation renders the
  model through the difference kernel to the observed PSF;
- sources: one `scarlet2.Source` per true position, initialised by
  `scarlet2.init.from_gaussian_moments` with its default box sizes (multiples
  of the PSF FWHM, grown while the box edge keeps S/N >= 3: scarlet2's way of
  keeping a free morphology from fitting noise), falling back to
  `~scarlet2.init.pixel_spectrum` and `~scarlet2.init.compact_morphology`
  where the moments fail, as the example does;
- parameters: the spectrum (one band) constrained positive with step
  ``relative_step(factor=0.05)``, the morphology a free pixel array
  constrained to the unit interval with step ``relative_step(factor=1e-3)``;
  no neural prior (scarlet2's recommended priors are galaxygrad's score
  models trained on HSC data, which are neither installed here nor made for
  this pixel scale and depth);
- fit: `scarlet2.Scene.fit` (Adam), at most ``--steps`` iterations (default
  1000, as the example) with its relative convergence tolerance
  ``e_rel=1e-4``.

Each source's component is its model rendered in the observation frame
(convolved with the observed PSF), and its flux the sum of that image: both
directly comparable with the per-source truth images of the scene file.

scarlet2's `~scarlet2.Scene.fit` jit-compiles its optimiser step with the
scene's source boxes and `~scarlet2.Parameter` objects as static arguments,
so every scene compiles its own step (about 1 s of the per-scene time on one
CPU thread); sharing compiled code across scenes would mean bypassing
``fit``, which this benchmark of scarlet2 as documented does not do.

Usage::

    python benchmarks/bench_scarlet2.py scenes.npz scarlet2.npz

then ``python benchmarks/bench_deblend.py --optical --model M --scarlet2 scarlet2.npz``
(in radiorecon's environment, with the settings that exported ``scenes.npz``)
compares it with vae-deblend and photutils. On a shared machine, give jax one
CPU thread::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 0 python benchmarks/bench_scarlet2.py scenes.npz scarlet2.npz

The output ``.npz`` holds ``flux`` ``(N, kmax)`` (electrons, NaN for padding),
``components`` ``(N, kmax, ny, nx)`` (electrons per pixel, zeros for
padding), ``seconds`` ``(N,)`` (wall time per scene: initialisation, fit and
rendering) and ``iterations`` ``(N,)`` (optimiser steps taken). scarlet2 0.5.1
reports the steps only through ``fit``'s callback, which makes ``fit`` build
the constrained scene eagerly at every step (about 1 ms a step on one thread,
some 40-60 % of the fit): ``--no-iterations`` leaves the callback, and the
``iterations`` array, out, for timings of scarlet2 as normally run. A summary
of the relative flux residuals against the truth, overall and per blendedness
bin (Bosch et al. 2018, measured on the truth images), is printed at the end.
"""

import argparse
import os
import sys
import tempfile
import time
from functools import partial

import numpy as np

PSF_RADIUS = 20  # pixels: the cut-out holds 99.5 % of the 0.7" Kolmogorov PSF at 0.2"/pixel
# Every scene compiles new code (see the module docs) that jax keeps; some
# 450 scenes in, LLVM runs out of memory mappings ("Cannot allocate memory").
CLEAR_CACHES_EVERY = 50  # scenes
BINS = (0.0, 0.05, 0.2, 0.5, 1.0)  # blendedness bins of bench_deblend.py
REQUIRED = ("images", "psf", "positions", "noise_rms", "truth")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", help="scenes .npz written by bench_deblend.py --optical --export-scenes")
    p.add_argument("output", help="results .npz for bench_deblend.py --scarlet2")
    p.add_argument("--steps", type=int, default=1000, help="most optimiser iterations per scene (default 1000)")
    p.add_argument("--e-rel", type=float, default=1e-4, help="scarlet2's relative convergence tolerance")
    p.add_argument("--limit", type=int, metavar="N", help="deblend only the first N scenes")
    p.add_argument("--iterations", action=argparse.BooleanOptionalAction, default=True,
                   help="count the optimiser steps (through fit's callback, about 1 ms a step on one thread)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be a positive integer, got {args.steps}")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be a positive integer, got {args.limit}")
    if os.path.exists(args.output) and not args.overwrite:
        p.error(f"{args.output} exists; pass --overwrite to replace it")
    return args


def read_scenes(path, limit=None):
    """The scene file's arrays, checked; exits with one line naming the problem otherwise."""
    def fail(problem):
        raise SystemExit(f"bench_scarlet2: {path}: {problem} "
                         "(expected the output of bench_deblend.py --optical --export-scenes)")

    try:
        with np.load(path) as f:
            missing = [k for k in REQUIRED if k not in f.files]
            if missing:
                fail(f"missing array(s) {', '.join(missing)}")
            scenes = {k: f[k] for k in REQUIRED}
    except FileNotFoundError:
        fail("no such file")
    except (OSError, ValueError):
        fail("not a readable .npz file")
    images, psf, positions, noise, truth = (scenes[k] for k in REQUIRED)
    if images.ndim != 3:
        fail(f"images must be (N, ny, nx), got shape {images.shape}")
    n, ny, nx = images.shape
    if psf.ndim != 2 or min(psf.shape) < 2 * PSF_RADIUS + 1:
        fail(f"psf must be a 2-d image of at least {2 * PSF_RADIUS + 1} pixels a side, got shape {psf.shape}")
    if positions.ndim != 3 or positions.shape[0] != n or positions.shape[2] != 2:
        fail(f"positions must be (N={n}, kmax, 2), got shape {positions.shape}")
    k = positions.shape[1]
    if truth.shape != (n, k, ny, nx):
        fail(f"truth must be (N, kmax, ny, nx) = {(n, k, ny, nx)}, got shape {truth.shape}")
    if noise.shape != (n,):
        fail(f"noise_rms must be (N={n},), one value per scene, got shape {noise.shape}")
    if not np.all(np.isfinite(noise) & (noise > 0)):
        fail("noise_rms must be positive and finite")
    if not np.all(np.isfinite(images)) or not np.all(np.isfinite(psf)) or psf.max() <= 0:
        fail("images and psf must be finite, with a positive PSF peak")
    given = np.isfinite(positions).all(axis=2)
    if not given.any(axis=1).all():
        fail(f"scene(s) {np.flatnonzero(~given.any(axis=1))[:5].tolist()} have no source position")
    x, y = positions[..., 0][given], positions[..., 1][given]
    if np.any((x < 0) | (x > nx - 1) | (y < 0) | (y > ny - 1)):
        fail(f"source positions must lie inside the {nx} x {ny} pixel images")
    if limit is not None:
        scenes = {key: value if key == "psf" else value[:limit] for key, value in scenes.items()}
    return scenes


def psf_cutout(psf):
    """Odd-sized cut-out centred on the PSF's peak, normalised to sum 1: ArrayPSF's convention."""
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    if not (PSF_RADIUS <= py < psf.shape[0] - PSF_RADIUS and PSF_RADIUS <= px < psf.shape[1] - PSF_RADIUS):
        raise SystemExit(f"bench_scarlet2: the PSF's peak at pixel (x, y) = ({px}, {py}) is closer than "
                         f"{PSF_RADIUS} pixels to its edge")
    cut = psf[py - PSF_RADIUS: py + PSF_RADIUS + 1, px - PSF_RADIUS: px + PSF_RADIUS + 1].astype(np.float64)
    return cut / cut.sum()


def deblend(sc2, constraints, image, noise_rms, psf, xy, steps, e_rel, count):
    """Fit one scene; its per-source observed-frame components and the iterations taken (-1 if not ``count``)."""
    import jax.numpy as jnp

    obs = sc2.Observation(image, weights=np.full(image.shape, noise_rms**-2.0), psf=sc2.ArrayPSF(psf[None]),
                          channels=["i"])
    frame = sc2.Frame.from_observations(obs)
    with sc2.Scene(frame) as scene:
        for x, y in xy:
            center = jnp.array([y, x])  # scarlet2 counts (y, x)
            try:
                spectrum, morph = sc2.init.from_gaussian_moments(obs, center)
                if not (jnp.all(jnp.isfinite(spectrum)) and jnp.all(jnp.isfinite(morph))):
                    raise ValueError("non-finite moments")
            except ValueError:
                spectrum = sc2.init.pixel_spectrum(obs, center)
                morph = sc2.init.compact_morphology()
            # the positive constraint's bijector needs a strictly positive start
            sc2.Source(center, jnp.maximum(spectrum, 1e-6), morph)
    with sc2.Parameters(scene):
        for i, source in enumerate(scene.sources):
            sc2.Parameter(source.spectrum, name=f"spectrum:{i}", constraint=constraints.positive,
                          stepsize=partial(sc2.relative_step, factor=0.05))
            sc2.Parameter(source.morphology, name=f"morph:{i}", constraint=constraints.unit_interval,
                          stepsize=partial(sc2.relative_step, factor=1e-3))
    # fit() reports no step count; its callback runs once per step, but makes
    # fit() build the constrained scene eagerly at every step.
    iterations = []
    fitted = scene.fit(obs, max_iter=steps, e_rel=e_rel, progress_bar=False,
                       callback=(lambda *_: iterations.append(None)) if count else None)
    components = np.stack([np.asarray(obs.render(fitted.evaluate_source(s)))[0] for s in fitted.sources])
    return components, len(iterations) if count else -1


def blendedness(truth):
    """Bosch et al. (2018) blendedness of each source, as radiorecon.simulate.blends.blendedness."""
    s = truth.astype(np.float64)
    own = (s * s).sum(axis=(1, 2))
    shared = (s * s.sum(axis=0)).sum(axis=(1, 2))
    return 1.0 - own / shared


def summarise(flux, truth, positions, seconds, iterations, steps):
    """Print median and scatter (1.4826 MAD) of the relative flux residual, overall and per blendedness bin."""
    given = np.isfinite(positions).all(axis=2)
    true_flux = truth.sum(axis=(2, 3), dtype=np.float64)
    residual = ((flux - true_flux) / true_flux)[given]
    blend = np.concatenate([blendedness(t[g]) for t, g in zip(truth, given)])

    def line(label, r):
        if len(r) == 0:
            return f"{label:>14} {0:>5}"
        median = np.median(r)
        return f"{label:>14} {len(r):>5} {median:>9.3f} {1.4826 * np.median(np.abs(r - median)):>9.3f}"

    print(f"{'blendedness':>14} {'n':>5} {'median':>9} {'scatter':>9}   (relative flux residual)")
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        print(line(f"{lo:.2f}-{hi:.2f}", residual[(blend >= lo) & (blend < hi)]))
    print(line("all", residual))
    print(f"{len(seconds)} scenes: {np.median(seconds):.2f} s per scene (median), "
          f"{np.sum(seconds) / 60:.1f} min in all")
    if np.all(iterations >= 0):
        print(f"iterations: median {np.median(iterations):.0f}, {np.mean(iterations >= steps):.0%} of the scenes "
              f"stopped at --steps {steps} before reaching --e-rel")


def write(path, overwrite, **arrays):
    """Write the .npz atomically: a crash never leaves a half-written result under the final name."""
    if os.path.exists(path) and not overwrite:
        raise SystemExit(f"bench_scarlet2: {path} exists; pass --overwrite to replace it")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the result is not
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    args = parse_args(argv)
    scenes = read_scenes(args.input, args.limit)
    import jax
    import scarlet2 as sc2
    from numpyro.distributions import constraints
    from tqdm.auto import tqdm

    sc2.set_validation(False)  # its checks print per scene and re-evaluate the model
    images, positions, noise, truth = (scenes[k] for k in ("images", "positions", "noise_rms", "truth"))
    psf = psf_cutout(scenes["psf"])
    n, k = positions.shape[:2]
    flux = np.full((n, k), np.nan)
    components = np.zeros((n, k) + images.shape[1:], np.float32)
    seconds, iterations = np.zeros(n), np.zeros(n, np.int64)
    for i in tqdm(range(n), desc="scarlet2", unit="scene", disable=not args.progress, file=sys.stdout):
        if i and i % CLEAR_CACHES_EVERY == 0:
            jax.clear_caches()
        given = np.flatnonzero(np.isfinite(positions[i]).all(axis=1))
        t0 = time.perf_counter()
        comps, iterations[i] = deblend(sc2, constraints, images[i], noise[i], psf, positions[i, given],
                                       args.steps, args.e_rel, args.iterations)
        seconds[i] = time.perf_counter() - t0
        components[i, given] = comps
        flux[i, given] = comps.sum(axis=(1, 2), dtype=np.float64)
    counted = {"iterations": iterations} if args.iterations else {}
    write(args.output, args.overwrite, flux=flux, components=components, seconds=seconds, **counted)
    print(f"wrote {args.output}")
    summarise(flux, truth, positions, seconds, iterations, args.steps)


if __name__ == "__main__":
    main()
