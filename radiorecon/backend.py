"""The contract between `~radiorecon.Reconstructor` and a reconstruction method.

A backend is the method alone. It sees float32 torch tensors of shape
``(batch, ny, nx)`` in normalised units, on the device it was moved to; it
never touches FITS files, astropy units, WCS or masks: the front door
(`~radiorecon.Reconstructor`) converts inputs, tiles large images, normalises,
seeds the random number generators and writes model files.

This module does not import torch at import time, so that listing backends
stays cheap; torch is imported when a backend trains or predicts.
"""

import dataclasses
import json

__all__ = ["Backend", "Prediction", "CAPABILITIES", "UNIT_KINDS"]

#: Capabilities a backend may declare.
CAPABILITIES = frozenset(
    {
        "reconstruct",  # predict(): dirty image -> sky model
        "draws",  # predict() returns n_samples draws (Prediction.samples); n_samples > 1 allowed
        "std",  # predict() returns one estimate with its standard deviation (Prediction.std)
        "sample",  # sample(): unconditional draws from the learned sky prior
        "generate",  # generate(): sky model -> synthetic dirty images
        "deblend",  # predict() also returns one model per source, and takes positions= (one list per image)
        "needs_training",  # predict()/sample() only after fit() or a model file
        "needs_psf",  # predict() needs the point-spread function
        "paired",  # fit() needs (input, target) pairs; else skies alone, whose unit is the target's
    }
)

# Capabilities that were renamed, with the message that says what to use.
_RENAMED = {
    "uncertainty": "'uncertainty' was split in two: declare 'draws' if predict() returns samples, "
    "'std' if it returns a standard deviation with its estimate",
}

def takes_keyword(function, name):
    """Whether ``function`` accepts the keyword argument ``name``."""
    import inspect

    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: cannot tell, so trust it
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


#: Units a Prediction field can be in: ``"model"`` is the unit of the sky
#: model (Jy/pixel for a Jy/beam input), ``"input"`` that of the dirty image
#: (Jy/beam), for maps such as a residual or a restored image.
UNIT_KINDS = ("model", "input")


@dataclasses.dataclass
class Prediction:
    """What `Backend.predict` returns for a batch of ``B`` images.

    Give either ``samples`` (backends with ``draws``) or ``mean`` (with a
    ``std`` for backends with ``std``). Every array is in normalised units:
    the front door multiplies them by the normalisation scale and attaches
    the unit each is in (see ``units``).

    Attributes
    ----------
    samples : torch.Tensor or None
        ``(n_samples, B, ny, nx)`` draws of the sky model; the front door
        aggregates them (median or mean) and takes their standard deviation
        as the uncertainty.
    mean : torch.Tensor or None
        ``(B, ny, nx)`` point estimate, for backends that do not sample.
    std : torch.Tensor or None
        ``(B, ny, nx)`` one-sigma uncertainty of ``mean``, in the estimate's unit.
    components : list of torch.Tensor or None
        For ``deblend`` backends: one ``(n_sources, ny, nx)`` tensor per image,
        each plane the model of one source; their sum is the sky model. Their
        ``predict`` also takes ``positions=``, one list of pixel ``(x, y)``
        per image, when the user gives them (see :doc:`/writing_a_backend`).
    extras : dict of str to torch.Tensor
        Further ``(B, ny, nx)`` maps a method produces (a residual, a restored
        image); they come back in the result's ``extras``, each with its unit.
    units : dict of str to {"model", "input"}
        The unit of the estimate (key ``"estimate"``: samples, mean, std and
        components; ``"model"`` by default) and of every extra (no default:
        each must be declared). ``"model"`` means the sky model's unit: for a
        Jy/beam dirty image, Jy/pixel, as a deconvolved model is (each pixel
        holds the flux density of the sky within it). ``"input"`` means the
        dirty image's unit: a residual, a restored or a smoothed image are in
        Jy/beam. A method whose output is a filtered image rather than a
        model declares ``{"estimate": "input"}``, else its output would be
        labelled Jy/pixel.
    meta : list of dict or None
        One dict per image of plain values (finite numbers, booleans,
        printable ASCII strings; any name) describing the prediction (a
        fitted beam, the iterations run); the front door writes them as FITS
        cards into the result's ``meta``. Names of cards the front door
        writes itself (``RR*``, ``BMAJ``/``BMIN``/``BPA``, WCS and structural
        cards) are refused.
    """

    samples: object = None
    mean: object = None
    std: object = None
    components: object = None
    extras: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)
    meta: list = None

    def __post_init__(self):
        if (self.samples is None) == (self.mean is None):
            raise ValueError("A Prediction holds either samples or a mean, not both or neither.")
        if self.std is not None and self.mean is None:
            raise ValueError("A Prediction's std goes with a mean.")
        ref = self.samples[0] if self.samples is not None else self.mean
        if ref.ndim != 3:
            raise ValueError(f"Prediction arrays must be (batch, ny, nx), got shape {tuple(ref.shape)}")
        for name, arr in [("std", self.std), *self.extras.items()]:
            if arr is not None and tuple(arr.shape) != tuple(ref.shape):
                raise ValueError(
                    f"Prediction {name} has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
                )
        self.units = {"estimate": "model", **self.units}
        unknown = set(self.units) - {"estimate", *self.extras}
        if unknown:
            raise ValueError(f"Prediction.units names {sorted(unknown)}, which are neither 'estimate' nor extras")
        undeclared = sorted(set(self.extras) - set(self.units))
        if undeclared:
            raise ValueError(
                f"Declare the unit of the extra map(s) {undeclared} in Prediction.units: 'input' (the "
                "dirty image's unit, e.g. Jy/beam: a residual) or 'model' (the sky model's, e.g. Jy/pixel)"
            )
        for name, kind in self.units.items():
            if kind not in UNIT_KINDS:
                raise ValueError(f"Prediction.units[{name!r}] = {kind!r}; use one of {UNIT_KINDS}")
        if self.meta is not None:
            from .provenance import check_backend_meta

            if len(self.meta) != ref.shape[0]:
                raise ValueError(f"Prediction.meta has {len(self.meta)} entries for {ref.shape[0]} images")
            # Checked here, at the backend's first call, not after the whole prediction.
            self.meta = [check_backend_meta(m) for m in self.meta]


class Backend:
    """Base class of reconstruction backends.

    Subclasses set the class attributes below, build their networks in
    ``__init__`` from ``self.config``, and implement the methods their
    capabilities promise: `predict` for ``reconstruct``, `sample` for
    ``sample``, `generate` for ``generate``, and `train_step` (with
    `evaluate_step` for validation) for ``needs_training``; the trainer
    (`radiorecon.training.Trainer`) runs the epochs.

    Parameters
    ----------
    preset : str, optional
        Name of a set of configuration values in `presets` (e.g. a
        published network size); ``config`` overrides it in turn.
    **config
        Overrides of `default_config`. Keys outside it are refused, and
        values must be JSON-serialisable, since the config is stored in model
        files.

    Attributes
    ----------
    capabilities : frozenset of str
        Subset of `CAPABILITIES`.
    version : str
        Version of the backend's model format, stored in model files. Bump it
        when a change makes old state incompatible; a newer file is refused.
    psf_factor : int
        The PSF reaches `predict` at ``psf_factor`` times the tile size,
        ``(B, f * ty, f * tx)`` for ``f = psf_factor``, normalised to a peak
        of 1 at pixel ``(f * ty // 2, f * tx // 2)`` (for ``f = 1`` and a
        64x64 tile: pixel (32, 32); for ``f = 2``: (64, 64) of 128x128). 2
        lets CLEAN subtract a source's sidelobes across the whole image.
    input_scale : {"noise", "peak", None}
        How `~radiorecon.Reconstructor.fit` sets the normalisation
        (`~radiorecon.normalisation.Normalisation`): inputs and targets are
        divided by the median robust noise of the training inputs (dirty
        images, so networks work in units of the noise), by their median
        peak (noise-free skies, for unpaired training), or not at all (None).
        Outputs are multiplied back.
    tile_shape : tuple of int or None
        ``(ny, nx)`` size the method works on. Larger images are cut into
        overlapping tiles of this size and stitched; smaller ones are padded
        with zeros. `None` means any size, in one piece.
    max_tile_shape : tuple of int or None
        For methods of any size (``tile_shape`` None): images larger than
        this are cut into overlapping tiles of at most this size, which
        bounds memory and lets progress show; smaller ones go whole.
    tile_multiple : int
        Tiles start at multiples of this many pixels: the cell of a method
        that bins or downsamples its input, whose output moves with the
        image only by whole cells (8 for STAR and the DDPM).
    tile_margin : int
        Pixels of context a prediction needs on each side to be right: the
        overlap between tiles is at least twice this.
    default_config : dict
        Every configuration key with its default value.
    presets : dict of str to dict
        Named partial configurations. The stored config is always the full,
        merged one, so model files do not depend on preset definitions.
    min_batch_size : int
        The smallest training batch every loss term works on (STAR's
        distance correlation needs 4 images); `~radiorecon.Reconstructor.fit`
        refuses a smaller ``batch_size``.
    inference_keys : frozenset of str
        Configuration keys that only steer prediction (a sampler, its number
        of steps), which `set_config` may change on a trained model. A
        backend without networks (`modules` empty) may change any key.
    tuning_keys : frozenset of str
        Configuration keys that steer training without shaping the networks
        (the learning rate), which `set_config` may also change on a trained
        model: to fine-tune it further at another rate
        (``fit(..., warm_start=True)``).
    """

    capabilities = frozenset()
    version = "1"
    tile_shape = None
    max_tile_shape = None
    tile_multiple = 1
    tile_margin = 0
    psf_factor = 1
    input_scale = "noise"
    default_config = {}
    presets = {}
    inference_keys = frozenset()
    tuning_keys = frozenset({"learning_rate"})
    min_batch_size = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for old in set(cls.capabilities) & set(_RENAMED):
            raise TypeError(f"{cls.__name__} declares the capability {old!r}: {_RENAMED[old]}")
        for method in ("predict", "generate", "sample"):
            if method in vars(cls) and not takes_keyword(vars(cls)[method], "draws"):
                raise TypeError(
                    f"{cls.__name__}.{method}() does not take draws=: since radiorecon 0.1 the front door "
                    "passes each call its random generators (radiorecon.seeding.Draws); add the keyword "
                    "and draw random numbers from it (see 'Writing a backend')"
                )
        predict = getattr(cls, "predict", None)
        if "deblend" in cls.capabilities and predict is not None and not takes_keyword(predict, "positions"):
            raise TypeError(
                f"{cls.__name__} declares 'deblend' but its predict() does not take positions=: the front "
                "door passes each image's source positions that way (see 'Writing a backend')"
            )
        unknown = set(cls.capabilities) - CAPABILITIES
        if unknown:
            raise TypeError(
                f"{cls.__name__} declares unknown capabilities {sorted(unknown)}; "
                f"choose among {sorted(CAPABILITIES)}"
            )
        cls.capabilities = frozenset(cls.capabilities)

    def __init__(self, preset=None, **config):
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(
                    f"Unknown preset {preset!r} for backend {type(self).__name__}; "
                    f"choose among {sorted(self.presets) or 'none'}"
                )
            config = {**self.presets[preset], **config}
        self.config = self._merged(self.default_config, config)
        self.device = "cpu"
        self.check_config()

    def _merged(self, base, changes):
        """``base`` updated with ``changes``, whose keys must be known and values JSON-serialisable."""
        unknown = set(changes) - set(self.default_config)
        if unknown:
            raise TypeError(
                f"Unknown configuration for backend {type(self).__name__}: "
                f"{', '.join(sorted(unknown))}. Valid keys: "
                f"{', '.join(sorted(self.default_config)) or 'none'}."
            )
        try:
            # Round trip so the stored config is exactly what a file holds.
            return json.loads(json.dumps({**base, **changes}, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Backend configuration must be JSON-serialisable: {exc}") from None

    def __repr__(self):
        return f"<{type(self).__name__} {self.config}>"

    def tile_for(self, shape):
        """The ``(ty, tx)`` tiles an image of ``shape`` is cut into (see `tile_shape`)."""
        from .tiling import tile_size

        if self.tile_shape is not None:
            return tuple(self.tile_shape)
        if self.max_tile_shape is None:
            return tuple(shape)
        return tuple(
            tile_size(n, m, self.tile_margin, self.tile_multiple) for n, m in zip(shape, self.max_tile_shape)
        )

    def set_config(self, **params):
        """Change configuration values that do not alter the trained state.

        Raises
        ------
        TypeError
            For keys outside `default_config` or values that are not
            JSON-serialisable.
        ValueError
            For keys outside `inference_keys` and `tuning_keys` of a backend
            with networks: they shape the networks or their training, so
            changing them would leave the weights inconsistent with the
            stored config.
        """
        new = self._merged(self.config, params)
        free = (set(self.inference_keys) | set(self.tuning_keys)) & set(self.default_config)
        fixed = set(params) - free if self.modules() else set()
        if fixed:
            raise ValueError(
                f"{', '.join(sorted(fixed))} of backend {type(self).__name__} shape(s) the trained networks "
                f"and cannot change after construction; only {sorted(free) or 'no keys'} can. "
                "Build (and train) a new model for the others."
            )
        old, self.config = self.config, new
        try:
            self.check_config()
        except Exception:
            self.config = old
            raise

    def check_config(self):
        """Check the values of `config`; subclasses raise ValueError for bad ones.

        Called at construction and by `set_config`, which then restores the
        previous configuration.
        """

    # -- state -------------------------------------------------------------

    def modules(self):
        """The `torch.nn.Module` objects that hold the backend's state, by name.

        The default `state_dict`, `load_state_dict`, `to`, `train` and `eval`
        work on these. A backend without networks returns ``{}``.
        """
        return {}

    def state_dict(self):
        """Tensors to store in a model file, by name."""
        state = {}
        for prefix, module in self.modules().items():
            for key, value in module.state_dict().items():
                state[f"{prefix}.{key}"] = value
        return state

    def load_state_dict(self, state):
        """Restore tensors saved by `state_dict`.

        Raises
        ------
        KeyError
            If tensors are missing or unexpected (reported by torch).
        """
        grouped = {name: {} for name in self.modules()}
        for key, value in state.items():
            prefix, _, rest = key.partition(".")
            if prefix not in grouped:
                raise KeyError(f"unexpected tensor {key!r} for backend {type(self).__name__}")
            grouped[prefix][rest] = value
        for name, module in self.modules().items():
            module.load_state_dict(grouped[name])

    def to(self, device):
        """Move the backend's networks to ``device`` and return self."""
        for module in self.modules().values():
            module.to(device)
        self.device = str(device)
        return self

    def train(self):
        for module in self.modules().values():
            module.train()

    def eval(self):
        for module in self.modules().values():
            module.eval()

    def reset_parameters(self):
        """Draw fresh initial weights, as construction does.

        `~radiorecon.Reconstructor.fit` calls it under the training seed, so
        the same seed gives the same initial weights and the same model. The
        default calls ``reset_parameters()`` of every submodule that has one
        (torch's layers do), in construction order; a backend with other
        random initialisation, or with tied copies of a network, overrides it.
        """
        for module in self.modules().values():
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()

    # -- training ----------------------------------------------------------
    #
    # The trainer (radiorecon.training) runs the epochs. Before the first
    # one it sets ``self.optimizers = self.configure_optimizers()`` and calls
    # begin_fit(); train_step() then finds its optimisers there.

    def configure_optimizers(self):
        """Optimisers for training, by name; created when training starts.

        The default is one Adam optimiser (``self.optimizers["optimizer"]``)
        over every parameter of `modules`, with the learning rate
        ``self.config["learning_rate"]`` (1e-3 if the backend has no such
        key), and none for a backend without trainable parameters (one that
        gathers statistics in buffers).
        """
        import torch

        params = [p for m in self.modules().values() for p in m.parameters()]
        if not params:
            return {}
        lr = self.config.get("learning_rate", 1e-3)
        return {"optimizer": torch.optim.Adam(params, lr=lr)}

    def train_step(self, inputs, targets):
        """One optimisation step on a batch; returns named losses (floats).

        ``inputs`` (and ``targets``, `None` for backends that are not
        ``paired``) are ``(B, ny, nx)`` normalised tensors on the backend's
        device. Step the optimisers of ``self.optimizers`` here.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement train_step")

    def evaluate_step(self, inputs, targets):
        """Named losses (floats) on a validation batch, without training."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate_step")

    def begin_fit(self, *, resumed=False):
        """Called once before the first epoch of a `fit`, after the optimisers exist.

        ``resumed`` is True when the weights were just restored from a
        checkpoint (its `training_state` is restored right after), so a
        backend that resets statistics here (an EMA step count, sums of a
        closed-form estimator) must keep them then.
        """

    def end_fit(self):
        """Called after the last epoch."""

    def training_state(self):
        """What resuming needs besides `state_dict`: by default the optimiser states.

        A nested dict whose leaves are tensors, numbers, strings, lists or
        dicts; the trainer stores it in checkpoints without pickle and gives
        it back to `load_training_state` on resume.
        """
        return {name: opt.state_dict() for name, opt in getattr(self, "optimizers", {}).items()}

    def load_training_state(self, state):
        """Restore what `training_state` returned (the optimiser states)."""
        for name, opt in getattr(self, "optimizers", {}).items():
            if name in state:
                opt.load_state_dict(state[name])

    # -- inference ---------------------------------------------------------

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        """Reconstruct a batch of images.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(B, ny, nx)`` normalised dirty images, NaN-free.
        n_samples : int
            Number of draws, for backends with ``draws``. The front door
            calls with 1 only when one sample was asked for (it splits larger
            requests into calls of at least 2), so a backend may answer 1
            with its direct, most probable estimate.
        psf : torch.Tensor or None
            ``(B, f * ny, f * nx)`` point-spread functions (``f`` =
            `psf_factor`), peak 1 at pixel ``(f * ny // 2, f * nx // 2)``,
            for backends that need it.
        draws : `~radiorecon.seeding.Draws`
            Random generators, one per (sample, image) of the call: draw
            every random number of the prediction with ``draws.randn(...)``
            (shape ``(n_samples, B, ...)``) so that results depend on the
            seed alone, not on batching.

        Returns
        -------
        Prediction
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def network_evaluations(self, n_samples):
        """Forward passes of a network that one ``predict`` of one image costs.

        The benchmark reports it next to the time. The default is one per
        sample for backends with networks (`modules`) and none otherwise;
        iterative samplers override it (steps times samples).
        """
        return n_samples if self.modules() else 0

    def generate(self, sky, *, n_samples=1, like=None, draws=None):
        """Synthetic dirty images of sky models (capability ``generate``).

        Parameters
        ----------
        sky : torch.Tensor
            ``(B, ny, nx)`` normalised sky models.
        n_samples : int
            Dirty images per sky model.
        like : torch.Tensor or None
            ``(B, ny, nx)`` normalised dirty images whose instrument and
            noise to imitate; None draws them from the learned prior.
        draws : `~radiorecon.seeding.Draws`
            Generators for ``(n_samples, B)`` draws, as for `predict`.

        Returns
        -------
        torch.Tensor
            ``(n_samples, B, ny, nx)``, normalised units.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement generate")

    def sample(self, n, *, shape, draws=None):
        """Draw ``n`` sky images of ``shape`` from the learned prior.

        ``draws`` holds ``(1, n)`` generators, one per image. A backend whose
        prior can be conditioned on the skies' total flux also takes
        ``flux=``, an ``(n,)`` tensor in normalised units, which the front
        door passes only when the user gives one (and refuses for backends
        whose ``sample`` lacks the keyword); a model that cannot take it
        raises `~radiorecon.exceptions.InputError`.

        Returns
        -------
        torch.Tensor
            ``(n, ny, nx)``, normalised units.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample")
