"""STAR: stochastic TURBO, content-style disentanglement of dirty images.

A dirty image ``x`` is the composite of a *content* ``c`` (the sky model)
and a *style* ``s`` (what the instrument and the noise added). Four small
U-Nets implement the "2-to-1" rule, in which any two of (content, style,
composite) give the third:

- ``style_encoder``: ``x -> (mu, log var)`` of the style, a map of
  ``style_channels`` channels per (binned) pixel, stochastic like the latent
  of a VAE;
- ``content_net``: ``(x, s) -> c`` (style + composite give the content);
- ``decoder``: ``(c, s) -> x`` (content + style give the composite);
- ``style_net``: ``(x, c) -> s`` (content + composite give the style).

Training (each term switchable for ablations) combines

1. the content loss, MSE between ``c`` and the true sky, both in the
   normalised intensity ``asinh(sky / sky_softening)``: the sparse sky's few
   bright pixels would otherwise leave MSE with nothing to learn from the
   faint ones;
2. branch one, ``x -> (c, s) -> x_hat``: MSE between ``x_hat`` and ``x``;
3. the bias-corrected squared distance correlation between ``c`` and ``s``
   over the batch, clamped at 0, so that the style carries no sky;
4. a KL term pulling the style towards a standard normal, so that styles can
   be drawn for generation;
5. branch two, ``sky -> x_tilde -> c_hat``: the true sky with the image's
   style must give the image back, and the sky with a style drawn from the
   prior must give a dirty image whose content is the sky again;
6. the 2-to-1 term: ``style_net(x, sky)`` must give the encoder's style;
7. optional pix2pix-style adversarial terms on content and composite.

Prediction draws ``n_samples`` styles around the encoder's estimate (its
mean, spread by its standard deviation times ``style_temperature``) and
predicts the content once per style; one sample is the direct prediction
with the mean style. Networks work on a grid coarser than the image by
``downsample``: the synthesized beam spans about 9 native pixels, so the
field can be seen at a fraction of the cost. With ``stem="bin"`` the grid
holds ``downsample x downsample`` bins (default 2, which keeps the beam
Nyquist-sampled) and outputs are interpolated back, conserving flux; with
``stem="unshuffle"`` each ``downsample x downsample`` block of pixels becomes
channels of one grid cell (a pixel-unshuffle; Shi et al. 2016) and back, so
nothing is lost: the network sees every pixel and predicts every pixel, at
the cost of a network on the coarse grid.

References: Taran et al. (2023), "Challenging interferometric imaging:
machine learning-based source localization from uv-plane observations";
Quetant et al. (2023), "Turbo-Sim: a generalised generative model with a
physical latent space".
"""

import torch
import torch.nn.functional as F

from ..backend import Backend, Prediction
from ..seeding import Draws
from ..nn import (
    PatchDiscriminator, UNet, check_dead_zone, count_parameters, dead_zone, distance_correlation, from_grid,
    grid_channels, sky_stretch, sky_unstretch, to_grid,
)

__all__ = ["StarBackend"]

_STYLE_SAMPLING = ("content", "composite")


def _l1_plus_mse(input, target):
    return F.l1_loss(input, target) + F.mse_loss(input, target)


_CONTENT_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "l1+mse": _l1_plus_mse}
_SIZES = ("base_channels", "style_base_channels", "channel_mult", "blocks_per_level", "attention_levels")


class StarBackend(Backend):
    """STAR (stochastic TURBO): content-style disentanglement with style sampling.

    Configuration keys (`default_config`), with ``presets`` for the
    published sizes (``"paper"``) and the ablations (``"only-mse"``,
    ``"no-dcor"``, ``"dcor"``, ``"two-branches"``; the default is the full
    method):

    - ``downsample`` (2): networks work on a grid this many times coarser.
    - ``stem`` (``"bin"``): how the grid is made, ``"bin"`` (flux-conserving
      bins, bilinear interpolation back) or ``"unshuffle"`` (pixel blocks as
      channels, predicted back to every native pixel).
    - ``nonnegative`` (False): clip the content at 0, so that the sky
      model is exactly empty where the network sees no source, instead of
      a faint positive floor (in training, gradients pass the clip as if it
      were not there, so that outputs pushed below 0 can come back).
    - ``dead_zone`` (0): at prediction, normalised content values within
      this of 0 are set to exactly 0 (training does not see it, so it may
      change after training: `inference_keys`). A network's output is not
      exactly 0 where it sees nothing: trained with ``l1+mse`` and the
      clip, 72 % of a 512x512 model's pixels held a floor of normalised
      intensity ~0.001 (99 % of them below 0.0025, at most 0.013 on an
      empty field), and the published protocol, whose threshold falls to
      1e-3 of the model's peak, counts that floor's ripples as sources. A
      dead zone ``d`` removes pixels below ``a sinh(d)`` times the input
      noise (``a``: ``sky_softening``), 0.0025 of it for ``d = 0.1`` and
      ``a = 0.025``.
    - ``content_loss`` (``"mse"``): ``"mse"``, ``"l1"`` or ``"l1+mse"``,
      on the normalised intensity. MSE is minimised by the mean over the
      skies compatible with an image, which is positive wherever a source
      is possible: a faint floor across the field. L1 is minimised by their
      median, which is 0 wherever a source is less likely than not, but its
      gradient is the same for a bright source's pixel as for an empty one,
      and with sources on ~1 % of the pixels a network learns to predict
      nothing. Their sum keeps both: at a pixel that is empty with
      probability ``p``, raising the estimate from 0 costs ``2 p - 1`` per
      unit in L1 and gains ``2 (1 - p) E[sky | source]`` in MSE, so it
      stays exactly 0 wherever a source is unlikely (``p`` > 0.83 for a
      source of normalised intensity 2), while bright sources pull as in
      MSE.
    - ``base_channels`` (16), ``style_base_channels`` (8), ``channel_mult``
      ([1, 2, 4]), ``blocks_per_level`` (1), ``attention_levels`` ([]):
      sizes of the content net and decoder (``base_channels``) and of the
      style encoder and style net (``style_base_channels``).
    - ``style_channels`` (1): channels of the style map.
    - ``sky_softening`` (0.1): ``a`` of the sky normalisation
      ``asinh(sky / a)``, in units of the input noise, per pixel of the
      predicted sky (a bin with ``stem="bin"``, a native pixel with
      ``"unshuffle"``); stored in the model file with the rest.
    - ``learning_rate`` (1e-3).
    - ``content_weight`` (1), ``composite_weight`` (1), ``dcor_weight``
      (0.1), ``kl_weight`` (0.01), ``two_branches`` (True), ``two_to_one``
      (True), ``adversarial_weight`` (0): the training terms.
    - ``style_temperature`` (1): spread of the styles drawn at prediction,
      in units of the encoder's standard deviation.
    - ``style_sampling`` (``"content"``): how a drawn style makes a sample.
      ``"content"``: the content net reads the image with it. A content
      net that learned to ignore the style (``isolate_content``) then gives
      nearly the same sky for every style. ``"composite"``: the decoder
      makes the image the direct content would give with that style (a new
      realisation of the artefacts and noise; the shipped model's made
      images differ from each other about as much as noise does at a
      ``style_temperature`` of 20), and the content is read again from it,
      so that the samples spread as the estimate moves with the noise:
      three network runs per sample.
    - ``dcor_pool`` (4): maps are average-pooled by this before the
      distance correlation.
    - ``isolate_content`` (False): the composite and distance-correlation
      terms see the content without its gradient, so that the content net
      learns from the true sky alone (the content loss, the second
      branch's and, if on, the adversarial term) while the decoder and style encoder still learn to rebuild
      the image and keep the style independent of the content. Where the
      sky is sparse, the content loss is ~1 % of the composite's in size:
      without isolation the composite term makes the content carry the
      image's noise, and the distance correlation, which is blind to scale,
      then drives it to a constant.

    The distance-correlation term is the bias-corrected squared distance
    correlation between content and style over the batch
    (`radiorecon.nn.distance_correlation`), clamped at 0; batches of fewer
    than 4 images (a short last batch) go without it.
    """

    capabilities = {"reconstruct", "draws", "generate", "needs_training", "paired"}
    # Any size works; larger images go through in overlapping tiles, so
    # memory stays bounded and progress shows.
    max_tile_shape = (512, 512)
    tile_margin = 64
    version = "1"
    input_scale = "noise"
    inference_keys = frozenset({"style_temperature", "style_sampling", "dead_zone"})
    default_config = {
        "downsample": 2,
        "stem": "bin",
        "nonnegative": False,
        "dead_zone": 0.0,
        "content_loss": "mse",
        "base_channels": 16,
        "style_base_channels": 8,
        "channel_mult": [1, 2, 4],
        "blocks_per_level": 1,
        "attention_levels": [],
        "style_channels": 1,
        "sky_softening": 0.1,
        "learning_rate": 1e-3,
        "content_weight": 1.0,
        "composite_weight": 1.0,
        "dcor_weight": 0.1,
        "kl_weight": 0.01,
        "two_branches": True,
        "two_to_one": True,
        "adversarial_weight": 0.0,
        "style_temperature": 1.0,
        "style_sampling": "content",
        "dcor_pool": 4,
        "isolate_content": False,
    }
    _single = {"two_branches": False, "two_to_one": False}
    presets = {
        "only-mse": {"composite_weight": 0.0, "dcor_weight": 0.0, "kl_weight": 0.0, **_single},
        "no-dcor": {"dcor_weight": 0.0, **_single},
        "dcor": dict(_single),
        "two-branches": {"two_to_one": False},
        # Sized like the papers (encoder 13.9M, decoder 11.0M parameters):
        # here the encoder (style encoder, content and style nets) has 13.95M
        # and the decoder 11.55M, the nearest this U-Net's widths allow.
        "paper": {
            "base_channels": 28,
            "style_base_channels": 9,
            "channel_mult": [1, 2, 4, 8],
            "blocks_per_level": 2,
            "attention_levels": [3],
        },
    }

    def __init__(self, preset=None, **config):
        super().__init__(preset=preset, **config)
        c = self.config
        if c["content_loss"] not in _CONTENT_LOSSES:
            raise ValueError(f"content_loss must be one of {sorted(_CONTENT_LOSSES)}, not {c['content_loss']!r}")
        k, mult = c["style_channels"], tuple(c["channel_mult"])
        # Channels of one grid cell of an image: its pixels, once unshuffled.
        g = grid_channels(c["downsample"], c["stem"])
        common = dict(
            channel_mult=mult, blocks_per_level=c["blocks_per_level"], attention_levels=tuple(c["attention_levels"])
        )
        self.style_encoder = UNet(g, 2 * k, c["style_base_channels"], **common)
        self.content_net = UNet(g + k, g, c["base_channels"], **common)
        self.decoder = UNet(g + k, g, c["base_channels"], **common)
        self.style_net = UNet(2 * g, k, c["style_base_channels"], **common)
        self.discriminators = None
        if c["adversarial_weight"] > 0:
            width = c["style_base_channels"] * 2
            self.discriminators = torch.nn.ModuleDict(
                {"content": PatchDiscriminator(2 * g, width), "composite": PatchDiscriminator(2 * g, width)}
            )
        self.tile_multiple = self._multiple = c["downsample"] * self.content_net.multiple

    def check_config(self):
        check_dead_zone(self.config["dead_zone"])
        if self.config["style_sampling"] not in _STYLE_SAMPLING:
            raise ValueError(f"style_sampling must be one of {list(_STYLE_SAMPLING)}, "
                             f"not {self.config['style_sampling']!r}")

    def modules(self):
        mods = {
            "style_encoder": self.style_encoder,
            "content_net": self.content_net,
            "decoder": self.decoder,
            "style_net": self.style_net,
        }
        if self.discriminators is not None:
            mods["discriminators"] = self.discriminators
        return mods

    def parameter_counts(self):
        """Trainable parameters of the encoder side, the decoder and in all."""
        n = {name: count_parameters(m) for name, m in self.modules().items()}
        return {
            "encoder": n["style_encoder"] + n["content_net"] + n["style_net"],
            "decoder": n["decoder"],
            "total": sum(n.values()),
        }

    # -- normalisation -----------------------------------------------------

    def _to_grid(self, x, reduce):
        return to_grid(x, self.config["downsample"], self._multiple, reduce=reduce, stem=self.config["stem"])

    def _from_grid(self, x, size, reduce):
        return from_grid(x, self.config["downsample"], size, reduce=reduce, stem=self.config["stem"])

    def sky_forward(self, sky):
        """Normalised intensity of a binned sky: ``asinh(sky / a)``."""
        return sky_stretch(sky, softening=self.config["sky_softening"])

    def sky_inverse(self, t):
        """Inverse of `sky_forward`."""
        return sky_unstretch(t, softening=self.config["sky_softening"])

    # -- the four mappings -------------------------------------------------

    def encode_style(self, x):
        """Mean and log-variance of the style of binned dirty images ``(B, 1, h, w)``."""
        mu, logvar = self.style_encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def content(self, x, style):
        """Style + composite -> normalised content."""
        t = self.content_net(torch.cat([x, style], dim=1))
        if not self.config["nonnegative"]:
            return t
        # The stretch is odd, so t >= 0 is exactly sky >= 0. Clipped going
        # forward, but with the gradient of no clip (straight through): a
        # plain ReLU at the output dies, as the loss on the mostly empty sky
        # pushes every output below 0, where no gradient brings it back.
        return t + (F.relu(t) - t).detach()

    def composite(self, content, style):
        """Content + style -> composite (binned dirty image)."""
        return self.decoder(torch.cat([content, style], dim=1))

    def style(self, x, content):
        """Content + composite -> style."""
        return self.style_net(torch.cat([x, content], dim=1))

    # -- training ----------------------------------------------------------

    @property
    def min_batch_size(self):
        """4 when the distance-correlation term is on: its estimator needs 4 samples."""
        return 4 if self.config["dcor_weight"] > 0 else 1

    def configure_optimizers(self):
        lr = self.config["learning_rate"]
        gen = [p for name, m in self.modules().items() if name != "discriminators" for p in m.parameters()]
        opts = {"optimizer": torch.optim.Adam(gen, lr=lr)}
        if self.discriminators is not None:
            opts["discriminator"] = torch.optim.Adam(self.discriminators.parameters(), lr=lr, betas=(0.5, 0.999))
        return opts

    def _losses(self, inputs, targets):
        c = self.config
        x, _ = self._to_grid(inputs, "mean")
        sky, _ = self._to_grid(targets, "sum")
        t_sky = self.sky_forward(sky)
        mu, logvar = self.encode_style(x)
        s = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        t_c = self.content(x, s)
        content_loss = _CONTENT_LOSSES[c["content_loss"]]
        losses = {"content": content_loss(t_c, t_sky)}
        total = c["content_weight"] * losses["content"]
        # What the other terms see of the content (see isolate_content).
        t_seen = t_c.detach() if c["isolate_content"] else t_c
        if c["composite_weight"] > 0:
            losses["composite"] = F.mse_loss(self.composite(t_seen, s), x)
            total = total + c["composite_weight"] * losses["composite"]
        if c["dcor_weight"] > 0 and x.shape[0] >= 4:  # the estimator needs 4 samples
            p = c["dcor_pool"]
            # The bias-corrected dCor^2 is smooth where content and style are
            # independent (its square root has an infinite slope there), and
            # scatters around 0 for them: clamped, so that the estimator's
            # noise below 0 is not something to optimise.
            losses["dcor"] = distance_correlation(F.avg_pool2d(t_seen, p), F.avg_pool2d(s, p)).clamp_min(0)
            total = total + c["dcor_weight"] * losses["dcor"]
        if c["kl_weight"] > 0:
            losses["kl"] = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
            total = total + c["kl_weight"] * losses["kl"]
        fake = None
        if c["two_branches"]:
            # The true sky with the image's own style must give the image back ...
            x_paired = self.composite(t_sky, s)
            # ... and with a style from the prior, a dirty image whose content is the sky.
            fake = self.composite(t_sky, torch.randn_like(mu))
            mu_f, _ = self.encode_style(fake)
            losses["branch2"] = F.mse_loss(x_paired, x) + content_loss(self.content(fake, mu_f), t_sky)
            total = total + c["composite_weight"] * losses["branch2"]
        if c["two_to_one"]:
            losses["style"] = F.mse_loss(self.style(x, t_sky), mu.detach())
            total = total + losses["style"]
        if self.discriminators is not None:
            if fake is None:
                fake = self.composite(t_sky, torch.randn_like(mu))
            d = self.discriminators
            adv = (d["content"](torch.cat([x, t_c], 1)) - 1).pow(2).mean()
            adv = adv + (d["composite"](torch.cat([t_sky, fake], 1)) - 1).pow(2).mean()
            losses["adversarial"] = adv
            total = total + c["adversarial_weight"] * adv
        return total, losses, (x, t_sky, t_c, fake)

    def train_step(self, inputs, targets):
        total, losses, (x, t_sky, t_c, fake) = self._losses(inputs, targets)
        opt = self.optimizers["optimizer"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if self.discriminators is not None:
            # Least-squares GAN: real pairs towards 1, generated ones towards 0.
            d = self.discriminators
            loss_d = (
                (d["content"](torch.cat([x, t_sky], 1)) - 1).pow(2).mean()
                + d["content"](torch.cat([x, t_c.detach()], 1)).pow(2).mean()
                + (d["composite"](torch.cat([t_sky, x], 1)) - 1).pow(2).mean()
                + d["composite"](torch.cat([t_sky, fake.detach()], 1)).pow(2).mean()
            ) / 2
            opt_d = self.optimizers["discriminator"]
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses["discriminator"] = loss_d
        return {k: v.item() for k, v in losses.items()}

    def evaluate_step(self, inputs, targets):
        _, losses, _ = self._losses(inputs, targets)
        return {k: v.item() for k, v in losses.items()}

    # -- inference ---------------------------------------------------------

    def _styles(self, mu, logvar, n_samples, draws):
        if n_samples == 1:
            return mu[None]
        if draws is None:
            draws = Draws.from_seed(None, n_samples, mu.shape[0], mu.device)
        sigma = torch.exp(0.5 * logvar) * self.config["style_temperature"]
        return mu[None] + sigma[None] * draws.randn(*mu.shape[1:], dtype=mu.dtype)

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        """Content for ``n_samples`` styles around the estimated one (the mean style if 1)."""
        x, size = self._to_grid(inputs, "mean")
        mu, logvar = self.encode_style(x)
        styles = self._styles(mu, logvar, n_samples, draws)
        k, b = styles.shape[:2]
        styles = styles.reshape(k * b, *styles.shape[2:])
        if n_samples > 1 and self.config["style_sampling"] == "composite":
            # The 2-to-1 rule twice: content + a drawn style give an image, whose content is read again.
            x = self.composite(self.content(x, mu).repeat(k, 1, 1, 1), styles)
            t_c = self.content(x, self.encode_style(x)[0])
        else:
            t_c = self.content(x.repeat(k, 1, 1, 1), styles)
        t_c = dead_zone(t_c, self.config["dead_zone"])
        sky = self._from_grid(self.sky_inverse(t_c), size, "sum")
        return Prediction(samples=sky.reshape(k, b, *sky.shape[1:]))

    def generate(self, sky, *, n_samples=1, like=None, draws=None):
        """Dirty images of sky models (see `radiorecon.Backend.generate`).

        Styles come from the standard-normal prior, or, given ``like``, from
        the 2-to-1 rule (content + composite give the style) with draws
        around it when ``n_samples > 1``.
        """
        t_sky, size = self._to_grid(sky, "sum")
        t_sky = self.sky_forward(t_sky)
        b = t_sky.shape[0]
        shape = (b, self.config["style_channels"], *t_sky.shape[2:])
        if draws is None:
            draws = Draws.from_seed(None, n_samples, b, t_sky.device)
        if like is None:
            styles = draws.randn(*shape[1:], dtype=t_sky.dtype)
        else:
            x, _ = self._to_grid(like, "mean")
            _, logvar = self.encode_style(x)
            mu = self.style(x, t_sky)
            styles = self._styles(mu, logvar, n_samples, draws)
        out = self.composite(t_sky.repeat(n_samples, 1, 1, 1), styles.reshape(n_samples * b, *shape[1:]))
        return self._from_grid(out, size, "mean").reshape(n_samples, b, *size)
