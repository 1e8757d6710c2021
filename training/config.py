"""The configuration of a meta-training run and its command line.

Every field of :class:`TrainConfig` is a flag of ``python -m training.train``
(``--batch-size 512``) and a key of its ``--config`` JSON file; flags win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from training.tasks import TaskConfig


@dataclass
class TrainConfig:
    """What a meta-training run does; see the module docstring of :mod:`training.train`."""

    # task distribution
    dataset: str = "mnist"
    image_size: int | None = 32  # None: native resolution
    channels: int = 3
    out_dim: int | None = None  # N_x; None: the flattened input width (square A)
    length: int = 100
    num_classes: int = 10
    num_tasks: int | None = None  # K; None = infinite
    biased_fraction: float = 0.9
    biased_steps: int | None = None  # biased permutations only in the first N steps; None: always
    fold_projection: bool = False  # K = infinity, transformer: sample inputs at d_model width (training/folded.py)
    task_seed: int = 0
    # learner
    learner: str = "transformer"
    learner_kwargs: dict = field(default_factory=dict)
    init_from: str | None = None  # start a new run from these gpicl_sklearn checkpoint weights
    # optimisation
    batch_size: int = 128  # sequences per process and step
    steps: int = 10_000
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine | wsd
    warmup_steps: int = 0
    decay_steps: int = 0  # wsd: length of the final decay
    min_lr_ratio: float = 0.1
    adam_eps: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float | None = 1.0
    bf16: bool = True
    compile: bool = False
    cuda_graph: bool = False
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/default"
    log_every: int = 100
    ckpt_every: int = 2000
    eval_every: int = 5000
    eval_datasets: tuple[str, ...] = ("mnist", "fashion_mnist", "random", "cifar10")
    eval_tasks: int = 16
    eval_seqs: int = 16
    max_minutes: float | None = None  # checkpoint and stop after this much wall-clock time

    def input_dim(self, raw_dim: int) -> int:
        return self.out_dim or raw_dim

    def task_config(self, in_dim: int) -> TaskConfig:
        """The task distribution this run samples, projecting to ``in_dim`` features."""
        return TaskConfig(
            length=self.length,
            num_classes=self.num_classes,
            out_dim=in_dim,
            num_tasks=self.num_tasks,
            biased_fraction=self.biased_fraction,
            task_seed=self.task_seed,
        )


def _parse_value(text: str, default):
    """Parse a flag value with the type of the field's default (JSON for dicts/tuples/None)."""
    if text.lower() in {"null", "none"}:
        return None
    if isinstance(default, bool):
        if text.lower() not in {"true", "false", "1", "0"}:
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        return text.lower() in {"true", "1"}
    if isinstance(default, (int, float, str)) and not isinstance(default, bool):
        return type(default)(text)
    if isinstance(default, tuple) and not text.startswith("["):  # names: "mnist,cifar10"
        return tuple(name for name in text.split(",") if name)
    if default is None:  # optional numbers: "4096", ".5"; anything else stays a string
        try:
            return json.loads(text) if not text.startswith(".") else float(text)
        except ValueError:
            return text
    value = json.loads(text)  # dicts and JSON lists
    return tuple(value) if isinstance(default, tuple) else value


def config_from_args(argv: list[str] | None = None, description: str | None = None) -> TrainConfig:
    """``--config file.json`` then ``--field value`` flags (later ones win).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).
    description : str, optional
        The ``--help`` text above the flags.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        # SUPPRESS: an absent flag is absent from args, so an explicit "null" still overrides.
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=argparse.SUPPRESS,
            type=lambda t, d=default: _parse_value(t, d),
            help=f"default: {default!r}",
        )
    args = parser.parse_args(argv)
    values = json.loads(args.config.read_text()) if args.config else {}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        parser.error(f"unknown fields in {args.config}: {sorted(unknown)}")
    values.update({k: v for k, v in vars(args).items() if k != "config"})
    if "eval_datasets" in values:  # null: evaluate nothing
        values["eval_datasets"] = tuple(values["eval_datasets"] or ())
    return TrainConfig(**values)
