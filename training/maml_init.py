r"""MAML initialisations as files: export from a training run, write, read.

A meta-learned initialisation :math:`(W_0, b_0, \eta)` of the online linear classifier
(:class:`training.online_sgd.OnlineSGDLearner`) is stored as ``model.safetensors`` +
``config.json`` (never pickle), the layout of a gpicl-sklearn checkpoint; the benchmarks'
:class:`benchmarks.online_classifiers.MAMLClassifier` reads it. Export a meta-trained
MAML run with::

    python -m training.maml_init --run runs/maml --out benchmarks/checkpoints/maml_mnist
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

# One atomic file write for every checkpoint format of the project: the package's.
from gpicl_sklearn.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError
from gpicl_sklearn.checkpoint import atomic_write as replace_atomically
from training.evaluate import load_run

MAML_FORMAT_VERSION = 1
MAML_MODEL_TYPE = "gpicl-maml-init"


@dataclass(frozen=True, eq=False)
class MAMLInit:
    """A meta-learned initialisation of the online linear classifier.

    Attributes
    ----------
    weight : Tensor, shape (input_dim, num_classes)
        :math:`W_0`, float32.
    bias : Tensor, shape (num_classes,)
    lr : float
        The meta-learned step size of the plain SGD inner update.
    config : dict
        The parsed ``config.json``.
    sha256 : str
        Digest of ``model.safetensors``.
    """

    weight: Tensor
    bias: Tensor
    lr: float
    config: dict
    sha256: str

    @property
    def input_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]


def save_maml_init(directory: str | os.PathLike, weight: Tensor, bias: Tensor, lr: float, *, training: dict) -> Path:
    """Write an initialisation that :func:`load_maml_init` reads.

    Parameters
    ----------
    directory : path-like
        Created if missing; ``model.safetensors`` and ``config.json`` in it are replaced.
    weight : Tensor, shape (input_dim, num_classes)
    bias : Tensor, shape (num_classes,)
    lr : float
        Positive inner SGD step size.
    training : dict
        JSON-serialisable provenance (the run that produced the weights).
    """
    weight, bias = (
        weight.detach().to("cpu", torch.float32).contiguous(),
        bias.detach().to("cpu", torch.float32).contiguous(),
    )
    if weight.ndim != 2 or bias.shape != (weight.shape[1],):
        raise ValueError(
            f"weight must be (input_dim, C) and bias (C,), got {tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    config = {
        "format_version": MAML_FORMAT_VERSION,
        "model_type": MAML_MODEL_TYPE,
        "architecture": {"input_dim": weight.shape[0], "num_classes": weight.shape[1]},
        "inner_update": {"rule": "sgd", "lr": float(lr)},
        "training": training,
    }
    try:
        config_text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"training must be JSON-serialisable: {e}") from e
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors({"weight": weight, "bias": bias}, metadata={"format": "pt"})
    replace_atomically(directory / WEIGHTS_NAME, lambda path: path.write_bytes(weights))
    replace_atomically(directory / CONFIG_NAME, lambda path: path.write_text(config_text))  # last: see checkpoint.py
    return directory


def load_maml_init(source: str | os.PathLike) -> MAMLInit:
    """Read a folder written by :func:`save_maml_init`.

    Raises
    ------
    CheckpointError
        A file is missing, unreadable, or does not describe a MAML initialisation.
    """
    directory = Path(source).expanduser()
    weights_path, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    for path in (weights_path, config_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path}: MAML initialisation file is missing (expected a folder written by save_maml_init)"
            )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON: {e}") from e
    if not isinstance(config, dict) or config.get("model_type") != MAML_MODEL_TYPE:
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{config_path}: model_type is {found!r}, expected {MAML_MODEL_TYPE!r}")
    if config.get("format_version") != MAML_FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this gpicl-sklearn reads {MAML_FORMAT_VERSION})"
        )
    try:
        arch, update = config["architecture"], config["inner_update"]
        shapes = {"weight": (int(arch["input_dim"]), int(arch["num_classes"])), "bias": (int(arch["num_classes"]),)}
        lr = float(update["lr"])
        rule = update["rule"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: invalid 'architecture' or 'inner_update': {e!r}") from e
    if rule != "sgd" or not (math.isfinite(lr) and lr > 0):
        raise CheckpointError(f"{config_path}: inner_update must be plain 'sgd' with a positive lr, got {update!r}")
    data = weights_path.read_bytes()
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    if set(tensors) != set(shapes):
        raise CheckpointError(f"{weights_path}: expected tensors {sorted(shapes)}, found {sorted(tensors)}")
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != shape or not t.is_floating_point() or not torch.isfinite(t).all():
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} must be finite floats of shape {shape} "
                f"(from config.json), got {t.dtype} {tuple(t.shape)}"
            )
    return MAMLInit(tensors["weight"].float(), tensors["bias"].float(), lr, config, hashlib.sha256(data).hexdigest())


def export_maml_init(run: Path, out: Path) -> Path:
    """Write the meta-learned initialisation of MAML run ``run`` to ``out`` (see module docstring)."""
    learner, cfg, step = load_run(run)
    if cfg["learner"] != "maml":
        raise ValueError(f"{run} meta-trained learner {cfg['learner']!r}, not 'maml'; nothing to export")
    training = {"config": cfg, "steps": step, "run": str(run)}
    return save_maml_init(out, learner.weight, learner.bias, learner.lr, training=training)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="MAML training run folder (holds state/)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the initialisation to")
    args = parser.parse_args(argv)
    print(f"wrote {export_maml_init(args.run, args.out)}")


if __name__ == "__main__":
    main()
