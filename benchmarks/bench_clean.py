"""Seconds per 512 x 512 image of the ``clean`` backend (Hogbom CLEAN).

Self-contained: the PSF comes from a small, made-up array (a handful of
antennas, Earth-rotation tracks), so it has the sidelobes of a real one; the
dirty image is a few point sources and one extended source convolved with it,
plus noise correlated by the same sampling function. Reports the median of
several repeats of

* ``hogbom``: the minor-cycle loop alone, on the normalised arrays, with
  the PSF of the image's size (what CASA writes), with a PSF twice that
  size (cleans sidelobes across the whole image), and inside one 96 x 96
  clean box;
* ``Reconstructor``: ``Reconstructor("clean").predict(dirty, psf=psf)``,
  with everything the front door and the backend add (PSF centring, noise
  estimate, clean-beam fit, restored image, residual rms).

``--reference`` also times the plain numpy loop the backend started from
(full-image ``np.abs`` and ``argmax`` every iteration), for comparison.

Run::

    python benchmarks/bench_clean.py            # niter=1000, 5 repeats
    python benchmarks/bench_clean.py --reference --repeats 7

CASA ``tclean`` (Hogbom) took about 2.6 s per 512 x 512 image on the same
kind of machine, I/O included.
"""

import argparse
import os
import statistics
import time

import numpy as np


def make_psf(n, *, n_ant=7, n_hours=8, seed=7):
    """A naturally weighted PSF of ``n`` x ``n`` pixels from a few baselines.

    ``n_ant`` antennas at random positions observe for ``n_hours`` hour
    angles; each baseline's uv point (and its conjugate) lands on the grid.
    The PSF is the Fourier transform of that sampling, peak 1 at
    ``(n // 2, n // 2)``.
    """
    rng = np.random.default_rng(seed)
    ant = rng.normal(0, 1, size=(n_ant, 2))
    sampling = np.zeros((n, n))
    dec = np.radians(-30.0)
    for h in np.linspace(-np.pi / 4, np.pi / 4, n_hours * 6):
        for i in range(n_ant):
            for j in range(i + 1, n_ant):
                bx, by = ant[i] - ant[j]
                u = bx * np.cos(h) - by * np.sin(h)
                v = (bx * np.sin(h) + by * np.cos(h)) * np.sin(dec)
                # Baselines reach a few tenths of the grid: a main lobe ~5 pixels wide.
                iu, iv = int(round(u * n / 10)), int(round(v * n / 10))
                if max(abs(iu), abs(iv)) < n // 2:
                    sampling[iv % n, iu % n] += 1
                    sampling[-iv % n, -iu % n] += 1
    psf = np.fft.fftshift(np.real(np.fft.ifft2(sampling)))
    return psf / psf[n // 2, n // 2], sampling


def make_dirty(n, *, seed=0, noise=1e-4):
    """A dirty image in Jy/beam, its PSF of the same size and its PSF of twice the size."""
    rng = np.random.default_rng(seed)
    psf2, sampling2 = make_psf(2 * n, seed=7)
    sky = np.zeros((2 * n, 2 * n))
    lo = n // 2
    for _ in range(6):
        y, x = rng.integers(lo + 16, lo + n - 16, size=2)
        sky[y, x] += rng.uniform(5, 50) * noise
    # One extended source: many components to clean.
    yy, xx = np.mgrid[: 2 * n, : 2 * n]
    sky += 2 * noise * np.exp(-((yy - n + 40) ** 2 + (xx - n - 60) ** 2) / (2 * 6.0**2))
    # Convolve on the 2n grid (no wrap-around into the n x n cut).
    dirty = np.real(np.fft.ifft2(np.fft.fft2(sky) * np.fft.fft2(np.fft.ifftshift(psf2))))
    # Noise with the PSF's correlations: white in the sampled visibilities.
    white = rng.normal(size=(2 * n, 2 * n)) + 1j * rng.normal(size=(2 * n, 2 * n))
    corr = np.real(np.fft.ifft2(white * np.sqrt(sampling2)))
    dirty += noise * corr / corr.std()
    cut = slice(lo, lo + n)
    # The PSF a CASA run would give: the image's size, peak at the centre.
    return dirty[cut, cut].astype(np.float32), psf2[cut, cut].astype(np.float32), psf2.astype(np.float32)


def _reference_hogbom(dirty, psf, *, gain=0.1, niter=1000, threshold=0.0):
    """The plain numpy loop the backend started from, for comparison."""
    residual = np.array(dirty, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    model = np.zeros_like(residual)
    ny, nx = residual.shape
    cy, cx = ny // 2, nx // 2
    for it in range(niter):
        y, x = divmod(int(np.argmax(np.abs(residual))), nx)
        peak = residual[y, x]
        if abs(peak) <= threshold:
            return model, residual, it
        flux = gain * peak
        model[y, x] += flux
        y0, y1 = max(0, y - cy), min(ny, y - cy + ny)
        x0, x1 = max(0, x - cx), min(nx, x - cx + nx)
        residual[y0:y1, x0:x1] -= flux * psf[y0 - y + cy : y1 - y + cy, x0 - x + cx : x1 - x + cx]
    return model, residual, niter


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--niter", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also time the plain numpy loop")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    import torch

    from radiorecon import Reconstructor
    from radiorecon.backends.clean import hogbom

    n, niter = args.size, args.niter
    dirty, psf, psf_big = make_dirty(n)
    box = [[n // 2 - 88, n // 2 + 8, n // 2 + 12, n // 2 + 108]]  # around the extended source
    # threshold=0 runs exactly niter iterations, so the timings compare like with like.
    rec = Reconstructor("clean", niter=niter, threshold=0.0)
    print(f"clean benchmark: {n} x {n} image, niter={niter}, threshold=0, "
          f"median of {args.repeats} repeats")
    print(f"  numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
    rows = []
    if args.reference:
        med, best = _median_time(lambda: _reference_hogbom(dirty, psf, niter=niter), args.repeats)
        rows.append(("hogbom, plain numpy loop (reference)", med, best))
    med, best = _median_time(lambda: hogbom(dirty, psf, niter=niter), args.repeats)
    rows.append(("hogbom()", med, best))
    med, best = _median_time(lambda: hogbom(dirty, psf_big, niter=niter), args.repeats)
    rows.append(("hogbom(), PSF twice the image", med, best))
    med, best = _median_time(lambda: hogbom(dirty, psf, niter=niter, boxes=box), args.repeats)
    rows.append(("hogbom(), one 96 x 96 clean box", med, best))
    rec.predict(dirty, psf=psf, progress=False)  # warm-up: imports, first calls
    med, best = _median_time(lambda: rec.predict(dirty, psf=psf, progress=False), args.repeats)
    rows.append(('Reconstructor("clean").predict', med, best))
    for name, med, best in rows:
        print(f"  {name:<38s} {med:7.3f} s/image (median) {best:7.3f} s (best)")
    result = rec.predict(dirty, psf=psf, progress=False)
    residual = result.extras["residual"]
    print(f"  residual rms {residual.std():.3g}, clean flux {np.nansum(result.data):.4g}")


if __name__ == "__main__":
    main()
