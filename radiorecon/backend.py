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
import math

__all__ = ["Backend", "Prediction", "CAPABILITIES"]

#: Capabilities a backend may declare.
CAPABILITIES = frozenset(
    {
        "reconstruct",  # predict(): dirty image -> sky model
        "uncertainty",  # predict() gives several samples, or a std
        "sample",  # sample(): unconditional draws from the learned sky prior
        "generate",  # generate(): sky model -> synthetic dirty images
        "deblend",  # predict() also returns one model per source
        "needs_training",  # predict()/sample() only after fit() or a model file
        "needs_psf",  # predict() needs the point-spread function
        "paired",  # fit() needs (input, target) pairs; else inputs alone
    }
)


@dataclasses.dataclass
class Prediction:
    """What `Backend.predict` returns for a batch of ``B`` images.

    Give either ``samples`` or ``mean`` (with an optional ``std``).

    Attributes
    ----------
    samples : torch.Tensor or None
        ``(n_samples, B, ny, nx)`` draws of the sky model; the front door
        aggregates them (median or mean) and takes their standard deviation
        as the uncertainty.
    mean : torch.Tensor or None
        ``(B, ny, nx)`` point estimate, for backends that do not sample.
    std : torch.Tensor or None
        ``(B, ny, nx)`` one-sigma uncertainty that goes with ``mean``.
    components : list of torch.Tensor or None
        For ``deblend`` backends: one ``(n_sources, ny, nx)`` tensor per image,
        each plane the model of one source; their sum is the sky model.
    extras : dict of str to torch.Tensor
        Further ``(B, ny, nx)`` maps a method produces (a residual, a restored
        image); they come back in the result's ``extras``.
    meta : list of dict or None
        One dict per image of FITS-able scalars (keys of at most 8
        characters, e.g. a fitted clean beam) added to the result's ``meta``.
    """

    samples: object = None
    mean: object = None
    std: object = None
    components: object = None
    extras: dict = dataclasses.field(default_factory=dict)
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


class Backend:
    """Base class of reconstruction backends.

    Subclasses set the class attributes below, build their networks in
    ``__init__`` from ``self.config``, and implement the methods their
    capabilities promise: `predict` for ``reconstruct``, `sample` for
    ``sample``, and `train_step` (or the whole of `fit`) for
    ``needs_training``.

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
        The PSF reaches the backend at this many times the tile size (2 lets
        CLEAN subtract a source's sidelobes across the whole image).
    input_scale : {"noise", "peak", None}
        How `~radiorecon.Reconstructor.fit` sets the normalisation: the
        median robust noise of the training inputs (dirty images), their
        median peak (noise-free skies, for unpaired training), or none.
    tile_shape : tuple of int or None
        ``(ny, nx)`` size the method works on. Larger images are cut into
        overlapping tiles of this size and stitched; smaller ones are padded
        with zeros. `None` means any size, in one piece.
    tile_margin : int
        Pixels of context a prediction needs on each side to be right: the
        overlap between tiles is at least twice this.
    default_config : dict
        Every configuration key with its default value.
    presets : dict of str to dict
        Named partial configurations. The stored config is always the full,
        merged one, so model files do not depend on preset definitions.
    inference_keys : frozenset of str
        Configuration keys that only steer prediction (a sampler, its number
        of steps), which `set_config` may change on a trained model. A
        backend without networks (`modules` empty) may change any key.
    """

    capabilities = frozenset()
    version = "1"
    tile_shape = None
    tile_margin = 0
    psf_factor = 1
    input_scale = "noise"
    default_config = {}
    presets = {}
    inference_keys = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
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

    def set_config(self, **params):
        """Change configuration values that do not alter the trained state.

        Raises
        ------
        TypeError
            For keys outside `default_config` or values that are not
            JSON-serialisable.
        ValueError
            For keys outside `inference_keys` of a backend with networks:
            they shape the networks or their training, so changing them
            would leave the weights inconsistent with the stored config.
        """
        new = self._merged(self.config, params)
        fixed = set(params) - set(self.inference_keys) if self.modules() else set()
        if fixed:
            raise ValueError(
                f"{', '.join(sorted(fixed))} of backend {type(self).__name__} shape(s) the trained networks "
                f"and cannot change after construction; only {sorted(self.inference_keys) or 'no keys'} can. "
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

    # -- training ----------------------------------------------------------

    def configure_optimizers(self):
        """Optimisers used by the default `fit`, by name.

        The default is one Adam optimiser over every parameter of `modules`,
        with the learning rate ``self.config["learning_rate"]`` (1e-3 if the
        backend has no such key).
        """
        import torch

        params = [p for m in self.modules().values() for p in m.parameters()]
        lr = self.config.get("learning_rate", 1e-3)
        return {"optimizer": torch.optim.Adam(params, lr=lr)}

    def train_step(self, inputs, targets):
        """One optimisation step on a batch; returns named losses (floats).

        ``targets`` is `None` for backends that are not ``paired``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement train_step")

    def evaluate_step(self, inputs, targets):
        """Named losses (floats) on a validation batch, without training."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate_step")

    def begin_fit(self, *, resumed=False):
        """Prepare training; the default creates the optimisers.

        Called before the first epoch run. ``resumed`` is True when the
        weights were just restored from a checkpoint (the optimiser states
        are restored right after, with `load_training_state`), so a backend
        that resets statistics here must keep them.
        """
        self.optimizers = self.configure_optimizers()

    def end_fit(self):
        """Called after the last epoch."""

    def training_state(self):
        """Nested dict of what resuming needs besides `state_dict` (optimiser states).

        Leaves are tensors, numbers, strings, lists or dicts; the front door
        stores them without pickle.
        """
        return {name: opt.state_dict() for name, opt in getattr(self, "optimizers", {}).items()}

    def load_training_state(self, state):
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    def fit(
        self,
        train,
        *,
        epochs,
        batch_size,
        validation=None,
        initial_epoch=0,
        seed=None,
        progress=True,
        callback=None,
    ):
        """Train on a dataset; the default runs `train_step` over shuffled batches.

        Parameters
        ----------
        train : torch.utils.data.Dataset
            Items are ``(input, target)`` pairs of float32 ``(ny, nx)`` tensors
            in normalised units (``target`` an empty tensor when unpaired).
        epochs : int
            Epoch to stop after (counting from zero, so ``epochs`` in all).
        batch_size : int
        validation : torch.utils.data.Dataset or None
            Scored with `evaluate_step` after each epoch; logs get ``val_``.
        initial_epoch : int
            First epoch to run: larger than zero when resuming.
        seed : int or None
            Fixes the order of batches in each epoch.
        progress : bool
            Show a progress bar.
        callback : callable or None
            Called as ``callback(epoch, logs)`` after each epoch; the front
            door uses it to write checkpoints.

        Returns
        -------
        history : list of dict
            Mean losses per epoch run.
        """
        import torch
        from tqdm.auto import tqdm

        paired = "paired" in self.capabilities
        history = []
        total = math.ceil(len(train) / batch_size)
        for epoch in range(initial_epoch, epochs):
            # Seeding the order per epoch keeps a resumed run identical to an
            # uninterrupted one.
            gen = torch.Generator().manual_seed((0 if seed is None else seed) * 100003 + epoch)
            if seed is None:
                gen.seed()
            loader = torch.utils.data.DataLoader(
                train, batch_size=batch_size, shuffle=True, generator=gen
            )
            self.train()
            sums, count = {}, 0
            bar = tqdm(
                loader,
                total=total,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not progress,
                leave=False,
                unit="batch",
            )
            for inputs, targets in bar:
                inputs = inputs.to(self.device)
                targets = targets.to(self.device) if paired else None
                losses = self.train_step(inputs, targets)
                n = inputs.shape[0]
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * n
                count += n
                bar.set_postfix({k: f"{v / count:.4g}" for k, v in sums.items()}, refresh=False)
            bar.close()
            logs = {key: value / count for key, value in sums.items()}
            if validation is not None:
                logs.update(
                    {f"val_{k}": v for k, v in self.evaluate(validation, batch_size).items()}
                )
            logs["epoch"] = epoch + 1
            history.append(logs)
            if callback is not None:
                callback(epoch, logs)
        return history

    def evaluate(self, data, batch_size):
        """Mean of `evaluate_step` over a dataset, without gradients."""
        import torch

        paired = "paired" in self.capabilities
        self.eval()
        sums, count = {}, 0
        with torch.no_grad():
            for inputs, targets in torch.utils.data.DataLoader(data, batch_size=batch_size):
                inputs = inputs.to(self.device)
                targets = targets.to(self.device) if paired else None
                for key, value in self.evaluate_step(inputs, targets).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * inputs.shape[0]
                count += inputs.shape[0]
        return {key: value / count for key, value in sums.items()}

    # -- inference ---------------------------------------------------------

    def predict(self, inputs, *, n_samples=1, psf=None):
        """Reconstruct a batch of images.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(B, ny, nx)`` normalised dirty images, NaN-free.
        n_samples : int
            Number of draws, for backends with ``uncertainty``. The front
            door calls with 1 only when one sample was asked for (it splits
            larger requests into calls of at least 2), so a backend may
            answer 1 with its direct, most probable estimate.
        psf : torch.Tensor or None
            ``(B, f * ny, f * nx)`` point-spread functions (``f`` =
            `psf_factor`), peak 1 at pixel ``(f * ny // 2, f * nx // 2)``,
            for backends that need it.

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

    def generate(self, sky, *, n_samples=1, like=None):
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

        Returns
        -------
        torch.Tensor
            ``(n_samples, B, ny, nx)``, normalised units.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement generate")

    def sample(self, n, *, shape):
        """Draw ``n`` sky images of ``shape`` from the learned prior.

        Returns
        -------
        torch.Tensor
            ``(n, ny, nx)``, normalised units.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample")
