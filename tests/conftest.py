"""Shared fixtures: a tiny random-weight checkpoint for tests of mechanics, not accuracy.

Tests whose outcome depends on accuracy use the bundled default checkpoint instead.
"""

from __future__ import annotations

import os

# scikit-learn's array-API check (in tests/test_sklearn_checks.py) is skipped unless SciPy
# was imported with this set; it must precede the first import of scipy (via sklearn).
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gpicl_sklearn import save_checkpoint  # noqa: E402
from gpicl_sklearn.model import GPICLConfig, GPICLTransformer  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.learners import learner_config  # noqa: E402
from training.state import save_state  # noqa: E402

# Small enough to build and run in milliseconds; max_len=20 (19 context rows) and 5 label
# slots make the context-subset and too-many-classes paths reachable with tiny data.
TINY_CONFIG = GPICLConfig(input_dim=48, num_classes=5, max_len=20, d_model=32, n_layers=2, n_heads=2, head_dim=16)


def tiny_model(seed: int = 0, config: GPICLConfig = TINY_CONFIG) -> GPICLTransformer:
    torch.manual_seed(seed)
    return GPICLTransformer(config)


def write_tiny_checkpoint(
    directory: Path, seed: int = 0, dtype: torch.dtype = torch.float32, config: GPICLConfig = TINY_CONFIG
) -> Path:
    return save_checkpoint(
        tiny_model(seed, config),
        directory,
        preprocessing={"note": "test"},
        training={"note": "random weights", "seed": seed},
        metrics={},
        dtype=dtype,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Folder of a random-weight checkpoint with :data:`TINY_CONFIG` (never modified)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy runner with few cores every OpenMP
    parallel region can wait a scheduler slice (measured: 100x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def write_run(directory: Path, module: torch.nn.Module, **config) -> Path:
    """A training run folder as ``training.train`` leaves it (``<dir>/state``) for ``module``.

    ``config``: TrainConfig fields; the learner's name and options come from ``module``.
    """
    spec = learner_config(module)
    name = spec.pop("name")
    options = {k: v for k, v in spec.items() if k not in ("input_dim", "num_classes")}
    cfg = dataclasses.asdict(
        TrainConfig(
            out_dir=str(directory), learner=name, learner_kwargs=options, num_classes=spec["num_classes"], **config
        )
    )
    save_state(
        directory / "state",
        module,
        torch.optim.Adam(module.parameters()),
        step=7,
        rng_states=[torch.Generator().get_state()],
        config={**cfg, "world_size": 1, "input_dim": spec["input_dim"]},
    )
    return directory
