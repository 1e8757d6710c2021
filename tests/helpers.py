"""Small builders shared by several test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_mnist(root: Path, n_train: int, n_test: int) -> Path:
    """A data root whose 'mnist' is 8x8 images of 4 classes: class c lights rows 2c, 2c+1."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c : 2 * c + 2] += 150
        (root / "mnist").mkdir(parents=True, exist_ok=True)
        np.savez(root / "mnist" / f"{split}.npz", x=x, y=y)
    return root
