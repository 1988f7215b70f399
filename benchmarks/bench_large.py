"""Peak memory and time of predictions on large images (4096 x 4096, 8192 x 8192).

The dirty image is made cheaply and written to a FITS file in row blocks:
one 512 x 512 block of noise and point sources convolved with a Gaussian
beam, repeated across the image (so it need not fit in memory twice). Each
measurement runs in its own child process, which opens the FITS file
memory-mapped, loads the model, and reports the wall time of
``Reconstructor.predict`` and its own peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``), next to the resident size after the
model was loaded (``base``: Python, torch, the model). The last column
divides the growth by the image's size in float32: what the pipeline
holds on top of the model, counted in copies of the image.

A method with a third field, ``dask`` (``star:1:dask``), runs
`radiorecon.parallel.predict_large` instead, on a local cluster of
``--workers`` worker processes with blocks of ``--tile`` pixels, writing the
result to a FITS file: ``peak RSS`` is then the client's, and the column
``worker MB`` the largest peak of any worker (the children's
``ru_maxrss``); the time includes starting the cluster and writing the file.

Run::

    python benchmarks/bench_large.py                      # 4096 and 8192, STAR (1, 10 samples), matched filter
    python benchmarks/bench_large.py --sizes 4096 --methods star:1,star:10 --repeats 3
    python benchmarks/bench_large.py --sizes 4096,8192 --methods star:1,star:1:dask --workers 2

Each run of STAR on CPU takes about 0.4 s per 512 x 512 tile and draw;
the 8192 x 8192 image has 529 tiles.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BLOCK = 512
BEAM_SIGMA = 9 / 2.3548  # pixels: STAR's training beam of about 9 pixels FWHM
PIXEL_ARCSEC = 0.1


def make_image(path, n, seed=0):
    """Write an ``n x n`` dirty image in Jy/beam, with WCS and beam cards, to ``path``."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sky = np.zeros((BLOCK, BLOCK))
    at = rng.integers(16, BLOCK - 16, (12, 2))
    sky[at[:, 0], at[:, 1]] = rng.uniform(2e-4, 2e-3, len(at))
    # The convolution with a unit-peak beam: a source of S Jy peaks at S Jy/beam.
    block = gaussian_filter(sky, BEAM_SIGMA) * 2 * np.pi * BEAM_SIGMA**2
    block += gaussian_filter(rng.normal(0, 1, (BLOCK, BLOCK)), BEAM_SIGMA) * 5e-5 / 0.07
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [n / 2 + 1, n / 2 + 1]
    wcs.wcs.cdelt = [-PIXEL_ARCSEC / 3600, PIXEL_ARCSEC / 3600]
    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
    header["NAXIS1"] = header["NAXIS2"] = n
    header.extend(wcs.to_header(), update=True)
    fwhm = 2.3548 * BEAM_SIGMA * PIXEL_ARCSEC / 3600
    header.update(BUNIT="Jy/beam", BMAJ=fwhm, BMIN=fwhm, BPA=0.0)
    header.tofile(path, overwrite=True)
    # Grow the file to its full size, then fill it row block by row block.
    with open(path, "rb+") as f:
        f.seek(len(header.tostring()) + n * n * 4 - 1)
        f.write(b"\0")
        f.truncate(len(header.tostring()) + ((n * n * 4 + 2879) // 2880) * 2880)
    with fits.open(path, mode="update", memmap=True) as hdul:
        row = np.tile(block.astype(">f4"), (1, n // BLOCK))
        for y in range(0, n, BLOCK):
            hdul[0].data[y : y + BLOCK] = row
    return path


def child(path, method, n_samples, workers=2, tile=1024):
    """Measure one prediction; print a JSON line."""
    from astropy.io import fits

    from radiorecon import Reconstructor

    if method.endswith(":dask"):
        return child_dask(path, method.split(":")[0], n_samples, workers, tile)
    if method == "star":
        rec, psf = Reconstructor.pretrained("star", device="cpu"), None
    else:
        rec = Reconstructor(method)
        y, x = np.mgrid[-64:65, -64:65]
        psf = np.exp(-(x**2 + y**2) / (2 * BEAM_SIGMA**2))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with fits.open(path, memmap=True) as hdul:
        start = time.perf_counter()
        result = rec.predict(hdul[0], psf=psf, n_samples=n_samples, seed=0, progress=False)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(seconds=seconds, base=base, peak=peak, finite=bool(np.isfinite(result.data).all()))))


def child_dask(path, method, n_samples, workers, tile):
    """Measure one `~radiorecon.parallel.predict_large` on a local cluster; print a JSON line."""
    from radiorecon import Reconstructor
    from radiorecon.parallel import predict_large
    from radiorecon.result import read_result

    model = "pretrained:star" if method == "star" else method
    psf = None
    if method != "star":
        y, x = np.mgrid[-64:65, -64:65]
        psf = np.exp(-(x**2 + y**2) / (2 * BEAM_SIGMA**2))
    # The client opens the model too (to check it before any work): part of its base.
    Reconstructor.pretrained("star", device="cpu") if method == "star" else Reconstructor(method)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = path.replace(".fits", ".sky.fits")
    start = time.perf_counter()
    predict_large(path, model, out, workers=workers, tile=tile, n_samples=n_samples, psf=psf, seed=0,
                  device="cpu", overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The worker processes are the client's children, joined when the cluster closed.
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    data = read_result(out).data
    finite = bool(np.isfinite(data).all())
    os.remove(out)
    print(json.dumps(dict(seconds=seconds, base=base, peak=peak, worker=worker, finite=finite)))


def measure(path, method, n_samples, workers, tile):
    out = subprocess.run([sys.executable, __file__, "--child", path, method, str(n_samples), str(workers),
                          str(tile)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4096,8192", help="image sizes, comma-separated")
    parser.add_argument("--methods", default="star:1,star:10,matched-filter:1",
                        help="backend:n_samples pairs, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="repeats per row (median reported)")
    parser.add_argument("--tmpdir", default=None, help="where the large FITS files are written")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers of the :dask methods")
    parser.add_argument("--tile", type=int, default=1024, help="block side of the :dask methods")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]), int(args.child[4]))
        return
    methods = []
    for m in args.methods.split(","):
        name, n_samples, *dask = m.split(":")
        methods.append((":".join([name] + dask), int(n_samples)))
    print(f"{'image':>11} {'backend':>20} {'n_samples':>9} {'seconds':>8} {'peak RSS MB':>11} "
          f"{'base MB':>8} {'growth / image':>14} {'worker MB':>9}")
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = make_image(os.path.join(tmp, f"dirty_{n}.fits"), n)
            for method, n_samples in methods:
                runs = [measure(path, method, n_samples, args.workers, args.tile) for _ in range(args.repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                peak = statistics.median(r["peak"] for r in runs)
                base = statistics.median(r["base"] for r in runs)
                assert all(r["finite"] for r in runs)
                worker = f"{statistics.median(r['worker'] for r in runs) / 2**20:>9.0f}" if "worker" in runs[0] \
                    else f"{'':>9}"
                print(f"{n:>5}x{n:<5} {method:>20} {n_samples:>9} {seconds:>8.1f} {peak / 2**20:>11.0f} "
                      f"{base / 2**20:>8.0f} {(peak - base) / (4 * n * n):>14.1f} {worker}", flush=True)
            os.remove(path)


if __name__ == "__main__":
    main()
