"""Tests of training.data: data-root discovery, npz reading, preprocessing, clear errors."""

from __future__ import annotations

import builtins
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import data
from training.data import DatasetUnavailableError, data_root, load_dataset, load_split

SHARED_MNIST_TEST = Path("/work/shared/datasets/mnist/test.npz")


def write_split(root: Path, name: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / name / f"{split}.npz", x=x, y=y)


@pytest.fixture
def gray_root(tmp_path: Path) -> Path:
    """A data root with a tiny 8x8 grayscale 'mnist' test split of 5 images."""
    rng = np.random.default_rng(0)
    write_split(tmp_path, "mnist", "test", rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), np.arange(5))
    return tmp_path


@pytest.fixture
def no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import torchvision`` fail and any socket use an error, so nothing is downloaded."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "torchvision":
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("test tried to open a network connection")

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(socket, "create_connection", no_network)


# --- data root -------------------------------------------------------------------------------


def test_env_var_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("GPICL_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert data_root() == tmp_path / "elsewhere"


def test_finds_shared_datasets_walking_up_from_cwd(monkeypatch, tmp_path):
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    deep = tmp_path / "project" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.delenv("GPICL_DATA_ROOT", raising=False)
    monkeypatch.chdir(deep)
    found = data_root()
    # This file's own ancestors are searched too, but only after the current directory's.
    assert found == (tmp_path / "shared" / "datasets").resolve()


def test_falls_back_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("GPICL_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "__file__", str(tmp_path / "training" / "data.py"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "gpicl" / "datasets"


# --- raw splits ------------------------------------------------------------------------------


def test_load_split_reads_npz(gray_root):
    x, y = load_split("mnist", "test", root=gray_root)
    assert x.shape == (5, 8, 8) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3, 4]


def test_load_split_uses_env_root(monkeypatch, gray_root):
    monkeypatch.setenv("GPICL_DATA_ROOT", str(gray_root))
    assert load_split("mnist", "test")[0].shape == (5, 8, 8)


@pytest.mark.parametrize(
    ("name", "split", "match"),
    [("imagenet", "test", "unknown dataset"), ("mnist", "val", "unknown split"), ("random", "test", "generated")],
)
def test_load_split_rejects_bad_names(tmp_path, name, split, match):
    with pytest.raises(ValueError, match=match):
        load_split(name, split, root=tmp_path)


def test_load_split_rejects_malformed_file(tmp_path):
    write_split(tmp_path, "mnist", "test", np.zeros((3, 4, 4), dtype=np.float32), np.arange(3))
    with pytest.raises(ValueError, match="uint8"):
        load_split("mnist", "test", root=tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "corrupt member"])
def test_an_unreadable_npz_is_an_error_naming_the_file(gray_root, damage):
    path = gray_root / "mnist" / "test.npz"
    good = path.read_bytes()
    damaged = {
        "garbage": b"not an npz" * 10,
        "truncated": good[: len(good) // 2],
        "corrupt member": good[:60] + bytes(20) + good[80:],
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="test.npz is not a readable .npz file"):
        load_split("mnist", "test", root=gray_root)


@pytest.mark.parametrize(("name", "split"), [("kmnist", "test"), ("svhn", "train"), ("cifar10", "train")])
def test_missing_split_without_torchvision_is_a_clear_error(tmp_path, no_torchvision, name, split):
    with pytest.raises(DatasetUnavailableError) as info:
        load_split(name, split, root=tmp_path)
    msg = str(info.value)
    assert repr(name) in msg and str(tmp_path / name / f"{split}.npz") in msg
    assert "GPICL_DATA_ROOT" in msg and "gpicl-sklearn[download]" in msg and "torchvision" in msg
    assert not (tmp_path / name).exists()


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    """With torchvision present but the network down, the download error is wrapped."""

    class FailingDataset:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    fake_tvd = type("FakeDatasets", (), {"KMNIST": FailingDataset})
    fake_tv = type("FakeTorchvision", (), {"datasets": fake_tvd})
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_tvd)
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(DatasetUnavailableError, match="downloading it failed.*Error downloading"):
        load_split("kmnist", "train", root=tmp_path)
    assert socket.getdefaulttimeout() == timeout_before


def test_successful_download_is_saved_in_the_root(tmp_path, monkeypatch):
    """The torchvision SVHN layout (N, 3, H, W) is stored as (N, H, W, 3) for next time."""
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    calls = []

    class FakeSVHN:
        def __init__(self, root, split="train", download=False):
            calls.append(split)
            self.data, self.labels = images, np.array([3, 7])

    fake_tvd = type("FakeDatasets", (), {"SVHN": FakeSVHN})
    monkeypatch.setitem(sys.modules, "torchvision", type("T", (), {"datasets": fake_tvd}))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_tvd)
    x, y = load_split("svhn", "test", root=tmp_path)
    np.testing.assert_array_equal(x, images.transpose(0, 2, 3, 1))
    assert y.tolist() == [3, 7] and (tmp_path / "svhn" / "test.npz").is_file()
    np.testing.assert_array_equal(load_split("svhn", "test", root=tmp_path)[0], x)
    assert calls == ["test"]  # the second call read the saved file


# --- preprocessing ---------------------------------------------------------------------------


def assert_znormalised(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    assert abs(x.double().mean().item()) < 1e-5
    assert abs(x.double().std(unbiased=False).item() - 1.0) < 1e-5


def test_load_dataset_resizes_and_repeats_channels(gray_root):
    x, y = load_dataset("mnist", "test", root=gray_root, size=16, channels=3)
    assert x.shape == (5, 16 * 16 * 3) and y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3, 4]
    assert_znormalised(x)
    img = x.view(5, 16, 16, 3)  # (height, width, channel) order
    torch.testing.assert_close(img[..., 0], img[..., 1])
    torch.testing.assert_close(img[..., 0], img[..., 2])


def test_native_size_matches_manual_znorm(gray_root):
    raw, _ = load_split("mnist", "test", root=gray_root)
    x, _ = load_dataset("mnist", "test", root=gray_root, size=None, channels=1)
    flat = raw.reshape(5, -1).astype(np.float64)
    expected = (flat - flat.mean()) / flat.std()
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)


def test_downsizing_is_antialiased(tmp_path):
    """Stripes lit in every third column, shrunk 3x: plain bilinear samples exactly the lit
    columns (aliasing to full white); the antialiased resize averages them to 1/3 grey."""
    stripes = np.zeros((12, 12), dtype=np.uint8)
    stripes[:, 1::3] = 255
    third, white = np.full((12, 12), 85, np.uint8), np.full((12, 12), 255, np.uint8)
    write_split(tmp_path, "mnist", "test", np.stack([stripes, third, white]), np.arange(3))
    x, _ = load_dataset("mnist", "test", root=tmp_path, size=4, channels=1)
    img = x.view(3, 4, 4)
    interior = img[0, :, 1:3]  # away from the border, where the filter is renormalised
    torch.testing.assert_close(interior, img[1, :, 1:3], atol=1e-2 * (img[2, 0, 0] - img[1, 0, 0]).item(), rtol=0)


def test_rgb_to_one_channel_and_chunking(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 6, 6, 3), dtype=np.uint8)
    write_split(tmp_path, "cifar10", "test", rgb, rng.integers(0, 10, 7))
    x_whole, _ = load_dataset("cifar10", "test", root=tmp_path, size=4, channels=1)
    monkeypatch.setattr(data, "_RESIZE_CHUNK", 3)
    x_chunked, _ = load_dataset("cifar10", "test", root=tmp_path, size=4, channels=1)
    assert x_whole.shape == (7, 16)
    torch.testing.assert_close(x_whole, x_chunked)
    assert_znormalised(x_chunked)


@pytest.mark.parametrize(("kwargs", "match"), [({"channels": 2}, "channels"), ({"size": 0}, "size")])
def test_load_dataset_rejects_bad_arguments(gray_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist", "test", root=gray_root, **kwargs)


def test_random_dataset_is_deterministic_and_normalised():
    x, y = load_dataset("random", "train", size=8, channels=3, seed=3)
    assert x.shape == (10, 8 * 8 * 3) and y.shape == (10,) and y.dtype == torch.int64
    assert 0 <= y.min() and y.max() <= 9
    assert_znormalised(x)
    x2, y2 = load_dataset("random", "test", size=8, channels=3, seed=3)
    torch.testing.assert_close(x, x2)
    assert torch.equal(y, y2)
    x3, _ = load_dataset("random", "train", size=8, channels=3, seed=4)
    assert not torch.allclose(x, x3)
    with pytest.raises(ValueError, match="native resolution"):
        load_dataset("random", "train", size=None)


@pytest.mark.skipif(not SHARED_MNIST_TEST.is_file(), reason="shared MNIST test split not present")
def test_real_mnist_test_split():
    x, y = load_dataset("mnist", "test", root=SHARED_MNIST_TEST.parent.parent)
    assert x.shape == (10_000, 3072) and y.shape == (10_000,)
    assert_znormalised(x)
    assert torch.bincount(y).tolist()[1] == 1135  # the classic count of digit 1 in the test set


def test_data_cache_copies_a_seeded_row_subset_in_order(tmp_path):
    # the device copies of the data (training/jobs/data_cache.py): a subset keeps x and y paired,
    # in their original order, drawn alike every time (a result names the subset it used)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training" / "jobs"))
    try:
        from data_cache import copy_split
    finally:
        sys.path.pop(0)
    y = np.repeat(np.arange(10), 20)  # sorted by class, as CIFAR10's test split is
    x = np.arange(200)[:, None, None] * np.ones((1, 2, 2), np.int64)  # each row holds its own index
    np.savez(tmp_path / "src.npz", x=x, y=y)
    copy_split(tmp_path / "src.npz", tmp_path / "a" / "sub.npz", rows=50)
    copy_split(tmp_path / "src.npz", tmp_path / "b" / "sub.npz", rows=50)
    copy_split(tmp_path / "src.npz", tmp_path / "whole.npz")
    a, b, whole = (np.load(tmp_path / p) for p in ("a/sub.npz", "b/sub.npz", "whole.npz"))
    assert len(a["y"]) == 50 and np.array_equal(a["y"], b["y"]) and np.array_equal(a["x"], b["x"])
    rows = a["x"][:, 0, 0]
    assert np.all(np.diff(rows) > 0)  # original order
    assert np.array_equal(y[rows], a["y"])  # x still paired with its label
    assert len(np.unique(a["y"])) > 3  # not the first rows of a class-sorted split
    assert np.array_equal(whole["x"], x) and np.array_equal(whole["y"], y)
