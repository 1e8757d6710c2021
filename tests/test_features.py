"""The feature network of the domain-features experiment: it learns, round-trips, and replaces pixels."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_tiny_mnist

from training.config import ConfigError, TrainConfig
from training.data import load_dataset
from training.features import accuracy, load_feature_net, save_feature_net, train_feature_net


@pytest.fixture
def tiny_root(tmp_path):
    return write_tiny_mnist(tmp_path / "data", n_train=400, n_test=100)


@pytest.fixture
def net_folder(tiny_root, tmp_path):
    x, y = load_dataset("mnist", "train", root=tiny_root, size=8, channels=1)
    net = train_feature_net(x, y, size=8, channels=1, width=16, epochs=3, batch_size=32)
    folder = tmp_path / "net"
    save_feature_net(net, folder, {"dataset": "mnist", "split": "train", "images": len(x)})
    return folder


def test_it_learns_the_split_it_is_trained_on(tiny_root, net_folder):
    x, y = load_dataset("mnist", "test", root=tiny_root, size=8, channels=1)
    assert accuracy(load_feature_net(net_folder), x, y) > 0.9  # 4 separable classes; chance is 0.25


def test_the_folder_says_what_it_saw_and_loads_the_same_weights(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 64), torch.randint(0, 3, (64,))
    net = train_feature_net(x, y, size=8, channels=1, width=16, epochs=1)
    save_feature_net(net, tmp_path / "net", {"dataset": "mnist", "split": "train", "images": 64})
    config = json.loads((tmp_path / "net" / "config.json").read_text())
    assert config == {"size": 8, "channels": 1, "width": 16, "num_classes": 3, "dataset": "mnist", "split": "train",
                      "images": 64}  # fmt: skip
    with torch.no_grad():
        assert torch.equal(load_feature_net(tmp_path / "net").features(x), net.features(x))


def test_load_dataset_with_features_gives_z_normalised_features(tiny_root, net_folder):
    x, y = load_dataset("mnist", "test", root=tiny_root, size=8, channels=1, features=net_folder)
    plain_x, plain_y = load_dataset("mnist", "test", root=tiny_root, size=8, channels=1)
    assert x.shape == (100, 16) and torch.equal(y, plain_y)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-4
    net = load_feature_net(net_folder)
    with torch.no_grad():
        raw = net.features(plain_x)
    assert torch.allclose(x, (raw - raw.mean()) / raw.std(unbiased=False), atol=1e-5)


def test_images_of_another_size_are_refused_by_name(tiny_root, net_folder):
    with pytest.raises(ValueError, match="reads 8 x 8 x 1 images; the data were prepared as 16 x 16 x 1"):
        load_dataset("mnist", "test", root=tiny_root, size=16, channels=1, features=net_folder)


def test_a_missing_feature_network_is_a_clear_error(tmp_path, tiny_root):
    with pytest.raises(FileNotFoundError, match="holds no feature network"):
        load_dataset("mnist", "test", root=tiny_root, size=8, channels=1, features=tmp_path)
    with pytest.raises(ConfigError, match="^features must be a feature network's folder"):
        TrainConfig(features=str(tmp_path))


def test_features_and_a_prior_do_not_mix(net_folder):
    with pytest.raises(ConfigError, match="^features must be null with a prior"):
        TrainConfig(features=str(net_folder), prior={}, out_dim=16, num_classes=10, eval_datasets=())
