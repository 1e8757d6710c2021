"""Domain features: a small image network whose penultimate layer replaces the raw pixels.

The paper (Kirsch et al., 2022, Sec. 4.4) meta-trains on embeddings of a pre-trained network
and finds that matching domain features speed up in-context learning while the learner still
generalises to other domains. ImageNet weights are not available offline, so the feature
network is pre-trained here, by supervised classification of one training split; its folder
records exactly what it saw (``config.json``: dataset, split, images, epochs) beside its
weights (``model.safetensors``, never a pickle).

A split passed through :func:`embed` is what :func:`training.data.load_dataset` returns
with ``features=<folder>``: the ``width`` features of the penultimate layer, z-normalised
by one scalar mean and std over the split as the raw pixels are (the paper's Alg. 1
projections then act on features of the same scale as on pixels).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

_CHUNK = 4096  # images embedded per forward pass: bounds the activations' memory


class FeatureNet(nn.Module):
    """Two 3 x 3 convolutions with max-pooling, then ``width`` ReLU features and a linear head.

    Inputs are flattened images in :func:`training.data.load_dataset`'s (height, width,
    channel) order, ``size * size * channels`` wide.
    """

    def __init__(self, size: int, channels: int, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.size, self.channels = size, channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        img = x.view(-1, self.size, self.size, self.channels).permute(0, 3, 1, 2)
        return self.body(img)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_feature_net(
    x: Tensor,
    y: Tensor,
    *,
    size: int,
    channels: int,
    width: int = 64,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> FeatureNet:
    """Supervised classification of ``(x, y)`` (a preprocessed training split) with Adam."""
    torch.manual_seed(seed)
    net = FeatureNet(size, channels, width, int(y.max()) + 1).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), device=x.device, generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, x: Tensor, y: Tensor) -> float:
    """The head's accuracy on ``(x, y)``: how well the network learnt its own split."""
    hits = sum(int((net(xc).argmax(-1) == yc).sum()) for xc, yc in zip(x.split(_CHUNK), y.split(_CHUNK), strict=True))
    return hits / len(y)


def save_feature_net(net: FeatureNet, folder: str | os.PathLike, provenance: dict) -> None:
    """Weights and a config that says what the network is and what it saw (``provenance``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "size": net.size,
        "channels": net.channels,
        "width": net.head.in_features,
        "num_classes": net.head.out_features,
        **provenance,
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_feature_net(folder: str | os.PathLike) -> FeatureNet:
    """The network saved by :func:`save_feature_net` in ``folder``."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} holds no feature network (config.json and model.safetensors)")
    cfg = json.loads((folder / "config.json").read_text())
    net = FeatureNet(cfg["size"], cfg["channels"], cfg["width"], cfg["num_classes"])
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval()


@torch.no_grad()
def embed(folder: str | os.PathLike, x: Tensor, *, size: int | None, channels: int) -> Tensor:
    """``x`` (flattened images of ``size``, ``channels``) -> the network's features, z-normalised."""
    net = load_feature_net(folder)
    if (size, channels) != (net.size, net.channels):
        raise ValueError(
            f"the feature network in {folder} reads {net.size} x {net.size} x {net.channels} images; "
            f"the data were prepared as {size} x {size} x {channels} (set image_size and channels to match)"
        )
    net.to(x.device)
    out = torch.cat([net.features(chunk) for chunk in x.split(_CHUNK)])
    std = out.std(unbiased=False).item()
    return (out - out.mean()) / (std if std > 0 else 1.0)
