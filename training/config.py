"""The configuration of a meta-training run and its command line.

Every field of :class:`TrainConfig` is a flag of ``python -m training.train``
(``--batch-size 512``) and a key of its ``--config`` JSON file; flags win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from training.data import DATASETS
from training.learners import CONFIGS
from training.optim import LR_SCHEDULES, OPTIMIZERS
from training.priors.common import MAX_CLASSES
from training.priors.mixture import PriorConfig
from training.tasks import TaskConfig

# What a field's annotation allows (``X | None`` also allows None); bool is no number here.
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}
_SEQUENCE = "tuple[str, ...]"

# Fields that decide the model or the data a saved state was trained on: a resume keeps them.
FIXED_ON_RESUME = (
    "dataset",
    "image_size",
    "channels",
    "features",
    "out_dim",
    "length",
    "num_classes",
    "num_tasks",
    "task_seed",
    "fold_projection",
    "learner",
    "learner_kwargs",
    "batch_size",
    "optimizer",
)
# Fields a resume ignores: a copy of a run lives elsewhere, and the state's weights win over init_from.
_NOT_COMPARED_ON_RESUME = ("out_dir", "init_from")


class ConfigError(ValueError):
    """A :class:`TrainConfig` field has a value the run cannot use; the message names the field."""


@dataclass
class TrainConfig:
    """What a meta-training run does; see the module docstring of :mod:`training.train`."""

    # task distribution
    dataset: str = "mnist"
    image_size: int | None = 32  # None: native resolution
    channels: int = 3
    features: str | None = None  # a feature network's folder (training/features.py): its features replace the pixels
    out_dim: int | None = None  # N_x; None: the flattened input width (square A)
    length: int = 100
    num_classes: int = 10
    num_tasks: int | None = None  # K; None = infinite
    biased_fraction: float = 0.9
    biased_steps: int | None = None  # biased permutations only in the first N steps; None: always
    fold_projection: bool = False  # K = infinity, transformer: sample inputs at d_model width (training/folded.py)
    gram_table: bool = False  # K = infinity: the training split's Gram matrix held on the device (4 N² bytes)
    task_seed: int = 0
    # None: the paper's tasks above; else the general-purpose prior (training/priors), a
    # dict of PriorConfig fields ({} for its defaults); inputs are then out_dim wide.
    prior: dict | None = None
    prefetch: bool = True  # on a GPU: draw the next batch on a side stream during the step
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

    def __post_init__(self) -> None:
        """Reject, naming the field, what would otherwise fail (or silently misbehave) mid-run."""
        for f in dataclasses.fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        self.eval_datasets = tuple(self.eval_datasets)  # a JSON list
        _check_ranges(self)
        _check_names(self)

    def input_dim(self, raw_dim: int) -> int:
        return self.out_dim or raw_dim

    def prior_config(self) -> PriorConfig:
        """The prior this run samples (``prior`` set)."""
        return PriorConfig(**self.prior)

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


def _check_type(name: str, annotation: str, value) -> None:
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return
    if base == _SEQUENCE:
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, _TYPES[base]) and (base == "bool" or not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{name} must be {annotation}, got {value!r} ({type(value).__name__})")


def _require(ok: bool, name: str, what: str, value) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _check_ranges(cfg: TrainConfig) -> None:
    for name in ("length", "batch_size", "steps", "log_every", "ckpt_every", "eval_every", "eval_tasks", "eval_seqs"):
        _require(getattr(cfg, name) >= 1, name, "at least 1", getattr(cfg, name))
    for name in ("image_size", "out_dim", "num_tasks"):
        value = getattr(cfg, name)
        _require(value is None or value >= 1, name, "at least 1 (or null)", value)
    for name in ("warmup_steps", "decay_steps", "biased_steps", "task_seed", "seed"):
        value = getattr(cfg, name)
        _require(value is None or value >= 0, name, "at least 0", value)
    _require(cfg.channels in (1, 3), "channels", "1 or 3", cfg.channels)
    _require(cfg.num_classes >= 2, "num_classes", "at least 2", cfg.num_classes)
    for name in ("biased_fraction", "min_lr_ratio"):
        _require(0 <= getattr(cfg, name) <= 1, name, "in [0, 1]", getattr(cfg, name))
    for name in ("beta1", "beta2"):
        _require(0 <= getattr(cfg, name) < 1, name, "in [0, 1)", getattr(cfg, name))
    _require(math.isfinite(cfg.lr) and cfg.lr >= 0, "lr", "a finite number >= 0", cfg.lr)
    _require(math.isfinite(cfg.adam_eps) and cfg.adam_eps > 0, "adam_eps", "a finite number > 0", cfg.adam_eps)
    for name in ("grad_clip", "max_minutes"):
        value = getattr(cfg, name)
        _require(value is None or value >= 0, name, "at least 0 (or null)", value)


def _check_names(cfg: TrainConfig) -> None:
    _require(cfg.dataset in DATASETS, "dataset", f"one of {DATASETS}", cfg.dataset)
    unknown = [name for name in cfg.eval_datasets if name not in DATASETS]
    _require(not unknown, "eval_datasets", f"names from {DATASETS}", unknown)
    _require(cfg.learner in CONFIGS, "learner", f"one of {tuple(CONFIGS)}", cfg.learner)
    options = {f.name for f in dataclasses.fields(CONFIGS[cfg.learner])} - {"input_dim", "num_classes"}
    unknown = sorted(set(cfg.learner_kwargs) - options)
    _require(not unknown, "learner_kwargs", f"options of {cfg.learner!r}, some of {sorted(options)}", unknown)
    _require(cfg.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", cfg.optimizer)
    _require(cfg.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}", cfg.lr_schedule)
    if cfg.prior is not None:
        try:
            cfg.prior_config()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"prior: {e}") from e
        _require(cfg.num_classes >= MAX_CLASSES, "num_classes", f"at least {MAX_CLASSES} with a prior", cfg.num_classes)
        _require(cfg.out_dim is not None, "out_dim", "set with a prior (the model's input width)", cfg.out_dim)
        _require(
            not cfg.eval_datasets,
            "eval_datasets",
            "empty with a prior (tables are evaluated by benchmarks.tabular)",
            cfg.eval_datasets,
        )
    if cfg.features is not None:
        _require(cfg.prior is None, "features", "null with a prior (it draws no images to embed)", cfg.features)
        _require(
            (Path(cfg.features) / "config.json").is_file(),
            "features",
            "a feature network's folder (training/features.py: config.json, model.safetensors)",
            cfg.features,
        )
    if cfg.fold_projection:
        _require(cfg.num_tasks is None, "num_tasks", "null with fold_projection (K = infinity)", cfg.num_tasks)
    if cfg.gram_table:
        _require(cfg.num_tasks is None, "num_tasks", "null with gram_table (K = infinity)", cfg.num_tasks)
        _require(cfg.prior is None, "prior", "null with gram_table (it projects a base dataset)", cfg.prior)


def resume_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """``{field: (saved value, new value)}`` for what ``cfg`` changes of a saved run's config.

    Raises
    ------
    ConfigError
        When a field of :data:`FIXED_ON_RESUME` changes: the saved weights and optimiser
        state belong to another model or data distribution.
    """
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as the saved JSON has them
    changes = {
        name: (saved[name], value)
        for name, value in now.items()
        if name in saved and name not in _NOT_COMPARED_ON_RESUME and saved[name] != value
    }
    fixed = {name: change for name, change in changes.items() if name in FIXED_ON_RESUME}
    if fixed:
        raise ConfigError(
            f"cannot resume with changed {', '.join(fixed)} ({describe_changes(fixed)}): the saved state was trained "
            "with the first values; resume with them or start a new out_dir"
        )
    return changes


def describe_changes(changes: dict[str, tuple]) -> str:
    """``"lr: 0.001 -> 0.0003; steps: ..."`` for :func:`resume_changes`' result."""
    return "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items())


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
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        parser.error(f"invalid config: {err}")
