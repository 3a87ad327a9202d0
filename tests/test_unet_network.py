"""UNet3D: output shapes with and without deep supervision, seeded initialisation."""

from __future__ import annotations

import pytest
import torch

from patchwork.networks import UNet3D, init_weights


@pytest.mark.parametrize("n_stages", [1, 2, 3])
def test_output_shape(n_stages):
    net = UNet3D(in_channels=2, out_channels=3, base_features=4, max_features=16, n_stages=n_stages)
    x = torch.randn(2, 2, 16, 8, 24)
    assert net(x).shape == (2, 3, 16, 8, 24)
    assert len(net.forward_deep(x)) == 1


def test_deep_supervision_outputs_every_decoder_stage():
    net = UNet3D(1, 2, base_features=4, max_features=8, n_stages=4, deep_supervision=True)
    x = torch.randn(1, 1, 32, 16, 32)
    shapes = [tuple(o.shape) for o in net.forward_deep(x)]
    assert shapes == [(1, 2, 32, 16, 32), (1, 2, 16, 8, 16), (1, 2, 8, 4, 8)]
    assert torch.equal(net(x), net.forward_deep(x)[0])


def test_features_capped_and_strided_downsampling():
    net = UNet3D(1, 1, base_features=8, max_features=16, n_stages=4)
    convs = [stage[0][0] for stage in net.encoder]
    assert [c.out_channels for c in convs] == [8, 16, 16, 16]
    assert [c.stride for c in convs] == [(1, 1, 1)] + [(2, 2, 2)] * 3
    assert all(isinstance(m, torch.nn.ConvTranspose3d) for m in net.up)
    assert sum(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules()) == 2 * (4 + 3)


def _weights(seed: int) -> list[torch.Tensor]:
    net = UNet3D(1, 2, base_features=4, max_features=8, n_stages=3)
    init_weights(net, torch.Generator().manual_seed(seed))
    return [p.detach().clone() for p in net.parameters()]


def test_same_seed_same_weights_bitwise():
    a, b, c = _weights(3), _weights(3), _weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_weights_do_not_depend_on_the_global_rng():
    torch.manual_seed(1)
    a = _weights(0)
    torch.manual_seed(2)
    b = _weights(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
