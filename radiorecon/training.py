"""Training: data sets for the backend, epochs, seeds, optimisers and checkpoints.

`~radiorecon.Reconstructor.fit` reads and normalises the data, then hands a
`Trainer` the backend. The trainer draws initial weights under the seed,
creates the optimisers when training starts (`Backend.configure_optimizers`),
runs the epochs of `Backend.train_step`, and writes a checkpoint after each
epoch holding the weights, the optimiser states and the random number
generators of the CPU and of every CUDA device, so that an interrupted run
resumes to exactly the weights of an uninterrupted one.

With a ``torch.distributed`` process group, the same loop trains data-parallel:
every process gets its shard of each batch and gradients are averaged across
processes before the optimisers step (see `Trainer` and :doc:`/training`).
"""

import logging
import os

import numpy as np

from . import modelfile
from ._validate import check_int
from .exceptions import InputError, ModelFileError
from .runtime import resolve_device
from .seeding import seeded, stream_seed

__all__ = ["Trainer", "training_set", "training_domain", "is_dataset", "Scaled", "process_group"]

log = logging.getLogger("radiorecon")


def _rng_prefix(rank):
    """Where a process's generator states go among a checkpoint's tensors.

    Process 0 (or the only one) keeps the names of single-process
    checkpoints: ``train/rng`` and ``train/cuda_rng/<device>``.
    """
    return "train/" if rank == 0 else f"train/rank{rank}/"


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
        ``{"input": str or None, "target": str or None}``. Unpaired
        backends train on skies alone: the unit of their images is the
        target (sky) unit, and the input unit is left None (a data set's
        ``units["target"]``, else its ``units["input"]``, is that of its
        items), so that the model takes dirty images in the per-beam
        counterpart (see `radiorecon.pipeline.input_units`).
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
        if paired:
            units = {"input": units.get("input"), "target": units.get("target")}
        else:
            units = {"input": None, "target": units.get("target") or units.get("input")}
        return _Pairs(inputs, paired), units, training_domain(inputs)
    x, x_unit, domain = _stack(inputs, "inputs")
    if len(x) == 0:
        raise ValueError("No training inputs given")
    x_unit = None if x_unit is None else x_unit.to_string()
    if not paired:
        units = {"input": None, "target": x_unit}
        return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(len(x), 0)), units, domain
    units = {"input": x_unit, "target": None}
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


def process_group(distributed):
    """``(rank, world_size)`` of the data-parallel training ``distributed`` asks for, or None.

    Parameters
    ----------
    distributed : bool or None
        True: train data-parallel in the initialised ``torch.distributed``
        process group; False: train in this process alone; None: the former
        when a process group of more than one process is initialised.

    Raises
    ------
    TypeError
        If ``distributed`` is not a bool or None.
    InputError
        If ``distributed=True`` but no process group is initialised.
    """
    import torch.distributed as dist

    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True, False or None, not {distributed!r}")
    ready = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = ready and dist.get_world_size() > 1
    if not distributed:
        return None
    if not ready:
        raise InputError(
            "distributed=True, but torch.distributed has no process group: call "
            "torch.distributed.init_process_group() in every process first (see 'Training' in the docs)"
        )
    return dist.get_rank(), dist.get_world_size()


class _Batches:
    """The indices this process trains on in each batch of an epoch (a torch batch sampler).

    The order of an epoch is a permutation drawn from a generator seeded by
    ``(seed, epoch)``, so a resumed run sees the batches of an uninterrupted
    one, and every process draws the same. It is cut into batches of
    ``batch_size`` and each batch into ``world_size`` contiguous shards
    whose sizes differ by at most one; process ``rank`` gets its shard, so
    the shards of a batch together are the batch one process would train
    on. With several processes, a final batch smaller than the number of
    processes is left out, as some would have no image to train on.
    """

    def __init__(self, n, batch_size, seed, rank=0, world_size=1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest >= self.world_size)

    def sizes(self):
        """The number of images in each batch of the epoch, over all processes."""
        return [min(self.batch_size, self.n - i * self.batch_size) for i in range(len(self))]

    def __iter__(self):
        import torch

        # (Reduced modulo 2**63 so that any valid seed fits torch's generator.)
        gen = torch.Generator().manual_seed((self.seed * 100003 + self.epoch) % 2**63)
        # The order of a shuffling DataLoader with this generator, which
        # draws its workers' base seed from it first: the trainer shuffled
        # so before, and a seed keeps training the same model.
        torch.empty((), dtype=torch.int64).random_(generator=gen)
        order = torch.randperm(self.n, generator=gen)
        for batch in order.split(self.batch_size)[: len(self)]:
            yield torch.tensor_split(batch, self.world_size)[self.rank].tolist()


class _GradientAverager:
    """Averages gradients across the processes at the end of every backward pass.

    Each process weighs its gradients by its share of the batch
    (`weight`, its images over the batch's), so that for a loss that is a
    mean over images the sum over processes is the gradient of the whole
    batch. Since the shares sum to 1, a backend that calls ``backward``
    several times before stepping (two losses, two optimisers) gets the same
    sums as in one process too. Averaging in the backward pass, rather than
    before the optimiser steps, keeps what a backend does in between (such
    as clipping the gradient norm) working on the batch's gradient.

    Parameters
    ----------
    params : list of torch.Tensor
        The trainable parameters, in the same order in every process.
    """

    def __init__(self, params):
        self.params, self.weight = params, 1.0
        self._queued = False
        self._handles = [p.register_post_accumulate_grad_hook(self._accumulated) for p in params]

    def _accumulated(self, param):
        if not self._queued:
            import torch

            # Once per backward pass, after it has accumulated every gradient
            # (as torch's DistributedDataParallel does): one reduction of all
            # of them, in a fixed order, whatever order the graph of each
            # process's batch gives its parameters.
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce)

    def _reduce(self):
        import torch
        import torch.distributed as dist

        self._queued = False
        params = self.params
        got = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        # A parameter whose gradient is None in one process but not in
        # another (a loss term left out of a small shard) adds zero there.
        flat = torch.cat([got] + [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten() * self.weight for p in params
        ])
        dist.all_reduce(flat)
        grads = flat[len(params):].split([p.numel() for p in params])
        for p, anywhere, grad in zip(params, flat[: len(params)].tolist(), grads):
            # None stays None where no process has a gradient: optimisers
            # such as Adam would move a parameter with a zero one.
            if anywhere:
                p.grad = grad.view_as(p).to(p.dtype)

    def remove(self):
        for handle in self._handles:
            handle.remove()


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
    workers : int
        Processes that load the training data (``torch.utils.data.DataLoader``'s
        ``num_workers``; 0 loads in this process). They are kept for the
        whole run. The order of batches comes from the seed alone, so for a
        data set whose items depend only on their index (arrays, files,
        `~radiorecon.simulate.SimulatedPairs`) the trained weights do not
        depend on ``workers``.
    distributed : bool or None
        Train data-parallel across the processes of the initialised
        ``torch.distributed`` process group (see `process_group`; None: when
        there is one of several processes). Every process runs the trainer
        on the same data; each trains on its shard of every batch (the
        shards of a batch are the batch one process would see), gradients
        are averaged across processes in every backward pass, weighted by
        shard size, and the weights start from process 0's. Only process 0
        shows progress and writes the checkpoint. For losses that are means
        over the images of a batch and a ``train_step`` that draws no random
        numbers, the weights equal those of one process training with the
        same ``batch_size`` (to float rounding); terms computed on the batch
        as a whole (STAR's distance correlation: the backend's
        ``min_batch_size``) are computed on each shard instead, and random
        draws differ by process.

    Raises
    ------
    ValueError
        If ``batch_size`` (or, distributed, each process's shard of it) is
        smaller than the backend's `min_batch_size`, or a distributed
        backend has no trainable parameters (it learns from sums that
        gradients do not carry).
    """

    def __init__(self, backend, *, epochs, batch_size, seed=None, device="auto", progress=True, checkpoint=None,
                 workers=0, distributed=None):
        if batch_size < backend.min_batch_size:
            raise ValueError(
                f"batch_size={batch_size} is too small for backend {type(backend).__name__}: its losses need "
                f"batches of at least {backend.min_batch_size} images (see its min_batch_size)"
            )
        self.backend = backend
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.device = resolve_device(device)
        self.workers = check_int(workers, "workers", minimum=0)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        group = process_group(distributed)
        self.distributed = group is not None
        self.rank, self.world_size = group or (0, 1)
        self.progress = progress and self.rank == 0
        if self.distributed:
            self._check_distributed()

    def _check_distributed(self):
        backend, name, world = self.backend, type(self.backend).__name__, self.world_size
        if not self._trainable():
            raise ValueError(
                f"Backend {name} has no trainable parameters, so distributed training, which averages "
                "gradients, cannot combine what the processes learn: train it in one process (distributed=False)"
            )
        shard = self.batch_size // world
        if shard < backend.min_batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} over {world} processes gives shards of {shard} images, too few "
                f"for backend {name}: its losses need {backend.min_batch_size} (see its min_batch_size); "
                f"use batch_size={world * backend.min_batch_size} or more"
            )
        if backend.min_batch_size > 1 and self.rank == 0:
            log.warning(
                "backend %s has loss terms computed on a batch as a whole (min_batch_size=%d); with %d "
                "processes they are computed on each process's shard of %d images instead",
                name, backend.min_batch_size, world, shard,
            )

    def _trainable(self):
        """The backend's trainable parameters, each once, in the same order in every process."""
        params = {}
        for module in self.backend.modules().values():
            for p in module.parameters():
                if p.requires_grad:
                    params.setdefault(id(p), p)
        return list(params.values())

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
        stored = doc.get("config")
        if isinstance(stored, dict):
            # Keys added to the backend since the checkpoint was written take
            # their defaults, the values the run was trained with.
            stored = {**type(self.backend).default_config, **stored}
        # Prediction settings do not change training: the constructor's win.
        free = set(self.backend.inference_keys)
        current = {k: v for k, v in self.backend.config.items() if k not in free}
        if isinstance(stored, dict):
            stored = {k: v for k, v in stored.items() if k not in free}
        if doc.get("backend") != backend_name or stored != current:
            differ = sorted(k for k in {**(stored or {}), **current}
                            if (stored or {}).get(k) != current.get(k)) if isinstance(stored, dict) else []
            raise ModelFileError(
                f"{path}: checkpoint of backend {doc.get('backend')!r} with config {doc.get('config')}, "
                f"but this Reconstructor is {backend_name!r} with config {self.backend.config}"
                + (f" ({', '.join(differ)} differ)" if differ else "")
            )
        restore(doc, {k: v for k, v in tensors.items() if not k.startswith("train/")}, path)
        return doc, tensors

    def _rng_states(self):
        """This process's generator states, by checkpoint tensor name."""
        import torch

        prefix = _rng_prefix(self.rank)
        states = {f"{prefix}rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            for i, rng in enumerate(torch.cuda.get_rng_state_all()):
                states[f"{prefix}cuda_rng/{i}"] = rng
        return states

    def _write_checkpoint(self, epoch, document):
        import torch.distributed as dist

        states = [self._rng_states()]
        if self.distributed:
            # Every process's generators, so that a resumed run draws as the
            # uninterrupted one would, process by process.
            states = [None] * self.world_size if self.rank == 0 else None
            dist.gather_object(self._rng_states(), states, dst=0)
        if self.rank == 0:
            tensors = dict(self.backend.state_dict())
            state = modelfile.flatten_state(self.backend.training_state(), tensors)
            for rng in states:
                tensors.update(rng)
            doc = document()
            doc["fitted"] = False
            doc["training"] = {"epoch": epoch, "epochs": self.epochs, "seed": self.seed, "state": state}
            modelfile.save(self.checkpoint, doc, tensors, overwrite=True)
        if self.distributed:
            # No process goes on (or returns from fit) before the file is there.
            dist.barrier()

    def _resume(self, doc, tensors):
        import torch

        path = self.checkpoint
        try:
            self.backend.load_training_state(modelfile.unflatten_state(doc["training"]["state"], tensors))
            prefix = _rng_prefix(self.rank)
            if f"{prefix}rng" in tensors:
                torch.set_rng_state(tensors[f"{prefix}rng"])
            elif self.distributed:
                log.warning("%s holds no generator state for process %d (written by fewer processes): "
                            "its random draws differ from an uninterrupted run's", path, self.rank)
            cuda = sorted((k for k in tensors if k.startswith(f"{prefix}cuda_rng/")),
                          key=lambda k: int(k.rpartition("/")[2]))
            if cuda and self.device.type == "cuda":
                torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
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
            Normalised pairs (`training_set` seen through `Scaled`); with
            several processes, the same in each.
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
        averager = None
        with seeded(self.seed, self.device):
            if resume is None and not warm_start:
                # Fresh weights drawn under the seed: the same seed gives the
                # same initialisation and so the same trained model.
                backend.reset_parameters()
            backend.to(self.device)
            if self.distributed:
                self._start_together(fresh=resume is None)
            backend.optimizers = backend.configure_optimizers()
            backend.begin_fit(resumed=resume is not None)
            initial_epoch = 0 if resume is None else self._resume(*resume)
            batches = _Batches(len(train), self.batch_size, self._order_seed(), self.rank, self.world_size)
            loader = self._loader(train, batches, persistent=True)
            try:
                if self.distributed:
                    averager = _GradientAverager(self._trainable())
                for epoch in range(initial_epoch, self.epochs):
                    batches.set_epoch(epoch)
                    logs = self._epoch(loader, batches, epoch, averager)
                    if validation is not None:
                        logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
                    logs["epoch"] = epoch + 1
                    history.append(logs)
                    if on_epoch is not None:
                        on_epoch(logs)
                    if self.checkpoint is not None:
                        self._write_checkpoint(epoch + 1, document)
            except KeyboardInterrupt:
                if self.checkpoint is not None and self.rank == 0:
                    log.warning(
                        "training interrupted; call fit() again with checkpoint=%r to resume", self.checkpoint
                    )
                raise
            finally:
                if averager is not None:
                    averager.remove()
            backend.end_fit()
        return history

    def _start_together(self, fresh):
        """Start every process from process 0's weights, each with random draws of its own."""
        import torch
        import torch.distributed as dist

        # Unseeded (or warm-started from different files), processes would
        # start apart; averaged gradients would then never bring them together.
        for module in self.backend.modules().values():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        if fresh and self.seed is not None:
            # Under one seed every process would draw the same noise for
            # different images; a resumed run restores each process's own.
            torch.manual_seed(stream_seed(self.seed, self.rank))

    def _order_seed(self):
        """The seed of the order of batches; the same in every process."""
        seed = stream_seed(None) if self.seed is None else self.seed
        if self.distributed:
            import torch.distributed as dist

            shared = [seed]
            dist.broadcast_object_list(shared, src=0)
            seed = shared[0]
        return seed

    def _loader(self, data, batch_sampler, persistent=False):
        import torch

        return torch.utils.data.DataLoader(
            data, batch_sampler=batch_sampler, num_workers=self.workers,
            persistent_workers=persistent and self.workers > 0,
            # The loader's own generator (it seeds the workers), so that the
            # number of workers leaves torch's global generators, which the
            # backend draws from, alone.
            generator=torch.Generator().manual_seed(0) if persistent else None,
        )

    def _epoch(self, loader, batches, epoch, averager):
        from tqdm.auto import tqdm

        backend = self.backend
        paired = "paired" in backend.capabilities
        backend.train()
        sums, counts = {}, {}
        bar = tqdm(
            zip(loader, batches.sizes()),
            total=len(batches),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        for (inputs, targets), size in bar:
            inputs = inputs.to(self.device)
            targets = targets.to(self.device) if paired else None
            n = inputs.shape[0]
            if averager is not None:
                averager.weight = n / size
            losses = backend.train_step(inputs, targets)
            # Per loss: a term may be missing from some batches (too small for it).
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
                counts[key] = counts.get(key, 0) + n
            bar.set_postfix({k: f"{v / counts[k]:.4g}" for k, v in sums.items()}, refresh=False)
        bar.close()
        return self._means(sums, counts)

    def _means(self, sums, counts):
        """Mean of every loss over the images of all processes."""
        if self.distributed:
            import torch.distributed as dist

            parts = [None] * self.world_size
            dist.all_gather_object(parts, (sums, counts))
            sums, counts = {}, {}
            for part_sums, part_counts in parts:
                for key in part_sums:
                    sums[key] = sums.get(key, 0.0) + part_sums[key]
                    counts[key] = counts.get(key, 0) + part_counts[key]
        return {key: value / counts[key] for key, value in sums.items()}

    def evaluate(self, data):
        """Mean of `Backend.evaluate_step` over a data set, without gradients.

        With several processes, each scores its share of the batches and
        all get the means over the whole data set.
        """
        import torch

        backend = self.backend
        paired = "paired" in backend.capabilities
        backend.eval()
        sums, counts = {}, {}
        n, size, step = len(data), self.batch_size, self.batch_size * self.world_size
        batches = [list(range(i, min(i + size, n))) for i in range(self.rank * size, n, step)]
        with torch.no_grad():
            for inputs, targets in self._loader(data, batches):
                inputs = inputs.to(self.device)
                targets = targets.to(self.device) if paired else None
                for key, value in backend.evaluate_step(inputs, targets).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * inputs.shape[0]
                    counts[key] = counts.get(key, 0) + inputs.shape[0]
        return self._means(sums, counts)
