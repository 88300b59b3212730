"""The seed's networks: parameter counts and output shapes on CIFAR-10 and MNIST inputs."""

from __future__ import annotations

import pytest
import torch

from kagglerun.core.models import build_model, count_params


def model(name, bn=True, dropout="none", width=1.0):
    return {"name": name, "batchnorm": bn, "dropout": dropout, "conv_dropout": 0.3, "linear_dropout": 0.5,
            "width": width}


def test_c5l3_has_the_seeds_parameter_count():
    # 3*128*9+128 + 128*256*9+256 + 256*512*9+512 + 512*512*9+512 + 512*256*9+256
    # + 4096*512+512 + 512*256+256 + 256*128+128 + 128*10+10
    assert count_params(build_model(model("c5l3", bn=False, dropout="all"), 3, 32)) == 7_281_802
    with_bn = count_params(build_model(model("c5l3", bn=True), 3, 32))
    assert with_bn == 7_281_802 + 2 * (128 + 256 + 512 + 512 + 256)


def test_reference_parameter_counts():
    assert count_params(build_model(model("resnet18"), 3, 32)) == 11_173_962  # torchvision's resnet18, CIFAR stem
    assert count_params(build_model(model("resnet50"), 3, 32)) == 23_520_842
    assert count_params(build_model(model("vgg16", dropout="linear"), 3, 32)) == 15_253_578


@pytest.mark.parametrize("name", ["c5l3", "vgg16", "resnet18", "resnet50"])
@pytest.mark.parametrize("channels, size", [(3, 32), (1, 28)])
def test_output_shapes(name, channels, size):
    net = build_model(model(name, width=0.125, dropout="all"), channels, size).eval()
    with torch.no_grad():
        out = net(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)


def test_dropout_placement():
    def drops(placement):
        net = build_model(model("c5l3", dropout=placement, width=0.125), 3, 32)
        return [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]

    assert drops("none") == []
    assert drops("linear") == [0.5, 0.5, 0.5]
    assert drops("all") == [0.3, 0.3, 0.3, 0.5, 0.5, 0.5]
