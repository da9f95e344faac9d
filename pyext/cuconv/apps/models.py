"""CIFAR-10 models, built from torch.nn layers; `build_model(..., backend="cuconv")` swaps their
Conv2d/MaxPool2d for cuconv's (same parameters, same state_dict names), so a checkpoint trained
with one backend loads into the other."""
from __future__ import annotations

import torch
from torch import nn

MODELS = ("cifar-cnn", "resnet")
BACKENDS = ("cuconv", "native")


def cifar_cnn(num_classes: int = 10) -> nn.Module:
    """The seed CNN: 32x32 -> conv3 30 -> pool 15 -> conv3 13 -> pool 6; 64*6*6 = 2304 features."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 6 * 6, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-18 for 32x32 inputs (He et al. 2016, the CIFAR variant commonly used: a 3x3 stem
    without max-pooling, four stages of two BasicBlocks, 64-128-256-512 channels). `blocks` and
    `widths` give other depths; `pool="max"` ends in a 2x2 max-pool of the last stage's map
    instead of a global average, and the linear layer reads the whole pooled map."""

    def __init__(self, num_classes: int = 10, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"unknown pool {pool!r}; choose avg or max")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (n, cout) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        if pool == "avg":
            self.pool, features = nn.AdaptiveAvgPool2d(1), cin
        else:
            side = 32 // 2 ** (len(widths) - 1) // 2  # each stage after the first halves 32x32
            self.pool, features = nn.MaxPool2d(2), cin * side * side
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def build_model(name: str, backend: str = "cuconv", num_classes: int = 10) -> nn.Module:
    if name == "cifar-cnn":
        model = cifar_cnn(num_classes)
    elif name == "resnet":
        model = ResNetCifar(num_classes)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if backend == "cuconv":
        import cuconv
        model = cuconv.convert(model)
    elif backend != "native":
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return model


# The recipe each model trains with unless an option overrides it.
RECIPES = {
    "cifar-cnn": dict(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="none",
                      batch_size=32, epochs=10, normalize="scale", augment=False),
    # SGD + nesterov + cosine, crop/flip augmentation: ~93-95% for ResNet-18 on CIFAR-10 in 30+ epochs.
    "resnet": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                   batch_size=128, epochs=30, normalize="standard", augment=True),
}
