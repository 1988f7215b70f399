"""Throughput of `radiorecon.parallel.predict_many`: images per second on 1, 2, ... Dask workers.

Run ``python benchmarks/bench_parallel.py [--n 16] [--repeats 3] [--workers 1 2]``.
It simulates ``N`` default-preset images (512² pixels) as FITS files, then,
for each number of workers ``W``, times:

* *cold*: ``predict_many(workers=W)`` end to end, as ``radiorecon predict
  --workers W`` runs it: starting the cluster and each worker opening the
  model included;
* *warm*: calls on a running cluster whose workers have opened the model
  already, into fresh output directories, median over ``--repeats``;

against one process doing the same work (read, predict, catalog, write)
for the images one after another on one torch thread (*serial*). It checks
that every result equals the serial one (seeded) and prints a table.
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="images (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="pretrained:star")
    parser.add_argument("--samples", type=int, default=1, help="n_samples of each prediction (default 1)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    from radiorecon import Reconstructor, simulate
    from radiorecon.io import read_image
    from radiorecon.parallel import DEFAULT_THRESHOLD, field_catalog, predict_many
    from radiorecon.pretrained import resolve_model_path
    from radiorecon.result import read_result

    # Other processes on the machine slow every figure down: show the load.
    print(f"predict_many, {args.model}, {args.n} default-preset images (512² px), n_samples={args.samples}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = simulate.make_dataset(args.n, seed=args.seed, out=os.path.join(tmp, "data"), progress=False)
        inputs = [p for p in data.export_fits(os.path.join(tmp, "fits")) if p.endswith(".dirty.fits")]

        # The same work as each task: read, predict, catalog, write.
        rec = Reconstructor.load(resolve_model_path(args.model))
        threshold = rec.catalog_threshold or DEFAULT_THRESHOLD
        os.makedirs(os.path.join(tmp, "serial"))
        serial = []
        start = time.perf_counter()
        for i, path in enumerate(inputs):
            image = read_image(path)
            sky = rec.predict(image, n_samples=args.samples, seed=args.seed, progress=False, threads=1,
                              return_samples=args.samples > 1)
            field_catalog(sky, image, threshold).write(os.path.join(tmp, "serial", f"{i}.ecsv"))
            sky.write(os.path.join(tmp, "serial", f"{i}.fits"))
            serial.append(sky.data)
        serial_s = time.perf_counter() - start
        rows = [("serial (1 process, 1 thread)", "-", args.n / serial_s, "-")]

        runs = 0

        def survey(workers, client=None):
            nonlocal runs
            runs += 1
            start = time.perf_counter()
            done = predict_many(inputs, args.model, os.path.join(tmp, f"out{runs}"), client=client,
                                workers=None if client else workers, n_samples=args.samples, seed=args.seed,
                                progress=False)
            seconds = time.perf_counter() - start
            if not all(np.array_equal(read_result(r).data, s, equal_nan=True)
                       for r, s in zip(done.fields["result"], serial)):
                raise SystemExit(f"{workers} workers: results differ from the serial ones")
            return seconds

        for workers in args.workers:
            cold = survey(workers)  # predict_many's own cluster: start-up and model loading included
            # A cluster of our own, configured as predict_many configures its own (see docs/parallel.rst).
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
            with cluster, Client(cluster) as client:
                warm = [survey(workers, client) for _ in range(args.repeats + 1)][1:]
            rows.append((f"{workers} worker{'s' * (workers > 1)}", f"{args.n / cold:.2f}",
                         args.n / statistics.median(warm), "identical"))

    print()
    print(f"| {'run':<29} | cold images/s | warm images/s (median of {args.repeats}) | results vs serial |")
    print(f"|{'-' * 31}|---------------|{'-' * 33}|-------------------|")
    for name, cold, warm, same in rows:
        print(f"| {name:<29} | {cold:>13} | {warm:>31.2f} | {same:>17} |")


if __name__ == "__main__":
    main()
