"""Conditional DDPM on held-out images: samplers x steps x samples, against STAR and CLEAN.

For each sampler (ancestral DDPM, DDIM with eta=0, DPM-Solver++(2M)) and
each (steps, samples) of 250x20 (the papers' setting), 250x5, 50x20, 20x20,
20x5 and 10x5, it measures purity, completeness, F1 with a bootstrap error,
L2, 1 and 2 sigma coverage on source pixels, network runs and seconds per
image, next to the truth limit, the dirty image, CLEAN and the shipped STAR
model on the same images. Then it checks the goal: a sampler with at most
50 network evaluations per sample within 1 F1 point of 250 ancestral steps
at 5 times less time or better, by a paired bootstrap over the images both
ran on.

The 250-step rows cost 5000 network runs per image, so the work comes in
parts that can run side by side (one core each) and a report::

    radiorecon simulate 100 ds64 --seed 2026 --set npix=64 --set placement_radius="3 arcsec"
    python benchmarks/bench_ddpm.py short --data ds64 --model ddpm.rrm --out report            # 100 images
    python benchmarks/bench_ddpm.py long --data ds64 --model ddpm.rrm --out report --n-images 30
    radiorecon simulate 200 ds200 --seed 2026                                                  # 512x512
    python benchmarks/bench_ddpm.py full --data ds200 --model ddpm.rrm --out report --n-images 30
    python benchmarks/bench_ddpm.py report --out report

``--model`` defaults to the shipped model (``Reconstructor.pretrained("ddpm")``).
The sampler table runs on 64x64-pixel images (6.4"), the size the shipped
models train on, with the sources within 3" of the centre: on 512x512
images one 250x20 row would take over 15 minutes per image on one CPU core.
The ``full`` part compares the default sampler (DPM-Solver++(2M), 20 steps,
5 samples) with CLEAN and STAR on full 512x512 default-preset images.
"""

import argparse
import json
import os
import time

import numpy as np
from astropy.table import QTable

from radiorecon import Reconstructor
from radiorecon.benchmark import run_benchmark, to_markdown
from radiorecon.metrics import bootstrap_f1, detection_scores, reliability

SAMPLERS = ["ddpm", "ddim", "dpm++2m"]
SETTINGS = [(250, 20), (250, 5), (50, 20), (20, 20), (20, 5), (10, 5)]
REFERENCE = "DDPM ddpm 250x20"


def label(sampler, steps, n):
    return f"DDPM {sampler} {steps}x{n}"


def methods(part, model):
    load = (lambda: Reconstructor.load(model)) if model else (lambda: Reconstructor.pretrained("ddpm"))
    rows = []
    if part == "full":
        star = Reconstructor.pretrained("star")
        return [("CLEAN", Reconstructor("clean"), 1), ("STAR 10 styles", star, 10),
                (label("dpm++2m", 20, 5), load().set_params(sampler="dpm++2m", steps=20), 5)]
    if part == "short":
        star = Reconstructor.pretrained("star")
        rows += [("CLEAN", Reconstructor("clean"), 1), ("STAR direct", star, 1), ("STAR 10 styles", star, 10)]
    for sampler in SAMPLERS:
        for steps, n in SETTINGS:
            if (steps >= 250) == (part == "long"):
                rows.append((label(sampler, steps, n), load().set_params(sampler=sampler, steps=steps), n))
    return rows


def run_part(args):
    path = os.path.join(args.out, f"{args.part}.ecsv")
    if os.path.exists(path) and not args.overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it")
    os.makedirs(args.out, exist_ok=True)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    start = time.perf_counter()
    table, examples = run_benchmark(args.data, methods(args.part, args.model), n_images=args.n_images,
                                    threshold=thresholds, seed=args.seed)
    table.meta["wall_seconds"] = time.perf_counter() - start
    table.write(path, overwrite=True)
    arrays = {}
    for (lab, t), counts in examples["counts"].items():
        arrays[f"counts|{lab}|{t:g}"] = counts
    for (lab, t), (p, ok) in examples["calibration"].items():
        arrays[f"prob|{lab}|{t:g}"], arrays[f"tp|{lab}|{t:g}"] = p, ok
    np.savez(os.path.join(args.out, f"{args.part}.npz"), **arrays)
    print(to_markdown(table))


def report(args):
    parts = {}
    for part in ("short", "long", "full"):
        path = os.path.join(args.out, f"{part}.ecsv")
        if os.path.exists(path):
            with np.load(os.path.join(args.out, f"{part}.npz")) as z:
                parts[part] = (QTable.read(path), {k: z[k] for k in z.files})
    if not parts:
        raise SystemExit(f"no parts in {args.out}: run the short and long parts first")
    for part, (table, _) in parts.items():
        size = "512x512" if part == "full" else "64x64"
        print(f"\n## {part} part: {table['n_images'][0]} images of {size} pixels, "
              f"{table.meta['wall_seconds'] / 60:.1f} min\n")
        print(to_markdown(table))

    # The "published" protocol's rows have no threshold (NaN): only the significance ones do.
    thresholds = sorted({float(t) for _, (table, _) in parts.items()
                         for t in table[table["protocol"] == "significance"]["threshold"]}, reverse=True)
    counts = {}
    seconds = {}
    for part, (table, arrays) in parts.items():
        if part == "full":
            continue
        for key, value in arrays.items():
            kind, lab, t = key.split("|")
            if kind == "counts":
                counts[(lab, float(t))] = value
        for row in table:
            seconds[row["method"]] = row["seconds_per_image"]
    if "long" not in parts:
        return
    n_common = len(counts[(REFERENCE, thresholds[0])])
    print(f"\n## Same {n_common} images: F1 against {REFERENCE} (paired bootstrap over images)\n")
    print("| method | thr | F1 | ± | ΔF1 vs reference | 95% interval | network runs per sample | time ratio | goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    met = {}
    for t in thresholds:
        ref = counts[(REFERENCE, t)]
        for sampler in SAMPLERS:
            for steps, n in SETTINGS:
                lab = label(sampler, steps, n)
                if (lab, t) not in counts:
                    continue
                c = counts[(lab, t)][:n_common]
                f1 = bootstrap_f1(c, seed=args.seed)
                diff = bootstrap_f1(c, reference=ref, seed=args.seed)
                ratio = seconds[REFERENCE] / seconds[lab]
                ok = steps <= 50 and diff["value"] >= -0.01 and ratio >= 5
                if steps <= 50:
                    met.setdefault(t, []).append((lab, ok))
                print(f"| {lab} | {t:g} | {f1['value']:.3f} | {f1['std']:.3f} | {diff['value']:+.3f} | "
                      f"[{diff['low']:+.3f}, {diff['high']:+.3f}] | {steps} | {ratio:.1f} | "
                      f"{'met' if ok else ('—' if steps > 50 else 'not met')} |")
        tp, fp, fn = ref.sum(axis=0)
        print(f"| (reference counts at {t:g}: {detection_scores(tp, fp, fn)}) |||||||||")
    print("\n## Goal: <= 50 network runs per sample, within 1 F1 point of 250 ancestral steps, >= 5x faster\n")
    for t, rows in met.items():
        good = [lab for lab, ok in rows if ok]
        print(f"- threshold {t:g}: {'met by ' + ', '.join(good) if good else 'not met'}")

    print("\n## Detection probability against true-positive rate\n")
    for part, (_, arrays) in parts.items():
        for key in sorted(arrays):
            kind, lab, t = key.split("|")
            if kind != "prob" or not (lab.startswith("DDPM") and lab.endswith("x20")):
                continue
            print(f"\n{lab}, threshold {t}:\n")
            print(to_markdown(reliability(arrays[key], arrays[f"tp|{lab}|{t}"])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["short", "long", "full", "report"])
    parser.add_argument("--data", help="data set directory (radiorecon simulate)")
    parser.add_argument("--model", default=None, help="DDPM model file (default: the shipped one)")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--thresholds", default="5,3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing part")
    args = parser.parse_args()
    if args.part == "report":
        report(args)
        return
    if not args.data:
        parser.error("--data is required to run a part")
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(vars(args)))
    run_part(args)


if __name__ == "__main__":
    main()
