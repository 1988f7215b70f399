"""Small but real backends that exercise every part of the contract in tests."""

import torch

from radiorecon import Backend, Prediction


class ConvBackend(Backend):
    """A 3x3 convolution trained by least squares; samples add seeded noise."""

    capabilities = {"reconstruct", "draws", "needs_training", "paired"}
    tile_shape = (32, 32)
    tile_margin = 2
    default_config = {"learning_rate": 0.05, "noise": 0.1}
    inference_keys = frozenset({"noise"})

    def __init__(self, **config):
        super().__init__(**config)
        self.net = torch.nn.Conv2d(1, 1, 3, padding=1)

    def modules(self):
        return {"net": self.net}

    def train_step(self, inputs, targets):
        opt = self.optimizers["optimizer"]
        opt.zero_grad()
        loss = ((self.net(inputs[:, None])[:, 0] - targets) ** 2).mean()
        loss.backward()
        opt.step()
        return {"mse": loss.item()}

    def evaluate_step(self, inputs, targets):
        return {"mse": ((self.net(inputs[:, None])[:, 0] - targets) ** 2).mean().item()}

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        mean = self.net(inputs[:, None])[:, 0]
        noise = self.config["noise"] * draws.randn(*mean.shape[1:])
        return Prediction(samples=mean[None] + noise)


class SmoothBackend(Backend):
    """A fixed local smoothing (no training), on 48x48 tiles: for tiling tests."""

    capabilities = {"reconstruct"}
    tile_shape = (48, 48)
    tile_margin = 1

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None):
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        out = torch.nn.functional.conv2d(inputs[:, None], kernel[None, None], padding=1)[:, 0]
        return Prediction(mean=out)


class PriorBackend(Backend):
    """Learns the mean and spread of unpaired sky images; samples new ones."""

    capabilities = {"sample", "needs_training"}
    tile_shape = (16, 16)

    def __init__(self, **config):
        super().__init__(**config)
        self.moments = torch.nn.Module()
        self.moments.register_buffer("sums", torch.zeros(3, dtype=torch.float64))

    def modules(self):
        return {"moments": self.moments}

    def begin_fit(self, *, resumed=False):
        if not resumed:
            self.moments.sums.zero_()

    def train_step(self, inputs, targets):
        assert targets is None
        x = inputs.double()
        self.moments.sums += torch.stack([x.new_tensor(x.numel()), x.sum(), (x**2).sum()])
        return {"mean": float(x.mean())}

    def sample(self, n, *, shape, draws=None):
        count, total, squares = self.moments.sums
        mean = total / count
        std = (squares / count - mean**2).clamp(min=0).sqrt()
        return (mean + std * draws.randn(*shape, dtype=torch.float64)[0]).float()


class SplitBackend(Backend):
    """Separates an image into its left and right halves: for per-source outputs."""

    capabilities = {"reconstruct", "deblend"}
    tile_shape = (32, 32)

    def predict(self, inputs, *, n_samples=1, psf=None, draws=None, positions=None):
        # Positions are not needed: the halves are the "sources".
        left = inputs.clone()
        left[..., inputs.shape[-1] // 2 :] = 0
        right = inputs - left
        return Prediction(mean=inputs.clone(), components=list(torch.stack([left, right], 1)))
