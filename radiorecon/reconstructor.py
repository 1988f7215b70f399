"""`Reconstructor`: the front door that wraps every backend.

It holds the parameters and the trained state (backend, normalisation,
units, history) and delegates the work: `radiorecon.pipeline` predicts,
`radiorecon.training` trains, `radiorecon.modelfile` stores,
`radiorecon.provenance` records how results were made.
"""

import contextlib
import copy
import logging
import os
import time
import warnings

import numpy as np

from . import __version__, modelfile, pipeline, provenance, registry
from ._validate import check_int, check_seed
from .backend import Backend, takes_keyword
from .exceptions import CapabilityError, InputError, ModelFileError, NotFittedError, RadioreconWarning
from .normalisation import Normalisation
from .pretrained import resolve_model_path
from .result import Reconstruction
from .runtime import check_memory, resolve_device, threads as torch_threads
from .seeding import Draws, seeded, stream_seed
from .training import Scaled, Trainer, is_dataset, training_set

__all__ = ["Reconstructor"]

log = logging.getLogger("radiorecon")

_AGGREGATES = ("median", "mean")


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
    normalisation : `~radiorecon.normalisation.Normalisation`
        Inputs are divided by its ``scale`` before the backend sees them and
        outputs multiplied by it. Fitted as the median robust noise of the
        training inputs, so networks work in units of the noise.
    scale : float
        ``normalisation.scale``.
    units : dict
        ``{"input": str or None, "target": str or None}`` units of the
        training data, used to convert inputs at prediction. A backend
        trained on skies alone (not ``paired``: ``score``, ``vae-deblend``)
        records their unit as the target's and no input unit; it takes
        dirty images in the per-beam counterpart (Jy/beam for skies in
        Jy/pixel) and predicts in the skies' unit
        (`radiorecon.pipeline.input_units`).
    history : list of dict
        Losses per epoch of the last `fit`.
    domain : dict or None
        What the model was trained on, recorded by `fit` and kept in model
        files: ``preset`` (the simulator preset, or None),
        ``beam_major_arcsec``, ``beam_minor_arcsec`` and
        ``pixel_scale_arcsec`` (arcsec) and ``noise_jy_beam`` (image noise
        rms, Jy/beam), each None where unknown; None when nothing is known
        (training on plain arrays). `predict` warns when an image's beam or
        pixel size differs from it by more than 20 %
        (`radiorecon.pipeline.DOMAIN_TOLERANCE`).
    catalog_threshold : float or None
        The detection threshold (S/N) chosen for this model, kept in model
        files: the default of ``radiorecon predict --catalog`` and
        ``radiorecon demo``. None (the default, and after a new `fit`) leaves
        them at their own defaults. Set it, then `save`.
    uncertainty_scale : float or dict
        The factor by which `predict` multiplies the standard deviation
        (of the samples, or the backend's own) so that it means what it
        says; or one per number of samples, ``{10: 250.0, 3: 310.0}``
        (what `calibrate_uncertainty` keeps: the spread of a few samples
        is smaller and noisier than that of many), of which a prediction
        uses the one for its number of samples, else the nearest
        (`radiorecon.modelfile.for_sample_count`). 1 (the default, and
        after a new `fit`) leaves it as the method gives it. Chosen on a
        calibration split by `calibrate_uncertainty`, kept in model files
        and written into each result's provenance (``RRUSCALE``).
    uncertainty_floor : float or dict
        A standard deviation, in the model's normalised units (times
        ``normalisation.scale`` in the unit of its targets), that `predict`
        adds in quadrature to the scaled one: what the model cannot see
        (a source too faint to detect) is uncertain even where its samples
        agree; or one per number of samples, as the scale. 0 (the
        default, and after a new `fit`) adds none. Chosen with the scale
        by ``calibrate_uncertainty(..., floor=True)``, kept in model files
        and written into each result's provenance (``RRUFLOOR``, in the
        result's unit).
    flux_error_floor : float or dict
        A flux error, in units of the dirty image's noise (Jy per Jy/beam),
        that catalogs of this model's predictions
        (`~radiorecon.catalog.find_sources_in_model`) add in quadrature to
        the samples' flux spread; or one per number of samples, ``{1: 1.9,
        10: 1.0}`` (what `calibrate_flux_errors` keeps: one run has no
        spread, and its floor is its whole flux error), of which a
        prediction uses the one for its number of samples, else the
        nearest (`radiorecon.modelfile.for_sample_count`). 0 (the default,
        and after a new `fit`) adds none. Kept in model files; each result
        records the floor it used (``RRFFLOOR``).
    detection_calibration : list of float, dict or None
        ``[a, b, c]`` (or ``[a, b]``, meaning ``c`` = 1): catalogs of this
        model's predictions give each source the ``detection_probability``
        ``fraction**c / (1 + exp(-(a + b ln(S/N))))`` (``fraction``: of the
        samples in which it is found, 1 for one run), the probability that it is real as measured on a
        calibration split by `calibrate_detection_probability`; or such
        coefficients per number of samples, ``{20: [a, b, c], 5: [...]}``
        (what `calibrate_detection_probability` keeps), of which a
        prediction uses those for its number of samples, else the nearest
        (`radiorecon.modelfile.for_sample_count`). None (the
        default, and after a new `fit` or a new `catalog_threshold` from
        `calibrate_threshold`): the fraction of samples alone. Kept in
        model files; each result records the coefficients it used
        (``RRDCAL``).

    Examples
    --------
    >>> from radiorecon import Reconstructor
    >>> rec = Reconstructor("clean", niter=200)
    >>> rec.capabilities  # doctest: +SKIP
    frozenset({'reconstruct', 'std', 'needs_psf'})
    """

    def __init__(self, backend, **config):
        if isinstance(backend, Backend):
            if config:
                raise TypeError("Give the configuration to the backend instance, not here.")
            self.backend = backend
            self.backend_name = registry.name_of(type(backend))
        elif isinstance(backend, str):
            self.backend = registry.create_backend(backend, **config)
            self.backend_name = backend
        else:
            raise TypeError(f"backend must be a backend name or a Backend instance, not {backend!r}")
        self.fitted = "needs_training" not in self.capabilities
        self.normalisation = Normalisation()
        self.units = {"input": None, "target": None}
        self.history = []
        self.domain = None
        self.catalog_threshold = None
        self.uncertainty_scale = 1.0
        self.uncertainty_floor = 0.0
        self.flux_error_floor = 0.0
        self.detection_calibration = None
        self.origin = "untrained" if not self.fitted else "no training needed"
        # Backend outputs kept by `reusing_predictions` (None: predict afresh every time),
        # the directory they are also written to, and the model's digest that names them there.
        self._kept_outputs = None
        self._kept_cache = None
        self._kept_model = None
        # Seconds that the `predict` call which made the last call's outputs
        # took (None when they were cut from more draws), and whether they were
        # read from the cache: for `radiorecon.benchmark`'s timings.
        self._last_run = (None, False)

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

    @property
    def catalog_threshold(self):
        """The detection threshold (S/N) chosen for this model, or None (float or None).

        Setting it checks that it is positive and finite.

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> rec = Reconstructor("clean")
        >>> rec.catalog_threshold = 4
        >>> rec.catalog_threshold
        4.0
        """
        return self._catalog_threshold

    @catalog_threshold.setter
    def catalog_threshold(self, value):
        self._catalog_threshold = modelfile.check_catalog_threshold(value)

    @property
    def uncertainty_scale(self):
        """The factor `predict` applies to the standard deviation (float, default 1).

        Or a dict of such factors per number of samples. Setting it checks
        that each is positive and finite (keyed by whole numbers >= 1).
        Only the uncertainty is scaled: estimates and samples are as drawn.

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> rec = Reconstructor("clean")
        >>> rec.uncertainty_scale = 2
        >>> rec.uncertainty_scale
        2.0
        """
        return self._uncertainty_scale

    @uncertainty_scale.setter
    def uncertainty_scale(self, value):
        if value is None:  # the model file's "not recorded", never a user's setting
            raise ValueError("uncertainty_scale must be a positive, finite number (such as 1), not None")
        self._uncertainty_scale = modelfile.check_uncertainty_scale(value)

    @property
    def uncertainty_floor(self):
        """The standard deviation `predict` adds in quadrature, in normalised units (float, default 0).

        Or a dict of such floors per number of samples. Setting it checks
        that each is finite and not negative. It applies
        where the prediction has an uncertainty (samples, or the backend's
        own); in the unit of the model's targets it is
        ``uncertainty_floor * normalisation.scale``.

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> rec = Reconstructor("clean")
        >>> rec.uncertainty_floor = 0.5
        >>> rec.uncertainty_floor
        0.5
        """
        return self._uncertainty_floor

    @uncertainty_floor.setter
    def uncertainty_floor(self, value):
        if value is None:  # the model file's "not recorded", never a user's setting
            raise ValueError("uncertainty_floor must be a finite number >= 0 (such as 0), not None")
        self._uncertainty_floor = modelfile.check_uncertainty_floor(value)

    @property
    def flux_error_floor(self):
        """The flux error catalogs add in quadrature, in units of the dirty image's noise (float, default 0).

        Or a dict of such floors per number of samples. Setting it checks
        that each is finite and not negative (keyed by whole numbers >= 1).

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> rec = Reconstructor("clean")
        >>> rec.flux_error_floor = 1.5
        >>> rec.flux_error_floor
        1.5
        """
        return self._flux_error_floor

    @flux_error_floor.setter
    def flux_error_floor(self, value):
        if value is None:  # the model file's "not recorded", never a user's setting
            raise ValueError("flux_error_floor must be a finite number >= 0 (such as 0), not None")
        self._flux_error_floor = modelfile.check_flux_error_floor(value)

    @property
    def detection_calibration(self):
        """Coefficients ``[a, b]`` or ``[a, b, c]`` of catalogs' calibrated detection probability, or None.

        Or a dict of such coefficients per number of samples. Setting it
        checks that it holds two or three finite numbers, the third (a
        power) >= 0 (in each entry, keyed by whole numbers >= 1).
        """
        return self._detection_calibration

    @detection_calibration.setter
    def detection_calibration(self, value):
        self._detection_calibration = modelfile.check_detection_calibration(value)

    @property
    def scale(self):
        """The normalisation scale, in the unit of the training inputs (float)."""
        return self.normalisation.scale

    def get_params(self):
        """The backend's configuration, as `set_params` takes it (a copy).

        Examples
        --------
        >>> from radiorecon import Reconstructor
        >>> Reconstructor("clean", niter=50).get_params()["niter"]
        50
        """
        return dict(self.backend.config)

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
        threads=None,
        workers=0,
        distributed=None,
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
            are the sky images themselves. The training domain (`domain`)
            comes from a simulated data set's preset, from the images' beam
            cards, WCS and noise, or from a data set's ``domain`` attribute.
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
            instead of starting from freshly initialised ones. A fitted
            model keeps its normalisation (the scale its networks learned
            in) and appends to its `history`; its calibrations are cleared,
            as after any training. Lower a learning rate first with
            `set_params` where the backend allows it (its ``tuning_keys``).
        threads : int, optional
            CPU threads for torch during the call; by default torch's own
            setting (``OMP_NUM_THREADS`` when set, else one per core).
        workers : int
            Processes that load (or simulate) the training data while the
            backend trains; 0 loads in this process. The batches and so the
            trained weights are the same for any number.
        distributed : bool, optional
            Train data-parallel across the processes of an initialised
            ``torch.distributed`` process group: every process calls `fit`
            with the same data and arguments, trains on its share of each
            batch of ``batch_size`` images, and gradients are averaged; only
            process 0 shows progress and writes the checkpoint. By default
            (None), whenever a group of more than one process is
            initialised; False trains each process on its own. See
            :doc:`/training` for when the weights equal one process's.

        Returns
        -------
        self : Reconstructor
        """
        if self._kept_outputs is not None:
            # Outputs kept by reusing_predictions are of the weights before this fit.
            self._kept_outputs.clear()
            self._kept_model = None
        self._require("needs_training", "be trained")
        paired = "paired" in self.capabilities
        if paired and targets is None and not is_dataset(inputs):
            raise ValueError(f"Backend {self.backend_name!r} trains on (input, target) pairs: give targets")
        if not paired and targets is not None:
            raise ValueError(f"Backend {self.backend_name!r} trains on unpaired images: give inputs only")
        epochs = check_int(epochs, "epochs")
        batch_size = check_int(batch_size, "batch_size")
        seed = check_seed(seed)

        train, units, domain = training_set(inputs, targets, paired)
        trainer = Trainer(self.backend, epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                          progress=progress, checkpoint=checkpoint, workers=workers, distributed=distributed)
        resume = trainer.read_checkpoint(self.backend_name, self._restore)
        if resume is None:
            fine_tuning = warm_start and self.fitted
            if fine_tuning:
                self._check_same_units(units)
            self.units = units
            self.domain = domain
            # A threshold or calibration chosen for other weights does not carry over.
            self.catalog_threshold = None
            self.uncertainty_scale = 1.0
            self.uncertainty_floor = 0.0
            self.flux_error_floor = 0.0
            self.detection_calibration = None
            if not fine_tuning:
                self.normalisation = Normalisation.fit(train, self.backend.input_scale)
                self.history = []
            # Fine-tuning keeps the units the weights learned in, and the
            # history of the epochs before.
        val = None
        if validation is not None:
            if is_dataset(validation):
                val = validation
            elif paired:
                pair = validation if isinstance(validation, tuple) else (validation, None)
                val = training_set(pair[0], pair[1], paired)[0]
            else:
                val = training_set(validation, None, paired)[0]
            val = Scaled(val, self.normalisation, paired)
        log.info("training %s on %d images on %s", self.backend_name, len(train), trainer.device)
        with torch_threads(threads):
            trainer.run(Scaled(train, self.normalisation, paired), validation=val, resume=resume,
                        warm_start=warm_start, document=self._document, on_epoch=self.history.append)
        self.fitted = True
        self.origin = "trained in this session"
        return self

    def _check_same_units(self, units):
        """Refuse to fine-tune on data in units other than the model's."""
        import astropy.units as u

        for role in ("input", "target"):
            mine, theirs = self.units.get(role), units.get(role)
            if mine is not None and theirs is not None and u.Unit(mine) != u.Unit(theirs):
                raise u.UnitsError(
                    f"The model's {role}s were in {mine}; these are in {theirs}: fine-tuning cannot change "
                    "the units its networks learned in"
                )

    # -- model files -------------------------------------------------------

    def _document(self):
        return {
            "radiorecon_version": __version__,
            "backend": self.backend_name,
            "backend_version": str(self.backend.version),
            "config": self.backend.config,
            "normalisation": self.normalisation.to_dict(),
            "units": self.units,
            "domain": self.domain,
            "catalog_threshold": self.catalog_threshold,
            "uncertainty_scale": self.uncertainty_scale,
            "uncertainty_floor": self.uncertainty_floor,
            "flux_error_floor": self.flux_error_floor,
            "detection_calibration": self.detection_calibration,
            "fitted": self.fitted,
            "history": self.history,
        }

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
        return cls.load(f"pretrained:{name}", device=device)

    @classmethod
    def load(cls, path, *, device="auto"):
        """Read a model file written by `save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file, or ``"pretrained:NAME"`` for a shipped model.
        device : str
            ``"auto"``, ``"cpu"`` or ``"cuda"``.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        radiorecon.exceptions.ModelFileError
            If the file is not a radiorecon model, is truncated or corrupted,
            was written by a newer radiorecon or backend, needs a backend
            that is not installed, or holds tensors that do not fit the
            network its config describes (checked before any is built).
        """
        spec = os.fspath(path)
        path = resolve_model_path(spec)
        # Checked against the backend (on the meta device) before any network is built.
        doc, _, tensors = modelfile.read_model(path)
        if "training" in doc:
            log.info("%s is a training checkpoint; loading its weights", path)
        name = doc["backend"]
        try:
            self = cls(name, **doc["config"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: config does not fit backend {name!r}: {exc}") from None
        self._restore(doc, {k: v for k, v in tensors.items() if not k.startswith("train/")}, path)
        self.fitted = bool(doc.get("fitted")) or "training" in doc or "needs_training" not in self.capabilities
        self.origin = spec if spec.startswith("pretrained:") else os.path.basename(path)
        self.backend.to(resolve_device(device))
        return self

    def _restore(self, doc, tensors, path):
        """Put a model document's weights, normalisation, units and history in place."""
        from astropy import units as u

        try:
            self.backend.load_state_dict(tensors)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{os.fspath(path)}: tensors do not fit backend {self.backend_name!r}: {exc}") from None
        try:
            normalisation = Normalisation.from_dict(doc.get("normalisation"))
        except ValueError as exc:
            raise ModelFileError(f"{os.fspath(path)}: {exc}") from None
        units = doc.get("units") or {"input": None, "target": None}
        try:
            for value in (units.get("input"), units.get("target")):
                if value is not None:
                    u.Unit(value)
        except (AttributeError, TypeError, ValueError):
            raise ModelFileError(f"{os.fspath(path)}: units {units!r} are not readable") from None
        history = doc.get("history") or []
        if not isinstance(history, list):
            raise ModelFileError(f"{os.fspath(path)}: history is not a list")
        self.normalisation = normalisation
        self.units = {"input": units.get("input"), "target": units.get("target")}
        self.history = list(history)
        # modelfile checked both; files written before they were recorded have neither.
        self.domain = modelfile.check_domain(doc.get("domain"))
        self.catalog_threshold = doc.get("catalog_threshold")
        self._uncertainty_scale = modelfile.check_uncertainty_scale(doc.get("uncertainty_scale"))
        self._uncertainty_floor = modelfile.check_uncertainty_floor(doc.get("uncertainty_floor"))
        self._flux_error_floor = modelfile.check_flux_error_floor(doc.get("flux_error_floor"))
        self._detection_calibration = modelfile.check_detection_calibration(doc.get("detection_calibration"))

    # -- prediction --------------------------------------------------------

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
        threads=None,
        positions=None,
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
            Draws from the backend (backends with the ``draws``
            capability); their median or mean is the estimate and their
            standard deviation the uncertainty.
        psf : image or list of images, optional
            Point-spread function (any size; it is centred on its peak and
            cut or padded). One PSF for all images, or one per image.
            Required by backends with ``needs_psf``.
        aggregate : {"median", "mean"}
            How samples become the estimate.
        seed : int, optional
            Makes sampling repeatable. Image ``i`` of a list gets the same
            result as predicted alone with the same seed only if it is at
            the same position, whatever ``batch_size`` and its neighbours.
        batch_size : int
            Tiles (and draws) per backend call.
        progress : bool
            Show a progress bar over tiles (after half a second).
        device : str
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        return_samples : bool
            Keep the individual samples in the result's ``samples``.
        threads : int, optional
            CPU threads for torch during the call (see `fit`).
        positions : list, optional
            Where the sources to separate are, for backends with the
            ``deblend`` capability (``vae-deblend``): a list of pixel
            ``(x, y)`` (0-based, of the whole image) for one image, or one
            such list per image for a list of images. By default the backend
            finds the sources itself.

        Returns
        -------
        `~radiorecon.Reconstruction` or list of them
            Sky model in Jy/pixel when the input is in Jy/beam, with
            ``uncertainty`` (`~astropy.nddata.StdDevUncertainty`, or `None`
            when the method gives none: the ``RRUNCERT`` card says which),
            ``mask`` (True where the input was blank; those pixels are NaN),
            the input's celestial ``wcs`` and provenance in ``meta``.
            Maps in ``extras`` are `~astropy.units.Quantity` in the unit the
            backend declares (e.g. Jy/beam for CLEAN's residual). A
            ``deblend`` backend's per-source models are in ``components``
            (see `~radiorecon.Reconstruction`).

        Warns
        -----
        RadioreconWarning
            Once per call, when an image's beam (major or minor axis) or
            pixel size differs from the model's training `domain` by more
            than 20 %: the result may be wrong. Images without beam cards or
            a celestial WCS, and models without a domain, are not checked.

        Raises
        ------
        CapabilityError
            For ``n_samples > 1`` with a backend that does not draw samples,
            no PSF for a backend that needs one, or ``positions`` for a
            backend without ``deblend``.
        InputError
            For positions that are not finite pixel ``(x, y)`` pairs inside
            their image (the message names the position), or not one list
            per image; or an image a ``deblend`` backend would have to cut
            into tiles.
        MemoryError
            Before any work, when the samples asked for cannot fit in memory.
        """
        start = time.perf_counter()
        self._require("reconstruct", "reconstruct images")
        self._require_fitted()
        n_samples = check_int(n_samples, "n_samples")
        batch_size = check_int(batch_size, "batch_size")
        seed = check_seed(seed)
        if n_samples > 1 and "draws" not in self.capabilities:
            raise CapabilityError(
                f"Backend {self.backend_name!r} does not draw samples (no 'draws' capability"
                + ("; it gives its own standard deviation" if "std" in self.capabilities else "")
                + "): use n_samples=1"
            )
        if aggregate not in _AGGREGATES:
            raise ValueError(f"aggregate must be one of {_AGGREGATES}, not {aggregate!r}")
        if psf is None and "needs_psf" in self.capabilities:
            raise CapabilityError(f"Backend {self.backend_name!r} needs the PSF: pass psf=")
        if positions is not None:
            self._require("deblend", "take source positions")

        # A stack of 2-D arrays is a list of images, as in fit.
        many = isinstance(data, (list, tuple)) or (type(data) is np.ndarray and data.ndim == 3 and len(data) > 1)
        images = list(data) if many else [data]
        if isinstance(psf, (list, tuple)):
            if len(psf) != len(images):
                raise ValueError(f"{len(psf)} PSFs for {len(images)} images")
            if any(p is None for p in psf):
                raise ValueError("A list of PSFs needs one PSF for every image (found None)")
            psfs = list(psf)
        else:
            psfs = [psf] * len(images)

        if positions is not None:
            positions = _source_positions(positions if many else [positions], len(images))

        jobs = pipeline.make_jobs(images, psfs, self.backend, self.normalisation, pipeline.input_units(self.units))
        pipeline.warn_outside_domain(jobs, self.domain, stacklevel=3)
        if "deblend" in self.capabilities and any(len(job.tiler) > 1 for job in jobs):
            # Positions, components and the catalog are of the whole image, in one piece.
            raise InputError(
                f"Backend {self.backend_name!r} deblends whole images of at most "
                f"{self.backend.tile_shape or self.backend.max_tile_shape} pixels, not in tiles; cut the image first"
            )
        if positions is not None:
            for job, xy in zip(jobs, positions):
                _check_inside(xy, job.mask.shape, "" if not many else f" of image {job.index}")
        dev = self._to_device(device)
        key = outputs = None
        keep = return_samples
        if self._kept_outputs is not None and seed is not None:
            # Kept outputs hold the samples, so that they serve calls with and without them.
            keep = return_samples or n_samples > 1
            # One entry for every sample count from 2 up: draw k of an image comes from
            # its own seeded stream (radiorecon.seeding.Draws), so the first n of more
            # draws are the n draws. One draw is apart: STAR's is its mean style.
            if self._kept_cache and self._kept_model is None:
                self._kept_model = self._weights_digest()
            # On disk, a GPU's outputs (which differ in the last bits) are apart from a CPU's.
            key = pipeline.prediction_key(jobs, self.backend, model=self._kept_model, seed=seed, aggregate=aggregate,
                                          positions=positions, several=n_samples > 1, samples=keep,
                                          **({"device": str(dev)} if self._kept_cache else {}))
            stored = os.path.join(self._kept_cache, key + ".npz") if self._kept_cache else None
            entry = self._kept_outputs.get(key)
            if entry is None and stored and os.path.exists(stored):
                loaded = pipeline.load_outputs(stored, len(jobs))
                entry = None if loaded is None else (*loaded, True)
            n_kept, kept, seconds, from_cache = entry or (0, None, None, False)
            if n_kept == n_samples:
                # Copies of what is kept in memory: assemble blanks maps in place.
                outputs = kept if from_cache else copy.deepcopy(kept)
                self._last_run = (seconds, from_cache)
            elif n_kept > n_samples:
                outputs = pipeline.first_samples(kept, n_samples)
                self._last_run = (None, from_cache)
        pipeline.check_sample_memory(jobs, n_samples, keep, batch_size)
        made = kept = None
        if outputs is None:
            with torch_threads(threads):
                made = outputs = pipeline.run(jobs, self.backend, self.backend_name, n_samples=n_samples,
                                              batch_size=batch_size, seed=seed, device=dev, progress=progress,
                                              aggregate=aggregate, return_samples=keep, positions=positions)
            if key is not None and n_samples >= n_kept:
                kept = copy.deepcopy(outputs)  # assemble blanks maps in place
        results = []
        for job, out in zip(jobs, outputs):  # a loop, not a comprehension: warnings point at the caller
            results.append(pipeline.assemble(
                job, out, n_samples=n_samples, aggregate=aggregate, seed=seed, return_samples=return_samples,
                normalisation=self.normalisation, units=self.units, backend=self.backend,
                name=self.backend_name, origin=self.origin,
                uncertainty_scale=modelfile.for_sample_count(self.uncertainty_scale, n_samples),
                uncertainty_floor=modelfile.for_sample_count(self.uncertainty_floor, n_samples),
                flux_error_floor=modelfile.for_sample_count(self.flux_error_floor, n_samples),
                detection_calibration=modelfile.for_sample_count(self.detection_calibration, n_samples)))
        if made is not None:
            # The whole call, as a user waits for it.
            seconds = time.perf_counter() - start
            self._last_run = (seconds, False)
            if kept is not None:
                try:
                    # With a cache, on disk only: memory stays flat however many images.
                    if stored:
                        pipeline.save_outputs(stored, kept, n_samples=n_samples, seconds=seconds)
                        kept = None
                except (OSError, TypeError) as exc:
                    # The prediction is made: a cache that cannot keep it costs time, not results.
                    warnings.warn(f"Could not keep this prediction in {self._kept_cache} (kept in memory "
                                  f"instead): {exc}", RadioreconWarning, stacklevel=2)
                if kept is not None:
                    self._kept_outputs[key] = (n_samples, kept, seconds, False)
        return results if many else results[0]

    @contextlib.contextmanager
    def reusing_predictions(self, cache=None):
        """Predict each seeded input once within the block, however often it is asked for.

        Calibrating a model's threshold, uncertainty, detection probability
        and flux errors on the same images asks for the same predictions four
        times (``radiorecon calibrate`` does); within this block a call to
        `predict` with a ``seed`` whose images, PSFs, settings (``aggregate``,
        positions) and backend configuration are those of an earlier call
        reuses that call's network outputs, with or without
        ``return_samples``, and with ``n_samples`` of 2 or more up to the
        earlier call's (the first ``n_samples`` of its draws, each from its own
        seeded stream, are those a call for ``n_samples`` would draw); and
        only the model's calibration (`uncertainty_scale` and the other
        attributes it may have changed since) is applied afresh. Unseeded
        calls are never reused. The outputs, samples included, stay in
        memory until the block ends (about ``4 * n_samples`` bytes per pixel
        of each image with ``return_samples``), or on disk with ``cache``.

        Parameters
        ----------
        cache : str or path-like, optional
            A directory (made if missing) where the outputs are kept
            instead of memory (which then stays flat however many images
            are predicted), one compressed ``.npz`` file (no pickle) per call,
            named by a digest of its images, PSFs, settings, device, the
            backend's class, version and configuration and the SHA-256 of
            its weights, with the seconds the `predict` call took; a later
            block with the same ``cache``, in this process or another, reads
            them instead of predicting again. So a long run (``radiorecon
            benchmark --cache``) that is stopped resumes where it was, and
            gives the same results. Files that are damaged or of another
            radiorecon version are predicted again, and outputs that cannot
            be written are kept in memory with a `RadioreconWarning`. The digest
            does not cover code: a development install keeps its version,
            so clear the directory when that code changes. Sparse sky models
            take little room: 0.2 MB for 20 draws of a 512x512 image of the
            shipped DDPM, 3.7 MB for CLEAN's maps of one.

        Raises
        ------
        ValueError
            For a ``cache`` inside a block that keeps its outputs elsewhere
            (an inner block keeps to the outer block's outputs).

        Examples
        --------
        Calibrate a sampling model on 40 images of ``radiorecon simulate 120
        cal120 --seed 7``, drawing 20 samples of each image once, not four
        times (what ``radiorecon calibrate --floor --reliability`` does)::

            with rec.reusing_predictions():
                rec.calibrate_threshold("cal120", n_samples=20, n_images=40)
                rec.calibrate_uncertainty("cal120", n_samples=20, n_images=40, match=(1, 2), floor=True)
                rec.calibrate_detection_probability("cal120", n_samples=20, n_images=40)
                rec.calibrate_flux_errors("cal120", n_samples=20, n_images=40)
            rec.save("calibrated.rrm")

        Keep the draws on disk as well, so that an interrupted calibration
        resumes::

            with rec.reusing_predictions(cache="cal120-draws"):
                ...
        """
        if self._kept_outputs is not None:  # nested: the outer block keeps them
            if cache is not None and os.fspath(cache) != self._kept_cache:
                raise ValueError(f"reusing_predictions(cache={os.fspath(cache)!r}) inside a block that keeps "
                                 f"its outputs {'in ' + repr(self._kept_cache) if self._kept_cache else 'in memory'}")
            yield self
            return
        if cache is not None:
            cache = os.fspath(cache)
            os.makedirs(cache, exist_ok=True)
        # The weights' digest is taken at the first prediction (and again after a fit).
        self._kept_outputs, self._kept_cache, self._kept_model = {}, cache, None
        try:
            yield self
        finally:
            self._kept_outputs = self._kept_cache = self._kept_model = None

    def _weights_digest(self):
        """The backend's name, class and version and the SHA-256 of its tensors: the same model in every process."""
        cls = type(self.backend)
        version = getattr(self.backend, "version", None)
        return (f"{self.backend_name}:{cls.__module__}.{cls.__qualname__}:{version}:"
                f"{modelfile.tensor_digest(self.backend.state_dict())}")

    def calibrate_uncertainty(self, data, *, n_samples, n_images=None, images=None, seed=0, match=(1,),
                              floor=False, progress=True):
        """Calibrate the uncertainty on a simulated data set and keep the scale found.

        Sets the entry of `uncertainty_scale` for ``n_samples`` so that
        the 1-sigma coverage of source pixels on ``data`` is 0.683 (or,
        with ``match=(1, 2)``, so that the 1- and 2-sigma coverage are both
        as near 0.683 and 0.954 as one scale makes them), and that of
        `uncertainty_floor` to the floor chosen with ``floor=True`` (else
        0); the entries for other numbers of samples stay, since the
        spread of a few samples differs from that of many (a single value
        from an older file is replaced, with a warning). See
        `radiorecon.calibration.calibrate_uncertainty` for the parameters.
        Calibrate on images the model was not trained on, check on others,
        then `save`.

        Returns
        -------
        `~radiorecon.calibration.CalibrationReport`
        """
        from .calibration import calibrate_uncertainty

        report = calibrate_uncertainty(self, data, n_samples=n_samples, n_images=n_images, images=images,
                                       seed=seed, match=match, floor=floor, progress=progress)
        self.uncertainty_scale = _with_count(self.uncertainty_scale, report.n_samples, report.scale,
                                             "uncertainty_scale", unset=1.0)
        self.uncertainty_floor = _with_count(self.uncertainty_floor, report.n_samples, report.floor,
                                             "uncertainty_floor", unset=0.0)
        return report

    def calibrate_flux_errors(self, data, *, n_samples=1, threshold=None, n_images=None, images=None, seed=0,
                              match=(1,), progress=True):
        """Choose the flux error floor of this model's catalogs on a simulated data set and keep it.

        Sets the entry of `flux_error_floor` for ``n_samples``, keeping
        those for other numbers of samples, so that catalog flux errors
        cover the true fluxes of the matched sources as a Gaussian's would
        at the levels in ``match`` (0.683 of them at 1 sigma by default);
        see `radiorecon.calibration.calibrate_flux_errors`.
        Calibrate the threshold and the uncertainty scale first: the
        catalogs are made as they will be, at `catalog_threshold` with
        the scaled spread. Then `save`.

        Returns
        -------
        `~radiorecon.calibration.FluxErrorReport`
        """
        from .calibration import calibrate_flux_errors

        report = calibrate_flux_errors(self, data, n_samples=n_samples, threshold=threshold, n_images=n_images,
                                       images=images, seed=seed, match=match, progress=progress)
        self.flux_error_floor = _with_count(self.flux_error_floor, report.n_samples, report.floor,
                                            "flux_error_floor", unset=0.0)
        return report

    def calibrate_detection_probability(self, data, *, n_samples=1, threshold=None, n_images=None, images=None,
                                        seed=0, progress=True):
        """Calibrate the ``detection_probability`` of this model's catalogs on a simulated data set and keep it.

        Sets the entry of `detection_calibration` for ``n_samples`` and
        keeps those for other numbers of samples (a model used with 5 draws
        and with 20 is calibrated once for each: the fraction of 5 draws
        that find a source is coarser and less telling than that of 20);
        see `radiorecon.calibration.calibrate_detection_probability`.
        Calibrate the threshold first: the catalogs are made at
        `catalog_threshold`. Then `save`.

        Returns
        -------
        `~radiorecon.calibration.DetectionReport`
        """
        from .calibration import calibrate_detection_probability

        report = calibrate_detection_probability(self, data, n_samples=n_samples, threshold=threshold,
                                                 n_images=n_images, images=images, seed=seed, progress=progress)
        self.detection_calibration = _with_count(self.detection_calibration, report.n_samples, report.coefficients,
                                                 "detection_calibration", unset=None)
        return report

    def calibrate_threshold(self, data, *, n_samples=1, n_images=None, images=None, seed=0, target_purity=None,
                            progress=True):
        """Choose the catalog threshold on a simulated calibration split and keep it.

        Sets `catalog_threshold` to the lowest threshold at which the
        sources found in this model's predictions of ``data`` reach the
        target purity (default `~radiorecon.calibration.TARGET_PURITY`,
        0.9); see `radiorecon.calibration.calibrate_threshold`. It is then
        the default of ``predict --catalog``, the demo and the benchmark
        for this model; `save` to keep it in the model file. Calibrate on
        images the model was not trained on. A threshold other than the
        model's drops its `detection_calibration`, fitted to the
        detections of the old one: calibrate that again.

        Returns
        -------
        `~radiorecon.calibration.ThresholdReport`
        """
        from .calibration import TARGET_PURITY, calibrate_threshold

        report = calibrate_threshold(self, data, n_samples=n_samples, n_images=n_images, images=images, seed=seed,
                                     target_purity=TARGET_PURITY if target_purity is None else target_purity,
                                     progress=progress)
        if report.threshold != self.catalog_threshold:
            self.detection_calibration = None
        self.catalog_threshold = report.threshold
        return report

    def _to_device(self, device):
        dev = resolve_device(device)
        self.backend.to(dev)
        self.backend.eval()
        return dev

    # -- generation --------------------------------------------------------

    def generate(self, sky, n=1, *, like=None, seed=None, batch_size=8, progress=True, device="auto",
                 threads=None):
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
        batch_size, progress, device, threads
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
        n = check_int(n, "n")
        batch_size = check_int(batch_size, "batch_size")
        seed = check_seed(seed)
        import torch
        from tqdm.auto import tqdm

        image, arr, mask, _ = pipeline.read_input(sky, "sky model", self.units.get("target"), stacklevel=3)
        # The draws, their rescaled copy and the masked result, float32.
        check_memory(3 * 4 * n * arr.size, f"{n} generated images of {arr.shape}", "ask for fewer at a time")
        norm = self.normalisation
        ref = None
        if like is not None:
            _, ref, _, _ = pipeline.read_input(like, "dirty image", self.units.get("input"), stacklevel=3)
            if ref.shape != arr.shape:
                raise ValueError(f"like= has shape {ref.shape}, the sky model {arr.shape}")
        dev = self._to_device(device)
        chunks, start = [], 0
        with torch_threads(threads), seeded(seed, dev), torch.no_grad():
            x = torch.from_numpy(norm.forward(arr))[None].to(dev)
            like_t = None if ref is None else torch.from_numpy(norm.forward(ref))[None].to(dev)
            sizes = pipeline.chunk_sizes(n, batch_size)
            for k in tqdm(sizes, disable=not progress, desc="generate", delay=pipeline.PROGRESS_DELAY):
                draws = Draws([[stream_seed(seed, 0, start + i)] for i in range(k)], dev)
                out = self.backend.generate(x, n_samples=k, like=like_t, draws=draws)
                chunks.append(out[:, 0].float().cpu().numpy())
                start += k
        data = norm.inverse(np.concatenate(chunks))
        data[:, mask] = np.nan
        wcs = None
        if image.wcs is not None:
            wcs = image.wcs.sub([1, 2, 0])
            wcs.wcs.ctype[2] = "SAMPLE"
        meta = self._draws_header("model the images were generated with", seed)
        meta["RRLIKE"] = (like is not None, "style taken from a given dirty image")
        return Reconstruction(data, unit=self.units.get("input"), meta=meta, wcs=wcs,
                              mask=np.broadcast_to(mask, data.shape).copy())

    # -- sampling ----------------------------------------------------------

    def sample(self, n=1, *, shape=None, seed=None, wcs=None, flux=None, batch_size=8, progress=True,
               device="auto", threads=None, **settings):
        """Draw sky images from a generative backend's learned prior.

        Parameters
        ----------
        n : int
            Number of images.
        shape : tuple of int, optional
            ``(ny, nx)``; the backend's ``tile_shape`` by default.
        seed : int, optional
        wcs : `~astropy.wcs.WCS`, optional
            Celestial WCS of each image. By default, one centred on RA 0,
            Dec 0 with the pixel size of the model's training `domain`
            (generated skies have no place on the sky, but their pixels
            have a size), or none if the domain does not know it. The
            result's WCS adds a third axis, ``SAMPLE`` (0 for the first
            image), so that the cube goes to FITS as it is
            (`~radiorecon.io.write_result`); ``result.wcs.celestial`` is
            that of one image.
        flux : `~astropy.units.Quantity`, optional
            Total flux of each image (a scalar, or ``n`` values), e.g. in Jy
            for a model of skies in Jy/pixel, for a prior conditioned on it
            (``score`` with ``flux_condition``); by default the prior's own
            fluxes.
        batch_size, progress, device, threads
            As for `predict`.
        **settings
            Prediction settings (``inference_keys``, e.g. ``steps`` and
            ``sampler`` of ``score``) for this call only; `set_params`
            changes them for good.

        Returns
        -------
        `~radiorecon.Reconstruction`
            ``data`` of shape ``(n, ny, nx)`` in the training targets' unit.

        Examples
        --------
        With a trained ``score`` model ``rec``::

            skies = rec.sample(16, shape=(80, 80), steps=25, sampler="heun", seed=1)
        """
        self._require("sample", "draw samples")
        self._require_fitted()
        n = check_int(n, "n")
        batch_size = check_int(batch_size, "batch_size")
        seed = check_seed(seed)
        shape = tuple(shape or self.backend.tile_shape or ())
        if len(shape) != 2:
            raise ValueError("Give shape=(ny, nx): the backend has no native size")
        shape = tuple(check_int(s, "shape") for s in shape)
        if wcs is not None and not getattr(wcs, "has_celestial", False):
            raise InputError("wcs must be a celestial astropy.wcs.WCS")
        check_memory(2 * 4 * n * shape[0] * shape[1], f"{n} samples of {shape}", "ask for fewer at a time")
        fluxes = None if flux is None else self._normalised_flux(flux, n)
        import torch
        from tqdm.auto import tqdm

        dev = self._to_device(device)
        draws = []
        before = {key: self.backend.config[key] for key in settings if key in self.backend.config}
        self.backend.set_config(**settings)
        try:
            with torch_threads(threads), seeded(seed, dev), torch.no_grad():
                for start in tqdm(range(0, n, batch_size), disable=not progress, desc="sample",
                                  delay=pipeline.PROGRESS_DELAY):
                    k = min(batch_size, n - start)
                    gens = Draws([[stream_seed(seed, start + i) for i in range(k)]], dev)
                    extra = {} if fluxes is None else {"flux": torch.as_tensor(fluxes[start:start + k], device=dev)}
                    draws.append(self.backend.sample(k, shape=shape, draws=gens, **extra).float().cpu().numpy())
            meta = self._draws_header("model the samples were drawn from", seed)
        finally:
            self.backend.set_config(**before)
        data = self.normalisation.inverse(np.concatenate(draws))
        unit = self.units.get("target") or self.units.get("input")
        return Reconstruction(data, unit=unit, wcs=self._sample_wcs(shape, wcs), meta=meta)

    def _normalised_flux(self, flux, n):
        """``sample``'s ``flux=`` as ``n`` totals in normalised units (the model's unit times pixels)."""
        import astropy.units as u

        # Whether this model's prior takes a flux is the backend's to say (score
        # refuses when its flux_condition is off); one whose sample() has no
        # flux= cannot take it at all.
        if not takes_keyword(self.backend.sample, "flux"):
            raise InputError(f"{self.backend_name} models cannot draw skies of a given flux: sample without flux=")
        unit = self.units.get("target") or self.units.get("input")
        if not isinstance(flux, u.Quantity):
            raise InputError(f"flux must be a Quantity (e.g. in Jy for a model in {unit}), not {type(flux).__name__}")
        if unit is None:
            raise InputError("the model records no unit, so a flux cannot be converted to it")
        total = u.Unit(unit) * u.pix
        try:
            values = np.asarray(flux.to_value(total), dtype=np.float64).reshape(-1)
        except u.UnitConversionError:
            raise InputError(f"flux in {flux.unit} cannot be a total of skies in {unit}") from None
        if values.size not in (1, n):
            raise InputError(f"flux must be one value or {n} (one per image), got {values.size}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise InputError(f"flux must be finite and non-negative, got {flux}")
        return np.broadcast_to(values / self.normalisation.scale, (n,)).astype(np.float32)

    def _sample_wcs(self, shape, wcs):
        """The WCS of a cube of samples: ``wcs`` (or one at RA 0, Dec 0 with the domain's pixels) and a SAMPLE axis."""
        if wcs is None:
            pixel = (self.domain or {}).get("pixel_scale_arcsec")
            if pixel is None:
                return None
            from .simulate.engine import image_wcs

            wcs = image_wcs(0.0, 0.0, shape[1], pixel)
            wcs.wcs.crpix[1] = shape[0] // 2 + 1
        cube = wcs.celestial.sub([1, 2, 0])
        cube.wcs.ctype[2], cube.wcs.crpix[2] = "SAMPLE", 1
        return cube

    def _draws_header(self, comment, seed):
        return provenance.draws_header(version=__version__, backend_name=self.backend_name, origin=self.origin,
                                       seed=seed, comment=comment)


def _with_count(current, n_samples, value, name, *, unset):
    """A calibration kept per number of samples, with ``value`` for ``n_samples``.

    A single value (set by hand, or from files written before calibrations
    were kept per count) was made for a count nobody recorded: it is
    replaced, with a warning, since it may be what other counts need.
    """
    if isinstance(current, dict):
        return {**current, n_samples: value}
    if current != unset:
        shown = f"{current:.4g}" if isinstance(current, float) else repr(current)
        warnings.warn(f"{name} {shown} was made for an unrecorded number of samples and is replaced by the one "
                      f"for {n_samples}; calibrate again for the other numbers of samples you use", UserWarning,
                      stacklevel=3)
    return {n_samples: value}


def _source_positions(per_image, n_images):
    """``predict``'s positions as one list of float ``(x, y)`` per image, checked to be finite pairs."""
    if not isinstance(per_image, (list, tuple, np.ndarray)) or len(per_image) != n_images:
        raise InputError(
            f"positions must be a list of pixel (x, y) for one image, or one such list per image "
            f"({n_images} here), not {per_image!r}"
        )
    out = []
    for i, xy in enumerate(per_image):
        where = "" if n_images == 1 else f" of image {i}"
        try:
            array = np.asarray(xy, dtype=float)
        except (TypeError, ValueError):
            array = None
        if array is None or array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
            raise InputError(f"positions{where} must be a non-empty list of pixel (x, y) pairs, not {xy!r}")
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            raise InputError(f"position {tuple(array[bad][0].tolist())}{where} is not finite")
        out.append([tuple(p) for p in array.tolist()])
    return out


def _check_inside(xy, shape, where):
    """Refuse a position outside an image of ``shape`` ``(ny, nx)``, naming it."""
    ny, nx = shape
    for x, y in xy:
        if not (0 <= x <= nx - 1 and 0 <= y <= ny - 1):
            raise InputError(
                f"position ({x:g}, {y:g}){where} lies outside the image's {nx} x {ny} pixels "
                "(x, y are 0-based pixel indices)"
            )
