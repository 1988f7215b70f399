"""`Reconstructor`: the front door that wraps every backend."""

import dataclasses
import datetime
import json
import logging
import os
import warnings

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from . import __version__, modelfile, registry
from ._noise import robust_std
from ._runtime import resolve_device, seeded
from .backend import Backend
from .exceptions import CapabilityError, ModelFileError, NotFittedError, RadioreconWarning
from .result import Reconstruction
from .tiling import Tiler, center_psf

__all__ = ["Reconstructor"]

log = logging.getLogger("radiorecon")

_AGGREGATES = ("median", "mean")


def _is_image_list(obj):
    return isinstance(obj, (list, tuple))


def _is_dataset(obj):
    # Datasets (e.g. torch datasets of simulated pairs) index to pairs lazily.
    return (
        hasattr(obj, "__getitem__")
        and hasattr(obj, "__len__")
        and not isinstance(obj, (np.ndarray, list, tuple, str, bytes, os.PathLike))
        and not hasattr(obj, "data")
        and not isinstance(obj, (fits.HDUList,))
    )


@dataclasses.dataclass
class _Job:
    """One image on its way through predict: what was read, and its tiles."""

    image: object  # the NDData from io.read_image
    mask: np.ndarray
    unit: object
    tiler: Tiler
    tiles: np.ndarray
    psf: np.ndarray = None


def _per_beam(unit):
    return unit is not None and dict(zip(unit.bases, unit.powers)).get(u.beam) == -1


def _chunk_sizes(n, batch_size):
    """Sizes of the backend calls for ``n`` draws, about ``batch_size`` each.

    Every call gets at least 2 draws whenever more than one was asked for:
    a backend may answer a call for 1 with its direct estimate (the mean
    style, the most probable sky) instead of a draw.
    """
    n_calls = max(1, n // max(2, batch_size))
    return [n // n_calls + (i < n % n_calls) for i in range(n_calls)]


def _check_count(n):
    if isinstance(n, (bool, np.bool_)) or not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive integer, not {n!r}")


class Reconstructor:
    """Reconstruct sky models from dirty images with a pluggable backend.

    The Reconstructor owns everything that is not the method: reading inputs
    (arrays, `~astropy.nddata.NDData`, FITS files, HDUs), units, WCS, masks,
    normalisation, tiling of large images, batching, devices, seeds,
    progress bars and model files.

    Parameters
    ----------
    backend : str or `~radiorecon.Backend`
        Name of an installed backend (see `~radiorecon.available_backends`),
        or a backend instance.
    preset : str, optional
        A named configuration of the backend (its ``presets``, e.g.
        ``"paper"`` for the published network sizes).
    **config
        Backend configuration, overriding the preset and the backend's
        ``default_config``.

    Attributes
    ----------
    backend : `~radiorecon.Backend`
    backend_name : str
    scale : float or None
        Normalisation: inputs are divided by it before the backend sees them
        and outputs multiplied by it. Fitted as the median robust noise of
        the training inputs, so networks work in units of the noise.
    units : dict
        ``{"input": str or None, "target": str or None}`` units of the
        training data, used to convert inputs at prediction.
    history : list of dict
        Losses per epoch of the last `fit`.

    Examples
    --------
    >>> from radiorecon import Reconstructor
    >>> rec = Reconstructor("clean", niter=200)
    >>> rec.capabilities  # doctest: +SKIP
    frozenset({'reconstruct', 'uncertainty', 'needs_psf'})
    """

    def __init__(self, backend, **config):
        if isinstance(backend, Backend):
            if config:
                raise TypeError("Give the configuration to the backend instance, not here.")
            self.backend = backend
            self.backend_name = registry.name_of(type(backend))
        elif isinstance(backend, str):
            self.backend = registry.get_backend(backend)(**config)
            self.backend_name = backend
        else:
            raise TypeError(f"backend must be a backend name or a Backend instance, not {backend!r}")
        self.fitted = "needs_training" not in self.capabilities
        self.scale = None
        self.units = {"input": None, "target": None}
        self.history = []
        self.origin = "untrained" if not self.fitted else "no training needed"

    def __repr__(self):
        state = "fitted" if self.fitted else "not fitted"
        return f"<Reconstructor backend={self.backend_name!r} {state} config={self.backend.config}>"

    @property
    def capabilities(self):
        """Capabilities declared by the backend (frozenset of str)."""
        return self.backend.capabilities

    @property
    def config(self):
        """The backend's configuration (dict)."""
        return self.backend.config

    def set_params(self, **params):
        """Change how a (trained) model predicts, and return it.

        Only the backend's prediction settings (its ``inference_keys``,
        e.g. the sampler and number of steps of ``ddpm``) can change on a
        model with networks; the rest shape the networks and are fixed at
        construction. The new values appear in the provenance of later
        predictions and in files saved afterwards.

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> rec = Reconstructor("clean").set_params(niter=50)
        >>> rec.config["niter"]
        50
        """
        self.backend.set_config(**params)
        return self

    def _require(self, capability, action):
        if capability not in self.capabilities:
            raise CapabilityError(
                f"Backend {self.backend_name!r} cannot {action}: it does not declare the "
                f"{capability!r} capability (it declares {sorted(self.capabilities)})."
            )

    def _require_fitted(self):
        if not self.fitted:
            from .pretrained import available_pretrained

            hint = ""
            if self.backend_name in available_pretrained():
                hint = (f" A trained {self.backend_name!r} model ships with radiorecon: "
                        f"Reconstructor.pretrained({self.backend_name!r}) (pretrained:{self.backend_name} "
                        "on the command line).")
            raise NotFittedError(
                f"Backend {self.backend_name!r} needs training: call fit() or load a model "
                f"file with Reconstructor.load() first.{hint}"
            )

    # -- inputs ------------------------------------------------------------

    def _read(self, obj, what="data", role="input"):
        from .io import read_image

        image = read_image(obj)
        data = np.array(image.data, dtype=np.float32)
        mask = ~np.isfinite(data)
        if image.mask is not None:
            mask |= np.asarray(image.mask, dtype=bool)
        if mask.all():
            raise ValueError(f"Every pixel of the {what} is blank (NaN or masked)")
        unit = image.unit
        want = self.units[role]
        if want is not None:
            want = u.Unit(want)
            if unit is None:
                warnings.warn(
                    f"The {what} has no unit; assuming the model's training unit {want}.",
                    RadioreconWarning,
                    stacklevel=4,
                )
                unit = want
            elif unit != want:
                try:
                    data = data * np.float32(unit.to(want))
                except u.UnitConversionError:
                    raise u.UnitConversionError(
                        f"The {what} is in {unit}, which cannot be converted to {want}, the unit "
                        f"the model was trained on."
                    ) from None
                unit = want
        data[mask] = 0.0
        return image, data, mask, unit

    def _training_arrays(self, inputs, role):
        """Stack training images into one float32 array with the unit they share."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
            # A stack of images: already numbers, no per-image reading needed.
            unit = getattr(inputs, "unit", None)
            data = np.nan_to_num(np.asarray(getattr(inputs, "value", inputs), dtype=np.float32))
            return data, unit
        if _is_image_list(inputs):
            items = list(inputs)
        else:
            items = [inputs]
        from .io import read_image

        arrays, unit = [], None
        for i, item in enumerate(items):
            image = read_image(item)
            data = np.nan_to_num(np.asarray(image.data, dtype=np.float64))
            if image.unit is not None:
                if unit is None:
                    unit = image.unit
                data = data * image.unit.to(unit)
            if arrays and data.shape != arrays[0].shape:
                raise ValueError(
                    f"Training {role} must share one shape: item {i} is {data.shape}, "
                    f"item 0 is {arrays[0].shape}"
                )
            arrays.append(data.astype(np.float32))
        if not arrays:
            raise ValueError(f"No training {role} given")
        return np.stack(arrays), unit

    def _training_set(self, inputs, targets, paired):
        """A torch dataset of normalised pairs, and the units of the data."""
        import torch

        if _is_dataset(inputs):
            units = dict(getattr(inputs, "units", {}) or {})
            first = inputs[0]
            if paired and not (isinstance(first, tuple) and len(first) == 2):
                raise ValueError("A paired backend needs a dataset whose items are (input, target) pairs")
            return _LazyPairs(inputs, paired), units
        x, x_unit = self._training_arrays(inputs, "inputs")
        units = {"input": None if x_unit is None else x_unit.to_string(), "target": None}
        if paired:
            y, y_unit = self._training_arrays(targets, "targets")
            if len(y) != len(x):
                raise ValueError(f"{len(x)} training inputs but {len(y)} targets")
            if y.shape[1:] != x.shape[1:]:
                raise ValueError(f"Inputs are {x.shape[1:]} but targets are {y.shape[1:]}")
            units["target"] = None if y_unit is None else y_unit.to_string()
            return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), units
        empty = torch.zeros(len(x), 0)
        return torch.utils.data.TensorDataset(torch.from_numpy(x), empty), units

    # -- training ----------------------------------------------------------

    def fit(
        self,
        inputs,
        targets=None,
        *,
        epochs=10,
        batch_size=8,
        validation=None,
        seed=None,
        device="auto",
        progress=True,
        checkpoint=None,
        warm_start=False,
    ):
        """Train the backend.

        Parameters
        ----------
        inputs : array, list of images, or dataset
            Training images: a ``(N, ny, nx)`` array, a list of anything
            `~radiorecon.io.read_image` reads (FITS paths, HDUs, NDData,
            arrays), or a dataset whose items are ``(input, target)`` pairs
            of arrays (or single arrays for unpaired backends), such as the
            ones `radiorecon.simulate` writes. For unpaired backends these
            are the sky images themselves.
        targets : array or list of images, optional
            True sky models, one per input, for ``paired`` backends.
        epochs : int
            Total number of passes over the data (a resumed run continues up
            to this number).
        batch_size : int
        validation : tuple or dataset, optional
            ``(inputs, targets)`` (or inputs alone when unpaired) scored after
            each epoch; their losses appear in `history` with a ``val_`` prefix.
        seed : int, optional
            Makes training repeatable: the same seed on the same device gives
            the same weights.
        device : str
            ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
        progress : bool
            Show progress bars.
        checkpoint : str or os.PathLike, optional
            Model file written after every epoch. If it exists when `fit`
            starts, training resumes from it, so an interrupted run continues
            where it stopped.
        warm_start : bool
            Continue from the current weights (fine-tuning a loaded model)
            instead of starting from freshly initialised ones.

        Returns
        -------
        self : Reconstructor
        """
        self._require("needs_training", "be trained")
        paired = "paired" in self.capabilities
        if paired and targets is None and not _is_dataset(inputs):
            raise ValueError(f"Backend {self.backend_name!r} trains on (input, target) pairs: give targets")
        if not paired and targets is not None:
            raise ValueError(
                f"Backend {self.backend_name!r} trains on unpaired images: give inputs only"
            )
        if not (isinstance(epochs, int) and epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")

        import torch

        train, units = self._training_set(inputs, targets, paired)
        resume = None
        if checkpoint is not None and os.path.exists(checkpoint):
            resume = self._read_checkpoint(checkpoint, epochs)
        if resume is None:
            self.units = {"input": units.get("input"), "target": units.get("target")}
            self.scale = _estimate_scale(train, self.backend.input_scale)
            self.history = []
        train = _Scaled(train, self.scale, paired)
        if validation is not None:
            if _is_dataset(validation):
                val = validation
            elif paired:
                val = validation if isinstance(validation, tuple) else (validation, None)
                val = self._training_set(val[0], val[1], paired)[0]
            else:
                val = self._training_set(validation, None, paired)[0]
            validation = _Scaled(val, self.scale, paired)

        dev = resolve_device(device)
        log.info("training %s on %d images on %s", self.backend_name, len(train), dev)
        with seeded(seed, dev):
            if resume is None and not warm_start:
                # Fresh weights drawn under the seed: the same seed gives the
                # same initialisation and so the same trained model.
                state = type(self.backend)(**self.backend.config).state_dict()
                self.backend.load_state_dict(state)
            self.backend.to(dev)
            initial_epoch = 0
            self.backend.begin_fit(resumed=resume is not None)
            if resume is not None:
                doc, tensors = resume
                self.backend.load_training_state(
                    modelfile.unflatten_state(doc["training"]["state"], tensors)
                )
                if "train/rng" in tensors:
                    torch.set_rng_state(tensors["train/rng"])
                initial_epoch = doc["training"]["epoch"]
                log.info("resuming from %s after epoch %d", checkpoint, initial_epoch)

            def callback(epoch, logs):
                self.history.append(logs)
                if checkpoint is not None:
                    self._write_checkpoint(checkpoint, epoch + 1, epochs, seed)

            try:
                self.backend.fit(
                    train,
                    epochs=epochs,
                    batch_size=batch_size,
                    validation=validation,
                    initial_epoch=initial_epoch,
                    seed=seed,
                    progress=progress,
                    callback=callback,
                )
            except KeyboardInterrupt:
                if checkpoint is not None:
                    log.warning("training interrupted; call fit() again with checkpoint=%r to resume", os.fspath(checkpoint))
                raise
            self.backend.end_fit()
        self.fitted = True
        self.origin = "trained in this session"
        return self

    def _document(self):
        return {
            "radiorecon_version": __version__,
            "backend": self.backend_name,
            "backend_version": str(self.backend.version),
            "config": self.backend.config,
            "normalisation": {"method": "scale", "scale": self.scale},
            "units": self.units,
            "fitted": self.fitted,
            "history": self.history,
        }

    def _write_checkpoint(self, path, epoch, epochs, seed):
        import torch

        tensors = dict(self.backend.state_dict())
        state = modelfile.flatten_state(self.backend.training_state(), tensors)
        tensors["train/rng"] = torch.get_rng_state()
        doc = self._document()
        doc["fitted"] = False
        doc["training"] = {"epoch": epoch, "epochs": epochs, "seed": seed, "state": state}
        modelfile.save(path, doc, tensors, overwrite=True)

    def _read_checkpoint(self, path, epochs):
        doc, tensors = modelfile.load(path)
        if "training" not in doc:
            raise ModelFileError(f"{path}: a model file, not a training checkpoint")
        if doc["backend"] != self.backend_name or doc["config"] != self.backend.config:
            raise ModelFileError(
                f"{path}: checkpoint of backend {doc['backend']!r} with config {doc['config']}, "
                f"but this Reconstructor is {self.backend_name!r} with config {self.backend.config}"
            )
        self._restore(doc, {k: v for k, v in tensors.items() if not k.startswith("train/")}, path)
        return doc, tensors

    # -- model files -------------------------------------------------------

    def save(self, path, *, overwrite=False):
        """Write the model to one file (safetensors tensors + JSON metadata).

        Parameters
        ----------
        path : str or os.PathLike
            Conventionally with the extension ``.rrm``.
        overwrite : bool
            Replace an existing file.
        """
        modelfile.save(path, self._document(), self.backend.state_dict(), overwrite=overwrite)

    @classmethod
    def pretrained(cls, name, *, device="auto"):
        """Load a model that ships with radiorecon (no download).

        Parameters
        ----------
        name : str
            One of `radiorecon.available_pretrained` (e.g. ``"star"``).
        device : str
            ``"auto"``, ``"cpu"`` or ``"cuda"``.

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> Reconstructor.pretrained("star")  # doctest: +ELLIPSIS
        <Reconstructor backend='star' fitted config=...>
        """
        from .pretrained import pretrained_path

        self = cls.load(pretrained_path(name), device=device)
        self.origin = f"pretrained:{name}"
        return self

    @classmethod
    def load(cls, path, *, device="auto"):
        """Read a model file written by `save`.

        Raises
        ------
        radiorecon.exceptions.ModelFileError
            If the file is not a radiorecon model, is truncated or corrupted,
            was written by a newer radiorecon or backend, or needs a backend
            that is not installed.
        """
        doc, tensors = modelfile.load(path)
        if "training" in doc:
            log.info("%s is a training checkpoint; loading its weights", path)
        name = doc.get("backend")
        try:
            backend_cls = registry.get_backend(name)
        except ValueError as exc:
            raise ModelFileError(f"{os.fspath(path)}: needs backend {name!r}, which is not available. {exc}") from None
        if _version_tuple(doc.get("backend_version", "0")) > _version_tuple(backend_cls.version):
            raise ModelFileError(
                f"{os.fspath(path)}: written by backend {name!r} version {doc['backend_version']}, "
                f"newer than the installed version {backend_cls.version}; upgrade the backend"
            )
        config = doc.get("config", {})
        if not isinstance(config, dict):
            raise ModelFileError(f"{os.fspath(path)}: config is not a mapping")
        try:
            self = cls(name, **config)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{os.fspath(path)}: config does not fit backend {name!r}: {exc}") from None
        self._restore(doc, {k: v for k, v in tensors.items() if not k.startswith("train/")}, path)
        self.fitted = bool(doc.get("fitted")) or "training" in doc or "needs_training" not in self.capabilities
        self.origin = os.path.basename(os.fspath(path))
        self.backend.to(resolve_device(device))
        return self

    def _restore(self, doc, tensors, path):
        try:
            self.backend.load_state_dict(tensors)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{os.fspath(path)}: tensors do not fit backend {self.backend_name!r}: {exc}") from None
        norm = doc.get("normalisation") or {}
        units = doc.get("units") or {"input": None, "target": None}
        scale = norm.get("scale") if isinstance(norm, dict) else "?"
        if not (scale is None or (isinstance(scale, (int, float)) and scale > 0)):
            raise ModelFileError(f"{os.fspath(path)}: normalisation scale {scale!r} is not a positive number")
        try:
            for value in (units.get("input"), units.get("target")):
                if value is not None:
                    u.Unit(value)
        except (AttributeError, TypeError, ValueError):
            raise ModelFileError(f"{os.fspath(path)}: units {units!r} are not readable") from None
        self.scale = scale
        self.units = {"input": units.get("input"), "target": units.get("target")}
        self.history = list(doc.get("history") or [])

    # -- prediction --------------------------------------------------------

    def _out_unit(self, in_unit):
        if self.units.get("target") is not None:
            return u.Unit(self.units["target"])
        if in_unit is None:
            return None
        if _per_beam(in_unit):
            return in_unit * u.beam / u.pix
        return in_unit

    def predict(
        self,
        data,
        *,
        n_samples=1,
        psf=None,
        aggregate="median",
        seed=None,
        batch_size=8,
        progress=True,
        device="auto",
        return_samples=False,
    ):
        """Reconstruct the sky model of one image or a list of images.

        Parameters
        ----------
        data : image or list of images
            Anything `~radiorecon.io.read_image` reads: a FITS path, HDU or
            HDUList, `~astropy.nddata.NDData`/`~astropy.nddata.CCDData`, a
            2-D array or `~astropy.units.Quantity`. CASA cubes with
            degenerate frequency and Stokes axes are fine. A list gives a list.
        n_samples : int
            Draws from the backend (backends with the ``uncertainty``
            capability); their median or mean is the estimate and their
            standard deviation the uncertainty.
        psf : image or list of images, optional
            Point-spread function (any size; it is centred on its peak and
            cut or padded). One PSF for all images, or one per image.
            Required by backends with ``needs_psf``.
        aggregate : {"median", "mean"}
            How samples become the estimate.
        seed : int, optional
            Makes sampling repeatable.
        batch_size : int
            Tiles per backend call.
        progress : bool
            Show a progress bar over batches.
        device : str
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        return_samples : bool
            Keep the individual samples in the result's ``samples``.

        Returns
        -------
        `~radiorecon.Reconstruction` or list of them
            Sky model in Jy/pixel when the input is in Jy/beam, with
            ``uncertainty`` (`~astropy.nddata.StdDevUncertainty`, or `None`
            when the method gives none: the ``RRUNCERT`` card says which),
            ``mask`` (True where the input was blank; those pixels are NaN),
            the input's celestial ``wcs`` and provenance in ``meta``.
        """
        self._require("reconstruct", "reconstruct images")
        self._require_fitted()
        if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, not {n_samples!r}")
        if n_samples > 1 and "uncertainty" not in self.capabilities:
            raise CapabilityError(
                f"Backend {self.backend_name!r} is deterministic (no 'uncertainty' capability): "
                "use n_samples=1"
            )
        if aggregate not in _AGGREGATES:
            raise ValueError(f"aggregate must be one of {_AGGREGATES}, not {aggregate!r}")
        if psf is None and "needs_psf" in self.capabilities:
            raise CapabilityError(f"Backend {self.backend_name!r} needs the PSF: pass psf=")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")

        # A stack of 2-D arrays is a list of images, as in fit.
        many = _is_image_list(data) or (type(data) is np.ndarray and data.ndim == 3 and len(data) > 1)
        images = list(data) if many else [data]
        if _is_image_list(psf):
            if len(psf) != len(images):
                raise ValueError(f"{len(psf)} PSFs for {len(images)} images")
            if any(p is None for p in psf):
                raise ValueError("A list of PSFs needs one PSF for every image (found None)")
            psfs = list(psf)
        else:
            psfs = [psf] * len(images)

        dev = resolve_device(device)
        self.backend.to(dev)
        self.backend.eval()
        scale = self.scale or 1.0

        # Tile every image, so tiles of several images share batches.
        jobs = []
        psf_cache = {}
        for image_in, psf_in in zip(images, psfs):
            image, arr, mask, unit = self._read(image_in)
            tiler = Tiler(arr.shape, self.backend.tile_shape, self.backend.tile_margin)
            psf_tile = None
            if psf_in is not None:
                key = (id(psf_in), tiler.tile_shape)
                if key not in psf_cache:
                    shape = tuple(self.backend.psf_factor * t for t in tiler.tile_shape)
                    psf_cache[key] = center_psf(_read_psf(psf_in), shape).astype(np.float32)
                psf_tile = psf_cache[key]
            jobs.append(_Job(image, mask, unit, tiler, tiler.split(arr / np.float32(scale)), psf_tile))
        if "deblend" in self.capabilities and any(len(job.tiler) > 1 for job in jobs):
            raise ValueError(
                f"Backend {self.backend_name!r} deblends whole images of at most "
                f"{self.backend.tile_shape}; cut the image first"
            )

        outputs = self._run_batches(jobs, n_samples, batch_size, progress, seed, dev)
        results = [
            self._assemble(job, out, n_samples, aggregate, seed, return_samples)
            for job, out in zip(jobs, outputs)
        ]
        return results if many else results[0]

    def _run_batches(self, jobs, n_samples, batch_size, progress, seed, dev):
        import torch
        from tqdm.auto import tqdm

        flat = [(j, t) for j, job in enumerate(jobs) for t in range(len(job.tiler))]
        per_job = [dict(samples=[], mean=[], std=[], components=[], extras={}, meta={}) for _ in jobs]
        n_batches = -(-len(flat) // batch_size)
        with seeded(seed, dev), torch.no_grad():
            for b in tqdm(range(n_batches), disable=not progress or n_batches < 2, desc="predict", unit="batch"):
                chunk = flat[b * batch_size : (b + 1) * batch_size]
                x = torch.from_numpy(np.stack([jobs[j].tiles[t] for j, t in chunk])).to(dev)
                psf = None
                if jobs[chunk[0][0]].psf is not None:
                    psf = torch.from_numpy(np.stack([jobs[j].psf for j, _ in chunk])).to(dev)
                pred = self._predict_chunked(x, n_samples, psf, batch_size)
                for i, (j, _) in enumerate(chunk):
                    out = per_job[j]
                    if pred.samples is not None:
                        out["samples"].append(pred.samples[:, i].float().cpu().numpy())
                    else:
                        out["mean"].append(pred.mean[i].float().cpu().numpy())
                        if pred.std is not None:
                            out["std"].append(pred.std[i].float().cpu().numpy())
                    if pred.components is not None:
                        out["components"].append(pred.components[i].float().cpu().numpy())
                    for key, value in pred.extras.items():
                        out["extras"].setdefault(key, []).append(value[i].float().cpu().numpy())
                    if pred.meta is not None:
                        out["meta"].update(pred.meta[i])
        return per_job

    def _predict_chunked(self, x, n_samples, psf, batch_size):
        """Call the backend for about ``batch_size`` samples at a time (fewer than twice that)."""
        import torch

        parts = []
        for k in _chunk_sizes(n_samples, batch_size):
            pred = self.backend.predict(x, n_samples=k, psf=psf)
            if pred.samples is None:
                if n_samples > 1:
                    raise CapabilityError(
                        f"Backend {self.backend_name!r} does not sample (it returns one estimate "
                        "with its own uncertainty): use n_samples=1"
                    )
                return pred
            if tuple(pred.samples.shape[:2]) != (k, x.shape[0]):
                raise RuntimeError(
                    f"Backend {self.backend_name!r} returned samples of shape "
                    f"{tuple(pred.samples.shape)}, expected ({k}, {x.shape[0]}, ...)"
                )
            parts.append(pred)
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return dataclasses.replace(first, samples=torch.cat([p.samples for p in parts]))

    def _assemble(self, job, out, n_samples, aggregate, seed, return_samples):
        image, mask, in_unit, tiler = job.image, job.mask, job.unit, job.tiler
        scale = np.float32(self.scale or 1.0)
        samples = std = None
        if out["samples"]:
            samples = tiler.merge(np.stack(out["samples"], axis=1)) * scale
            estimate = np.median(samples, axis=0) if aggregate == "median" else samples.mean(axis=0)
            if n_samples > 1:
                std = samples.std(axis=0, ddof=1)
                how = f"std of {n_samples} samples"
            else:
                how = "none: one sample gives no spread; use n_samples > 1"
        else:
            estimate = tiler.merge(np.stack(out["mean"])) * scale
            if out["std"]:
                std = tiler.merge(np.stack(out["std"])) * scale
                how = f"from backend {self.backend_name}"
            else:
                how = f"none: backend {self.backend_name} gives no uncertainty"
        if std is None:
            log.info("no uncertainty for this prediction (%s)", how)
        estimate = estimate.astype(np.float32)
        estimate[mask] = np.nan
        if std is not None:
            std = std.astype(np.float32)
            std[mask] = np.nan
        unit = self._out_unit(in_unit)
        components = None
        if out["components"]:
            components = out["components"][0][:, : mask.shape[0], : mask.shape[1]] * scale
        extras = {k: tiler.merge(np.stack(v)) * scale for k, v in out["extras"].items()}
        return Reconstruction(
            estimate,
            uncertainty=None if std is None else StdDevUncertainty(std),
            mask=mask,
            wcs=image.wcs,
            unit=unit,
            meta=self._provenance(image, n_samples, aggregate, seed, how, out["meta"]),
            samples=samples if return_samples else None,
            components=components,
            extras=extras,
        )

    def _provenance(self, image, n_samples, aggregate, seed, how, backend_meta):
        from .io import get_beam

        header = fits.Header()
        meta = image.meta if isinstance(image.meta, fits.Header) else fits.Header()
        for key in ("OBJECT", "TELESCOP", "INSTRUME", "DATE-OBS", "OBSERVER", "RESTFRQ"):
            if key in meta:
                header[key] = (meta[key], meta.comments[key])
        cards = [
            ("RRVERS", __version__, "radiorecon version"),
            ("RRBACKND", self.backend_name, "radiorecon backend"),
            ("RRBVERS", str(self.backend.version), "backend version"),
            ("RRMODEL", self.origin, "model the sky was predicted with"),
            ("RRCONFIG", json.dumps(self.backend.config, sort_keys=True), "backend config (JSON)"),
            ("RRNSAMP", int(n_samples), "samples drawn"),
            ("RRAGGR", aggregate, "how samples became the estimate"),
            ("RRSEED", seed, "random seed"),
            ("RRSCALE", self.scale, "normalisation scale (input units)"),
            ("RRUNCERT", how, "what the uncertainty is"),
            ("RRDATE", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "UTC"),
        ]
        for key, value, comment in cards:
            # A long value leaves no room for a comment in an 80-character card.
            header[key] = (value, comment) if len(str(value)) + len(comment) < 60 else value
        try:
            beam = get_beam(image)
        except ValueError as exc:  # a malformed BMAJ/BMIN/BPA card
            warnings.warn(f"Ignoring the input's beam cards: {exc}", RadioreconWarning, stacklevel=4)
            beam = None
        if beam is not None:
            header["RRBMAJ"] = (beam.major.to_value(u.deg), "[deg] input beam major axis")
            header["RRBMIN"] = (beam.minor.to_value(u.deg), "[deg] input beam minor axis")
            header["RRBPA"] = (beam.pa.to_value(u.deg), "[deg] input beam position angle")
        header.update(backend_meta)
        return header

    # -- generation --------------------------------------------------------

    def generate(self, sky, n=1, *, like=None, seed=None, batch_size=8, progress=True, device="auto"):
        """Synthetic dirty images of a sky model (backends with ``generate``, e.g. STAR).

        Parameters
        ----------
        sky : image
            Sky model in the unit of the training targets (Jy/pixel for the
            shipped models), as the model learned it: for models trained on
            simulated data sets that is the *apparent* sky, the true sky
            times the primary beam. Anything `~radiorecon.io.read_image`
            reads.
        n : int
            Number of dirty images, each with its own instrument-and-noise
            realisation.
        like : image, optional
            A dirty image whose instrument and noise to imitate; by default
            they are drawn from the learned prior.
        seed : int, optional
            Makes the draws repeatable.
        batch_size, progress, device
            As for `predict`.

        Returns
        -------
        `~radiorecon.Reconstruction`
            ``data`` of shape ``(n, ny, nx)`` in the training inputs' unit
            (Jy/beam for simulated data); blank pixels of the sky model are
            NaN and set in ``mask``. Its WCS is the sky's celestial WCS with
            a third, ``SAMPLE`` axis, so ``result[k]`` is image ``k`` with a
            2-D WCS.
        """
        self._require("generate", "generate dirty images")
        self._require_fitted()
        _check_count(n)
        import torch
        from tqdm.auto import tqdm

        image, arr, mask, _ = self._read(sky, "sky model", role="target")
        scale = np.float32(self.scale or 1.0)
        ref = None
        if like is not None:
            _, ref, _, _ = self._read(like, "dirty image")
            if ref.shape != arr.shape:
                raise ValueError(f"like= has shape {ref.shape}, the sky model {arr.shape}")
            ref = torch.from_numpy(ref / scale)[None]
        dev = resolve_device(device)
        self.backend.to(dev)
        self.backend.eval()
        chunks = []
        with seeded(seed, dev), torch.no_grad():
            x = torch.from_numpy(arr / scale)[None].to(dev)
            like_t = None if ref is None else ref.to(dev)
            sizes = _chunk_sizes(n, batch_size)
            for k in tqdm(sizes, disable=not progress or len(sizes) == 1, desc="generate"):
                chunks.append(self.backend.generate(x, n_samples=k, like=like_t)[:, 0].float().cpu().numpy())
        data = np.concatenate(chunks) * scale
        data[:, mask] = np.nan
        unit = self.units.get("input")
        wcs = None
        if image.wcs is not None:
            wcs = image.wcs.sub([1, 2, 0])
            wcs.wcs.ctype[2] = "SAMPLE"
        meta = self._draws_header("model the images were generated with", seed)
        meta["RRLIKE"] = (like is not None, "style taken from a given dirty image")
        return Reconstruction(data, unit=unit, meta=meta, wcs=wcs, mask=np.broadcast_to(mask, data.shape).copy())

    # -- sampling ----------------------------------------------------------

    def sample(self, n=1, *, shape=None, seed=None, batch_size=8, progress=True, device="auto"):
        """Draw sky images from a generative backend's learned prior.

        Parameters
        ----------
        n : int
            Number of images.
        shape : tuple of int, optional
            ``(ny, nx)``; the backend's ``tile_shape`` by default.
        seed : int, optional
        batch_size, progress, device
            As for `predict`.

        Returns
        -------
        `~radiorecon.Reconstruction`
            ``data`` of shape ``(n, ny, nx)`` in the training targets' unit.
        """
        self._require("sample", "draw samples")
        self._require_fitted()
        _check_count(n)
        shape = tuple(shape or self.backend.tile_shape or ())
        if len(shape) != 2:
            raise ValueError("Give shape=(ny, nx): the backend has no native size")
        import torch
        from tqdm.auto import tqdm

        dev = resolve_device(device)
        self.backend.to(dev)
        self.backend.eval()
        draws = []
        with seeded(seed, dev), torch.no_grad():
            for start in tqdm(range(0, n, batch_size), disable=not progress or n <= batch_size, desc="sample"):
                k = min(batch_size, n - start)
                draws.append(self.backend.sample(k, shape=shape).float().cpu().numpy())
        data = np.concatenate(draws) * np.float32(self.scale or 1.0)
        unit = self.units.get("target") or self.units.get("input")
        meta = self._draws_header("model the samples were drawn from", seed)
        return Reconstruction(data, unit=unit, meta=meta)

    def _draws_header(self, model_comment, seed):
        """Provenance cards of `generate` and `sample` results."""
        meta = fits.Header()
        meta["RRVERS"] = (__version__, "radiorecon version")
        meta["RRBACKND"] = (self.backend_name, "radiorecon backend")
        meta["RRMODEL"] = (self.origin, model_comment)
        meta["RRSEED"] = (seed, "random seed")
        return meta


def _read_psf(obj):
    from .io import read_image

    return np.nan_to_num(np.asarray(read_image(obj).data, dtype=np.float64))


def _version_tuple(text):
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class _LazyPairs:
    """Adapts a dataset of arrays (pairs or single images) to float32 tensor pairs."""

    def __init__(self, dataset, paired):
        self.dataset, self.paired = dataset, paired

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import torch

        item = self.dataset[i]
        if self.paired:
            x, y = item
            return (
                torch.as_tensor(np.nan_to_num(np.asarray(x, dtype=np.float32))),
                torch.as_tensor(np.nan_to_num(np.asarray(y, dtype=np.float32))),
            )
        x = item[0] if isinstance(item, tuple) else item
        return torch.as_tensor(np.nan_to_num(np.asarray(x, dtype=np.float32))), torch.zeros(0)



def _estimate_scale(dataset, method, n_max=64):
    """The normalisation scale of training inputs (up to ``n_max``, evenly spread).

    ``"noise"``: their median robust noise; ``"peak"``: their median peak
    absolute value (for sparse skies without noise); None: 1.
    """
    if method is None:
        return 1.0
    idx = np.linspace(0, len(dataset) - 1, min(n_max, len(dataset))).astype(int)
    images = [np.asarray(dataset[int(i)][0], dtype=np.float64) for i in idx]
    if method == "noise":
        values = [robust_std(image) for image in images]
    elif method == "peak":
        values = [float(np.nanmax(np.abs(image))) for image in images]
    else:
        raise ValueError(f"Unknown input_scale {method!r}: use 'noise', 'peak' or None")
    values = [v for v in values if v > 0]
    return float(np.median(values)) if values else 1.0


class _Scaled:
    """Divides inputs (and targets) by the normalisation scale on the fly."""

    def __init__(self, dataset, scale, paired):
        self.dataset, self.scale, self.paired = dataset, float(scale), paired

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x / self.scale, (y / self.scale if self.paired else y)
