"""Throughput of the simulator: (dirty, sky) pairs per second.

Run ``python benchmarks/bench_simulate.py [--n 400] [--repeats 3]``. It
times, with the default preset (512² pixels):

* ``observe`` in a loop, once its PSF bank is warm (steady state);
* ``make_dataset(workers=1)`` and ``make_dataset(workers=2)`` end to end,
  worker start-up, PSF bank and disk writes included;

and prints the median over the repeats.
"""

import argparse
import os
import statistics
import tempfile
import time

from radiorecon import simulate


def _rate(n, seconds):
    return n / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=400, help="images per make_dataset run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--npix", type=int, default=512)
    args = parser.parse_args(argv)
    # Other processes on the machine slow every figure down: show the load.
    print(f"radiorecon.simulate, default preset, {args.npix}² px, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")

    # Steady state: the same declination bin every time, after a warm-up.
    simulate.observe(seed=0, index=0, npix=args.npix, field_radius="0 deg")
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(50):
            simulate.observe(seed=r, index=i, npix=args.npix, field_radius="0 deg")
        rates.append(_rate(50, time.perf_counter() - t0))
    print(f"observe, warm, 1 process:           {statistics.median(rates):6.1f} pairs/s")

    for workers in args.workers:
        rates = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                simulate.make_dataset(args.n, seed=100 + r, out=os.path.join(tmp, "ds"), workers=workers,
                                      progress=False, npix=args.npix)
                rates.append(_rate(args.n, time.perf_counter() - t0))
        print(f"make_dataset(n={args.n}, workers={workers}): {statistics.median(rates):6.1f} pairs/s "
              f"(runs: {', '.join(f'{x:.1f}' for x in rates)})")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
