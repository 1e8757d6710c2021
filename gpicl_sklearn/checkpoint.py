"""Save and load meta-trained GPICL checkpoints (safetensors weights + JSON config).

A checkpoint is a folder laid out like a Hugging Face Hub model repository::

    model.safetensors   weights (float16, bfloat16 or float32)
    config.json         {"format_version", "model_type", "architecture", "preprocessing",
                         "training", "metrics"}
    README.md           model card (documentation only; not needed to load)

:func:`load_checkpoint` accepts a bundled name (:data:`BUNDLED`), a
local folder or ``model.safetensors`` path, or a Hub repository id ``"owner/name"``. Weights
are read with ``safetensors`` only, never unpickled, and every way a checkpoint can be
broken is reported as a :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from gpicl_sklearn.model import GPICLConfig, GPICLTransformer

FORMAT_VERSION = 1
MODEL_TYPE = "gpicl-transformer"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SAVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Checkpoints shipped inside the package (gpicl_sklearn/checkpoints/<name>): the
# general-purpose model, and the paper's MNIST-only model (Table 2 and its benchmarks).
BUNDLED = ("default", "paper-mnist")

# "owner/name": what the Hub accepts as a model repository id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not match this version of the model."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    model : GPICLTransformer
        float32, eval mode, on CPU; a fresh copy on every load, so the caller may modify it
        (with ``load_checkpoint(..., shared=True)``: the cached model, read-only).
    config : dict
        The parsed ``config.json``.
    source : str
        What was asked for (a bundled name, a path or a Hub id).
    sha256 : str
        Digest of ``model.safetensors``: identifies the exact weights.
    """

    model: GPICLTransformer
    config: dict
    source: str
    sha256: str


def save_checkpoint(
    model: GPICLTransformer,
    directory: str | os.PathLike,
    *,
    preprocessing: dict,
    training: dict,
    metrics: dict,
    dtype: torch.dtype = torch.float16,
    model_card: str | None = None,
) -> Path:
    """Write ``model`` as a checkpoint folder that :func:`load_checkpoint` reads.

    Parameters
    ----------
    model : GPICLTransformer
    directory : path-like
        Created if missing; files already there are replaced.
    preprocessing, training, metrics : dict
        JSON-serialisable provenance stored in ``config.json`` (how inputs were prepared
        in meta-training, the run that produced the weights, its evaluation results).
    dtype : torch.dtype
        Storage precision of the weights: float16 (default, half the size of float32),
        bfloat16 or float32. Loading always returns float32.
    model_card : str, optional
        Contents of ``README.md``; a short card generated from the config if omitted.

    Returns
    -------
    Path
        The checkpoint folder.
    """
    if not isinstance(model, GPICLTransformer):
        raise TypeError(
            f"save_checkpoint needs a GPICLTransformer, got {type(model).__name__} "
            "(unwrap DistributedDataParallel with .module and torch.compile with ._orig_mod)"
        )
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype must be one of {SAVE_DTYPES}, got {dtype}")
    config = {
        "format_version": FORMAT_VERSION,
        "model_type": MODEL_TYPE,
        "architecture": model.cfg.to_dict(),
        "preprocessing": preprocessing,
        "training": training,
        "metrics": metrics,
    }
    try:  # strict JSON (no NaN/Infinity): other tools, the Hub among them, read config.json too
        config_text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"preprocessing, training and metrics must be JSON-serialisable: {e}") from e
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Config last: a save interrupted midway leaves no config.json, which loading reports,
    # rather than a config describing weights that were never written.
    weights = save_safetensors(state, metadata={"format": "pt"})  # "pt": the Hub's marker for torch weights
    _replace(directory / WEIGHTS_NAME, lambda path: path.write_bytes(weights))
    _replace(directory / CARD_NAME, lambda path: path.write_text(model_card or _default_card(config)))
    _replace(directory / CONFIG_NAME, lambda path: path.write_text(config_text))
    return directory


def _replace(target: Path, write) -> None:
    """Write to a temporary file in the same folder, then rename it over ``target``:
    readers never see a half-written file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_card(config: dict) -> str:
    arch = config["architecture"]
    return (
        "---\nlibrary_name: gpicl-sklearn\ntags: [in-context-learning, tabular-classification, scikit-learn]\n---\n"
        "# GPICL Transformer\n\n"
        "A general-purpose in-context learner (Kirsch et al., 2022) for `gpicl_sklearn.GPICLClassifier`.\n\n"
        f"Architecture: {arch['n_layers']} layers, d_model {arch['d_model']}, input_dim {arch['input_dim']}, "
        f"{arch['num_classes']} label slots, up to {arch['max_len'] - 1} context rows.\n\n"
        f"Training: `{json.dumps(config['training'])}`\n\nMetrics: `{json.dumps(config['metrics'])}`\n"
    )


def load_checkpoint(
    source: str | os.PathLike = "default", *, revision: str | None = None, shared: bool = False
) -> Checkpoint:
    """Load a checkpoint.

    Parameters
    ----------
    source : str or path-like
        Resolved in this order:

        1. A name of :data:`BUNDLED`: ``"default"``, the general-purpose checkpoint
           bundled with the package, or ``"paper-mnist"``, the paper's model meta-trained
           on MNIST tasks only.
        2. An existing folder holding ``model.safetensors`` and ``config.json``, or the
           path of a ``model.safetensors`` file with ``config.json`` beside it.
        3. A Hugging Face Hub repository id ``"owner/name"``: both files are fetched
           through ``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1`` uses the cache
           only).
    revision : str, optional
        Hub branch, tag or commit; only for Hub ids.
    shared : bool, default=False
        Return the model cached for these files instead of a fresh copy: no copy, no
        module construction, so repeated loads (an estimator's ``fit`` in a grid search)
        cost almost nothing. The shared model must not be modified.

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        The source cannot be found or fetched, or its files are missing, corrupt or
        incompatible with this version of gpicl-sklearn.
    """
    if isinstance(source, str) and source in BUNDLED:
        if revision is not None:
            raise ValueError(f"revision applies to Hub repository ids only, not to {source!r}")
        bundled = files("gpicl_sklearn") / "checkpoints" / source
        with as_file(bundled / WEIGHTS_NAME) as weights, as_file(bundled / CONFIG_NAME) as config:
            return _load_files(weights, config, source, shared)
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError("revision applies to Hub repository ids only, not to local paths")
        if path.is_dir():
            weights, config = path / WEIGHTS_NAME, path / CONFIG_NAME
        elif path.suffix == ".safetensors":
            weights, config = path, path.parent / CONFIG_NAME
        else:
            raise CheckpointError(f"{path}: expected a checkpoint folder or a .safetensors file")
    elif isinstance(source, str) and _HUB_ID.match(source):
        weights, config = _download(source, revision)
    else:
        raise CheckpointError(
            f"checkpoint {str(source)!r} is neither a bundled name {BUNDLED}, an existing folder or file, "
            "nor a Hugging Face Hub repository id of the form 'owner/name'"
        )
    return _load_files(weights, config, str(source), shared)


def _download(repo_id: str, revision: str | None) -> tuple[Path, Path]:
    # Imported here: only Hub ids need it, and it is slow to import.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision)
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision)
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"checkpoint {at!r} is not a local folder and is not in the Hugging Face cache, and the "
            "Hub cannot be reached (offline: HF_HUB_OFFLINE is set or there is no network). "
            "Connect once to download it, or pass the path of a local checkpoint folder."
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"checkpoint {at!r} is not a local folder, and no Hugging Face Hub repository of that "
            "name exists (or it is private or gated: log in with `hf auth login`)."
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"Hub repository {repo_id!r} has no revision {revision!r}") from e
    except EntryNotFoundError as e:
        raise CheckpointError(
            f"Hub repository {at!r} is not a gpicl checkpoint: it lacks {CONFIG_NAME} or {WEIGHTS_NAME}"
        ) from e
    except HfHubHTTPError as e:
        raise CheckpointError(f"downloading checkpoint {at!r} failed: {e}") from e
    return Path(weights), Path(config)


def _load_files(weights: Path, config: Path, source: str, shared: bool) -> Checkpoint:
    for path in (weights, config):
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file is missing")
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (weights, config))
    config_dict, cached, sha256 = _read_files(str(weights.resolve()), str(config.resolve()), stamp)
    model = cached if shared else copy.deepcopy(cached)  # a copy: callers may mutate it
    return Checkpoint(model=model, config=copy.deepcopy(config_dict), source=source, sha256=sha256)


# Keyed by the files' paths, modification times and sizes, so repeated fits (e.g. in
# GridSearchCV) skip the disk and the checks, while a checkpoint rewritten in place is read
# again. Holds a float32 eval-mode model that is only shared read-only or copied.
@functools.lru_cache(maxsize=4)
def _read_files(weights: str, config_path: str, stamp: tuple) -> tuple[dict, GPICLTransformer, str]:
    config, cfg = _read_config(Path(config_path))
    data = Path(weights).read_bytes()
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    model = _empty_model(cfg)
    _check_tensors(tensors, model, weights)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
    return config, model.eval(), hashlib.sha256(data).hexdigest()


def _empty_model(cfg: GPICLConfig) -> GPICLTransformer:
    """The architecture without storage: skips random initialisation of weights about to be replaced."""
    with torch.device("meta"):
        return GPICLTransformer(cfg)


def _read_config(path: Path) -> tuple[dict, GPICLConfig]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported; this gpicl-sklearn reads "
            f"format_version {FORMAT_VERSION} (a newer checkpoint needs a newer gpicl-sklearn)"
        )
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    try:
        return config, GPICLConfig.from_dict(config["architecture"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid 'architecture': {e!r}") from e


def _check_tensors(tensors: dict, model: GPICLTransformer, path: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - tensors.keys())
    extra = sorted(tensors.keys() - expected.keys())
    if missing or extra:
        raise CheckpointError(
            f"{path}: tensors do not match the architecture in config.json (missing: {missing}, unexpected: {extra})"
        )
    wrong = [
        f"{k}: {tuple(v.shape)} instead of {expected[k]}" for k, v in tensors.items() if tuple(v.shape) != expected[k]
    ]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes do not match config.json: {'; '.join(sorted(wrong))}")
    for k, v in tensors.items():
        if not v.is_floating_point():
            raise CheckpointError(f"{path}: tensor {k} has dtype {v.dtype}, expected floating point")
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k} contains NaN or infinity")
