"""Copy dataset splits into a git-ignored data root small enough to travel with a device call.

    python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train fashion_mnist/train

A device call carries at most 64 MiB of working tree, the tracked files included (about 32 MB
with two bundled checkpoints). The splits are rewritten as the same ``.npz`` files (``x``,
``y``; ``np.load`` reads them unchanged) with LZMA in place of zlib: MNIST and FashionMNIST
train shrink from 36.3 to about 31 MB. Pass the copies as ``carry``.

``split:rows`` keeps a random subset of that many rows (seed 0, in their original order) where
a whole split does not fit beside the others, e.g. ``cifar10/test:3000`` (23.5 -> 7 MB; its
rows are sorted by class, so the first rows would be three classes). Name the subset wherever a
result depends on it.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np


def copy_split(src: Path, dest: Path, rows: int | None = None) -> None:
    arrays = dict(np.load(src))
    if rows is not None:
        n = len(arrays["y"])
        keep = np.sort(np.random.default_rng(0).choice(n, size=min(rows, n), replace=False))
        arrays = {name: values[keep] for name, values in arrays.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, values in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, values)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    tmp.replace(dest)
    print(f"{dest}: {src.stat().st_size / 1e6:.1f} -> {dest.stat().st_size / 1e6:.1f} MB ({len(arrays['y'])} rows)")


if __name__ == "__main__":
    source, target, *splits = sys.argv[1:]
    for spec in splits:
        split, _, rows = spec.partition(":")
        copy_split(Path(source) / f"{split}.npz", Path(target) / f"{split}.npz", int(rows) if rows else None)
