"""The ``radiorecon`` command line.

Exit status: 0 on success; 1 when a command refuses its input, with one line
on standard error (and the traceback under ``-v``); 2 when the command line
does not parse; 130 when interrupted. Any other exception is a bug and keeps
its traceback.
"""

import argparse
import contextlib
import glob
import json
import logging
import os
import sys
import traceback

from . import __version__
from .exceptions import CapabilityError, InputError, RadioreconError
from ._files import check_new
from .catalog import DEFAULT_THRESHOLD, default_threshold

__all__ = ["main"]

# What a user's input can cause: radiorecon's own errors (CapabilityError is
# also a TypeError), unusable paths (OSError), values (ValueError, which
# covers astropy's UnitConversionError) and jobs refused as too large for
# the memory. A TypeError or AttributeError of any other kind is a bug.
_INPUT_PROBLEMS = (RadioreconError, OSError, ValueError, MemoryError)

# The name of the log handler main() installs under -v, so that calling main
# again (tests, notebooks) replaces it instead of adding a second one.
_LOG_HANDLER = "radiorecon.cli"

_THREADS_HELP = ("torch CPU threads (default: OMP_NUM_THREADS, else one per core); "
                 "fewer than the cores is often faster on a busy machine")


def _integer(text, minimum):
    """``text`` as an integer of at least ``minimum``, else a usage error (status 2)."""
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}")
    return value


def _positive_int(text):
    """argparse type of counts: a usage error (status 2) unless a positive integer."""
    return _integer(text, 1)


def _count(text):
    """argparse type of counts that may be 0 (e.g. worker processes)."""
    return _integer(text, 0)


def _positive_float(text):
    """argparse type of thresholds: a usage error (status 2) unless a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _benchmark_thresholds(text):
    """argparse type of the benchmark's comma-separated thresholds, 'default' among them."""
    return [t.strip() if t.strip() == "default" else _positive_float(t) for t in text.split(",") if t.strip()] \
        or _positive_float(text)


def _plural(n, noun):
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _refuse_constant(name):
    raise ValueError(name)


def _config_pairs(pairs):
    """Parse ``KEY=VALUE`` options; values are JSON where they parse, else strings."""
    config = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            # json reads NaN and Infinity, which no configuration may hold (it is stored as JSON).
            config[key] = json.loads(value, parse_constant=_refuse_constant)
        except json.JSONDecodeError:
            config[key] = value  # a plain word: --set sampler=ddim
        except ValueError:
            raise InputError(f"--set {pair}: a setting cannot be NaN or infinite") from None
    return config


def _check_settings(config, backend, known):
    """Refuse ``--set`` keys that backend ``backend`` does not have (``known``: its keys)."""
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise InputError(
            f"--set {unknown[0]}: backend {backend!r} has no such setting; "
            f"its settings are {', '.join(sorted(known)) or 'none'}"
        )


def _model_file(spec):
    """The model file ``spec`` names: ``pretrained:NAME`` for a shipped model, else a path."""
    from .pretrained import resolve_model_path

    return resolve_model_path(spec)


def _open_model(spec, config):
    """A Reconstructor from a model (see `_model_file`), or from a backend name for untrained use.

    ``pretrained:NAME`` is explicit and comes first, then an existing file,
    then a backend name. A directory is never a model, so one in the working
    directory named like a backend does not shadow it.
    """
    from . import available_backends
    from .reconstructor import Reconstructor
    from .registry import get_backend

    if spec.startswith("pretrained:"):
        rec = Reconstructor.pretrained(spec.partition(":")[2])
    elif os.path.isfile(spec):
        rec = Reconstructor.load(spec)
    elif spec in available_backends():
        _check_settings(config, spec, get_backend(spec).default_config)
        return Reconstructor(spec, **config)
    else:
        raise InputError(
            f"{spec!r} is neither a model file, pretrained:NAME, nor an installed backend "
            f"(installed: {', '.join(available_backends()) or 'none'})"
        )
    # A trained model takes only the settings that steer prediction (set_params).
    _check_settings(config, rec.backend_name, rec.backend.default_config)
    return rec.set_params(**config)


def _check_output(path, overwrite, option):
    """Refuse, before any long work, an output file that could not be written.

    ``option`` is the command-line option that named ``path``, for the message.
    """
    if os.path.isdir(path):
        raise InputError(f"{option} {path} is a directory; give a file name")
    check_new(path, overwrite, "pass --overwrite to replace it")
    # The file is written beside its final place (or its link's target) and moved there.
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no permission to write in {directory}")


def cmd_backends(args):
    from . import available_backends
    from .registry import backend_status

    if not args.long:
        # Names only: no backend (and no torch) is imported.
        names = available_backends()
        print("\n".join(names) if names else "No backends installed.")
        return 0
    rows = backend_status()
    if not rows:
        print("No backends installed.")
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['name']} (broken: {row['error']}; {row['origin']})")
            continue
        print(f"{row['name']} (version {row['version']}, {row['origin']})")
        print(f"    {row['description']}")
        print(f"    capabilities: {', '.join(row['capabilities'])}")
        print(f"    config: {json.dumps(row['default_config'])}")
        if row["ignored"]:
            print(f"    also declared by {', '.join(row['ignored'])} (ignored)")
    return 0


def cmd_info(args):
    from .modelfile import read_header

    path = _model_file(args.model)
    doc = read_header(path)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [
        ("file", path if path == args.model else f"{args.model} ({path})"),
        ("backend", f"{doc.get('backend')} (version {doc.get('backend_version')})"),
        ("written by", f"radiorecon {doc.get('radiorecon_version')} on {doc.get('created')}"),
        ("trained", "yes" if doc.get("fitted") else "no"),
        ("config", json.dumps(doc.get("config"))),
        ("tiles", _tiles(path, doc.get("backend"))),
        ("normalisation", json.dumps(doc.get("normalisation"))),
        ("units", json.dumps(doc.get("units"))),
        ("domain", _domain(doc.get("domain"))),
        ("catalog threshold", _threshold(doc.get("catalog_threshold"))),
        ("uncertainty scale", _uncertainty_scale(doc.get("uncertainty_scale"))),
        ("uncertainty floor", _uncertainty_floor(doc)),
        ("flux error floor", _flux_error_floor(doc.get("flux_error_floor"))),
        ("detection probability", _detection_calibration(doc.get("detection_calibration"))),
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


def _domain(domain):
    """A model's training domain for people, or why predict cannot check images against it."""
    if domain is None:
        return "not recorded (predict does not check images against it)"

    def number(key, unit, scale=1):
        value = domain.get(key)
        return "?" if value is None else f"{value * scale:.3g}{unit}"

    return (f"preset {domain.get('preset') or 'unknown'}; "
            f"beam {number('beam_major_arcsec', '')}\" x {number('beam_minor_arcsec', '')}\"; "
            f"pixels {number('pixel_scale_arcsec', '')}\"; noise {number('noise_jy_beam', ' uJy/beam', 1e6)}")


def _threshold(value):
    if value is None:
        return f"not set (predict --catalog, demo and benchmark use S/N {DEFAULT_THRESHOLD:g})"
    return f"S/N {value:g} (the default of predict --catalog, demo and benchmark)"


def _uncertainty_scale(value):
    if isinstance(value, dict):
        return f"{_per_count(value, lambda v: f'{v:.4g}')} (predict multiplies the standard deviation by it; " \
               "other counts use the nearest)"
    if value is None or value == 1:
        return "1 (not calibrated: predict gives the method's own spread)"
    return f"{value:.4g} (predict multiplies the standard deviation by it)"


def _uncertainty_floor(doc):
    value = doc.get("uncertainty_floor") or 0
    scale = (doc.get("normalisation") or {}).get("scale") or 1.0
    unit = (doc.get("units") or {}).get("target")

    def show(v):
        return f"{v:.4g} in normalised units, {v * scale:.4g}{' ' + unit if unit else ''}"

    if isinstance(value, dict):
        return f"{_per_count(value, show)} (predict adds it to the standard deviation in quadrature; other " \
               "counts use the nearest)"
    if value == 0:
        return "0 (none added)"
    return f"{show(value)} (predict adds it to the standard deviation in quadrature)"


def _per_count(value, show):
    """``1 sample: ...; 10 samples: ...`` of a calibration kept per number of samples."""
    # JSON's keys are strings: in the order of the sample counts.
    return "; ".join(f"{n} {'sample' if int(n) == 1 else 'samples'}: {show(value[n])}" for n in sorted(value, key=int))


def _flux_error_floor(value):
    if isinstance(value, dict):
        return f"{_per_count(value, lambda v: f'{v:.4g}')} x the dirty image's noise (catalogs add it to flux " \
               "errors in quadrature; other counts use the nearest)"
    if not value:
        return "0 (catalog flux errors are the samples' spread alone)"
    return f"{value:.4g} x the dirty image's noise (catalogs add it to flux errors in quadrature)"


def _detection_calibration(value):
    if value is None:
        return "the fraction of samples a source is found in (not calibrated)"
    if isinstance(value, dict):
        return f"{_per_count(value, _probability)} (calibrated; other counts use the nearest)"
    return f"{_probability(value)} (calibrated)"


def _probability(coefficients):
    a, b, c = (*coefficients, 1.0) if len(coefficients) == 2 else coefficients
    # c = 0: how many samples find a source tells nothing more than its S/N.
    fraction = {1: "fraction of samples", 0: "1"}.get(c, f"(fraction of samples)^{c:.4g}")
    return f"{fraction} / (1 + exp(-({a:.4g} + {b:.4g} ln S/N)))"


def _tiles(path, backend):
    """How the model cuts images, from the loaded backend: its tile size may depend on its config."""
    from . import available_backends
    from .exceptions import ModelFileError
    from .reconstructor import Reconstructor

    if backend not in available_backends():
        return f"unknown (backend {backend!r} is not installed)"
    try:
        instance = Reconstructor.load(path, device="cpu").backend
    except ModelFileError as exc:  # the header is still worth showing
        return f"unknown ({exc})"
    overlap = f"overlapping by at least {2 * instance.tile_margin}"
    if instance.tile_shape is not None:
        ny, nx = instance.tile_shape
        return f"{ny} x {nx} pixels, {overlap}"
    if instance.max_tile_shape is not None:
        ny, nx = instance.max_tile_shape
        return f"whole images up to {ny} x {nx} pixels; larger ones in tiles of at most that, {overlap}"
    return "whole images, of any size"


def _expand_inputs(patterns):
    """The input files: each pattern's matches (sorted), or the name itself when it is a file."""
    paths = []
    for pattern in patterns:
        if glob.has_magic(pattern) and not os.path.exists(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise InputError(f"no files match {pattern!r}")
            paths.extend(matches)
        else:
            paths.append(pattern)
    return paths


def cmd_predict(args):
    many = (args.out is not None or args.workers is not None or args.scheduler is not None
            or len(args.inputs) > 1 or any(glob.has_magic(p) and not os.path.exists(p) for p in args.inputs))
    if many:
        return _predict_many(args)
    if args.output is None:
        raise InputError("give the output file with -o OUT.fits (or --out DIR for many inputs)")
    args.input = args.inputs[0]
    return _predict_one(args)


def _predict_many(args):
    """predict on many inputs: one task per input on a Dask cluster, outputs in --out."""
    from .parallel import predict_many

    for option, given in (("-o", args.output), ("--catalog", args.catalog)):
        if given is not None:
            raise InputError(f"{option} names one output file; with many inputs, give --out DIR "
                             "(each input writes NAME.model.fits and NAME.sources.ecsv there)")
    if args.components:
        raise InputError("--components is for one input with -o; with many inputs on Dask, components "
                         "are not written yet")
    if args.out is None:
        raise InputError("give the output directory with --out DIR for many inputs")
    if args.workers is not None and args.scheduler is not None:
        raise InputError("--workers starts a local cluster, --scheduler uses a running one: give one of them")
    inputs = _expand_inputs(args.inputs)
    for name in inputs + ([args.psf] if args.psf else []):
        if not os.path.exists(name):
            raise FileNotFoundError(f"{name} does not exist")
    survey = predict_many(
        inputs, args.model, args.out, client=args.scheduler, workers=args.workers, n_samples=args.samples,
        psf=args.psf, aggregate=args.aggregate, seed=args.seed, device=args.device, threads=args.threads or 1,
        config=_config_pairs(args.set), catalog=not args.no_catalog, threshold=args.threshold,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    skipped = int((survey.fields["status"] == "skipped").sum())
    note = f" ({skipped} already finished)" if skipped else ""
    print(f"wrote the results of {_plural(len(survey.fields), 'input')} to {args.out}{note}")
    if survey.catalog is not None:
        print(f"wrote {os.path.join(args.out, 'catalog.ecsv')} ({_plural(len(survey.catalog), 'source')} "
              f"in {_plural(len(survey.fields), 'field')})")
    return 0


def _predict_one(args):
    from ._files import atomic_path
    from .catalog import deblended_catalog
    from .io import read_image, write_result
    from .parallel import check_catalog_input, field_catalog

    # Everything that can be checked is checked before the (long) prediction.
    if args.catalog and os.path.realpath(args.catalog) == os.path.realpath(args.output):
        raise InputError("--catalog and -o name the same file")
    _check_output(args.output, args.overwrite, "-o")
    if args.catalog:
        _check_output(args.catalog, args.overwrite, "--catalog")
    for name in (args.input, args.psf):
        if name is not None and not os.path.exists(name):
            raise FileNotFoundError(f"{name} does not exist")
    # Read once: the checks, the prediction and the catalog all use it.
    image = read_image(args.input)
    rec = _open_model(args.model, _config_pairs(args.set))
    deblend = "deblend" in rec.capabilities
    if args.components and not deblend:
        raise CapabilityError(
            f"backend {rec.backend_name!r} gives no per-source components (no 'deblend' capability): "
            "drop --components"
        )
    # A deblending model's catalog measures its components; any other's is detected in the sky model.
    if args.catalog and not deblend:
        check_catalog_input(image, args.input, "--catalog")
    # The front door would say psf= and n_samples=; here they are options.
    if args.psf is None and "needs_psf" in rec.capabilities:
        raise CapabilityError(f"backend {rec.backend_name!r} needs the PSF: give it with --psf PSF.fits")
    if args.samples > 1 and "draws" not in rec.capabilities:
        raise CapabilityError(
            f"backend {rec.backend_name!r} gives one estimate, not draws to sample: use --samples 1"
        )
    sky = rec.predict(
        image,
        n_samples=args.samples,
        psf=args.psf,
        aggregate=args.aggregate,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        threads=args.threads,
        return_samples=bool(args.catalog) and args.samples > 1,
    )
    threshold = args.threshold
    if threshold is None:
        threshold = default_threshold(rec)
    catalog = None
    if args.catalog:
        catalog = deblended_catalog(sky) if deblend else field_catalog(sky, image, threshold)
    # Both files appear, or neither: each is written to a temporary and moved into place last.
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(args.output, overwrite=args.overwrite))
        if catalog is not None:
            tmp_catalog = stack.enter_context(atomic_path(args.catalog, overwrite=args.overwrite))
            catalog.write(tmp_catalog, format="ascii.ecsv")
        write_result(sky, tmp, overwrite=True, extras=True, components=args.components)
    print(f"wrote {args.output}")
    if catalog is not None:
        print(f"wrote {args.catalog} ({_plural(len(catalog), 'source')})")
    return 0


def cmd_train(args):
    from .reconstructor import Reconstructor
    from .registry import get_backend

    _check_output(args.output, args.overwrite, "-o")
    if args.checkpoint:
        _check_output(args.checkpoint, True, "--checkpoint")  # an existing one is resumed from
    config = _config_pairs(args.set)
    _check_settings(config, args.backend, get_backend(args.backend).default_config)
    rec = Reconstructor(args.backend, **config)
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
        threads=args.threads,
        checkpoint=args.checkpoint,
        workers=args.workers,
    )
    rec.save(args.output, overwrite=args.overwrite)
    last = rec.history[-1] if rec.history else {}
    print(f"wrote {args.output} after {_plural(len(rec.history), 'epoch')}: {json.dumps(last)}")
    return 0


def cmd_simulate(args):
    from . import simulate

    if args.list_presets:
        for name in simulate.available_presets():
            print(name)
        return 0
    if args.n is None or args.out is None:
        raise ValueError("give the number of images and the output directory: radiorecon simulate N OUT")
    # Checked before the simulation rather than after it.
    if args.fits and not args.overwrite and os.path.isdir(args.fits) and os.listdir(args.fits):
        raise FileExistsError(f"{args.fits} is not empty; pass --overwrite to replace its FITS files")
    data = simulate.make_dataset(
        args.n, preset=args.preset, seed=args.seed, out=args.out, overwrite=args.overwrite,
        workers=args.workers, progress=not args.no_progress, **_config_pairs(args.set),
    )
    print(f"wrote {len(data)} images to {args.out}")
    if args.fits:
        paths = data.export_fits(args.fits, overwrite=args.overwrite)
        print(f"wrote {len(paths)} FITS files (dirty image, PSF and sky of each image) to {args.fits}")
    return 0


def _methods(specs, samples):
    """(label, Reconstructor, n_samples) rows from backend names or model files, each optionally ``@N`` samples."""
    methods = []
    for spec in specs:
        counts = samples
        name, _, count = spec.rpartition("@")
        if name and count.isdigit() and not os.path.isfile(spec):
            if int(count) < 1:
                raise ValueError(f"{spec!r}: the number of samples after @ must be positive")
            counts = [int(count)]
            spec = name
        rec = _open_model(spec, {})
        label = os.path.basename(spec) if os.path.isfile(spec) else spec
        sampling = "draws" in rec.capabilities
        for n in counts if sampling else [1]:
            methods.append((f"{label} ({n})" if sampling else label, rec, n))
    return methods


def cmd_benchmark(args):
    from .benchmark import completeness_table, plot_report, run_benchmark, to_markdown
    from .calibration import TARGET_PURITY
    from .runtime import threads

    if os.path.exists(args.out) and os.listdir(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} is not empty; pass --overwrite to replace its report")
    samples = [int(n) for n in args.samples.split(",")]
    thresholds = args.threshold
    methods = _methods([s for s in args.backends.split(",") if s], samples)
    with threads(args.threads):
        table, examples = run_benchmark(
            args.data, methods, n_images=args.n_images, threshold=thresholds, seed=args.seed,
            progress=not args.no_progress, calibration=args.calibration, cache=args.cache,
        )
    os.makedirs(args.out, exist_ok=True)
    table.write(os.path.join(args.out, "benchmark.ecsv"), overwrite=True)
    markdown = to_markdown(table)
    if args.calibration:
        bins = completeness_table(table, examples)
        bins.write(os.path.join(args.out, "completeness_by_snr.ecsv"), overwrite=True)
        markdown += "\n\nCompleteness per true peak S/N at the calibrated thresholds:\n\n" + to_markdown(bins)
    with open(os.path.join(args.out, "benchmark.md"), "w") as fh:
        fh.write(markdown + "\n")
    plot_report(table, examples, args.out)
    print(markdown)
    if args.calibration:
        # A model's stored threshold is the user's to set (Reconstructor.catalog_threshold).
        for label, chosen in table.meta["calibration"]["thresholds"].items():
            note = "" if chosen["reached"] else f" (purity {TARGET_PURITY:g} not reached; the highest taken)"
            print(f"calibrated threshold of {label}: {chosen['threshold']:g} sigma, purity "
                  f"{chosen['purity']:.3g} on the calibration images{note}")
    return 0


CALIBRATION_STEPS = ("threshold", "uncertainty", "reliability", "flux-errors")


def _calibration_steps(args):
    """The calibrations ``radiorecon calibrate`` makes, in the order each needs the ones before."""
    if args.only is None:
        wanted = {"threshold": True, "uncertainty": not args.no_uncertainty, "reliability": args.reliability,
                  "flux-errors": args.floor}
        return [step for step in CALIBRATION_STEPS if wanted[step]]
    if args.no_uncertainty or args.reliability:
        raise InputError("give either --only or --no-uncertainty / --reliability, not both: --only names every "
                         "calibration to make")
    steps = [step.strip() for step in args.only.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(CALIBRATION_STEPS))
    if unknown or not steps:
        raise InputError(f"--only {args.only!r}: expected one or more of {', '.join(CALIBRATION_STEPS)}, "
                         "separated by commas")
    return [step for step in CALIBRATION_STEPS if step in steps]


def cmd_calibrate(args):
    steps = _calibration_steps(args)
    _check_output(args.output, args.overwrite, "-o")
    rec = _open_model(args.model, _config_pairs(args.set))
    spread = "std" in rec.capabilities or ("draws" in rec.capabilities and args.samples > 1)
    if args.only is not None and "uncertainty" in steps and not spread:
        raise InputError(f"{args.model} gives no spread with --samples {args.samples} to calibrate; "
                         "drop uncertainty from --only" + (" or give --samples 2 or more"
                                                           if "draws" in rec.capabilities else ""))
    common = dict(n_images=args.n_images, seed=0 if args.seed is None else args.seed,
                  progress=not args.no_progress)
    # Each image is predicted once for all the calibrations below.
    with rec.reusing_predictions(cache=args.cache):
        if "threshold" in steps:
            had = rec.detection_calibration is not None
            found = rec.calibrate_threshold(args.data, n_samples=args.samples, target_purity=args.target_purity,
                                            **common)
            note = "" if found.reached else f" (purity {found.target_purity:g} not reached: the purest threshold taken)"
            print(f"catalog threshold: {found.threshold:g} sigma, purity {found.purity:.3f} on "
                  f"{_plural(found.n_images, 'image')}{note}")
            if had and rec.detection_calibration is None and "reliability" not in steps:
                print("detection probability: its calibration was for the old threshold and is dropped; "
                      "add --reliability to make it again")
        if "uncertainty" in steps and spread:
            scaled = rec.calibrate_uncertainty(args.data, n_samples=args.samples, match=(1, 2), floor=args.floor,
                                               **common)
            floor = f", floor {scaled.floor:.4g} (normalised)" if args.floor else ""
            print(f"uncertainty scale: {scaled.scale:.4g}{floor}; coverage of source pixels 1 sigma "
                  f"{scaled.before[1.0]:.3f} -> {scaled.after[1.0]:.3f}, 2 sigma {scaled.before[2.0]:.3f} -> "
                  f"{scaled.after[2.0]:.3f}")
        if "reliability" in steps:
            found = rec.calibrate_detection_probability(args.data, n_samples=args.samples, **common)
            power = f", c {found.coefficients[2]:.4g}" if len(found.coefficients) == 3 else ""
            print(f"detection probability: a {found.coefficients[0]:.4g}, b {found.coefficients[1]:.4g}{power} on "
                  f"{found.n_detections} detections; largest reliability error {found.before:.3f} -> "
                  f"{found.after:.3f}")
        if "flux-errors" in steps:
            fluxes = rec.calibrate_flux_errors(args.data, n_samples=args.samples, **common)
            print(f"flux error floor: {fluxes.floor:.4g} x the noise; coverage of {fluxes.after['n']} matched "
                  f"sources' fluxes 1 sigma {fluxes.before[1.0]:.3f} -> {fluxes.after[1.0]:.3f}, 2 sigma "
                  f"{fluxes.before[2.0]:.3f} -> {fluxes.after[2.0]:.3f}")
    rec.save(args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}")
    return 0


def cmd_sample(args):
    from .result import write_result

    _check_output(args.output, args.overwrite, "-o")
    config = _config_pairs(args.set)
    rec = _open_model(args.model, {})
    settings = {"steps": args.steps, "sampler": args.sampler, **config}
    flux = None
    if args.flux is not None:
        import astropy.units as u

        try:
            flux = u.Quantity(args.flux)
        except (TypeError, ValueError):
            raise InputError(f"--flux {args.flux!r} is not a quantity with a unit, e.g. 5mJy") from None
    skies = rec.sample(
        args.n, shape=args.shape, seed=args.seed, device=args.device, threads=args.threads, flux=flux,
        progress=not args.no_progress, batch_size=args.batch_size,
        **{key: value for key, value in settings.items() if value is not None},
    )
    write_result(skies, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: {_plural(args.n, 'image')} of {skies.data.shape[1]}x{skies.data.shape[2]} "
          f"pixels ({skies.unit})")
    return 0


def cmd_demo(args):
    import astropy.units as u

    from .demo import run_demo

    out = run_demo(args.out, model=args.model, n_samples=args.samples, seed=args.seed,
                   threshold=args.threshold, overwrite=args.overwrite, progress=not args.no_progress,
                   threads=args.threads)
    obs, catalog, s = out["observation"], out["catalog"], out["scores"]
    print(f"simulated {obs!r}")
    print(f"reconstructed with {args.model} and {_plural(args.samples, 'sample')}; "
          f"{_plural(len(catalog), 'source')} found at S/N >= {out['threshold']:g}:")
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
    print(f"against the {_plural(len(obs.truth), 'true source')}: purity {s['purity']:.2f}, "
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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what happens, and show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backends", help="list installed backends")
    p.add_argument("-l", "--long", action="store_true", help="load each backend and describe it")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("info", help="describe a model file")
    p.add_argument("model", help="model file (.rrm) or pretrained:NAME for a shipped model")
    p.add_argument("--json", action="store_true",
                   help="print the model's metadata as JSON (reads the header only)")
    p.set_defaults(func=cmd_info)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=None, help="random seed for repeatable results")
    common.add_argument("--device", default="auto", help="'auto' (default), 'cpu' or 'cuda'")
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    common.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="backend configuration (repeatable); for a trained model, only its prediction settings, "
             "e.g. --set sampler=ddim --set steps=50",
    )

    p = sub.add_parser("predict", parents=[common], help="reconstruct the sky model of FITS images")
    p.add_argument("model", help="model file (.rrm), pretrained:NAME for a shipped model, "
                   "or the name of a backend that needs no training")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="dirty image (FITS; CASA cubes with degenerate axes are fine); several, or a quoted "
                        "glob ('fields/*.fits'), run on Dask with --out")
    p.add_argument("-o", "--output", help="output FITS (data, UNCERT, MASK) of one input")
    p.add_argument("--samples", type=_positive_int, default=1, metavar="N",
                   help="draws for the uncertainty, for backends that sample (default 1)")
    p.add_argument("--aggregate", choices=["median", "mean"], default="median")
    p.add_argument("--psf", help="PSF FITS image, for backends that need it")
    p.add_argument("--catalog", help="also write a source catalog (ECSV); a sky model is detected through "
                   "the input's clean beam against the input's noise; a deblending model's (vae-deblend) "
                   "catalog measures each source's component: flux +- error, centroid, shape, blendedness")
    p.add_argument("--components", action="store_true",
                   help="also write the per-source models of a deblending backend (vae-deblend) to -o, as a "
                        "COMPONENTS cube (one plane per source)")
    p.add_argument("--threshold", type=_positive_float, default=None,
                   help="detection threshold in sigma (default: the model's catalog threshold, "
                        f"see radiorecon info; else {DEFAULT_THRESHOLD:g})")
    many = p.add_argument_group("many inputs (on Dask)")
    many.add_argument("--out", metavar="DIR", help="output directory: NAME.model.fits and NAME.sources.ecsv "
                      "per input NAME.fits and the merged catalog.ecsv; a rerun skips finished inputs")
    many.add_argument("--workers", type=_positive_int, metavar="N",
                      help="worker processes of a local Dask cluster (default: one per core)")
    many.add_argument("--scheduler", metavar="ADDR",
                      help="address of a running Dask scheduler (tcp://host:8786) instead of a local cluster")
    many.add_argument("--no-catalog", action="store_true", help="write no catalogs")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("simulate", help="simulate a data set of dirty images, skies and PSFs")
    p.add_argument("n", type=int, nargs="?", help="number of images")
    p.add_argument("out", nargs="?", help="output directory")
    p.add_argument("--preset", default="alma-cycle5-c43-3", help="simulation preset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the available CPUs; small jobs run in one process)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing data set (only its own files) and existing FITS files")
    p.add_argument("--fits", metavar="DIR", help="also write each image as FITS files in DIR: "
                   "NNNNNN.dirty.fits (Jy/beam), NNNNNN.psf.fits and NNNNNN.sky.fits (Jy/pixel)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help='preset overrides, e.g. --set noise_rms="30 uJy" (repeatable)')
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("benchmark", help="score methods on a simulated data set, as the papers do")
    p.add_argument("--data", required=True, help="data set directory (radiorecon simulate)")
    p.add_argument("--backends", default="clean",
                   help="comma-separated backend names or model files; NAME@N draws N samples for that one "
                        "instead of --samples (e.g. ablation.rrm@1,star.rrm@10)")
    p.add_argument("--samples", default="1", help="comma-separated sample counts for sampling backends")
    p.add_argument("--n-images", type=_positive_int, default=None, metavar="N",
                   help="use the first N images (of those not in the calibration split)")
    p.add_argument("--threshold", type=_benchmark_thresholds, default=["default"],
                   help="detection threshold(s) in sigma, comma-separated; 'default' for each model's "
                        f"catalog_threshold, else {DEFAULT_THRESHOLD:g}, as predict --catalog and demo use "
                        "(default: default)")
    p.add_argument("--calibration", type=_positive_int, default=None, metavar="K",
                   help="choose each method's threshold on the last K images (never scored) and add its "
                        "calibrated row, purity-completeness curves and completeness per S/N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", metavar="DIR",
                   help="keep every prediction in DIR: the same command again (after an interruption, or with "
                        "more backends) reads them instead of predicting again, to the same report")
    p.add_argument("--out", required=True, help="report directory (ECSV, Markdown, PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("demo", help="simulate an observation, reconstruct it with the shipped STAR "
                       "model, and write the result, catalog, regions and a picture")
    p.add_argument("--out", default="radiorecon-demo", help="output directory (default: %(default)s)")
    p.add_argument("--model", default="star", help="shipped model name or model file (default: star)")
    p.add_argument("--samples", type=_positive_int, default=10, metavar="N",
                   help="samples for the uncertainty: styles for STAR, diffusion draws for DDPM (default 10)")
    p.add_argument("--seed", type=int, default=3,
                   help="seed of the observation and the samples (default 3: five sources)")
    p.add_argument("--threshold", type=_positive_float, default=None,
                   help="detection threshold in sigma (default: the model's catalog_threshold, "
                        f"else {DEFAULT_THRESHOLD:g})")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", parents=[common], help="train a backend on FITS images")
    p.add_argument("backend", help="backend name")
    p.add_argument("--inputs", nargs="+", required=True, help="training inputs (FITS)")
    p.add_argument("--targets", nargs="+", help="training targets (FITS), for paired backends")
    p.add_argument("--val-inputs", nargs="+", help="validation inputs (FITS)")
    p.add_argument("--val-targets", nargs="+", help="validation targets (FITS)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.rrm)")
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--checkpoint", help="checkpoint file: written every epoch, resumed from if present")
    p.add_argument("--workers", type=_count, default=0, metavar="N",
                   help="processes that load the training data while training (default 0: this process)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("calibrate", parents=[common],
                       help="choose a model's catalog threshold and uncertainty scale on simulated images")
    p.add_argument("model", help="model file (.rrm) or pretrained:NAME")
    p.add_argument("--data", required=True,
                   help="simulated data set (radiorecon simulate) of images the model was not trained on")
    p.add_argument("--n-images", type=_positive_int, metavar="N", help="use its first N images (default: all)")
    p.add_argument("--samples", type=_positive_int, default=1, metavar="N",
                   help="draws per prediction, as the model will be used (default 1; the uncertainty of a "
                        "sampling model needs more)")
    p.add_argument("--target-purity", type=_positive_float, default=0.9,
                   help="purity of the catalogs at the chosen threshold (default 0.9)")
    p.add_argument("--no-uncertainty", action="store_true", help="leave the uncertainty scale as it is")
    p.add_argument("--floor", action="store_true",
                   help="also choose a standard deviation added in quadrature (uncertainty_floor), so that both "
                        "1- and 2-sigma coverage can match: for models whose samples agree where a faint "
                        "source is missed; and a flux error in units of the noise added to catalog flux errors "
                        "(flux_error_floor)")
    p.add_argument("--reliability", action="store_true",
                   help="also calibrate catalogs' detection_probability as the probability that a source is real, "
                        "from its S/N (detection_calibration)")
    p.add_argument("--only", metavar="STEP[,STEP]",
                   help="make only these calibrations, keeping the model's others: any of threshold, uncertainty "
                        "(with --floor, its floor too), reliability, flux-errors (e.g. --only flux-errors to choose "
                        "the flux error floor again on more images)")
    p.add_argument("--cache", metavar="DIR",
                   help="keep the predictions in DIR, so that an interrupted calibration resumes")
    p.add_argument("-o", "--output", required=True, help="model file to write, with the calibration")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("sample", parents=[common], help="draw sky images from a generative model's prior")
    p.add_argument("model", help="model file (.rrm) or pretrained:NAME of a backend that samples (score)")
    p.add_argument("n", type=_positive_int, help="number of images")
    p.add_argument("-o", "--output", required=True,
                   help="output FITS: a cube of N images (third axis SAMPLE), in the model's sky unit")
    p.add_argument("--shape", type=_positive_int, nargs=2, metavar=("NY", "NX"),
                   help="image size (default: the model's native size, if it has one)")
    p.add_argument("--steps", type=_positive_int, help="solver steps (default: the model's)")
    p.add_argument("--sampler", help="solver, e.g. heun, euler or stochastic for score (default: the model's)")
    p.add_argument("--flux", help="total flux of every image, with its unit (e.g. 5mJy), for a model conditioned "
                                  "on flux (score with flux_condition)")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status (see the module's docstring)."""
    args = _parser().parse_args(argv)
    _log_to_stderr(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("radiorecon: interrupted", file=sys.stderr)
        return 130
    except _INPUT_PROBLEMS as exc:
        if args.verbose:
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"radiorecon {args.command}: error: {message}", file=sys.stderr)
        return 1


def _log_to_stderr(verbose):
    """Send radiorecon's log to standard error under ``-v``: one handler, however often main runs."""
    logger = logging.getLogger("radiorecon")
    for handler in [h for h in logger.handlers if h.get_name() == _LOG_HANDLER]:
        logger.removeHandler(handler)
    if verbose:
        handler = logging.StreamHandler()  # today's sys.stderr, which tests may have replaced
        handler.set_name(_LOG_HANDLER)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
