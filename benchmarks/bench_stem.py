"""Network grids: 2x2 bins against a 4x4 pixel-unshuffle stem, per training step and per prediction.

Prints, for networks of the same widths, the parameters, the seconds of one
training step (a batch of cut-outs) and of one 512x512 prediction, each the
median of ``--repeats`` runs interleaved across the configurations (so that
other load on the machine affects them alike), and their ratio to today's
2x2 bins::

    python benchmarks/bench_stem.py --crop 128 --batch-size 16 --threads 1

Then the same for the DDPM: a 512x512 prediction with 20 sampler steps and
5 samples (100 network runs), the setting of the speed target.

What the stems cost in quality is measured by training both with
``examples/train_star.py`` (``--stem bin --downsample 2`` against the
default) and scoring them with ``radiorecon benchmark``.
"""

import argparse
import statistics
import time

import torch

from radiorecon.backends.ddpm import DdpmBackend
from radiorecon.backends.star import StarBackend

CONFIGS = {
    "2x2 bins": dict(stem="bin", downsample=2),
    "4x4 unshuffle": dict(stem="unshuffle", downsample=4),
    "4x4 unshuffle, 1.5x wider": dict(stem="unshuffle", downsample=4, base_channels=24, style_base_channels=12),
}


def _median_seconds(step, backends, repeats):
    times = {name: [] for name in backends}
    for _ in range(repeats):
        for name, backend in backends.items():
            start = time.perf_counter()
            step(backend)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=128, help="training cut-out size (default 128)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, args.crop, args.crop, generator=gen)
    sky = torch.rand(args.batch_size, args.crop, args.crop, generator=gen) * 1e-2
    image = torch.randn(1, 512, 512, generator=gen)
    backends = {}
    for name, config in CONFIGS.items():
        backend = StarBackend(nonnegative=True, content_loss="l1", **config)
        backend.optimizers = backend.configure_optimizers()
        backends[name] = backend

    def train(backend):
        backend.train()
        backend.train_step(x, sky)

    def predict(backend):
        backend.eval()
        with torch.no_grad():
            backend.predict(image)

    steps = _median_seconds(train, backends, args.repeats)
    predictions = _median_seconds(predict, backends, args.repeats)
    base = next(iter(CONFIGS))
    print(f"STAR, {args.batch_size} cut-outs of {args.crop}x{args.crop} per step, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"| grid | parameters | s / step | vs {base} | s / 512x512 prediction | vs {base} |")
    print("|---|---|---|---|---|---|")
    for name, backend in backends.items():
        print(f"| {name} | {backend.parameter_counts()['total'] / 1e6:.2f}M | {steps[name]:.3f} | "
              f"{steps[name] / steps[base]:.2f} | {predictions[name]:.3f} | {predictions[name] / predictions[base]:.2f} |")

    diffusion = {name: DdpmBackend(steps=20, **{k: v for k, v in config.items() if k in ("stem", "downsample")})
                 for name, config in list(CONFIGS.items())[:2]}
    for backend in diffusion.values():
        backend.eval()

    def sample(backend):
        with torch.no_grad():
            backend.predict(image, n_samples=5)

    seconds = _median_seconds(sample, diffusion, max(1, args.repeats // 2))
    print(f"\nDDPM, 512x512, 20 steps x 5 samples, median of {max(1, args.repeats // 2)}")
    print(f"| grid | parameters | s / prediction | vs {base} |")
    print("|---|---|---|---|")
    for name, backend in diffusion.items():
        print(f"| {name} | {backend.parameter_counts()['total'] / 1e6:.2f}M | {seconds[name]:.2f} | "
              f"{seconds[name] / seconds[base]:.2f} |")


if __name__ == "__main__":
    main()
