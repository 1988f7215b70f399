"""Training: data sets for the backend, epochs, seeds, optimisers and checkpoints.

`~radiorecon.Reconstructor.fit` reads and normalises the data, then hands a
`Trainer` the backend. The trainer draws initial weights under the seed,
creates the optimisers when training starts (`Backend.configure_optimizers`),
runs the epochs of `Backend.train_step`, and writes a checkpoint after each
epoch holding the weights, the optimiser states and the random number
generators of the CPU and of every CUDA device, so that an interrupted run
resumes to exactly the weights of an uninterrupted one.
"""

import logging
import math
import os

import numpy as np

from . import modelfile
from .exceptions import ModelFileError
from .runtime import resolve_device
from .seeding import seeded

__all__ = ["Trainer", "training_set", "training_domain", "is_dataset", "Scaled"]

log = logging.getLogger("radiorecon")

# Names of the generator states in a checkpoint's tensors.
_CPU_RNG = "train/rng"
_CUDA_RNG = "train/cuda_rng/"


def is_dataset(obj):
    """Whether ``obj`` is a data set of items (e.g. simulated pairs), not images.

    Data sets index to items lazily; arrays, lists, paths and NDData are
    images or lists of images.
    """
    from astropy.io import fits

    return (
        hasattr(obj, "__getitem__")
        and hasattr(obj, "__len__")
        and not isinstance(obj, (np.ndarray, list, tuple, str, bytes, os.PathLike, fits.HDUList))
        and not hasattr(obj, "data")
    )


def _stack(inputs, role):
    """Training images as one float32 ``(N, ny, nx)`` array, the unit they share, and their domain."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        # A stack of images (or a Quantity): already numbers, without beam or WCS.
        unit = getattr(inputs, "unit", None)
        return np.nan_to_num(np.asarray(getattr(inputs, "value", inputs), dtype=np.float32)), unit, None
    from .io import read_image

    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    arrays, images, unit = [], [], None
    for i, item in enumerate(items):
        image = read_image(item)
        data = np.nan_to_num(np.asarray(image.data, dtype=np.float64))
        if image.unit is not None:
            unit = unit or image.unit
            data = data * image.unit.to(unit)
        if arrays and data.shape != arrays[0].shape:
            raise ValueError(
                f"Training {role} must share one shape: item {i} is {data.shape}, item 0 is {arrays[0].shape}"
            )
        arrays.append(data.astype(np.float32))
        images.append(image)
    if not arrays:
        raise ValueError(f"No training {role} given")
    return np.stack(arrays), unit, _images_domain(images, arrays, unit)


def _median(values):
    """The median of the known (non-None) values as a float, or None if none is known."""
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def _images_domain(images, arrays, unit):
    """The domain of training images read from FITS/NDData: medians of their beams, pixels and noise."""
    import astropy.units as u

    from ._noise import robust_std
    from .io import get_beam
    from .pipeline import pixel_scale_arcsec

    beams = []
    for image in images:
        try:
            beams.append(get_beam(image))
        except ValueError:  # malformed beam cards: unknown here; predict warns about them
            beams.append(None)
    noise = [None]
    if unit is not None and unit.is_equivalent(u.Jy / u.beam):
        factor = unit.to(u.Jy / u.beam)
        noise = [robust_std(a) * factor for a in arrays]
    presets = {image.meta.get("SIMPRSET") for image in images if image.meta is not None}
    return _domain_of(
        preset=presets.pop() if len(presets) == 1 else None,
        beam_major_arcsec=_median([None if b is None else b.major.to_value(u.arcsec) for b in beams]),
        beam_minor_arcsec=_median([None if b is None else b.minor.to_value(u.arcsec) for b in beams]),
        pixel_scale_arcsec=_median([pixel_scale_arcsec(image.wcs) for image in images]),
        noise_jy_beam=_median(noise),
    )


def _domain_of(**fields):
    """A training domain (see `training_domain`), or None when nothing of it is known."""
    domain = {key: fields.get(key) for key in modelfile.DOMAIN_KEYS}
    if all(value is None for value in domain.values()):
        return None
    return modelfile.check_domain(domain)


def training_domain(data):
    """What a model learned from: the simulator preset, beam, pixel size and noise of its data.

    Parameters
    ----------
    data : data set
        A `~radiorecon.simulate.SimulatedPairs` (the beam and noise at the
        preset's central declination), a `~radiorecon.simulate.SimulatedDataset`
        (their medians over the images), or any data set with a ``domain``
        attribute (a dict as returned here, or None). Lists of FITS images
        or NDData get theirs in `training_set`, from their headers.

    Returns
    -------
    domain : dict or None
        ``preset`` (str or None), ``beam_major_arcsec``,
        ``beam_minor_arcsec``, ``pixel_scale_arcsec`` (arcsec) and
        ``noise_jy_beam`` (image noise rms, Jy/beam), each None where
        unknown; None when nothing is known (a plain array, a foreign data
        set).
    """
    import astropy.units as u

    from .simulate import SimulatedDataset, SimulatedPairs
    from .simulate.engine import setup_for

    if isinstance(data, SimulatedPairs):
        params = data.parameters
        setup = setup_for(params)
        # The beam changes slowly with the phase centre's declination
        # (~0.1 % per 0.25 deg); the field's centre stands for all.
        cov = setup.coverage(setup.dec_bin(params["declination"].to_value(u.deg)))
        return _domain_of(
            preset=data.preset, beam_major_arcsec=cov.beam.major.to_value(u.arcsec),
            beam_minor_arcsec=cov.beam.minor.to_value(u.arcsec), pixel_scale_arcsec=setup.pixel,
            noise_jy_beam=setup.image_rms(cov),
        )
    if isinstance(data, SimulatedDataset):
        # One beam and noise per PSF of the bank; each counted as often as images use it.
        index = np.asarray(data.images["psf_index"])
        _, first, counts = np.unique(index, return_index=True, return_counts=True)
        beams = [data.beam(int(i)) for i in first]
        noise = [data.image(int(i)).meta["NOISERMS"] for i in first]

        def median(values):
            return float(np.median(np.repeat(values, counts)))

        return _domain_of(
            preset=data.config.get("preset"),
            beam_major_arcsec=median([b.major.to_value(u.arcsec) for b in beams]),
            beam_minor_arcsec=median([b.minor.to_value(u.arcsec) for b in beams]),
            pixel_scale_arcsec=float(data.config["pixel_scale_arcsec"]), noise_jy_beam=median(noise),
        )
    domain = getattr(data, "domain", None)
    return None if domain is None else modelfile.check_domain(domain)


def training_set(inputs, targets, paired):
    """A data set of float32 tensor pairs, and the units of inputs and targets.

    Parameters
    ----------
    inputs : array, list of images or data set
        See `~radiorecon.Reconstructor.fit`.
    targets : array, list of images or None
    paired : bool
        Whether items are ``(input, target)`` pairs; unpaired items get an
        empty target.

    Returns
    -------
    dataset : sequence of (torch.Tensor, torch.Tensor)
    units : dict
        ``{"input": str or None, "target": str or None}``.
    domain : dict or None
        The inputs' training domain (see `training_domain`): from a data
        set, or from the images' headers (beam cards, WCS) and pixels
        (robust noise, for inputs in Jy/beam); None for plain arrays.
    """
    import torch

    if is_dataset(inputs):
        if len(inputs) == 0:
            raise ValueError("The training data set is empty")
        units = dict(getattr(inputs, "units", {}) or {})
        first = inputs[0]
        if paired and not (isinstance(first, tuple) and len(first) == 2):
            raise ValueError("A paired backend needs a dataset whose items are (input, target) pairs")
        units = {"input": units.get("input"), "target": units.get("target")}
        return _Pairs(inputs, paired), units, training_domain(inputs)
    x, x_unit, domain = _stack(inputs, "inputs")
    if len(x) == 0:
        raise ValueError("No training inputs given")
    units = {"input": None if x_unit is None else x_unit.to_string(), "target": None}
    if not paired:
        return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(len(x), 0)), units, domain
    y, y_unit, _ = _stack(targets, "targets")
    if len(y) != len(x):
        raise ValueError(f"{len(x)} training inputs but {len(y)} targets")
    if y.shape[1:] != x.shape[1:]:
        raise ValueError(f"Inputs are {x.shape[1:]} but targets are {y.shape[1:]}")
    units["target"] = None if y_unit is None else y_unit.to_string()
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), units, domain


class _Pairs:
    """Adapts a data set of arrays (pairs or single images) to float32 tensor pairs."""

    def __init__(self, dataset, paired):
        self.dataset, self.paired = dataset, paired

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import torch

        def tensor(a):
            return torch.as_tensor(np.nan_to_num(np.asarray(a, dtype=np.float32)))

        item = self.dataset[i]
        if self.paired:
            x, y = item
            return tensor(x), tensor(y)
        return tensor(item[0] if isinstance(item, tuple) else item), torch.zeros(0)


class Scaled:
    """A data set of pairs seen through a `~radiorecon.normalisation.Normalisation`."""

    def __init__(self, dataset, normalisation, paired):
        self.dataset, self.normalisation, self.paired = dataset, normalisation, paired

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        forward = self.normalisation.forward
        return forward(x), (forward(y) if self.paired else y)


class Trainer:
    """Runs the epochs of a backend's `train_step`, with checkpoints.

    Parameters
    ----------
    backend : `~radiorecon.Backend`
    epochs : int
        Epoch to stop after (counting from zero, so ``epochs`` in all).
    batch_size : int
    seed : int or None
        Fixes the initial weights, the order of batches and the backend's
        random draws (torch's global generators).
    device : str
    progress : bool
        Show a progress bar per epoch.
    checkpoint : str or os.PathLike or None
        Model file written after every epoch; `read_checkpoint` resumes from it.
    """

    def __init__(self, backend, *, epochs, batch_size, seed=None, device="auto", progress=True, checkpoint=None):
        if batch_size < backend.min_batch_size:
            raise ValueError(
                f"batch_size={batch_size} is too small for backend {type(backend).__name__}: its losses need "
                f"batches of at least {backend.min_batch_size} images (see its min_batch_size)"
            )
        self.backend = backend
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.device = resolve_device(device)
        self.progress = progress
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)

    # -- checkpoints ---------------------------------------------------------

    def read_checkpoint(self, backend_name, restore):
        """The checkpoint's document and generator states, if the checkpoint exists.

        ``restore(doc, tensors, path)`` puts the weights and the rest of the
        model document back into the front door.

        Returns
        -------
        resume : tuple or None
            ``(doc, tensors)``; None when there is no checkpoint file yet.

        Raises
        ------
        ModelFileError
            If the file is a model file, or a checkpoint of another backend
            or configuration.
        """
        path = self.checkpoint
        if path is None or not os.path.exists(path):
            return None
        doc, tensors = modelfile.load(path)
        training = doc.get("training")
        if not isinstance(training, dict):
            raise ModelFileError(f"{path}: a model file, not a training checkpoint")
        epoch = training.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ModelFileError(f"{path}: checkpoint epoch {epoch!r} is not a non-negative integer")
        if doc.get("backend") != backend_name or doc.get("config") != self.backend.config:
            raise ModelFileError(
                f"{path}: checkpoint of backend {doc.get('backend')!r} with config {doc.get('config')}, "
                f"but this Reconstructor is {backend_name!r} with config {self.backend.config}"
            )
        restore(doc, {k: v for k, v in tensors.items() if not k.startswith("train/")}, path)
        return doc, tensors

    def _write_checkpoint(self, epoch, document):
        import torch

        tensors = dict(self.backend.state_dict())
        state = modelfile.flatten_state(self.backend.training_state(), tensors)
        tensors[_CPU_RNG] = torch.get_rng_state()
        if self.device.type == "cuda":
            for i, rng in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"{_CUDA_RNG}{i}"] = rng
        doc = document()
        doc["fitted"] = False
        doc["training"] = {"epoch": epoch, "epochs": self.epochs, "seed": self.seed, "state": state}
        modelfile.save(self.checkpoint, doc, tensors, overwrite=True)

    def _resume(self, doc, tensors):
        import torch

        path = self.checkpoint
        try:
            self.backend.load_training_state(modelfile.unflatten_state(doc["training"]["state"], tensors))
            if _CPU_RNG in tensors:
                torch.set_rng_state(tensors[_CPU_RNG])
            cuda = [tensors[k] for k in sorted(tensors) if k.startswith(_CUDA_RNG)]
            if cuda and self.device.type == "cuda":
                torch.cuda.set_rng_state_all(cuda)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: the checkpoint's training state is unreadable: {exc}") from None
        log.info("resuming from %s after epoch %d", path, doc["training"]["epoch"])
        return doc["training"]["epoch"]

    # -- the loop ------------------------------------------------------------

    def run(self, train, *, validation=None, resume=None, warm_start=False, document=None, on_epoch=None):
        """Train; returns the logs of the epochs run.

        Parameters
        ----------
        train, validation : sequence of (torch.Tensor, torch.Tensor)
            Normalised pairs (`training_set` seen through `Scaled`).
        resume : tuple or None
            What `read_checkpoint` returned.
        warm_start : bool
            Continue from the current weights instead of fresh ones.
        document : callable or None
            Returns the model document to store in checkpoints.
        on_epoch : callable or None
            Called as ``on_epoch(logs)`` after each epoch, before the checkpoint.
        """
        backend = self.backend
        history = []
        with seeded(self.seed, self.device):
            if resume is None and not warm_start:
                # Fresh weights drawn under the seed: the same seed gives the
                # same initialisation and so the same trained model.
                backend.reset_parameters()
            backend.to(self.device)
            backend.optimizers = backend.configure_optimizers()
            backend.begin_fit(resumed=resume is not None)
            initial_epoch = 0 if resume is None else self._resume(*resume)
            try:
                for epoch in range(initial_epoch, self.epochs):
                    logs = self._epoch(train, epoch)
                    if validation is not None:
                        logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
                    logs["epoch"] = epoch + 1
                    history.append(logs)
                    if on_epoch is not None:
                        on_epoch(logs)
                    if self.checkpoint is not None:
                        self._write_checkpoint(epoch + 1, document)
            except KeyboardInterrupt:
                if self.checkpoint is not None:
                    log.warning(
                        "training interrupted; call fit() again with checkpoint=%r to resume", self.checkpoint
                    )
                raise
            backend.end_fit()
        return history

    def _loader(self, data, epoch=None):
        import torch

        if epoch is None:
            return torch.utils.data.DataLoader(data, batch_size=self.batch_size)
        # Seeding the order per epoch keeps a resumed run identical to an
        # uninterrupted one.
        # (Reduced modulo 2**63 so that any valid seed fits torch's generator.)
        gen = torch.Generator().manual_seed(((0 if self.seed is None else self.seed) * 100003 + epoch) % 2**63)
        if self.seed is None:
            gen.seed()
        return torch.utils.data.DataLoader(data, batch_size=self.batch_size, shuffle=True, generator=gen)

    def _epoch(self, train, epoch):
        from tqdm.auto import tqdm

        backend = self.backend
        paired = "paired" in backend.capabilities
        backend.train()
        sums, counts = {}, {}
        bar = tqdm(
            self._loader(train, epoch),
            total=math.ceil(len(train) / self.batch_size),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        for inputs, targets in bar:
            inputs = inputs.to(self.device)
            targets = targets.to(self.device) if paired else None
            losses = backend.train_step(inputs, targets)
            n = inputs.shape[0]
            # Per loss: a term may be missing from some batches (too small for it).
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
                counts[key] = counts.get(key, 0) + n
            bar.set_postfix({k: f"{v / counts[k]:.4g}" for k, v in sums.items()}, refresh=False)
        bar.close()
        return {key: value / counts[key] for key, value in sums.items()}

    def evaluate(self, data):
        """Mean of `Backend.evaluate_step` over a data set, without gradients."""
        import torch

        backend = self.backend
        paired = "paired" in backend.capabilities
        backend.eval()
        sums, counts = {}, {}
        with torch.no_grad():
            for inputs, targets in self._loader(data):
                inputs = inputs.to(self.device)
                targets = targets.to(self.device) if paired else None
                for key, value in backend.evaluate_step(inputs, targets).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * inputs.shape[0]
                    counts[key] = counts.get(key, 0) + inputs.shape[0]
        return {key: value / counts[key] for key, value in sums.items()}
