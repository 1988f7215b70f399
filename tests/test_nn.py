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


def _dcor_reference(x, y):
    """Bias-corrected dCor^2 written out from Szekely & Rizzo (2014), in numpy."""

    def u_centred(z):
        z = z.reshape(len(z), -1)
        n = len(z)
        a = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
        u = a - a.sum(1, keepdims=True) / (n - 2) - a.sum(0, keepdims=True) / (n - 2)
        u += a.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(u, 0.0)
        return u

    def dot(u, v):
        n = len(u)
        return (u * v).sum() / (n * (n - 3))

    a, b = u_centred(x), u_centred(y)
    return dot(a, b) / np.sqrt(dot(a, a) * dot(b, b))


def test_distance_correlation_matches_reference_formula():
    rng = np.random.default_rng(1)
    for n, dim in ((4, 3), (16, 64), (37, 5)):
        x = rng.normal(size=(n, dim))
        y = np.tanh(x) + 0.5 * rng.normal(size=(n, dim))
        expected = _dcor_reference(x, y)
        assert distance_correlation(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(expected, abs=1e-5)
        # float32 in, float32 out, computed in float64 all the same.
        single = distance_correlation(torch.tensor(x).float(), torch.tensor(y).float())
        assert single.dtype == torch.float32 and single.item() == pytest.approx(expected, abs=1e-5)
    # Images work too: the trailing axes are flattened.
    img = rng.normal(size=(8, 1, 6, 6))
    other = img**2 + rng.normal(size=(8, 1, 6, 6))
    assert distance_correlation(torch.tensor(img), torch.tensor(other)).item() == pytest.approx(
        _dcor_reference(img, other), abs=1e-5
    )


# STAR trains on batches of 16 (examples/train_star.py) and takes the
# distance correlation of 4x4-pooled 32x32 maps: 64 values per image.
@pytest.mark.parametrize("seed", range(4))
def test_distance_correlation_separates_independent_from_dependent(seed):
    rng = np.random.default_rng(seed)
    n, dim = 16, 64

    def dcor(x, y):
        return distance_correlation(torch.tensor(x), torch.tensor(y)).item()

    x = rng.normal(size=(n, dim))
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    noise = 0.1 * rng.normal(size=(n, dim))
    # Independent pairs: around 0 (the biased V-statistic gives 0.97 here).
    independent = [dcor(rng.normal(size=(n, dim)), rng.normal(size=(n, dim))) for _ in range(8)]
    assert abs(np.mean(independent)) < 0.1 and max(independent) < 0.4
    # A rotation with a little noise: near 1.
    assert dcor(x, 3 * x @ rotation + noise) > 0.95
    # Nonlinear dependence: far from the independent values.
    assert dcor(x, np.tanh(x @ rotation) + noise) > 0.8
    assert dcor(x, (x @ rotation) ** 3 + noise) > 0.4


def test_distance_correlation_limits_and_scale():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    assert distance_correlation(x, 3 * x - 2).item() == pytest.approx(1.0, abs=1e-6)
    y = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    # Invariant under shifts and scaling of either batch.
    assert distance_correlation(1e-2 * x + 5, y * 100).item() == pytest.approx(
        distance_correlation(x, y).item(), abs=1e-6
    )
    # A constant batch carries no information about the other: 0, not NaN.
    constant = distance_correlation(torch.ones(6, 3), torch.randn(6, 3, generator=gen))
    assert constant.item() == pytest.approx(0.0, abs=1e-9)


def test_distance_correlation_gradient_is_finite():
    # Identical samples make zero distances, where a plain sqrt has an infinite slope.
    x = torch.zeros(6, 3, requires_grad=True)
    y = torch.randn(6, 3, requires_grad=True)
    distance_correlation(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    x = torch.randn(6, 3, requires_grad=True)
    repeated = torch.cat([x[:3], x[:3]])
    distance_correlation(repeated, x.detach() * 2).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0


def test_distance_correlation_as_a_loss_removes_dependence():
    # As in STAR: descending the gradient must make one batch independent of the other.
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(16, 64, generator=gen)
    x = (y + 0.1 * torch.randn(16, 64, generator=gen)).requires_grad_()
    start = distance_correlation(x, y).item()
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(25):
        opt.zero_grad()
        distance_correlation(x, y).clamp_min(0).backward()
        opt.step()
    assert start > 0.95 and distance_correlation(x, y).item() < 0.1


def test_distance_correlation_refuses_unequal_or_small_batches():
    with pytest.raises(ValueError, match="equal size, got 4 and 5"):
        distance_correlation(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 4 samples.*got 3"):
        distance_correlation(torch.randn(3, 2), torch.randn(3, 2))


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


def test_grids_of_bins_and_of_unshuffled_blocks():
    from radiorecon.nn import from_grid, grid_channels, to_grid

    x = torch.randn(3, 21, 18, generator=torch.Generator().manual_seed(0))
    grid, size = to_grid(x, 4, 8, stem="unshuffle")
    assert grid.shape == (3, grid_channels(4, "unshuffle"), 24 // 4, 24 // 4) and size == (21, 18)
    # Each 4x4 block is one cell's 16 channels, and comes back exactly.
    torch.testing.assert_close(grid[1, :, 0, 0], x[1, :4, :4].flatten())
    torch.testing.assert_close(from_grid(grid, 4, size, stem="unshuffle"), x, rtol=0, atol=0)
    # Bins conserve the flux of a sky (reduce="sum") and are one channel.
    binned, size = to_grid(x, 2, 4, reduce="sum")
    assert binned.shape == (3, 1, 12, 10)
    torch.testing.assert_close(binned.sum(), x.sum())
    assert from_grid(binned, 2, size, reduce="sum").shape == x.shape
    with pytest.raises(ValueError, match="stem must be"):
        to_grid(x, 2, 4, stem="shuffle")
