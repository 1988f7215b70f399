"""The shared network pieces: U-Net, distance correlation, binning."""

import numpy as np
import pytest
import torch

from radiorecon.nn import (
    PatchDiscriminator,
    UNet,
    bin_image,
    count_parameters,
    distance_correlation,
    pad_to_multiple,
    unbin_image,
)


def _dcor_direct(x, y):
    """Distance correlation by the textbook double-centring, in numpy."""
    def centred(z):
        z = z.reshape(len(z), -1)
        d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
        return d - d.mean(0) - d.mean(1)[:, None] + d.mean()

    a, b = centred(x), centred(y)
    dcov2 = (a * b).mean()
    return np.sqrt(dcov2 / np.sqrt((a * a).mean() * (b * b).mean()))


def test_distance_correlation_matches_direct_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 5))
    y = x[:, :3] ** 2 + rng.normal(size=(12, 3))
    exact = distance_correlation(torch.tensor(x), torch.tensor(y), eps=1e-18).item()
    assert exact == pytest.approx(_dcor_direct(x, y), abs=1e-8)
    # The default eps, there for finite gradients, moves the value very little.
    ours = distance_correlation(torch.tensor(x), torch.tensor(y)).item()
    assert ours == pytest.approx(_dcor_direct(x, y), abs=1e-4)


def test_distance_correlation_limits():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=gen)
    assert distance_correlation(x, 3 * x - 2).item() == pytest.approx(1.0, abs=1e-6)
    # The sample statistic of independent data is biased upwards, towards 0 as n grows.
    small = distance_correlation(x[:50], torch.randn(50, 4, generator=gen)).item()
    large = distance_correlation(x, torch.randn(400, 4, generator=gen)).item()
    assert large < 0.25 and large < small
    # Images work too: the trailing axes are flattened.
    img = torch.randn(8, 1, 6, 6, generator=gen)
    assert distance_correlation(img, img * 0.5).item() == pytest.approx(1.0, abs=1e-6)


def test_distance_correlation_gradient_is_finite():
    # Identical samples make zero distances, where a plain sqrt has an infinite slope.
    x = torch.zeros(6, 3, requires_grad=True)
    y = torch.randn(6, 3, requires_grad=True)
    distance_correlation(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    x = torch.randn(6, 3, requires_grad=True)
    distance_correlation(x, x.detach() * 2).backward()
    assert torch.isfinite(x.grad).all()


def test_distance_correlation_refuses_unequal_batches():
    with pytest.raises(ValueError, match="equal size"):
        distance_correlation(torch.zeros(3, 2), torch.zeros(4, 2))


@pytest.mark.parametrize("attention, time", [((), False), ((1,), True)])
def test_unet_shapes(attention, time):
    net = UNet(3, 2, base_channels=8, channel_mult=(1, 2), attention_levels=attention, time_embedding=time)
    x = torch.randn(2, 3, 16, 24)
    out = net(x, torch.rand(2)) if time else net(x)
    assert out.shape == (2, 2, 16, 24)
    assert net.multiple == 2
    if time:
        with pytest.raises(ValueError, match="conditioned on time"):
            net(x)
        # The time really conditions the output.
        assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))
    assert count_parameters(net) > 0


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(2, base_channels=8, layers=2)
    assert d(torch.randn(3, 2, 32, 32)).shape == (3, 1, 8, 8)


def test_binning_conserves_flux_and_means():
    x = torch.rand(2, 1, 8, 12)
    assert bin_image(x, 2, reduce="sum").sum().item() == pytest.approx(x.sum().item(), rel=1e-6)
    assert bin_image(x, 2).mean().item() == pytest.approx(x.mean().item(), rel=1e-6)
    coarse = bin_image(x, 2, reduce="sum")
    fine = unbin_image(coarse, 2, reduce="sum")
    assert fine.shape == x.shape
    assert fine.sum().item() == pytest.approx(coarse.sum().item(), rel=1e-5)
    assert bin_image(x, 1) is x and unbin_image(x, 1) is x


def test_pad_to_multiple():
    x = torch.ones(1, 5, 7)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (1, 8, 8) and size == (5, 7)
    assert padded.sum().item() == 35
