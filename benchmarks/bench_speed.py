"""Seconds per 512x512 image of the shipped models, at the settings of issue 13's speed targets.

Times `Reconstructor.predict` on one simulated default-preset image
(``radiorecon.simulate.observe(seed=7, index=0)``) for

* CLEAN (Hogbom, the default configuration) and the matched filter;
* the shipped STAR model, direct (one network run) and with 10 styles;
* the shipped DDPM, 20 sampler steps x 5 samples and 20 x 20;
* any other model file given with ``--model PATH@SAMPLES`` (repeatable).

Each row is timed ``--repeats`` times, the rows interleaved so that other
load on the machine slows them alike, after one untimed warm-up call each;
the table gives the median, the spread of the runs, network runs per image
and the ratio to STAR direct measured in the same run. Targets (2 cores):
STAR direct <= 0.2 s, STAR x10 <= 2 s, DDPM 20 steps x 5 samples <= 8 s::

    python benchmarks/bench_speed.py --threads 2 --repeats 5
"""

import argparse
import os
import statistics
import time

import torch

from radiorecon import Reconstructor, simulate

TARGETS = {"STAR direct": 0.2, "STAR x10": 2.0, "DDPM 20x5": 8.0}


def _rows(models):
    star = Reconstructor.pretrained("star")
    ddpm = Reconstructor.pretrained("ddpm")
    rows = [
        ("CLEAN", Reconstructor("clean"), {}, 0),
        ("matched filter", Reconstructor("matched-filter"), {}, 0),
        ("STAR direct", star, {}, 1),
        ("STAR x10", star, {"n_samples": 10}, 10),
        ("DDPM 20x5", ddpm, {"n_samples": 5}, 5 * ddpm.backend.config["steps"]),
        ("DDPM 20x20", ddpm, {"n_samples": 20}, 20 * ddpm.backend.config["steps"]),
    ]
    for spec in models:
        path, _, samples = spec.rpartition("@") if "@" in spec else (spec, "", "1")
        rec = Reconstructor.load(path)
        n = int(samples)
        runs = n * rec.backend.config.get("steps", 1) if "draws" in rec.capabilities else n
        rows.append((f"{os.path.basename(path)} x{n}", rec, {"n_samples": n} if n > 1 else {}, runs))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", action="append", default=[], metavar="PATH@SAMPLES",
                        help="also time this model file with this many samples (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    obs = simulate.observe(seed=7, index=0)
    rows = _rows(args.model)
    # Other processes slow every figure down: show the load.
    print(f"512x512 default-preset image, {args.threads} torch threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    times = {name: [] for name, *_ in rows}
    for repeat in range(args.repeats + 1):
        for name, rec, kwargs, _ in rows:
            start = time.perf_counter()
            rec.predict(obs.dirty, psf=obs.psf, seed=repeat, progress=False, **kwargs)
            if repeat:  # the first round warms caches up (PSF FFTs, kernels)
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["STAR direct"])
    print()
    print(f"{'method':22s} {'median s':>9s} {'min-max s':>15s} {'net runs':>8s} {'x STAR':>7s} {'target s':>8s}")
    for name, _, _, runs in rows:
        t = times[name]
        median = statistics.median(t)
        target = f"{TARGETS[name]:g}" if name in TARGETS else ""
        spread = f"{min(t):.3f}-{max(t):.3f}"
        print(f"{name:22s} {median:9.3f} {spread:>15s} {runs:8d} {median / reference:7.2f} {target:>8s}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
