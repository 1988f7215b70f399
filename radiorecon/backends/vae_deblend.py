"""vae-deblend: a VAE source model with a normalizing-flow prior, deblending by MAP per source.

The method of MADNESS (Biswas et al. 2025), in PyTorch, with the
interferometer in the likelihood:

1. A variational autoencoder learns isolated, noise-free sources on
   ``stamp_size`` stamps of the sky (at the image's pixel scale), in the
   stretched intensity ``asinh(x / a) / asinh(1 / a)`` (`radiorecon.nn.sky_stretch`;
   ``a`` = ``sky_softening``), which gives the faint extended emission of a
   source as much weight as its bright core.
2. A masked autoregressive flow (zuko's MAF, ``flow_transforms`` = 6 as in
   the paper) is fitted to draws of the encoder's posterior on the same
   stamps (``flow_latents``; MADNESS fits its means): the prior
   ``p(z)`` over the latent space.

Both stages run in one `~radiorecon.Reconstructor.fit`: the first
``vae_steps`` optimisation steps train the VAE, the next ones the flow with
the VAE fixed. The step count is part of the training state, so a fit
resumed from a checkpoint continues in the right stage.

To deblend an image ``y`` with sources at positions ``p_i`` (given, or found
by `radiorecon.catalog.find_sources`), every source gets a latent ``z_i``,
initialised by the encoder on a stamp of the image around ``p_i``; the
scene model is ``x = sum_i place(D(z_i), p_i)`` with ``D`` the decoder, and
all latents of a batch of scenes are optimised together (L-BFGS or Adam) to
minimise the negative log posterior

.. math:: L(z) = \\tfrac12 \\lVert W (y - A x) \\rVert^2 / \\sigma^2 - \\sum_i \\log p(z_i)

where ``A`` and ``W`` are the instrument and the whitening of its noise
(`radiorecon.instrument.Instrument`: the PSF for a dirty image, the
restoring beam for a restored one, the identity for an image at the model's
resolution) and ``sigma`` the image's robust noise. Optimisation stops when
the loss changes by less than ``tolerance`` relative to its scale (see
`map_deblend`), or after ``max_iterations``.

Errors come from the Laplace approximation at the MAP: the covariance of
each scene's latents is the inverse Hessian of ``L`` (by
`torch.autograd.functional.hessian`), propagated to every source's flux and
centroid by their Jacobians, and to the pixels of the total model (its
standard deviation map).

Sources are given to `~radiorecon.Reconstructor.predict` as
``positions=`` (pixel ``(x, y)`` per image); the result's ``components``
hold one model per source, and `radiorecon.catalog.deblended_catalog`
turns them into a table of sources (flux +- error, centroid, shape,
blendedness), as ``radiorecon predict --catalog`` does.

Reference: Biswas, B., Aubourg, E., Boucaud, A., et al. (2025), "MADNESS
deblender: Maximum A posteriori with Deep NEural networks for Source
Separation", A&A.
"""

import concurrent.futures
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..backend import Backend, Prediction
from ..exceptions import CapabilityError, InputError
from ..instrument import NOISE_MODELS, Instrument
from ..nn import ConvDecoder, ConvEncoder, count_parameters, sky_stretch, sky_unstretch

__all__ = [
    "VaeDeblendBackend", "map_deblend", "laplace_errors", "source_moments", "calibrate_flux_errors", "place",
    "cut_stamps", "DeblendResult",
]

_OPTIMIZERS = ("lbfgs", "adam")
#: The result's cards of each source's errors, in the order of `source_moments`.
_ERROR_CARDS = ("DBFE", "DBXE", "DBYE", "DBAE", "DBBE", "DBTE")


def place(stamps, xy, shape):
    """Each ``(S, S)`` stamp on an image of ``shape`` with its centre pixel at ``xy``.

    Parameters
    ----------
    stamps : torch.Tensor
        ``(N, S, S)``, centre pixel ``(S // 2, S // 2)``.
    xy : sequence of (int, int)
        Pixel ``(x, y)`` of each stamp's centre; parts outside are cut off.
    shape : (int, int)
        ``(ny, nx)``.

    Returns
    -------
    torch.Tensor
        ``(N, ny, nx)``; differentiable in ``stamps``.
    """
    ny, nx = shape
    s = stamps.shape[-1]
    c = s // 2
    out = []
    for stamp, (x, y) in zip(stamps, xy):
        # Pad onto a frame of (ny + s, nx + s), whose pixel (c, c) is the image's (0, 0).
        framed = F.pad(stamp, (int(x), nx - int(x), int(y), ny - int(y)))
        out.append(framed[c : c + ny, c : c + nx])
    return torch.stack(out) if out else stamps.new_zeros(0, ny, nx)


def cut_stamps(image, xy, size):
    """``(N, size, size)`` stamps of ``image`` (``(ny, nx)``) centred on the pixels ``xy``, zero outside."""
    c = size // 2
    padded = F.pad(image, (c, size - c, c, size - c))
    return torch.stack([padded[int(y) : int(y) + size, int(x) : int(x) + size] for x, y in xy])


@dataclasses.dataclass
class DeblendResult:
    """What `map_deblend` returns.

    Attributes
    ----------
    latents : torch.Tensor
        ``(N, d)`` MAP latents of all sources, scene by scene.
    components : list of torch.Tensor
        Per scene, ``(k, ny, nx)`` model of each source.
    iterations : int
        Optimiser iterations run.
    converged : bool
        Whether the optimiser stopped on its tolerance before ``max_iterations``.
    loss : torch.Tensor
        ``(B,)`` negative log posterior of each scene at the MAP.
    """

    latents: object
    components: list
    iterations: int
    converged: bool
    loss: object


def _scene_losses(z, counts, decode, log_prior, images, operators, sigma, positions):
    """Negative log posterior of each scene, and the components."""
    stamps = decode(z)
    prior = log_prior(z)
    losses, components, start = [], [], 0
    shape = images.shape[-2:]
    for b, k in enumerate(counts):
        comp = place(stamps[start : start + k], positions[b], shape)
        chi2 = operators[b].chi2(images[b], comp.sum(0), sigma[b])
        losses.append(0.5 * chi2 - prior[start : start + k].sum())
        components.append(comp)
        start += k
    return torch.stack(losses), components


def map_deblend(images, positions, decode, log_prior, z0, operators, sigma, *, max_iterations=200,
                tolerance=1e-6, optimizer="lbfgs", learning_rate=1.0):
    """Maximum a posteriori latents of the sources of a batch of scenes.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, ny, nx)`` observed images.
    positions : list of sequence of (int, int)
        Per scene, the pixel ``(x, y)`` of each source's stamp centre.
    decode : callable
        ``(N, d)`` latents to ``(N, S, S)`` source stamps (the model's sky).
    log_prior : callable
        ``(N, d)`` latents to ``(N,)`` log prior densities.
    z0 : torch.Tensor
        ``(N, d)`` initial latents, the sources of scene 0 first.
    operators : list of `~radiorecon.instrument.Instrument`
        One per scene.
    sigma : torch.Tensor
        ``(B,)`` per-pixel noise of each image.
    max_iterations : int
        Most optimiser iterations.
    tolerance : float
        The stopping rule (see ``optimizer``).
    optimizer : {"lbfgs", "adam"}
        L-BFGS with a strong-Wolfe line search (``learning_rate`` 1 is its
        natural step; it stops when the loss changes by less than
        ``tolerance`` times its initial value, or a step moves no latent by
        more than ``tolerance``), or Adam (it stops when the loss changes by
        less than ``tolerance`` times itself).
    learning_rate : float

    Returns
    -------
    DeblendResult
    """
    counts = [len(p) for p in positions]
    z = z0.detach().clone().requires_grad_(True)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, not {optimizer!r}")

    best = {"loss": math.inf, "z": z.detach().clone()}

    def objective():
        loss = _scene_losses(z, counts, decode, log_prior, images, operators, sigma, positions)[0].sum()
        # The flow prior is not log-concave and the stretch is exponential: a
        # long line-search step can overflow, so the best latents seen are kept.
        value = float(loss.detach())
        if value < best["loss"]:
            best.update(loss=value, z=z.detach().clone())
        return loss

    with torch.enable_grad():
        if optimizer == "lbfgs":
            # L-BFGS keeps its curvature memory within one step(): it runs its
            # own loop, on the loss divided by its initial value, so that its
            # tolerance on the change of the loss is relative.
            scale = max(abs(float(objective().detach())), 1e-30)
            opt = torch.optim.LBFGS([z], lr=learning_rate, max_iter=max_iterations, max_eval=2 * max_iterations,
                                    tolerance_change=tolerance, tolerance_grad=0.0, history_size=20,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = objective() / scale
                loss.backward()
                return loss.detach()

            opt.step(closure)
            iterations = int(opt.state[z]["n_iter"])
            converged = iterations < max_iterations
        else:
            opt = torch.optim.Adam([z], lr=learning_rate)
            previous, converged = None, False
            for iterations in range(1, max_iterations + 1):
                opt.zero_grad()
                loss = objective()
                loss.backward()
                opt.step()
                value = float(loss.detach())
                if previous is not None and abs(previous - value) <= tolerance * abs(value):
                    converged = True
                    break
                previous = value
        final = float(objective().detach())
        if not math.isfinite(final) or final > best["loss"]:
            # Stopped somewhere worse (or not finite at all): go back to the best point seen.
            converged = converged and math.isfinite(final)
            with torch.no_grad():
                z.copy_(best["z"])
        losses, components = _scene_losses(z, counts, decode, log_prior, images, operators, sigma, positions)
    return DeblendResult(z.detach(), [c.detach() for c in components], iterations, converged, losses.detach())


def source_moments(stamps, gx, gy, inside):
    """Flux, centroid and second-moment shape of sources on their stamps (differentiable).

    The definitions of `radiorecon.catalog.deblended_catalog`, on the
    pixels of each stamp that lie inside the image.

    Parameters
    ----------
    stamps : torch.Tensor
        ``(k, S, S)`` source models.
    gx, gy : torch.Tensor
        ``(k, S)`` image pixel ``x`` of each stamp's columns, ``y`` of its rows.
    inside : torch.Tensor
        ``(k, S, S)``, 1 on the stamp pixels inside the image, else 0.

    Returns
    -------
    torch.Tensor
        ``(k, 6)``: flux (the stamps' unit times pixels), centroid ``x``,
        ``y`` (pixels), semi-major and semi-minor standard deviations ``a``,
        ``b`` (pixels) and the major axis' angle ``theta`` counter-clockwise
        from +x (deg, not wrapped).
    """
    w = stamps * inside
    flux = w.sum(dim=(-2, -1))
    safe = torch.where(flux != 0, flux, torch.ones_like(flux))
    x = (w * gx[:, None, :]).sum(dim=(-2, -1)) / safe
    y = (w * gy[:, :, None]).sum(dim=(-2, -1)) / safe
    dx, dy = gx[:, None, :] - x[:, None, None], gy[:, :, None] - y[:, None, None]
    cxx, cyy, cxy = ((w * m).sum(dim=(-2, -1)) / safe for m in (dx * dx, dy * dy, dx * dy))
    # The tiny floors keep the derivatives finite for a round or empty source.
    half, diff = (cxx + cyy) / 2, (((cxx - cyy) / 2) ** 2 + cxy**2 + 1e-12).sqrt()
    a, b = (half + diff).clamp_min(1e-12).sqrt(), (half - diff).clamp_min(1e-12).sqrt()
    theta = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy))
    return torch.stack([flux, x, y, a, b, theta], 1)


def laplace_errors(z, decode, log_prior, image, operator, sigma, positions, *, pixel_std=True, min_curvature=1.0):
    """Laplace-approximation errors of one scene's sources at its MAP latents.

    The latents' covariance is the inverse Hessian of the scene's negative
    log posterior, with its eigenvalues raised to at least ``min_curvature``:
    the flow prior is not log-concave, so where the optimiser stops short of
    a strict maximum some curvatures are small or negative, and inverting
    them would give one direction an unbounded width. The default, 1, is the
    curvature of the standard normal the VAE's latents are drawn towards:
    no direction is wider than the prior. The covariance is propagated
    linearly to each source's flux, centroid and shape (`source_moments`),
    and to the pixels of the total model.

    Parameters
    ----------
    z : torch.Tensor
        ``(k, d)`` MAP latents of the scene's sources.
    decode, log_prior, operator, sigma, positions
        As for `map_deblend`, for this scene (``image`` ``(ny, nx)``).
        ``decode`` must treat every latent alone (no statistics across the
        batch), as the backend's decoder does.
    pixel_std : bool
        Also return the standard deviation map of the total model.
    min_curvature : float
        The least eigenvalue of the Hessian, in units of the latents.

    Returns
    -------
    errors : torch.Tensor
        ``(k, 6)`` one-sigma errors of the `source_moments`: flux (the
        model's unit times pixels), centroid ``x``, ``y``, ``a``, ``b``
        (pixels) and ``theta`` (deg).
    std : torch.Tensor or None
        ``(ny, nx)`` standard deviation of the total model.
    """
    k, d = z.shape
    shape = image.shape[-2:]
    flat = z.reshape(-1).detach()

    def loss(f):
        comps = place(decode(f.reshape(k, d)), positions, shape)
        return 0.5 * operator.chi2(image, comps.sum(0), sigma) - log_prior(f.reshape(k, d)).sum()

    with torch.enable_grad():
        # vmap over the Hessian's rows: one batched double backward instead of k d of them.
        hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True).detach()
    hessian = 0.5 * (hessian + hessian.T)
    evals, evecs = torch.linalg.eigh(hessian.double())
    evals = evals.clamp_min(min_curvature)
    root = (evecs * evals.rsqrt()).to(z.dtype)  # covariance = root @ root.T
    blocks = root.reshape(k, d, k * d)  # the rows of each source's latent

    z = flat.reshape(k, d)
    with torch.no_grad():
        size = decode(z[:1]).shape[-1]
    offsets = torch.arange(size, dtype=z.dtype, device=z.device) - size // 2
    gx = torch.tensor([p[0] for p in positions], dtype=z.dtype, device=z.device)[:, None] + offsets  # (k, S)
    gy = torch.tensor([p[1] for p in positions], dtype=z.dtype, device=z.device)[:, None] + offsets
    inside = (((gy >= 0) & (gy < shape[0]))[:, :, None] & ((gx >= 0) & (gx < shape[1]))[:, None, :]).to(z.dtype)

    def stamps_and_moments(w):
        stamps = decode(z + w)
        return stamps, source_moments(stamps, gx, gy, inside)

    # A stamp depends on its own latent alone, so moving every latent along
    # the same direction v gives each stamp's derivative along its own v: d
    # Jacobian-vector products give the Jacobians of all stamps and moments.
    # (By double backward: torch's forward mode warns of its deprecated JIT.)
    with torch.enable_grad():
        products = [torch.autograd.functional.jvp(stamps_and_moments, torch.zeros_like(z[0]), v=v)[1]
                    for v in torch.eye(d, dtype=z.dtype, device=z.device)]
    jac = torch.stack([p[0] for p in products], -1).detach()  # (k, S, S, d)
    grads = torch.stack([p[1] for p in products], -1).detach()  # (k, 6, d)
    errors = (torch.einsum("kmd,kdn->kmn", grads, blocks) ** 2).sum(-1).sqrt()
    std = None
    if pixel_std:
        # The total model's change along each column r of the root: var = sum_r (J r)^2.
        columns = torch.einsum("kyxd,kdn->knyx", jac, blocks)
        change = torch.zeros(k * d, *shape, dtype=z.dtype, device=z.device)
        for i in range(k):
            change += place(columns[i], [positions[i]] * (k * d), shape)
        std = change.pow(2).sum(0).sqrt()
    return errors, std


def _maf(features, transforms, hidden):
    import zuko

    return zuko.flows.MAF(features=features, transforms=transforms, hidden_features=tuple(hidden))


#: Most parameters the flow may have: it is built outside the meta device's memory bound (see `_Flow`).
_MAX_FLOW_PARAMETERS = 10_000_000


def _flow_parameters(features, transforms, hidden):
    """Parameters of zuko's MAF (two outputs per feature: shift and log-scale), for the bound."""
    sizes = [features, *hidden, 2 * features]
    return transforms * sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


class _Flow(torch.nn.Module):
    """zuko's masked autoregressive flow over the latent space, as one module."""

    def __init__(self, features, transforms, hidden):
        super().__init__()
        if torch.empty(0).device.type == "meta":
            # Model files are checked by building the backend on the meta
            # device (radiorecon.modelfile), where zuko cannot make its masks
            # (torch.unique has no meta kernel). Torch's function modes, the
            # meta device among them, hold per thread: a thread of its own
            # builds the flow on the CPU; check_config bounds its size.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                self.flow = pool.submit(_maf, features, transforms, hidden).result()
        else:
            self.flow = _maf(features, transforms, hidden)

    def log_prob(self, z):
        return self.flow().log_prob(z)

    def transform(self, z):
        """The map from latents to the base (standard normal) space."""
        return self.flow().transform(z)


class VaeDeblendBackend(Backend):
    """VAE source model with a normalizing-flow prior; MAP deblending with the instrument.

    See the module docs for the method. Configuration keys (`default_config`):

    - ``stamp_size`` (32): pixels on a side of a source's stamp (divisible
      by ``2 ** (len(channel_mult) - 1)``); sources must fit in it.
    - ``latent_dim`` (16, as in the paper), ``base_channels`` (16),
      ``channel_mult`` ([1, 2, 4]): sizes of the encoder and decoder
      (`radiorecon.nn.ConvEncoder`, `radiorecon.nn.ConvDecoder`).
    - ``flow_transforms`` (6), ``flow_hidden`` ([64, 64]): the MAF.
    - ``sky_softening`` (0.01): ``a`` of the stretch, in units of the
      training stamps' median peak (the normalisation of ``input_scale =
      "peak"``).
    - ``kl_weight`` (0.01): weight of the KL term of the VAE loss, whose
      reconstruction term is the squared error summed over a stamp's
      pixels in the stretched intensity (a Gaussian likelihood of variance
      ``kl_weight / 2`` there).
    - ``learning_rate`` (1e-3), ``flow_learning_rate`` (1e-3).
    - ``vae_steps`` (2000): optimisation steps of the first stage; the flow
      trains on every step after them.
    - ``flow_latents`` (``"sample"``): the flow is fitted to draws of the
      encoder's posterior ``q(z|x)`` (``"sample"``), or to its means
      (``"mean"``, as MADNESS does). On optical blends the means made a
      prior so sharp that the MAP stalled (see :doc:`/deblending`);
      `with_new_prior` refits the flow of a trained model.

    Inference keys (`set_config` changes them on a trained model):

    - ``likelihood`` (``"dirty"``): the noise model of
      `~radiorecon.instrument.Instrument` (``"dirty"``, ``"restored"``: the
      PSF convolves the model, needs ``psf=``; ``"white"``: the identity).
    - ``noise_floor`` (1e-3): frequencies of less noise power are left out.
    - ``positions`` (None): pixel ``(x, y)`` of the sources, the same for
      every image of a call, used when `~radiorecon.Reconstructor.predict`
      is given no ``positions=`` (the way to pass them, per image); None
      finds them with `~radiorecon.catalog.find_sources` at
      ``detection_threshold`` (5) times the noise. Kept so that model files
      that store it load.
    - ``optimizer`` (``"lbfgs"``), ``map_learning_rate`` (1.0),
      ``max_iterations`` (200), ``tolerance`` (1e-6): the MAP (see
      `map_deblend`).
    - ``flux_model_error`` (0): a fraction of each source's flux added in
      quadrature to its Laplace flux error, for what the source model
      cannot draw (the Laplace errors describe the noise alone); measured
      on simulations by `calibrate_flux_errors`.
    """

    capabilities = {"reconstruct", "std", "deblend", "needs_training"}
    psf_factor = 2  # a source's sidelobes reach across the whole image
    input_scale = "peak"  # trained on noise-free stamps
    version = "1"
    inference_keys = frozenset({
        "likelihood", "noise_floor", "positions", "detection_threshold", "optimizer", "map_learning_rate",
        "max_iterations", "tolerance", "flux_model_error",
    })
    # The flow trains alone on a trained VAE (warm_start): its rate may change too.
    tuning_keys = frozenset({"learning_rate", "flow_learning_rate"})
    default_config = {
        "stamp_size": 32,
        "latent_dim": 16,
        "base_channels": 16,
        "channel_mult": [1, 2, 4],
        "flow_transforms": 6,
        "flow_hidden": [64, 64],
        "sky_softening": 0.01,
        "kl_weight": 0.01,
        "learning_rate": 1e-3,
        "flow_learning_rate": 1e-3,
        "vae_steps": 2000,
        "flow_latents": "sample",
        "likelihood": "dirty",
        "noise_floor": 1e-3,
        "positions": None,
        "detection_threshold": 5.0,
        "optimizer": "lbfgs",
        "map_learning_rate": 1.0,
        "max_iterations": 200,
        "tolerance": 1e-6,
        "flux_model_error": 0.0,
    }

    def __init__(self, preset=None, **config):
        super().__init__(preset=preset, **config)
        c = self.config
        size, mult = c["stamp_size"], tuple(c["channel_mult"])
        self.encoder = ConvEncoder(1, 2 * c["latent_dim"], size, c["base_channels"], mult)
        self.decoder = ConvDecoder(c["latent_dim"], 1, size, c["base_channels"], mult)
        self.flow = _Flow(c["latent_dim"], c["flow_transforms"], c["flow_hidden"])
        self.step = 0

    def check_config(self):
        c = self.config
        if c["likelihood"] not in NOISE_MODELS:
            raise ValueError(f"likelihood must be one of {NOISE_MODELS}, not {c['likelihood']!r}")
        if c["optimizer"] not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, not {c['optimizer']!r}")
        if c["flow_latents"] not in ("sample", "mean"):
            raise ValueError(f"flow_latents must be 'sample' or 'mean', not {c['flow_latents']!r}")
        for key in ("latent_dim", "stamp_size", "max_iterations", "flow_transforms"):
            if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 1:
                raise ValueError(f"{key} must be a positive integer, not {c[key]!r}")
        if not isinstance(c["vae_steps"], int) or c["vae_steps"] < 0:
            raise ValueError(f"vae_steps must be a non-negative integer, not {c['vae_steps']!r}")
        if c["positions"] is not None:
            _check_positions(c["positions"], "positions")
        f = c["flux_model_error"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f >= 0):
            raise ValueError(f"flux_model_error must be a non-negative number, not {f!r}")
        n_flow = _flow_parameters(c["latent_dim"], c["flow_transforms"], c["flow_hidden"])
        if n_flow > _MAX_FLOW_PARAMETERS:
            raise ValueError(f"the flow would have {n_flow} parameters, over the {_MAX_FLOW_PARAMETERS} allowed")

    def modules(self):
        return {"encoder": self.encoder, "decoder": self.decoder, "flow": self.flow}

    def parameter_counts(self):
        """Trainable parameters of each network."""
        return {name: count_parameters(m) for name, m in self.modules().items()}

    # -- the source model --------------------------------------------------

    def _stretch_scale(self):
        return math.asinh(1.0 / self.config["sky_softening"])

    def stretch(self, x):
        """Stretched intensity of normalised sky stamps: ``asinh(x / a) / asinh(1 / a)``."""
        return sky_stretch(x, softening=self.config["sky_softening"], scale=self._stretch_scale())

    def unstretch(self, t):
        """Inverse of `stretch`."""
        return sky_unstretch(t, softening=self.config["sky_softening"], scale=self._stretch_scale())

    def encode(self, stamps):
        """Mean and log-variance ``(N, d)`` of the latents of ``(N, S, S)`` normalised sky stamps."""
        mu, logvar = self.encoder(self.stretch(stamps)[:, None]).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z):
        """``(N, S, S)`` normalised sky stamps of ``(N, d)`` latents."""
        return self.unstretch(self.decoder(z)[:, 0])

    def log_prior(self, z):
        """``(N,)`` log density of the flow prior at ``(N, d)`` latents."""
        return self.flow.log_prob(z)

    # -- training: the VAE, then the flow ------------------------------------

    def configure_optimizers(self):
        c = self.config
        vae = [*self.encoder.parameters(), *self.decoder.parameters()]
        return {
            "vae": torch.optim.Adam(vae, lr=c["learning_rate"]),
            "flow": torch.optim.Adam(self.flow.parameters(), lr=c["flow_learning_rate"]),
        }

    def begin_fit(self, *, resumed=False):
        if not resumed:
            self.step = 0

    def training_state(self):
        return {**super().training_state(), "step": self.step}

    def load_training_state(self, state):
        super().load_training_state(state)
        self.step = int(state.get("step", 0))

    def with_new_prior(self, **config):
        """A backend with this one's encoder and decoder and a new, untrained flow prior.

        Fitting it with ``warm_start=True`` trains the flow alone (its
        ``vae_steps`` is 0) on the stamps the VAE was trained on: the way to
        refit the prior of a trained model, e.g. with other ``flow_latents``,
        without training the VAE again. `~radiorecon.Reconstructor.fit`
        measures the normalisation on the stamps it is given, and the VAE
        works only with its own: give the stamps it was trained on (or check
        that `radiorecon.normalisation.Normalisation.fit` of the new ones
        equals the model's ``normalisation``). The flow's initial weights
        come from torch's global generator (seed it for a repeatable run).

        Parameters
        ----------
        **config
            Configuration keys to change for the new backend, other than the
            networks' sizes (``flux_model_error`` is reset to 0: a calibration
            of the old prior does not carry over).

        Returns
        -------
        VaeDeblendBackend
        """
        fixed = {"stamp_size", "latent_dim", "base_channels", "channel_mult", "sky_softening"} & set(config)
        if fixed:
            raise ValueError(f"{sorted(fixed)} describe the trained VAE and cannot change with its prior")
        backend = type(self)(**{**self.config, "flux_model_error": 0.0, **config, "vae_steps": 0})
        backend.encoder.load_state_dict(self.encoder.state_dict())
        backend.decoder.load_state_dict(self.decoder.state_dict())
        return backend

    def _check_stamps(self, stamps):
        size = self.config["stamp_size"]
        if tuple(stamps.shape[-2:]) != (size, size):
            raise InputError(
                f"vae-deblend trains on stamps of {size} x {size} pixels (stamp_size), got "
                f"{tuple(stamps.shape[-2:])}; make them with radiorecon.simulate.blends.isolated_stamps"
            )

    def _vae_losses(self, stamps):
        t = self.stretch(stamps)[:, None]
        mu, logvar = self.encoder(t).chunk(2, dim=1)
        logvar = logvar.clamp(-12.0, 6.0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        # Summed over pixels, as the KL term over latents: averaged over pixels it
        # would be a thousand times weaker, and the latents would carry nothing.
        reconstruction = (self.decoder(z) - t).pow(2).sum(dim=(1, 2, 3)).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return reconstruction, kl

    def _flow_loss(self, stamps):
        with torch.no_grad():
            mu, logvar = self.encode(stamps)
            if self.config["flow_latents"] == "sample":
                # The means of noise-free stamps lie on a thin set (collapsed
                # latent directions): a flow fitted to them is so sharp that the
                # latents of a noisy image get log-densities near -1e15.
                mu = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return -self.log_prior(mu).mean()

    def train_step(self, inputs, targets):
        """One step of the VAE (the first ``vae_steps``) or of the flow on the encoder's latents."""
        self._check_stamps(inputs)
        if self.step < self.config["vae_steps"]:
            reconstruction, kl = self._vae_losses(inputs)
            loss, opt = reconstruction + self.config["kl_weight"] * kl, self.optimizers["vae"]
            losses = {"reconstruction": reconstruction.item(), "kl": kl.item()}
        else:
            # The VAE is fixed now (its optimiser no longer steps): the flow models its latents.
            loss, opt = self._flow_loss(inputs), self.optimizers["flow"]
            losses = {"flow_nll": loss.item()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.step += 1
        return losses

    def evaluate_step(self, inputs, targets):
        self._check_stamps(inputs)
        reconstruction, kl = self._vae_losses(inputs)
        return {"reconstruction": reconstruction.item(), "kl": kl.item(), "flow_nll": self._flow_loss(inputs).item()}

    # -- deblending ----------------------------------------------------------

    def network_evaluations(self, n_samples):
        return self.config["max_iterations"]

    def _positions(self, image, given, b):
        """Integer ``(x, y)`` of the sources of one normalised image."""
        ny, nx = image.shape
        if given is None:
            from ..catalog import find_sources

            found = find_sources(image.detach().cpu().numpy(), self.config["detection_threshold"])
            if len(found) == 0:
                raise InputError(
                    f"no sources found in image {b} above {self.config['detection_threshold']} times its noise "
                    "(detection_threshold): nothing to deblend; give positions= or lower the threshold"
                )
            given = np.stack([np.asarray(found["x"], float), np.asarray(found["y"], float)], 1)
        xy = np.rint(_check_positions(given, f"positions of image {b}")).astype(int)
        outside = (xy[:, 0] < 0) | (xy[:, 0] >= nx) | (xy[:, 1] < 0) | (xy[:, 1] >= ny)
        if outside.any():
            raise InputError(
                f"positions {xy[outside].tolist()} of image {b} lie outside its {nx} x {ny} pixels "
                "(x, y are 0-based pixel indices)"
            )
        return [tuple(p) for p in xy]

    def _operators(self, shape, psf, batch):
        likelihood = self.config["likelihood"]
        if likelihood == "white":
            return [Instrument(None, shape, noise="white") for _ in range(batch)]
        if psf is None:
            raise CapabilityError(
                f"vae-deblend with likelihood={likelihood!r} convolves its model with the PSF: pass psf=, "
                "or set likelihood='white' for an image at the model's resolution"
            )
        return [Instrument(psf[b], shape, noise=likelihood, floor=self.config["noise_floor"]) for b in range(batch)]

    @staticmethod
    def _beam_area(psf):
        """Pixels per beam of a peak-1 PSF: pixels above half the peak / ln 2 (exact for a Gaussian)."""
        return max(float((psf >= 0.5).sum()) / math.log(2), 1.0)

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None, positions=None):
        """Deblend a batch of images (see the module docs).

        Parameters
        ----------
        inputs : torch.Tensor
            ``(B, ny, nx)`` normalised images.
        n_samples, draws
            Unused: the MAP is deterministic.
        psf : torch.Tensor or None
            ``(B, 2 ny, 2 nx)`` PSFs, for the ``"dirty"`` and ``"restored"``
            likelihoods.
        positions : list or None
            Per image, a sequence of pixel ``(x, y)``; else the
            ``positions`` configuration, else the sources found.

        Returns
        -------
        Prediction
            ``mean``: the total model; ``std``: its Laplace standard
            deviation; ``components``: per image ``(k, ny, nx)``;
            ``extras["residual"]``: ``y - A x`` in the input's unit;
            ``meta``: ``DBNSRC`` (sources), ``DBNITER`` (iterations),
            ``DBCONV`` (converged) and per source ``i`` (from 1) ``DBX<i>``,
            ``DBY<i>`` (the stamp centre used, pixels) and the errors
            ``DBFE<i>`` (flux, normalised units), ``DBXE<i>``, ``DBYE<i>``
            (centroid, pixels), ``DBAE<i>``, ``DBBE<i>`` (semi-axes,
            pixels) and ``DBTE<i>`` (position angle, deg).
        """
        b, ny, nx = inputs.shape
        if positions is not None and len(positions) != b:
            raise InputError(f"positions= has {len(positions)} entries for {b} images: give one list per image")
        per_image = positions if positions is not None else [self.config["positions"]] * b
        xy = [self._positions(inputs[i], per_image[i], i) for i in range(b)]
        operators = self._operators((ny, nx), psf, b)
        from .._noise import robust_std

        sigma = torch.tensor([max(robust_std(x.detach().cpu().numpy()), 1e-12) for x in inputs],
                             dtype=inputs.dtype, device=inputs.device)
        size = self.config["stamp_size"]
        # The encoder knows the sky; an image at a coarser resolution holds a
        # source's flux per beam: divided by the beam area, about per pixel.
        white = psf is None or self.config["likelihood"] == "white"
        area = [1.0 if white else self._beam_area(psf[i]) for i in range(b)]
        with torch.no_grad():
            stamps = torch.cat([cut_stamps(inputs[i], xy[i], size) / area[i] for i in range(b)])
            z0, _ = self.encode(stamps)
        c = self.config
        totals, stds, metas, components, start = [], [], [], [], 0
        for i in range(b):
            k = len(xy[i])
            # One optimisation per image: a joint one (a line search over all
            # latents) would make an image's result depend on its batch.
            result = map_deblend(inputs[i : i + 1], xy[i : i + 1], self.decode, self.log_prior,
                                 z0[start : start + k], operators[i : i + 1], sigma[i : i + 1],
                                 max_iterations=c["max_iterations"], tolerance=c["tolerance"],
                                 optimizer=c["optimizer"], learning_rate=c["map_learning_rate"])
            errors, std = laplace_errors(result.latents, self.decode, self.log_prior, inputs[i],
                                         operators[i], sigma[i], xy[i])
            # What the source model cannot draw, in proportion to the flux (calibrate_flux_errors).
            flux = result.components[0].sum(dim=(-2, -1))
            errors[:, 0] = torch.hypot(errors[:, 0], c["flux_model_error"] * flux)
            start += k
            components.append(result.components[0])
            totals.append(result.components[0].sum(0))
            stds.append(std)
            meta = {"DBNSRC": k, "DBNITER": result.iterations, "DBCONV": result.converged}
            for j, ((x, y), err) in enumerate(zip(xy[i], errors.tolist()), start=1):
                meta.update({f"DBX{j}": int(x), f"DBY{j}": int(y)})
                meta.update({f"{card}{j}": value for card, value in zip(_ERROR_CARDS, err)})
            metas.append(meta)
        total = torch.stack(totals)
        residual = torch.stack([inputs[i] - operators[i].forward(total[i]) for i in range(b)])
        return Prediction(mean=total, std=torch.stack(stds), components=components,
                          extras={"residual": residual}, units={"residual": "input"}, meta=metas)


def calibrate_flux_errors(flux, flux_err, true_flux, *, coverage=0.6827):
    """The ``flux_model_error`` that gives deblended fluxes their stated coverage.

    Finds the fraction ``f`` for which ``|F - F_true| < sqrt(e**2 + (f F)**2)``
    holds for a fraction ``coverage`` of the sources: the error of a flux
    ``F`` whose Laplace error is ``e`` is then honest at one sigma, on
    simulations like the ones measured.

    Parameters
    ----------
    flux, flux_err, true_flux : array-like
        Per source: the deblended flux, its Laplace error (from a model with
        ``flux_model_error`` 0) and the true flux, in one unit. Measure them
        on scenes held apart from any benchmark.
    coverage : float
        The fraction of sources to cover, 0.6827 for one sigma.

    Returns
    -------
    float
        ``f``; 0 when the Laplace errors already cover that fraction.

    Raises
    ------
    ValueError
        For arrays of different lengths, no finite source, or a coverage
        outside (0, 1).
    """
    flux, err, true = (np.asarray(a, dtype=float).ravel() for a in (flux, flux_err, true_flux))
    if not (len(flux) == len(err) == len(true)):
        raise ValueError(f"flux, flux_err and true_flux differ in length: {len(flux)}, {len(err)}, {len(true)}")
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie in (0, 1), not {coverage!r}")
    ok = np.isfinite(flux) & np.isfinite(err) & np.isfinite(true) & (flux != 0)
    if not ok.any():
        raise ValueError("no source with a finite, non-zero flux and finite errors")
    flux, err, true = flux[ok], err[ok], true[ok]
    # Each source is covered once f exceeds sqrt(max(0, d^2 - e^2)) / |F|:
    # the wanted f is the coverage quantile of those thresholds.
    needed = np.sqrt(np.clip((flux - true) ** 2 - err**2, 0, None)) / np.abs(flux)
    return float(np.quantile(needed, coverage))


def _check_positions(positions, name):
    """Positions as a finite ``(k, 2)`` float array of at least one row."""
    try:
        xy = np.asarray(positions, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of pixel (x, y) pairs, not {positions!r}") from None
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0 or not np.isfinite(xy).all():
        raise InputError(f"{name} must be a non-empty list of finite pixel (x, y) pairs, got {positions!r}")
    return xy
