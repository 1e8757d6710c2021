"""Image datasets for meta-training and meta-testing, preprocessed as in Kirsch et al. (2022).

Raw splits live in a *data root* as ``<root>/<name>/<split>.npz`` holding ``x``
(uint8, ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB) and ``y`` (int64, ``(N,)``).
A split missing from the root is downloaded once from its canonical source through
torchvision (the optional extra ``gpicl-sklearn[download]``) and saved there in the
same layout.

:func:`load_dataset` applies the paper's preprocessing: every image is resized to
``size x size``, grayscale is repeated to ``channels``, each image is flattened
(height, width, channel order) and the whole split is z-normalised by one scalar
mean and one scalar standard deviation,

.. math:: \\tilde x_{nk} = (x_{nk} - \\mu) / \\sigma, \\quad
          \\mu = \\frac{1}{ND} \\sum_{n,k} x_{nk}, \\quad
          \\sigma^2 = \\frac{1}{ND} \\sum_{n,k} (x_{nk} - \\mu)^2 .

Nothing is cached in memory: every call reads the file again, so callers own (and may
mutate) the returned tensors.
"""

from __future__ import annotations

import os
import socket
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.features import embed
from training.paper import DATASETS

SPLITS = ("train", "test")

ENV_VAR = "GPICL_DATA_ROOT"

# torchvision class name per dataset stored on disk ("random" is generated, never stored).
_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "cifar10": "CIFAR10",
    "svhn": "SVHN",
}

# A download that stalls this long is treated as "no network" rather than hanging.
DOWNLOAD_TIMEOUT_S = 20.0

# Images resized per chunk: bounds the float32 working memory to ~chunk * H' * W' * C * 4 bytes.
_RESIZE_CHUNK = 4096

# Size of the "random" dataset: 10 points with 10 random labels (paper, Table 2).
_RANDOM_POINTS = 10
_RANDOM_CLASSES = 10

# ITU-R BT.601 luma, the usual RGB -> grayscale conversion (PIL's ``convert("L")``).
_LUMA = (0.299, 0.587, 0.114)


class DatasetUnavailableError(RuntimeError):
    """A dataset split is neither in the data root nor downloadable here."""


def data_root() -> Path:
    """Directory that holds ``<name>/<split>.npz`` files.

    Returns
    -------
    Path
        ``$GPICL_DATA_ROOT`` if set; otherwise the first existing ``shared/datasets``
        folder found walking up from the current directory, then from this file's
        directory; otherwise ``~/.cache/gpicl/datasets`` (which may not exist yet).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "datasets"
            if candidate.is_dir():
                return candidate
    return Path.home() / ".cache" / "gpicl" / "datasets"


def _check_name_split(name: str, split: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def load_split(name: str, split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw images and labels of one split, downloading it once if missing.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` except ``"random"`` (which :func:`load_dataset` generates).
    split : {"train", "test"}
    root : path-like, optional
        Data root; defaults to :func:`data_root`.

    Returns
    -------
    x : ndarray of uint8, shape (N, H, W) or (N, H, W, 3)
    y : ndarray of int64, shape (N,)

    Raises
    ------
    DatasetUnavailableError
        If the file is missing and cannot be downloaded (no torchvision or no network).
    """
    _check_name_split(name, split)
    if name == "random":
        raise ValueError("the 'random' dataset is generated, not stored; use load_dataset('random', ...)")
    path = Path(root if root is not None else data_root()) / name / f"{split}.npz"
    if not path.is_file():
        _download(name, split, path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = z.files
            arrays = {name: z[name] for name in ("x", "y") if name in files}
    # What numpy raises for a file that is no npz, a truncated one or a corrupt member.
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path} is not a readable .npz file (corrupt or truncated?): {err}") from err
    if len(arrays) != 2:
        raise ValueError(f"{path} must hold arrays 'x' and 'y', found {files}")
    x, y = arrays["x"], arrays["y"]
    _check_arrays(x, y, path)
    return x, y.astype(np.int64, copy=False)


def _check_arrays(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: x must be uint8, got {x.dtype}")
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise ValueError(f"{path}: x must have shape (N, H, W) or (N, H, W, 3), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: y must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y must be integer labels, got {y.dtype}")


def _unavailable(name: str, split: str, path: Path, reason: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r} split {split!r} is not available: {path} does not exist and {reason}. "
        f"Fix: point {ENV_VAR} at a folder containing {name}/{split}.npz, or install "
        f"'gpicl-sklearn[download]' (torchvision) on a machine with network access to fetch it."
    )


def _download(name: str, split: str, path: Path) -> None:
    """Fetch ``name``/``split`` with torchvision and save it to ``path`` as npz."""
    try:
        import torchvision.datasets as tvd  # optional extra "download"
    except ImportError:
        raise _unavailable(name, split, path, "torchvision is not installed") from None
    cls = getattr(tvd, _TORCHVISION_CLASSES[name])
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if name == "svhn":
                ds = cls(tmp, split=split, download=True)
                x = np.asarray(ds.data).transpose(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3)
                y = np.asarray(ds.labels)
            else:
                ds = cls(tmp, train=split == "train", download=True)
                x, y = np.asarray(ds.data), np.asarray(ds.targets)
    # torchvision reports failed mirrors as RuntimeError, sockets as OSError (URLError, timeout).
    except (OSError, RuntimeError) as err:
        raise _unavailable(name, split, path, f"downloading it failed ({err})") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    x, y = np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)
    _check_arrays(x, y, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename so an interrupted save never leaves a truncated npz behind.
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, x=x, y=y)
    partial.replace(path)


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    size: int | None = 32,
    channels: int = 3,
    device: str | torch.device | None = None,
    seed: int = 0,
    features: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """A split preprocessed as in the paper: resized, ``channels`` deep, flat, z-normalised.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : {"train", "test"}
    root : path-like, optional
        Data root; defaults to :func:`data_root`.
    size : int or None, default 32
        Images are resized to ``size x size`` (bilinear, antialiased when shrinking);
        ``None`` keeps the native resolution (e.g. 28 x 28 for MNIST).
    channels : {1, 3}, default 3
        Grayscale is repeated to 3 channels; RGB becomes 1 channel by BT.601 luma.
    device : str or torch.device, optional
        Where the work is done and the tensors are returned (default CPU).
    seed : int, default 0
        Only for ``"random"``: seeds the points and labels.
    features : path-like, optional
        A feature network's folder (:mod:`training.features`): the preprocessed images are
        replaced by its z-normalised features (it must read ``size`` x ``size`` x ``channels``).

    Returns
    -------
    x : Tensor of float32, shape (N, H' * W' * channels), or (N, width) with ``features``
        Flattened in (height, width, channel) order; mean 0 and std 1 over the split.
    y : Tensor of int64, shape (N,)

    Notes
    -----
    ``"random"`` is the paper's memorisation check: ``10`` points drawn uniformly from
    ``[0, 1]^(size*size*channels)`` with labels uniform in ``0..9``, from ``seed``; both
    splits return the same points, so test accuracy measures fitting arbitrary labels.
    """
    _check_name_split(name, split)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if name == "random":
        if size is None:
            raise ValueError("the 'random' dataset has no native resolution; pass an int size")
        gen = torch.Generator().manual_seed(seed)
        x = _znorm(torch.rand(_RANDOM_POINTS, size * size * channels, generator=gen).to(device))
        y = torch.randint(0, _RANDOM_CLASSES, (_RANDOM_POINTS,), generator=gen).to(device)
    else:
        x_raw, y_raw = load_split(name, split, root)
        x, y = _znorm(_resize_flatten(x_raw, size, channels, device)), torch.from_numpy(y_raw).to(device)
        size = size or x_raw.shape[1]  # the native height, which a feature network must read
    if features is not None:
        x = embed(features, x, size=size, channels=channels)
    return x, y


def _resize_flatten(x: np.ndarray, size: int | None, channels: int, device: torch.device) -> Tensor:
    """uint8 ``(N, H, W[, 3])`` -> float32 ``(N, size*size*channels)`` in [0, 1], chunk by chunk."""
    n, h, w = x.shape[:3]
    out_h, out_w = (h, w) if size is None else (size, size)
    out = torch.empty(n, out_h * out_w * channels, dtype=torch.float32, device=device)
    luma = torch.tensor(_LUMA, device=device).view(1, 3, 1, 1)
    for start in range(0, n, _RESIZE_CHUNK):
        chunk = torch.from_numpy(x[start : start + _RESIZE_CHUNK]).to(device)
        img = chunk.float().div_(255.0)
        img = img[:, None] if img.ndim == 3 else img.permute(0, 3, 1, 2)  # (n, C, H, W)
        if img.shape[1] == 3 and channels == 1:
            img = (img * luma).sum(dim=1, keepdim=True)
        if (out_h, out_w) != (h, w):
            shrinking = out_h < h or out_w < w
            img = F.interpolate(img, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=shrinking)
        img = img.expand(-1, channels, -1, -1)  # grayscale -> `channels` copies (no-op otherwise)
        out[start : start + len(img)] = img.permute(0, 2, 3, 1).reshape(len(img), -1)
    return out


def _znorm(x: Tensor) -> Tensor:
    """Subtract one scalar mean and divide by one scalar std (population), in place.

    Both moments are accumulated in float64 over row chunks, so no full-size temporary
    is made and the sum over ~10^8 pixels loses no precision.
    """
    chunks = x.split(_RESIZE_CHUNK)
    mean = sum(c.sum(dtype=torch.float64) for c in chunks) / x.numel()
    var = sum((c.double() - mean).square().sum() for c in chunks) / x.numel()
    std = var.sqrt().item()
    # A constant split has no scale to remove; centring it is all that is meaningful.
    return x.sub_(mean.item()).div_(std if std > 0 else 1.0)
