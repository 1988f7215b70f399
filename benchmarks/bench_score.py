"""The score backend measured as the seed measures it, and as a reconstruction method.

Two parts, each writing a JSON file and a Markdown table under ``--out``:

``generation``
    Trains (or loads, ``--model``) a prior on LoTSS-like sky cut-outs
    (the skies of ``SimulatedPairs(preset="lotss")``, as
    ``examples/train_score.py --recipe lotss`` does), draws ``--n-eval``
    skies for each number of Heun steps (10, 18, 25, 50) and observes each
    as the survey would (`radiorecon.simulate.observe`: the 6" restoring
    beam and 83 uJy/beam of noise), so that generated and simulated images
    are compared as the seed compares its images with LoTSS cut-outs: the
    Wasserstein-1 distance between the generated and a held-out simulated
    set for the pixel values (in units of the image noise) and for
    photutils source statistics: equivalent radius (pixels), ellipticity,
    orientation (deg), flux (in units of the noise) and number of
    components per image; next to each, the same distance between two
    independent simulated sets (the floor), and the seconds per image.
    ``generation.png`` shows simulated and generated images side by side.
``reconstruction``
    Trains (or loads, ``--prior``) a prior on the apparent skies of the
    default ALMA preset and scores it with `radiorecon.benchmark.run_benchmark`
    (both protocols, 1 and 2 sigma coverage on source pixels, network runs
    and seconds per image) next to CLEAN on dirty images of each array of
    ``--arrays``: the same prior for all of them, no retraining.
    ``--pretrained`` adds the shipped STAR and DDPM (trained on C43-3).

Usage::

    python benchmarks/bench_score.py generation --out score-report --quick
    python benchmarks/bench_score.py reconstruction --out score-report --quick
    python benchmarks/bench_score.py generation --out score-report --n-train 20000 --epochs 50 \\
        --base-channels 64 --n-eval 1000
    python benchmarks/bench_score.py reconstruction --out score-report --arrays C43-1 C43-5 \\
        --n-train 20000 --epochs 50 --base-channels 64 --n-images 50 --pretrained

``--quick`` is a tiny setting that runs end to end in about a minute per
part on a CPU; its numbers only show that the pipeline works.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
from scipy.stats import wasserstein_distance

from radiorecon import Reconstructor
from astropy.stats import mad_std as robust_std
from radiorecon.backends.score import ScoreBackend, SkyImages
from radiorecon.simulate import SimulatedPairs, make_dataset, resolve_parameters

STEPS = (10, 18, 25, 50)
SHAPE_STATS = ("radius", "ellipticity", "orientation", "flux", "components")


def train(data, args, **config):
    backend = ScoreBackend(base_channels=args.base_channels, **config)
    return Reconstructor(backend).fit(data, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                      progress=not args.quiet)


def shape_statistics(images, noise, threshold=5.0, npixels=5):
    """Pooled photutils statistics of the sources of ``images`` above ``threshold`` times ``noise``."""
    from photutils.segmentation import SourceCatalog, detect_sources

    stats = {name: [] for name in SHAPE_STATS}
    for image in images:
        segments = detect_sources(image, threshold * noise, npixels)
        stats["components"].append(0 if segments is None else len(segments.labels))
        if segments is None:
            continue
        cat = SourceCatalog(image, segments)
        stats["radius"] += list(cat.equivalent_radius.value)
        stats["ellipticity"] += list(cat.ellipticity.value)
        stats["orientation"] += list(cat.orientation.value)
        stats["flux"] += list(cat.segment_flux / noise)
    # Degenerate (one-pixel-wide) segments have no ellipticity or orientation.
    return {k: np.asarray(v, dtype=float)[np.isfinite(v)] for k, v in stats.items()}


def distances(a, b, noise):
    """W1 between two image sets: pixel values (noise units) and each shape statistic."""
    out = {"pixels": wasserstein_distance((a / noise).ravel(), (b / noise).ravel())}
    sa, sb = shape_statistics(a, noise), shape_statistics(b, noise)
    for name in SHAPE_STATS:
        out[name] = wasserstein_distance(sa[name], sb[name]) if len(sa[name]) and len(sb[name]) else float("nan")
    return out


def stack(pairs):
    return np.stack([pairs[i][0] for i in range(len(pairs))])


def observed(skies, seed):
    """LoTSS-like restored images of ``skies`` (Jy/pixel): image ``i`` gets the noise of ``(seed, i)``."""
    from radiorecon.simulate import observe

    return np.stack([np.asarray(observe(np.asarray(sky), preset="lotss", seed=seed, index=i).dirty.data)
                     for i, sky in enumerate(skies)])


def generation(args):
    n_train = 64 if args.quick else args.n_train
    n_eval = 16 if args.quick else args.n_eval
    if args.model:
        rec = Reconstructor.load(args.model)
    else:
        rec = train(SkyImages(SimulatedPairs(n_train, preset="lotss", seed=args.seed)), args)
        rec.save(os.path.join(args.out, "score-lotss.rrm"), overwrite=True)
    # Seeds far from the training stream's (examples/train_score.py uses 11).
    held_out = stack(SimulatedPairs(n_eval, preset="lotss", seed=args.seed + 1001))
    other = stack(SimulatedPairs(n_eval, preset="lotss", seed=args.seed + 1002))
    noise = float(np.median([robust_std(x) for x in held_out]))
    rows = [{"set": "simulated vs simulated (floor)", "steps": None, "nfe": None, "seconds_per_image": None,
             **distances(other, held_out, noise)}]
    shape = held_out.shape[1:]
    for steps in (STEPS[:2] if args.quick else STEPS):
        rec.set_params(sampler="heun", steps=steps)
        start = time.perf_counter()
        skies = rec.sample(n_eval, shape=shape, seed=args.seed, progress=not args.quiet).data
        seconds = (time.perf_counter() - start) / n_eval
        generated = observed(skies, args.seed + 1003)
        rows.append({"set": "generated vs simulated", "steps": steps, "nfe": 2 * steps - 1,
                     "seconds_per_image": seconds, **distances(generated, held_out, noise)})
    picture(held_out[:4], generated[:4], os.path.join(args.out, "generation.png"))
    write(args.out, "generation", rows, {"n_train": n_train, "n_eval": n_eval, "noise": noise,
                                         "config": rec.config, "args": vars(args)})


def picture(real, generated, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(real), figsize=(2 * len(real), 4.2), squeeze=False)
    for row, (name, images) in enumerate([("simulated", real), ("generated", generated)]):
        for ax, image in zip(axes[row], images):
            ax.imshow(np.arcsinh(image / (3 * robust_std(real[0]))), origin="lower", cmap="inferno")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel(name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def reconstruction(args):
    from radiorecon.benchmark import run_benchmark

    npix = 64 if args.quick else args.npix
    n_train = 64 if args.quick else args.n_train
    n_images = 3 if args.quick else args.n_images
    n_samples = 4 if args.quick else args.n_samples
    if args.prior:
        prior = Reconstructor.load(args.prior)
    else:
        skies = SkyImages(SimulatedPairs(n_train, seed=args.seed, npix=npix))
        prior = train(skies, args)
        prior.save(os.path.join(args.out, "score-prior.rrm"), overwrite=True)
    prior.set_params(posterior_steps=5 if args.quick else args.posterior_steps)
    pixel = resolve_parameters()["pixel_scale"]  # the default ALMA preset's
    methods = [("CLEAN", Reconstructor("clean"), 1), ("score", prior, n_samples)]
    if args.pretrained:
        methods += [("STAR (C43-3)", Reconstructor.pretrained("star"), 10),
                    ("DDPM (C43-3)", Reconstructor.pretrained("ddpm"), 5)]
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for array in args.arrays:
            # The preset places sources within 11.4" of the centre, its 512x512 field; a smaller field
            # keeps them inside (0.4 of its side from the centre).
            data = make_dataset(n_images + args.calibration, seed=args.seed + 100, out=os.path.join(tmp, array),
                                array=array, npix=npix, placement_radius=0.4 * npix * pixel, progress=False)
            table, _ = run_benchmark(data, methods, progress=not args.quiet, n_images=n_images,
                                     calibration=args.calibration or None)
            tables[array] = [{k: plain(row[k]) for k in table.colnames} for row in table]
    rows = [{"array": array, **row} for array, table in tables.items() for row in table]
    write(args.out, "reconstruction", rows, {"npix": npix, "n_train": n_train, "n_images": n_images,
                                             "n_samples": n_samples, "config": prior.config, "args": vars(args)})


def plain(value):
    """A table cell as a JSON-ready number or string."""
    value = getattr(value, "value", value)  # a Quantity
    return value.item() if hasattr(value, "item") else str(value)


def write(out, name, rows, meta):
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"rows": rows, **meta}, f, indent=1, default=str)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["generation", "reconstruction"])
    parser.add_argument("--out", required=True, help="directory for the model, tables and picture")
    parser.add_argument("--quick", action="store_true", help="tiny setting: checks the pipeline in minutes")
    parser.add_argument("--model", help="generation: a trained LoTSS-like model file instead of training")
    parser.add_argument("--prior", help="reconstruction: a trained prior over ALMA skies instead of training")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--n-eval", type=int, default=500, help="generation: images per set")
    parser.add_argument("--npix", type=int, default=128, help="reconstruction: image side, pixels")
    parser.add_argument("--arrays", nargs="+", default=["C43-1", "C43-5"])
    parser.add_argument("--n-images", type=int, default=50)
    parser.add_argument("--n-samples", type=int, default=10)
    parser.add_argument("--calibration", type=int, default=0,
                        help="reconstruction: extra images on which each method's significance threshold is chosen")
    parser.add_argument("--posterior-steps", type=int, default=25, help="Heun levels of the posterior ODE")
    parser.add_argument("--pretrained", action="store_true", help="also the shipped STAR and DDPM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    {"generation": generation, "reconstruction": reconstruction}[args.part](args)


if __name__ == "__main__":
    main()
