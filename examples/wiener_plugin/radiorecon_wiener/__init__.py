"""A learned Wiener filter, packaged as a radiorecon backend plugin."""

import torch

from radiorecon import Backend, Prediction

__all__ = ["WienerBackend"]
__version__ = "0.1.0"


class _Statistics(torch.nn.Module):
    """Fourier-space sums gathered during training, and the filter made from them."""

    def __init__(self, size):
        super().__init__()
        shape = (size, size // 2 + 1)
        # Complex numbers are kept as (real, imaginary) float pairs so that
        # they store in any safetensors reader.
        self.register_buffer("cross", torch.zeros(2, *shape, dtype=torch.float64))
        self.register_buffer("power", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("filter", torch.zeros(2, *shape, dtype=torch.float64))

    def filter_images(self, images):
        w = torch.complex(self.filter[0], self.filter[1])
        spectrum = torch.fft.rfft2(images.double()) * w
        return torch.fft.irfft2(spectrum, s=images.shape[-2:]).float()


class WienerBackend(Backend):
    """Learned Wiener filter: the least-squares linear map from dirty image to sky.

    Trains in one pass over (dirty, sky) pairs of ``size`` x ``size`` pixels;
    larger images are reconstructed tile by tile.
    """

    capabilities = {"reconstruct", "needs_training", "paired"}
    version = "1"
    default_config = {"size": 64, "regularisation": 1e-3}

    def __init__(self, **config):
        super().__init__(**config)
        size = self.config["size"]
        self.tile_shape = (size, size)
        self.tile_margin = size // 8
        self.stats = _Statistics(size)

    def modules(self):
        return {"stats": self.stats}

    def begin_fit(self, *, resumed=False):
        # A closed-form estimator: nothing to optimise, only sums to gather.
        if not resumed:
            self.stats.cross.zero_()
            self.stats.power.zero_()

    def _check(self, images):
        size = self.config["size"]
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"The wiener backend trains on {size}x{size} images, got {tuple(images.shape[-2:])}"
            )

    def train_step(self, inputs, targets):
        self._check(inputs)
        x = torch.fft.rfft2(inputs.double())
        y = torch.fft.rfft2(targets.double())
        cross = (y * x.conj()).sum(0)
        self.stats.cross += torch.stack([cross.real, cross.imag])
        self.stats.power += (x.abs() ** 2).sum(0)
        self._update_filter()
        return self.evaluate_step(inputs, targets)

    def evaluate_step(self, inputs, targets):
        return {"mse": float(((self.stats.filter_images(inputs) - targets) ** 2).mean())}

    def _update_filter(self):
        s = self.stats
        damping = self.config["regularisation"] * s.power.mean()
        s.filter.copy_(s.cross / (s.power + damping))

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        return Prediction(mean=self.stats.filter_images(inputs))
