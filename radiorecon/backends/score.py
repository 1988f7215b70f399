"""Score-based prior of sky images: generation, and posterior reconstruction from any PSF.

A denoiser ``D(x, sigma)`` is trained on sky images alone (Karras et al.
2022, "EDM"; as the seed, Vicanek Martinez & Brüggen, does for radio
galaxies). It serves twice:

- **Generation** (`~radiorecon.backends.score.ScoreBackend.sample`): the probability-flow ODE from
  noise at ``sigma_max`` to data, solved with Heun's method (the seed's 25
  steps by default), Euler, or Heun with stochastic churn
  (`radiorecon.score_sampling.sample_edm`).
- **Reconstruction** (`~radiorecon.backends.score.ScoreBackend.predict`): draws of ``p(sky | dirty)``,
  the prior times the likelihood of the dirty image ``d = P * sky + n``,
  ``n`` of covariance ``noise_std**2`` times the PSF: the probability-flow
  ODE with the denoiser replaced by the posterior mean under a Gaussian
  approximation of ``p(sky | x)`` (variance ``sigma^2``), exact in Fourier
  space where the likelihood is diagonal (`radiorecon.score_sampling.sample_posterior`).
  Nothing about the array is learned: the same prior reconstructs the
  dirty image of any array from its PSF.

Choices:

- **Training** follows EDM: preconditioning ``c_skip, c_out, c_in,
  c_noise``, loss weight ``lambda(sigma) = (sigma^2 + sigma_data^2) /
  (sigma sigma_data)^2``, log-normal noise levels, EMA of the weights
  (used for sampling, stored in model files); the eight flips and quarter
  turns of the square augment the skies.
- **Normalisation is linear and sets sigma_data**: skies are divided by
  their median root mean square (``input_scale = "rms"``), so that the
  data's standard deviation is the ``sigma_data`` (1) that the
  preconditioning assumes, and not stretched. Sparse skies divided by their
  peak instead have a standard deviation near 0.05: with EDM's 0.5 the
  network must cancel its noisy input almost exactly at every level, and
  two-epoch LoTSS priors drew skies with 21 % of pixels below -1 % of the
  peak and a median total flux of -12 mJy (against 5 % and 11 mJy for the
  rms normalisation, and 26 mJy for the simulated skies). A stretch (the
  DDPM's ``asinh``, `radiorecon.nn.sky_stretch`) would make the dirty image
  a non-linear function of the diffusion variable and lose the exact
  Fourier data term; and the EDM loss weight already divides the error at
  each noise level by that level's variance, so the faint structure seen
  at small ``sigma`` weighs as much as the bright structure seen at large
  ``sigma`` (the reason the DDPM needs a stretch for its unweighted loss).
- **The reconstructed sky is the apparent sky** (times the primary beam),
  as for the other backends: the front door does not pass the primary
  beam, and tiles are small next to it.

References: Karras, Aittala, Aila & Laine (2022), "Elucidating the design
space of diffusion-based generative models"; Boys et al. (2023), "Tweedie
moment projected diffusions for inverse problems"; Zhang et al. (2024),
"Improving diffusion inverse problem solving with decoupled noise
annealing" (DAPS, the scheme replaced); Chung et al. (2023), "Diffusion
posterior sampling";
Vicanek Martinez & Brüggen, score-based generative models for radio
galaxies.
"""

import numpy as np
import torch

from .._noise import robust_std
from ..backend import Backend, Prediction
from ..exceptions import InputError
from ..nn import AveragedWeights, count_parameters, pad_to_multiple, square_symmetry
from ..score_sampling import (
    SAMPLERS,
    edm_loss_weight,
    edm_preconditioning,
    edm_sigmas,
    lognormal_sigmas,
    sample_edm,
    sample_posterior,
)

__all__ = ["ScoreBackend", "SkyImages"]


class SkyImages:
    """The sky images of a data set of ``(dirty, sky)`` pairs, to train a prior on.

    Unpaired backends train on the first item of a pair; this view gives
    them the second, e.g. ``SkyImages(SimulatedPairs(1000, preset="lotss"))``.

    Parameters
    ----------
    pairs : data set
        Items ``(dirty, sky)``; its ``units["target"]`` (if any) is the
        skies' unit.

    Notes
    -----
    The view's ``units`` are the skies' (``{"target": ...}``), which `fit`
    records for an unpaired backend as for any list of sky images: the
    trained model takes dirty images in Jy/beam for skies in Jy/pixel (the
    PSF has a peak of 1). Its ``domain`` is the pairs' preset and pixel
    size without their beam and noise: a prior over skies holds for every
    array, but at one resolution (its sources are so many pixels wide), so
    dirty images with other pixels are warned about and generated skies get
    a WCS with these pixels.
    """

    def __init__(self, pairs):
        from ..training import training_domain

        self.pairs = pairs
        self.units = {"target": (getattr(pairs, "units", None) or {}).get("target")}
        domain = training_domain(pairs)
        if domain is not None:
            domain = {**domain, "beam_major_arcsec": None, "beam_minor_arcsec": None, "noise_jy_beam": None}
        self.domain = domain

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return np.asarray(self.pairs[i][1], dtype=np.float32)


class ScoreBackend(AveragedWeights, Backend):
    """Score-based (EDM) prior of sky images: generation and posterior reconstruction.

    Configuration keys (`default_config`):

    - ``base_channels`` (16), ``channel_mult`` ([1, 2, 4]),
      ``blocks_per_level`` (1), ``attention_levels`` ([]), ``dropout`` (0):
      the U-Net (`radiorecon.nn.UNet`, conditioned on ``c_noise``).
    - ``sigma_data`` (1), ``p_mean`` (1.0), ``p_std`` (2.4): the data's
      standard deviation and the log-normal training noise levels, in
      normalised units (skies divided by their median root mean square, so
      that ``sigma_data`` is 1). Sparse skies span a far wider range than
      photographs: a source's peak is tens to thousands of times the
      median rms, so the noise levels must reach as high as the distances
      between training skies (Song & Ermon 2020) and not stop near
      ``sigma_data`` as EDM's (-1.2, 1.2) do: two standard deviations
      cover 0.02 to 330.
    - ``flux_condition`` (False): condition the prior on each sky's total
      flux too (embedded as ``asinh`` of the flux in normalised units, with
      the U-Net's noise level), so that `sample` can draw skies of a given
      flux (``flux=``); ``condition_dropout`` (0.1) of the training skies
      are shown without it (classifier-free), so the same network is also
      the unconditional prior that `predict` and `sample` without ``flux``
      use.
    - ``learning_rate`` (5e-4), ``ema_decay`` (0.999), ``augment`` (True).
    - ``sampler`` ("heun", "euler" or "stochastic"), ``steps`` (25, the
      seed's), ``sigma_min`` (0.002), ``sigma_max`` (500), ``rho`` (7):
      how `sample` integrates; ``s_churn`` (40), ``s_tmin`` (0.05),
      ``s_tmax`` (50), ``s_noise`` (1.003): the churn of "stochastic"
      (EDM's values for ImageNet-64).
    - ``posterior_steps`` (25): Heun levels of `predict`'s posterior ODE,
      ``2 N - 1`` network evaluations per draw; ``posterior_sigma_max``
      (null: ``sigma_max``): the level it starts from (lower levels give
      the data less room to put their noise into the sky before the prior
      sees it, at the cost of fainter sources; measured in docs/score.rst);
      ``noise_sigma`` (null): the dirty images' noise per pixel in
      normalised units (Jy/beam over `~radiorecon.Reconstructor.scale`), by
      default measured on each image with a robust standard deviation.

    The sampling keys may change after training (`inference_keys`).
    """

    capabilities = {"reconstruct", "draws", "sample", "needs_training", "needs_psf"}
    max_tile_shape = (256, 256)
    tile_margin = 16
    version = "1"
    input_scale = "rms"
    inference_keys = frozenset({"sampler", "steps", "sigma_min", "sigma_max", "rho", "s_churn", "s_tmin",
                                "s_tmax", "s_noise", "posterior_steps", "posterior_sigma_max",
                                "noise_sigma"})
    default_config = {
        "base_channels": 16,
        "channel_mult": [1, 2, 4],
        "blocks_per_level": 1,
        "attention_levels": [],
        "dropout": 0.0,
        "sigma_data": 1.0,
        "p_mean": 1.0,
        "p_std": 2.4,
        "flux_condition": False,
        "condition_dropout": 0.1,
        "learning_rate": 5e-4,
        "ema_decay": 0.999,
        "augment": True,
        "sampler": "heun",
        "steps": 25,
        "sigma_min": 0.002,
        "sigma_max": 500.0,
        "rho": 7.0,
        "s_churn": 40.0,
        "s_tmin": 0.05,
        "s_tmax": 50.0,
        "s_noise": 1.003,
        "posterior_steps": 25,
        "posterior_sigma_max": None,
        "noise_sigma": None,
    }

    def __init__(self, preset=None, **config):
        super().__init__(preset=preset, **config)
        # [asinh(flux), shown]: a sky shown without its flux is [0, 0].
        self.build_networks(1, 1, condition_dims=2 if self.config["flux_condition"] else 0)  # ema samples
        self.tile_multiple = self.net.multiple

    def check_config(self):
        c = self.config
        if c["sampler"] not in SAMPLERS:
            raise ValueError(f"Unknown sampler {c['sampler']!r}; choose among {sorted(SAMPLERS)}")
        for key in ("steps", "posterior_steps"):
            if isinstance(c[key], bool) or not (isinstance(c[key], int) and c[key] >= 1):
                raise ValueError(f"{key} must be an integer of at least 1, not {c[key]!r}")
        for key in ("sigma_data", "sigma_min", "sigma_max", "rho", "p_std", "s_noise"):
            if not (isinstance(c[key], (int, float)) and c[key] > 0):
                raise ValueError(f"{key} must be a positive number, not {c[key]!r}")
        if c["sigma_min"] >= c["sigma_max"]:
            raise ValueError(f"sigma_min ({c['sigma_min']}) must be below sigma_max ({c['sigma_max']})")
        if not (c["s_churn"] >= 0 and 0 <= c["s_tmin"] <= c["s_tmax"]):
            raise ValueError("need s_churn >= 0 and 0 <= s_tmin <= s_tmax")
        if not isinstance(c["flux_condition"], bool):
            raise ValueError(f"flux_condition must be true or false, not {c['flux_condition']!r}")
        if isinstance(c["condition_dropout"], bool) or not (
                isinstance(c["condition_dropout"], (int, float)) and 0 <= c["condition_dropout"] < 1):
            raise ValueError(f"condition_dropout must be in [0, 1), not {c['condition_dropout']!r}")
        for key in ("noise_sigma", "posterior_sigma_max"):
            value = c[key]
            if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0)):
                raise ValueError(f"{key} must be null or a positive number, not {c[key]!r}")
        if c["posterior_sigma_max"] is not None and c["posterior_sigma_max"] <= c["sigma_min"]:
            raise ValueError(
                f"posterior_sigma_max ({c['posterior_sigma_max']}) must be above sigma_min ({c['sigma_min']})")

    def modules(self):
        return {"net": self.net, "ema": self.ema}

    def parameter_counts(self):
        """Trainable parameters of the denoising U-Net."""
        return {"total": count_parameters(self.net)}

    def network_evaluations(self, n_samples):
        return n_samples * (2 * self.config["posterior_steps"] - 1)

    # -- the denoiser ------------------------------------------------------

    def denoise(self, x, sigma, *, net=None, flux=None, shown=None):
        """``D(x, sigma)``, the EDM-preconditioned network (the EMA copy by default).

        Parameters
        ----------
        x : torch.Tensor
            ``(B, ny, nx)`` noisy images, normalised units; any size (padded
            with zeros to the U-Net's multiple and cropped back).
        sigma : float or torch.Tensor
            Noise level, a float or ``(B,)``.
        net : torch.nn.Module, optional
            The network to use; the EMA copy (``self.ema``) by default.
        flux : torch.Tensor, optional
            ``(B,)`` total fluxes of the skies (normalised units) for a
            ``flux_condition`` prior; None denoises with the unconditional
            one.
        shown : torch.Tensor, optional
            ``(B,)``, 1 where ``flux`` is shown to the network and 0 where
            it is not (training's classifier-free dropout); all 1 by default.
        """
        net = self.ema if net is None else net
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c[:, None, None] for c in edm_preconditioning(sigma, self.config["sigma_data"]))
        padded, (ny, nx) = pad_to_multiple(x * c_in, self.net.multiple)
        out = net(padded[:, None], c_noise[:, 0, 0], self._condition(flux, x.shape[0], x.device, shown))[:, 0, :ny, :nx]
        return c_skip * x + c_out * out

    def _condition(self, flux, n, device, shown=None):
        """The U-Net's condition ``[asinh(flux), shown]`` (None for a prior without one)."""
        if not self.config["flux_condition"]:
            if flux is not None:
                raise InputError("this score model is not conditioned on flux (flux_condition is false): "
                                 "sample it without flux=")
            return None
        if flux is None:
            return torch.zeros(n, 2, device=device)
        flux = torch.as_tensor(flux, dtype=torch.float32, device=device).reshape(-1).expand(n)
        shown = torch.ones(n, device=device) if shown is None else shown
        return torch.stack([torch.asinh(flux) * shown, shown], dim=1)

    # -- training ----------------------------------------------------------

    def _loss(self, sky, augment, net):
        c = self.config
        if augment:
            (sky,) = square_symmetry(sky)
        sigma = lognormal_sigmas(sky.shape[0], c["p_mean"], c["p_std"], device=sky.device)
        noisy = sky + sigma[:, None, None] * torch.randn_like(sky)
        weight = edm_loss_weight(sigma, c["sigma_data"])[:, None, None]
        flux = shown = None
        if c["flux_condition"]:
            flux = sky.sum(dim=(1, 2))
            shown = (torch.rand(sky.shape[0], device=sky.device) >= c["condition_dropout"]).float()
        return (weight * (self.denoise(noisy, sigma, net=net, flux=flux, shown=shown) - sky) ** 2).mean()

    def train_step(self, inputs, targets):
        return {"loss": self.optimise(self._loss(inputs, self.config["augment"], self.net))}

    def evaluate_step(self, inputs, targets):
        with torch.no_grad():
            return {"loss": self._loss(inputs, False, self.ema).item()}

    # -- inference ---------------------------------------------------------

    def _sigmas(self, steps, sigma_max=None):
        c = self.config
        return edm_sigmas(steps, c["sigma_min"], c["sigma_max"] if sigma_max is None else sigma_max, c["rho"])

    @torch.no_grad()
    def sample(self, n, *, shape, draws=None, steps=None, sampler=None, flux=None):
        """Draw ``n`` skies of ``shape`` by solving the probability-flow ODE.

        Parameters
        ----------
        n : int
        shape : tuple of int
            ``(ny, nx)``, each divisible by the U-Net's multiple
            (``2 ** (len(channel_mult) - 1)``).
        draws : `~radiorecon.seeding.Draws`
            ``(1, n)`` generators, one per image.
        steps, sampler : optional
            Override the configured ``steps`` and ``sampler``.
        flux : torch.Tensor, optional
            ``(n,)`` (or one) total flux of the skies to draw, normalised
            units, for a ``flux_condition`` prior; None draws from the
            unconditional one.

        Returns
        -------
        torch.Tensor
            ``(n, ny, nx)``, normalised units.
        """
        from ..seeding import Draws

        c = self.config
        steps = c["steps"] if steps is None else steps
        sampler = c["sampler"] if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; choose among {sorted(SAMPLERS)}")
        sigmas = self._sigmas(steps)
        m = self.net.multiple
        if any(s % m for s in shape):
            raise InputError(f"shape {tuple(shape)} must be divisible by {m} (the U-Net halves it "
                             f"{len(c['channel_mult']) - 1} times)")
        if draws is None:
            draws = Draws.from_seed(None, 1, n, self.device)

        def noise():
            return draws.randn(*shape, dtype=torch.float32)[0]

        kind = SAMPLERS[sampler]
        churn = {k: c[k] for k in ("s_churn", "s_tmin", "s_tmax", "s_noise")} if kind["churn"] else {}
        self._condition(flux, n, self.device)  # refuses a flux that this prior cannot take, before any work

        def denoise(x, sigma):
            return self.denoise(x, sigma, flux=flux)

        return sample_edm(denoise, float(sigmas[0]) * noise(), sigmas, heun=kind["heun"], noise=noise, **churn)

    def _noise_std(self, inputs):
        if self.config["noise_sigma"] is not None:
            return torch.full((inputs.shape[0],), float(self.config["noise_sigma"]), device=inputs.device)
        std = torch.tensor([robust_std(x) for x in inputs.cpu().numpy()], device=inputs.device)
        if not bool((std > 0).all()):
            raise InputError("Cannot measure the noise of the dirty image (its robust standard deviation is 0); "
                             "set noise_sigma with set_params")
        return std

    @torch.no_grad()
    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        """``n_samples`` posterior draws per dirty image (see `radiorecon.score_sampling.sample_posterior`)."""
        from ..seeding import Draws

        if psf is None:
            raise InputError("The score backend needs the PSF: pass psf=")
        b, ny, nx = inputs.shape
        if draws is None:
            draws = Draws.from_seed(None, n_samples, b, inputs.device)

        def noise():
            return draws.randn(ny, nx, dtype=torch.float32).reshape(n_samples * b, ny, nx)

        c = self.config
        dirty = inputs.repeat(n_samples, 1, 1)
        out = sample_posterior(
            self.denoise,
            dirty,
            psf.to(inputs.dtype).repeat(n_samples, 1, 1),
            self._noise_std(inputs).repeat(n_samples),
            self._sigmas(c["posterior_steps"], c["posterior_sigma_max"]),
            noise=noise,
        )
        return Prediction(samples=out.reshape(n_samples, b, ny, nx))
