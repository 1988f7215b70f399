"""Network pieces shared by the learned backends.

One home for the building blocks the backends reuse rather than copy: a
compact U-Net (optionally conditioned on a diffusion time), a pix2pix-style
patch discriminator, the distance correlation that STAR uses to keep content
and style apart, and flux-conserving 2x binning between the native pixel grid
and the coarser grid a network may work on.

Importing this module imports torch.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNet",
    "ChannelNorm",
    "ResBlock",
    "SelfAttention2d",
    "PatchDiscriminator",
    "timestep_embedding",
    "distance_correlation",
    "sky_stretch",
    "sky_unstretch",
    "dead_zone",
    "check_dead_zone",
    "bin_image",
    "unbin_image",
    "pad_to_multiple",
    "to_grid",
    "from_grid",
    "grid_channels",
    "square_symmetry",
    "AveragedWeights",
    "count_parameters",
    "ConvEncoder",
    "ConvDecoder",
]


class ChannelNorm(nn.Module):
    """Layer normalisation over the channels of each pixel, with a learned affine map.

    Unlike `~torch.nn.GroupNorm`, whose statistics run over the whole image,
    it treats every pixel alike whatever the image size, so that a network
    trained on small cut-outs behaves the same on a full 512x512 image (with
    GroupNorm, a source's features shrink as the empty field around it grows).
    """

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of diffusion times (or noise levels).

    Parameters
    ----------
    t : torch.Tensor
        ``(B,)`` times, any real values.
    dim : int
        Embedding size (even).

    Returns
    -------
    torch.Tensor
        ``(B, dim)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual path; an embedding shifts and scales the features."""

    def __init__(self, in_channels, out_channels, emb_dim=None, dropout=0.0):
        super().__init__()
        self.norm1 = ChannelNorm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ChannelNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, channels, heads=4):
        super().__init__()
        self.heads = heads
        self.norm = ChannelNorm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """A compact U-Net for image-to-image mappings.

    Parameters
    ----------
    in_channels, out_channels : int
    base_channels : int
        Feature channels at full resolution.
    channel_mult : sequence of int
        Channels per level as multiples of ``base_channels``; each level
        after the first halves the resolution, so inputs must be divisible
        by ``2 ** (len(channel_mult) - 1)`` (see `pad_to_multiple`).
    blocks_per_level : int
        Residual blocks per level on the way down (one more on the way up).
    attention_levels : sequence of int
        Levels (0 = full resolution) that get self-attention after each block.
    time_embedding : bool
        Condition every block on a scalar per image (a diffusion time),
        passed as ``forward(x, t)``.
    dropout : float
    condition_dims : int
        Further numbers per image (e.g. a total flux) that condition every
        block with the time, passed as ``forward(x, t, condition)``, a
        ``(B, condition_dims)`` tensor; needs ``time_embedding``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        base_channels=32,
        channel_mult=(1, 2, 4),
        blocks_per_level=1,
        attention_levels=(),
        time_embedding=False,
        dropout=0.0,
        condition_dims=0,
    ):
        super().__init__()
        if condition_dims and not time_embedding:
            raise ValueError("condition_dims needs time_embedding=True: conditions join the time embedding")
        self.levels = len(channel_mult)
        emb_dim = 4 * base_channels if time_embedding else None
        self.base_channels = base_channels
        self.time_mlp = (
            nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if time_embedding
            else None
        )
        self.condition_dims = condition_dims
        self.condition_mlp = (
            nn.Sequential(nn.Linear(condition_dims, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if condition_dims
            else None
        )
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        attention_levels = set(attention_levels)

        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks_per_level):
                out = base_channels * mult
                self.down.append(self._block(ch, out, emb_dim, dropout, level in attention_levels))
                ch = out
                skips.append(ch)
            if level < self.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout), SelfAttention2d(ch), ResBlock(ch, ch, emb_dim, dropout)]
            if self.levels - 1 in attention_levels
            else [ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks_per_level + 1):
                out = base_channels * mult
                self.up.append(self._block(ch + skips.pop(), out, emb_dim, dropout, level in attention_levels))
                ch = out
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.head = nn.Sequential(ChannelNorm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    @staticmethod
    def _block(cin, cout, emb_dim, dropout, attention):
        block = nn.ModuleList([ResBlock(cin, cout, emb_dim, dropout)])
        if attention:
            block.append(SelfAttention2d(cout))
        return block

    @staticmethod
    def _run(block, h, emb):
        if isinstance(block, nn.ModuleList):
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            return h, True
        return block(h), False

    def forward(self, x, t=None, condition=None):
        emb = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this U-Net is conditioned on time: call it as net(x, t)")
            emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        if self.condition_mlp is not None:
            if condition is None or tuple(condition.shape) != (x.shape[0], self.condition_dims):
                raise ValueError(f"this U-Net takes a ({x.shape[0]}, {self.condition_dims}) condition: "
                                 "call it as net(x, t, condition)")
            emb = emb + self.condition_mlp(condition.to(emb.dtype))
        elif condition is not None:
            raise ValueError("this U-Net takes no condition")
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h, _ = self._run(block, h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            if isinstance(block, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h, _ = self._run(block, h, emb)
        return self.head(h)

    @property
    def multiple(self):
        """Input sizes must be divisible by this."""
        return 2 ** (self.levels - 1)


class PatchDiscriminator(nn.Module):
    """A pix2pix-style discriminator: one real/fake score per overlapping patch.

    Parameters
    ----------
    in_channels : int
    base_channels : int
    layers : int
        Stride-2 convolutions; the receptive field grows with each.
    """

    def __init__(self, in_channels, base_channels=32, layers=3):
        super().__init__()
        mods, ch = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)], base_channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), ChannelNorm(2 * ch), nn.LeakyReLU(0.2)]
            ch *= 2
        mods.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


def _u_centred_distances(z, eps):
    """U-centred Euclidean distance matrix of ``(n, d)`` samples (Szekely & Rizzo 2014)."""
    n = z.shape[0]
    # Squared distances first: the slope of a distance is undefined where two
    # samples coincide (always on the diagonal); eps under the square root
    # keeps it finite. Pairwise differences, not a Gram matrix, for accuracy.
    d = torch.sqrt(torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").pow(2) + eps)
    off_diagonal = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    d = d * off_diagonal
    u = d - d.sum(0, keepdim=True) / (n - 2) - d.sum(1, keepdim=True) / (n - 2) + d.sum() / ((n - 1) * (n - 2))
    return u * off_diagonal


def distance_correlation(x, y, eps=1e-9):
    """Bias-corrected squared distance correlation of two batches.

    The estimator ``R*^2 = (A . B) / sqrt((A . A) (B . B))`` of Szekely &
    Rizzo (2014), where ``A`` and ``B`` are the U-centred distance matrices
    of ``x`` and ``y`` and ``A . B = sum over i != j of A_ij B_ij / (n (n -
    3))``. Its numerator estimates the squared distance covariance without
    bias, so for independent batches it scatters around 0 (and may be
    slightly negative) whatever the batch size and dimension; it is 1 when
    ``x`` and ``y`` are related by a similarity (e.g. a rotation and
    scaling). The plain V-statistic of Szekely et al. (2007) is biased
    towards 1 where the dimension is large next to the batch size: it gives
    about 0.97 for independent batches of 16 samples in 64 dimensions.
    Differentiable, so it can be used as a loss.

    Parameters
    ----------
    x, y : torch.Tensor
        ``(n, ...)`` batches of the same ``n >= 4`` samples (any trailing
        shapes; they are flattened). Computed in float64.
    eps : float
        Added to the squared distances and to the denominator, so that
        values and gradients stay finite where samples coincide or a batch
        is constant. In units of the squared distances: the distances
        between samples must be much larger than ``sqrt(eps)``.

    Returns
    -------
    torch.Tensor
        Scalar in [-1, 1], in the dtype of ``x`` (float64 for integers).

    Raises
    ------
    ValueError
        If the batches differ in size or have fewer than 4 samples (the
        estimator divides by ``n - 3``).

    References
    ----------
    Szekely, G. J. & Rizzo, M. L. (2014), "Partial distance correlation with
    methods for dissimilarities", Annals of Statistics 42, 2382.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"distance_correlation needs batches of equal size, got {n} and {y.shape[0]}")
    if n < 4:
        raise ValueError(f"distance_correlation needs batches of at least 4 samples (it divides by n - 3), got {n}")
    a = _u_centred_distances(x.reshape(n, -1).double(), eps)
    b = _u_centred_distances(y.reshape(n, -1).double(), eps)
    norm = n * (n - 3)
    ab, aa, bb = (a * b).sum() / norm, (a * a).sum() / norm, (b * b).sum() / norm
    r2 = ab / torch.sqrt(aa * bb + eps**2)
    return r2.to(x.dtype if x.is_floating_point() else torch.float64)


def sky_stretch(x, *, kind="asinh", softening=1.0, power=0.5, scale=1.0):
    """Compress the dynamic range of sparse sky images for an MSE loss.

    A sky model is zero almost everywhere, with a few pixels orders of
    magnitude brighter than the faint sources a network must also learn;
    MSE on raw intensities learns the bright ones only. The stretch is
    ``asinh(x / softening) / scale`` (``kind="asinh"``: linear below
    ``softening``, logarithmic above) or ``sign(x) |x / softening| ** power /
    scale`` (``kind="power"``, the power transform of the reference DDPM
    code). Both are odd and strictly increasing, so `sky_unstretch` inverts
    them exactly.

    Parameters
    ----------
    x : torch.Tensor
        Intensities (any unit; ``softening`` in the same unit).
    kind : {"asinh", "power"}
    softening : float
        Intensity at which the compression sets in.
    power : float
        Exponent of ``kind="power"`` (0 < power <= 1).
    scale : float
        Divisor of the result, to bring the data to about unit range.
    """
    if kind == "asinh":
        return torch.asinh(x / softening) / scale
    if kind == "power":
        return torch.sign(x) * (x.abs() / softening).pow(power) / scale
    raise ValueError(f"Unknown sky stretch {kind!r}; choose 'asinh' or 'power'")


def sky_unstretch(t, *, kind="asinh", softening=1.0, power=0.5, scale=1.0):
    """Inverse of `sky_stretch` (same parameters)."""
    if kind == "asinh":
        return torch.sinh(t * scale) * softening
    if kind == "power":
        return torch.sign(t) * (t.abs() * scale).pow(1.0 / power) * softening
    raise ValueError(f"Unknown sky stretch {kind!r}; choose 'asinh' or 'power'")


def dead_zone(t, width):
    """Set values of a normalised sky within ``width`` of 0 to exactly 0.

    A network's output is not exactly 0 where it sees nothing, and the
    published scoring protocol, whose threshold falls to 1e-3 of a model's
    peak, counts the ripples of that faint floor as sources. Applied at
    prediction only, so it can be chosen on a trained model.

    Parameters
    ----------
    t : torch.Tensor
        Normalised (stretched) sky, dimensionless.
    width : float
        Half-width of the zone, in the same units; 0 leaves ``t`` as it is.
    """
    if width > 0:
        t = torch.where(t.abs() > width, t, torch.zeros_like(t))
    return t


def check_dead_zone(width):
    """Raise `ValueError` unless ``width`` is a finite number >= 0 (a config's ``dead_zone``)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 <= width < float("inf"):
        raise ValueError(f"dead_zone must be a finite number >= 0, not {width!r}")


def bin_image(x, factor, *, reduce="mean"):
    """Bin the last two axes by ``factor`` (sizes must be divisible by it).

    ``reduce="mean"`` suits intensities per beam (dirty images),
    ``"sum"`` fluxes per pixel (sky models), which it conserves.
    """
    if factor == 1:
        return x
    out = F.avg_pool2d(x, factor)
    return out * factor**2 if reduce == "sum" else out


def unbin_image(x, factor, *, reduce="mean"):
    """Inverse of `bin_image`: bilinear interpolation back to the fine grid.

    With ``reduce="sum"`` values are divided by ``factor ** 2`` so that the
    total flux is kept.
    """
    if factor == 1:
        return x
    out = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return out / factor**2 if reduce == "sum" else out


def pad_to_multiple(x, multiple):
    """Zero-pad the last two axes up to a multiple; returns the padded tensor and the original size."""
    ny, nx = x.shape[-2:]
    py, px = (-ny) % multiple, (-nx) % multiple
    if py or px:
        x = F.pad(x, (0, px, 0, py))
    return x, (ny, nx)


def grid_channels(factor, stem="bin"):
    """Channels of one image on the grid of `to_grid`: 1 for bins, ``factor ** 2`` unshuffled."""
    _check_stem(stem)
    return factor**2 if stem == "unshuffle" else 1


def _check_stem(stem):
    if stem not in ("bin", "unshuffle"):
        raise ValueError(f"stem must be 'bin' or 'unshuffle', not {stem!r}")


def to_grid(x, factor, multiple, *, reduce="mean", stem="bin"):
    """``(B, ny, nx)`` images to the ``(B, C, h, w)`` grid a network works on.

    Zero-pads to a multiple of ``multiple`` (native pixels), then makes a
    grid ``factor`` times coarser: ``stem="bin"`` bins (`bin_image`, one
    channel), ``"unshuffle"`` moves each ``factor x factor`` block of pixels
    into ``factor ** 2`` channels of one cell (a pixel-unshuffle, Shi et al.
    2016), which loses nothing (``reduce`` does not apply). Returns the grid
    and the original size, for `from_grid`.
    """
    _check_stem(stem)
    x, size = pad_to_multiple(x, multiple)
    if stem == "unshuffle":
        return F.pixel_unshuffle(x[:, None], factor), size
    return bin_image(x[:, None], factor, reduce=reduce), size


def from_grid(x, factor, size, *, reduce="mean", stem="bin"):
    """Inverse of `to_grid`: ``(B, C, h, w)`` back to ``(B, ny, nx)`` native pixels.

    Bins are interpolated back (`unbin_image`); unshuffled blocks are put
    back exactly (a pixel-shuffle).
    """
    _check_stem(stem)
    out = F.pixel_shuffle(x, factor) if stem == "unshuffle" else unbin_image(x, factor, reduce=reduce)
    return out[:, 0, : size[0], : size[1]]


def count_parameters(module):
    """Number of trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConvEncoder(nn.Module):
    """Square images to a vector: residual blocks with stride-2 downsampling, then a linear map.

    The encoder of a variational autoencoder (``out_features = 2 x latent``
    for a mean and a log-variance) or any image-to-vector network.

    Parameters
    ----------
    in_channels, out_features : int
    size : int
        Height and width of the input; divisible by ``2 ** (len(channel_mult) - 1)``.
    base_channels : int
    channel_mult : sequence of int
        Channels per level as multiples of ``base_channels``; each level
        after the first halves the resolution.
    """

    def __init__(self, in_channels, out_features, size, base_channels=16, channel_mult=(1, 2, 4)):
        super().__init__()
        levels = len(channel_mult)
        if size % 2 ** (levels - 1):
            raise ValueError(f"size {size} is not divisible by 2 ** {levels - 1}")
        layers, ch = [nn.Conv2d(in_channels, base_channels, 3, padding=1)], base_channels
        for level, mult in enumerate(channel_mult):
            layers.append(ResBlock(ch, base_channels * mult))
            ch = base_channels * mult
            if level < levels - 1:
                layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        layers += [ChannelNorm(ch), nn.SiLU(), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(ch * (size // 2 ** (levels - 1)) ** 2, out_features)

    def forward(self, x):
        return self.head(self.net(x))


class ConvDecoder(nn.Module):
    """A vector to square images: the mirror of `ConvEncoder`.

    A linear map to the coarsest feature map, then residual blocks with
    nearest-neighbour upsampling and a 3x3 convolution to ``out_channels``.

    Parameters
    ----------
    in_features, out_channels, size, base_channels, channel_mult
        As for `ConvEncoder` (``channel_mult`` listed from full resolution).
    """

    def __init__(self, in_features, out_channels, size, base_channels=16, channel_mult=(1, 2, 4)):
        super().__init__()
        levels = len(channel_mult)
        if size % 2 ** (levels - 1):
            raise ValueError(f"size {size} is not divisible by 2 ** {levels - 1}")
        ch, coarse = base_channels * channel_mult[-1], size // 2 ** (levels - 1)
        self.shape = (ch, coarse, coarse)
        self.stem = nn.Linear(in_features, ch * coarse * coarse)
        layers = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            layers.append(ResBlock(ch, base_channels * mult))
            ch = base_channels * mult
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
        layers += [ChannelNorm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(self.stem(z).reshape(-1, *self.shape))


def square_symmetry(*images):
    """The same random flip or quarter turn of the square, per image, for each batch given.

    The eight symmetries of the square (horizontal flip, vertical flip and
    transpose, each on or off; non-square images skip the transpose), drawn
    with torch's global generator. A turned dirty image is the turned sky
    seen through the turned PSF, as valid an observation as the original,
    so a pair stays a pair if both get the same one.

    Parameters
    ----------
    *images : torch.Tensor
        ``(B, ny, nx)`` batches of native pixels (not unshuffled grids,
        whose channels would not turn with the image), all of one shape.

    Returns
    -------
    tuple of torch.Tensor
    """
    x = images[0]
    ops = [lambda t: t.flip(-1), lambda t: t.flip(-2)]
    if x.shape[-1] == x.shape[-2]:
        ops.append(lambda t: t.transpose(-1, -2))
    for op in ops:
        on = torch.randint(0, 2, (x.shape[0], 1, 1), device=x.device).bool()
        images = tuple(torch.where(on, op(t), t) for t in images)
    return images


class AveragedWeights:
    """Mixin of backends whose ``net`` is trained and whose ``ema`` (its running average) predicts.

    The exponential moving average of the weights (Polyak averaging, as in
    diffusion models) is stored in model files as the module ``ema``, and
    its step count in the training state, so that a resumed run averages as
    an uninterrupted one. The decay is ``min(ema_decay, (1 + n) / (10 +
    n))`` after ``n`` steps, so that short runs do not average mostly the
    random initial weights. `optimise` takes one step of the ``optimizer``
    with gradients clipped to norm 1, then updates the average.
    """

    ema_steps = 0

    def build_networks(self, in_channels, out_channels, condition_dims=0):
        """``net``, a time-conditioned `UNet` shaped by the config, and ``ema``, its average (a copy to start)."""
        c = self.config
        self.net = UNet(
            in_channels,
            out_channels,
            c["base_channels"],
            channel_mult=tuple(c["channel_mult"]),
            blocks_per_level=c["blocks_per_level"],
            attention_levels=tuple(c["attention_levels"]),
            time_embedding=True,
            dropout=c["dropout"],
            condition_dims=condition_dims,
        )
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.ema_steps = 0

    def reset_parameters(self):
        """Fresh weights for the network; the average starts equal to them."""
        for sub in self.net.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        self.ema.load_state_dict(self.net.state_dict())

    def begin_fit(self, *, resumed=False):
        if not resumed:
            self.ema_steps = 0

    def optimise(self, loss):
        """Backpropagate ``loss``, step the optimiser and the average; returns the loss as a float."""
        opt = self.optimizers["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        opt.step()
        self.update_average()
        return loss.item()

    @torch.no_grad()
    def update_average(self):
        """One step of the moving average of ``net`` into ``ema``."""
        self.ema_steps += 1
        decay = min(self.config["ema_decay"], (1 + self.ema_steps) / (10 + self.ema_steps))
        for p_ema, p in zip(self.ema.parameters(), self.net.parameters()):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    def training_state(self):
        return {**super().training_state(), "ema_steps": self.ema_steps}

    def load_training_state(self, state):
        state = dict(state)
        self.ema_steps = int(state.pop("ema_steps", 0))
        super().load_training_state(state)
