"""STAR on held-out default-preset images: ablations, calibration, generation, speed.

Prints, in one run on the same images:

1. the ablation table in the papers' form (Only-MSE encoder, STAR without
   and with distance correlation, with two branches, 2-to-1 direct and with
   10 styles) next to the truth limit, the dirty image and CLEAN, for each
   detection threshold;
2. completeness per bin of true peak S/N, per method;
3. uncertainty calibration: 1 and 2 sigma coverage on source pixels (table
   columns) and detection probability against the true-positive rate;
4. generation: per-pixel standard deviation of dirty images generated from
   the true (apparent) skies against that of the simulated ones;
5. seconds per 512x512 image (in the table).

Usage (models from ``examples/train_star.py``)::

    radiorecon simulate 200 ds200 --seed 2026
    python benchmarks/bench_star.py --data ds200 --models MODELDIR --out report/

``MODELDIR`` holds the ablation models ``only-mse.rrm``, ``no-dcor.rrm``,
``dcor.rrm`` and ``two-branches.rrm`` (missing ones are skipped), trained
with the shipped model's recipe and budget (``examples/train_star.py``).
The full method is ``MODELDIR/star.rrm`` if there is one, else the shipped
model (``Reconstructor.pretrained("star")``); it gives the two 2-to-1 rows,
direct and with 10 styles, and is the one whose generation is measured.
"""

import argparse
import os
import time

import numpy as np
import astropy.units as u

from radiorecon import Reconstructor
from radiorecon.benchmark import plot_report, run_benchmark, to_markdown
from radiorecon.metrics import completeness_by_snr, reliability
from radiorecon.simulate import load_dataset

ROWS = [
    ("Only-MSE encoder", "only-mse.rrm", 1),
    ("STAR without dCor", "no-dcor.rrm", 1),
    ("STAR with dCor", "dcor.rrm", 1),
    ("STAR dCor + two branches", "two-branches.rrm", 1),
    ("STAR 2-to-1 direct", "star.rrm", 1),
    ("STAR 2-to-1, 10 styles", "star.rrm", 10),
]


def generation_ratio(rec, data, n_images, seed, n_draws=10):
    """Generated against simulated dirty images of the same apparent skies.

    Per image, three ratios of generated to simulated:

    - ``prior``: spatial std of one image generated with a style from the
      prior, over that of the simulated image;
    - ``like``: the same with the style drawn around the simulated image's own;
    - ``per_pixel``: per-pixel std across ``n_draws`` generated images
      (median over pixels) over the simulator's per-pixel std across noise
      realisations, which is its noise rms (``NOISERMS``): the sky and the uv
      coverage are fixed, so only the noise changes from one observation to
      the next.
    """
    pb = data.primary_beam
    out = {"prior": [], "like": [], "per_pixel": []}
    for i in range(n_images):
        dirty = data.image(i)
        sky = np.asarray(data.sky(i).data) * pb * u.Jy / u.pix
        sim = float(np.nanstd(dirty.data))
        out["prior"].append(float(np.nanstd(rec.generate(sky, n=1, seed=seed + i, progress=False).data[0])) / sim)
        like = rec.generate(sky, n=1, like=dirty, seed=seed + i, progress=False).data[0]
        out["like"].append(float(np.nanstd(like)) / sim)
        draws = rec.generate(sky, n=n_draws, seed=seed + i, progress=False).data
        out["per_pixel"].append(float(np.nanmedian(np.nanstd(draws, axis=0, ddof=1))) / dirty.meta["NOISERMS"])
    return {k: np.array(v) for k, v in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", required=True, help="directory of the trained models")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--thresholds", default="5,3,2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generation-images", type=int, default=50)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    args = parser.parse_args()
    if os.path.exists(os.path.join(args.out, "benchmark.ecsv")) and not args.overwrite:
        parser.error(f"{args.out} already holds a report; pass --overwrite to replace it")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    data = load_dataset(args.data)

    cache, methods = {}, [("CLEAN", Reconstructor("clean"), 1)]
    for label, name, n in ROWS:
        path = os.path.join(args.models, name)
        if name not in cache:
            if os.path.exists(path):
                cache[name] = Reconstructor.load(path)
            elif name == "star.rrm":
                cache[name] = Reconstructor.pretrained("star")
            else:
                print(f"skipping {label}: no {path}")
                continue
        methods.append((label, cache[name], n))
    full = cache["star.rrm"]

    start = time.perf_counter()
    table, examples = run_benchmark(data, methods, n_images=args.n_images, threshold=thresholds, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    table.write(os.path.join(args.out, "benchmark.ecsv"), overwrite=True)
    plot_report(table, examples, args.out)
    print(f"## Benchmark ({table['n_images'][0]} images, {time.perf_counter() - start:.0f} s)\n")
    print(to_markdown(table))

    print("\n## Training of each model\n")
    for name, rec in cache.items():
        last = {k: round(v, 4) for k, v in rec.history[-1].items() if k != "epoch"} if rec.history else {}
        print(f"- {name} ({rec.origin}): {len(rec.history)} epochs, last epoch {last}")

    print("\n## Completeness per true peak S/N bin\n")
    bins = [0, 1, 2, 3, 5, 10, np.inf]
    for t in thresholds:
        print(f"\nthreshold {t:g}:\n")
        labels = ["truth limit", "dirty"] + [m[0] for m in methods]
        head = "| S/N bin | n true | " + " | ".join(labels) + " |"
        print(head + "\n|" + "---|" * (len(labels) + 2))
        tables = {lab: completeness_by_snr(examples["recovered"][(lab, t)][1],
                                           examples["recovered"][(lab, t)][0], bins) for lab in labels}
        first = tables[labels[0]]
        for k in range(len(first)):
            cells = [f"{tables[lab]['completeness'][k]:.2f}" for lab in labels]
            print(f"| {first['snr_min'][k]:g}–{first['snr_max'][k]:g} | {first['n_true'][k]} | " + " | ".join(cells) + " |")

    print("\n## Detection probability against true-positive rate (sampling rows)\n")
    for (label, t), (p, ok) in examples["calibration"].items():
        print(f"\n{label}, threshold {t:g}:\n")
        print(to_markdown(reliability(p, ok)))

    if args.generation_images:
        n_gen = min(args.generation_images, len(data))
        ratios = generation_ratio(full, data, n_gen, args.seed)
        print(f"\n## Generation: generated / simulated dirty images, {n_gen} images\n")
        names = {"prior": "std over the image, style from the prior",
                 "like": "std over the image, style around the simulated image's",
                 "per_pixel": "per-pixel std over 10 draws / simulator noise rms"}
        for key, name in names.items():
            r = ratios[key]
            lo, med, hi = np.percentile(r, [16, 50, 84])
            print(f"- {name}: median {med:.3f} (16–84%: {lo:.3f}–{hi:.3f}), mean {r.mean():.3f} ± {r.std(ddof=1):.3f}")

if __name__ == "__main__":
    main()
