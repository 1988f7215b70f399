"""The ``radiorecon`` command line."""

import argparse
import json
import logging
import os
import sys

from . import __version__
from .exceptions import RadioreconError

__all__ = ["main"]


def _config_pairs(pairs):
    """Parse ``KEY=VALUE`` options; values are JSON where they parse, else strings."""
    config = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _open_model(spec, config):
    """A Reconstructor from a model file, or from a backend name for untrained use."""
    from . import available_backends
    from .reconstructor import Reconstructor

    # A trained model takes only the settings that steer prediction (set_params).
    if spec.startswith("pretrained:"):
        return Reconstructor.pretrained(spec.partition(":")[2]).set_params(**config)
    if os.path.exists(spec):
        return Reconstructor.load(spec).set_params(**config)
    if spec in available_backends():
        return Reconstructor(spec, **config)
    raise ValueError(
        f"{spec!r} is neither a model file nor an installed backend "
        f"(installed: {', '.join(available_backends()) or 'none'})"
    )


def cmd_backends(args):
    from . import available_backends, backend_info

    names = available_backends()
    if not names:
        print("No backends installed.")
        return 0
    for name in names:
        if not args.long:
            print(name)
            continue
        try:
            info = backend_info(name)
        except ValueError:
            continue  # a broken plugin: backend_info already warned
        print(f"{name} (version {info['version']}, {info['origin']})")
        print(f"    {info['description']}")
        print(f"    capabilities: {', '.join(info['capabilities'])}")
        print(f"    config: {json.dumps(info['default_config'])}")
    return 0


def cmd_info(args):
    from .modelfile import read_header

    doc = read_header(args.model)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [
        ("file", args.model),
        ("backend", f"{doc.get('backend')} (version {doc.get('backend_version')})"),
        ("written by", f"radiorecon {doc.get('radiorecon_version')} on {doc.get('created')}"),
        ("trained", "yes" if doc.get("fitted") else "no"),
        ("config", json.dumps(doc.get("config"))),
        ("normalisation", json.dumps(doc.get("normalisation"))),
        ("units", json.dumps(doc.get("units"))),
        ("epochs", len(doc.get("history", []))),
    ]
    if doc.get("history"):
        rows.append(("last epoch", json.dumps(doc["history"][-1])))
    if "training" in doc:
        t = doc["training"]
        rows.append(("checkpoint", f"after epoch {t['epoch']} of {t['epochs']}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}: {value}")
    return 0


def cmd_predict(args):
    import astropy.units as u

    from .io import write_result

    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    if args.catalog and os.path.abspath(args.catalog) == os.path.abspath(args.output):
        raise ValueError("--catalog and -o name the same file")
    if args.catalog and os.path.exists(args.catalog) and not args.overwrite:
        raise FileExistsError(f"{args.catalog} already exists; pass --overwrite to replace it")
    for name in (args.input, args.psf):
        if name is not None and not os.path.exists(name):
            raise FileNotFoundError(f"{name} does not exist")
    rec = _open_model(args.model, _config_pairs(args.set))
    sky = rec.predict(
        args.input,
        n_samples=args.samples,
        psf=args.psf,
        aggregate=args.aggregate,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        return_samples=bool(args.catalog) and args.samples > 1,
    )
    write_result(sky, args.output, overwrite=args.overwrite, extras=True)
    print(f"wrote {args.output}")
    if args.catalog:
        from .catalog import find_sources, find_sources_in_model

        if sky.unit is not None and sky.unit.is_equivalent(u.Jy / u.pix):
            # A sky model: detect it through the clean beam against the input's noise.
            catalog = find_sources_in_model(sky, args.input, args.threshold)
        else:
            catalog = find_sources(sky, threshold=args.threshold)
        catalog.write(args.catalog, format="ascii.ecsv", overwrite=args.overwrite)
        print(f"wrote {args.catalog} ({len(catalog)} sources)")
    return 0


def cmd_train(args):
    from .reconstructor import Reconstructor

    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    rec = Reconstructor(args.backend, **_config_pairs(args.set))
    validation = None
    if args.val_inputs:
        validation = (args.val_inputs, args.val_targets) if args.val_targets else args.val_inputs
    rec.fit(
        args.inputs,
        args.targets,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=validation,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
    )
    rec.save(args.output, overwrite=args.overwrite)
    last = rec.history[-1] if rec.history else {}
    print(f"wrote {args.output} after {len(rec.history)} epochs: {json.dumps(last)}")
    return 0


def cmd_simulate(args):
    from . import simulate

    if args.list_presets:
        for name in simulate.available_presets():
            print(name)
        return 0
    if args.n is None or args.out is None:
        raise ValueError("give the number of images and the output directory: radiorecon simulate N OUT")
    data = simulate.make_dataset(
        args.n, preset=args.preset, seed=args.seed, out=args.out, overwrite=args.overwrite,
        workers=args.workers, progress=not args.no_progress, **_config_pairs(args.set),
    )
    print(f"wrote {len(data)} images to {args.out}")
    return 0


def _methods(specs, samples):
    """(label, Reconstructor, n_samples) rows from backend names or model files."""
    methods = []
    for spec in specs:
        rec = _open_model(spec, {})
        label = spec if not os.path.exists(spec) else os.path.basename(spec)
        sampling = "uncertainty" in rec.capabilities and rec.backend.network_evaluations(2) > 0
        for n in samples if sampling else [1]:
            methods.append((f"{label} ({n})" if sampling else label, rec, n))
    return methods


def cmd_benchmark(args):
    from .benchmark import plot_report, run_benchmark, to_markdown

    if os.path.exists(args.out) and os.listdir(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} is not empty; pass --overwrite to replace its report")
    samples = [int(n) for n in args.samples.split(",")]
    thresholds = [float(t) for t in args.threshold.split(",")]
    methods = _methods([s for s in args.backends.split(",") if s], samples)
    table, examples = run_benchmark(
        args.data, methods, n_images=args.n_images, threshold=thresholds, seed=args.seed,
        progress=not args.no_progress,
    )
    os.makedirs(args.out, exist_ok=True)
    table.write(os.path.join(args.out, "benchmark.ecsv"), overwrite=True)
    markdown = to_markdown(table)
    with open(os.path.join(args.out, "benchmark.md"), "w") as fh:
        fh.write(markdown + "\n")
    plot_report(table, examples, args.out)
    print(markdown)
    return 0


def cmd_demo(args):
    import astropy.units as u

    from .demo import run_demo

    out = run_demo(args.out, model=args.model, n_samples=args.samples, seed=args.seed,
                   threshold=args.threshold, overwrite=args.overwrite, progress=not args.no_progress)
    obs, catalog, s = out["observation"], out["catalog"], out["scores"]
    print(f"simulated {obs!r}")
    print(f"reconstructed with {args.model} and {args.samples} samples; {len(catalog)} sources found "
          f"at S/N >= {args.threshold:g}:")
    cols = [c for c in ("label", "x", "y", "sky_centroid", "flux", "snr", "detection_probability")
            if c in catalog.colnames]
    if len(catalog):
        table = catalog[cols]
        table["flux"] = table["flux"].to(u.mJy)
        for name in ("x", "y", "snr", "detection_probability"):
            if name in table.colnames:
                table[name].info.format = ".2f"
        table["flux"].info.format = ".3f"
        print(table)
    print(f"against the {len(obs.truth)} true sources: purity {s['purity']:.2f}, "
          f"completeness {s['completeness']:.2f}, F1 {s['f1']:.2f}")
    for path in out["files"]:
        print(f"wrote {path}")
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="radiorecon",
        description="Reconstruct radio sky models, with uncertainty and catalogs, from dirty images.",
    )
    parser.add_argument("--version", action="version", version=f"radiorecon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backends", help="list installed backends")
    p.add_argument("-l", "--long", action="store_true", help="load each backend and describe it")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("info", help="describe a model file (without loading it)")
    p.add_argument("model", help="model file (.rrm)")
    p.add_argument("--json", action="store_true", help="print the model's metadata as JSON")
    p.set_defaults(func=cmd_info)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=None, help="random seed for repeatable results")
    common.add_argument("--device", default="auto", help="'auto' (default), 'cpu' or 'cuda'")
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="backend configuration (repeatable); for a trained model, only its prediction settings, "
             "e.g. --set sampler=ddim --set steps=50",
    )

    p = sub.add_parser("predict", parents=[common], help="reconstruct the sky model of a FITS image")
    p.add_argument("model", help="model file (.rrm), pretrained:NAME for a shipped model, "
                   "or the name of a backend that needs no training")
    p.add_argument("input", help="dirty image (FITS; CASA cubes with degenerate axes are fine)")
    p.add_argument("-o", "--output", required=True, help="output FITS (data, UNCERT, MASK)")
    p.add_argument("--samples", type=int, default=1, help="samples for the uncertainty (default 1)")
    p.add_argument("--aggregate", choices=["median", "mean"], default="median")
    p.add_argument("--psf", help="PSF FITS image, for backends that need it")
    p.add_argument("--catalog", help="also write a source catalog (ECSV); a sky model is detected through "
                   "the input's clean beam against the input's noise")
    p.add_argument("--threshold", type=float, default=5.0, help="detection threshold in sigma")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("simulate", help="simulate a data set of dirty images, skies and PSFs")
    p.add_argument("n", type=int, nargs="?", help="number of images")
    p.add_argument("out", nargs="?", help="output directory")
    p.add_argument("--preset", default="alma-cycle5-c43-3", help="simulation preset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help='preset overrides, e.g. --set noise_rms="30 uJy" (repeatable)')
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("benchmark", help="score methods on a simulated data set, as the papers do")
    p.add_argument("--data", required=True, help="data set directory (radiorecon simulate)")
    p.add_argument("--backends", default="clean", help="comma-separated backend names or model files")
    p.add_argument("--samples", default="1", help="comma-separated sample counts for sampling backends")
    p.add_argument("--n-images", type=int, default=None, help="use the first N images")
    p.add_argument("--threshold", default="5", help="detection threshold(s) in sigma, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="report directory (ECSV, Markdown, PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("demo", help="simulate an observation, reconstruct it with the shipped STAR "
                       "model, and write the result, catalog, regions and a picture")
    p.add_argument("--out", default="radiorecon-demo", help="output directory (default: %(default)s)")
    p.add_argument("--model", default="star", help="shipped model name or model file (default: star)")
    p.add_argument("--samples", type=int, default=10, help="styles for the uncertainty (default 10)")
    p.add_argument("--seed", type=int, default=3,
                   help="seed of the observation and the samples (default 3: five sources)")
    p.add_argument("--threshold", type=float, default=3.0, help="detection threshold in sigma (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", parents=[common], help="train a backend on FITS images")
    p.add_argument("backend", help="backend name")
    p.add_argument("--inputs", nargs="+", required=True, help="training inputs (FITS)")
    p.add_argument("--targets", nargs="+", help="training targets (FITS), for paired backends")
    p.add_argument("--val-inputs", nargs="+", help="validation inputs (FITS)")
    p.add_argument("--val-targets", nargs="+", help="validation targets (FITS)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.rrm)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--checkpoint", help="checkpoint file: written every epoch, resumed from if present")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logging.getLogger("radiorecon").addHandler(handler)
        logging.getLogger("radiorecon").setLevel(logging.INFO)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("radiorecon: interrupted", file=sys.stderr)
        return 130
    except (RadioreconError, ValueError, TypeError, OSError) as exc:
        # Bad input deserves one line, not a traceback.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"radiorecon {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
