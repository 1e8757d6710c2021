"""Save and load meta-trained GPICL checkpoints (safetensors weights + JSON config).

A checkpoint is a folder laid out like a Hugging Face Hub model repository::

    model.safetensors   weights (float16, bfloat16 or float32)
    config.json         {"format_version", "model_type", "architecture", "weights_sha256",
                         "preprocessing", "training", "metrics"}
    README.md           model card (documentation only; not needed to load)

:func:`load_checkpoint` accepts a bundled name (:data:`BUNDLED`), a
local folder or ``model.safetensors`` path, or a Hub repository id ``"owner/name"``. Weights
are read with ``safetensors`` only, never unpickled, and every way a checkpoint can be
broken is reported as a :class:`CheckpointError` naming the file and the problem:
malformed or mistyped ``config.json`` fields, weights that are not the ones the config
was saved with (``weights_sha256``, written by :func:`save_checkpoint`; checkpoints
without it still load), and a Hub that cannot be reached (within seconds, with how to
work offline).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.resources import as_file, files
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from gpicl_sklearn.inputs import LAYOUTS
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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BOOLEAN_ARCHITECTURE = ("qk_norm",)  # every other architecture field is a positive int

# Seconds to wait for a TCP connection to the Hub (or the configured proxy) before a Hub id
# is served from the local cache only: huggingface_hub itself retries an unreachable Hub
# with backoff for about 24 s before giving up.
HUB_CONNECT_TIMEOUT = 3.0


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

    @property
    def layout(self) -> str:
        """How the model reads features, one of :data:`gpicl_sklearn.inputs.LAYOUTS` (checked at load)."""
        return _layout_of(self.config)


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
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": "pt"})  # "pt": the Hub's marker for torch weights
    config = {
        "format_version": FORMAT_VERSION,
        "model_type": MODEL_TYPE,
        "architecture": model.cfg.to_dict(),
        # Checked at load: weights edited, replaced or corrupted after saving are refused.
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "preprocessing": preprocessing,
        "training": training,
        "metrics": metrics,
    }
    try:  # strict JSON (no NaN/Infinity): other tools, the Hub among them, read config.json too
        config_text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"preprocessing, training and metrics must be JSON-serialisable: {e}") from e

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Config last: a save interrupted midway leaves no config.json, which loading reports,
    # rather than a config describing weights that were never written.
    atomic_write(directory / WEIGHTS_NAME, lambda path: path.write_bytes(weights))
    atomic_write(directory / CARD_NAME, lambda path: path.write_text(model_card or _default_card(config)))
    atomic_write(directory / CONFIG_NAME, lambda path: path.write_text(config_text))
    return directory


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Replace ``target`` atomically and durably with what ``write(path)`` writes to ``path``.

    ``write`` is called with a temporary path in the same folder; the file is then flushed
    to disk (fsync), renamed over ``target`` and the rename made durable (fsync of the
    folder). Readers see the old file or the complete new one, never a part, also after a
    crash or power loss. If ``write`` raises, ``target`` is untouched and the temporary
    file removed.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent, directory=True)


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and os.name == "nt":  # Windows cannot open folders; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_card(config: dict) -> str:
    arch = config["architecture"]
    return (
        "---\nlibrary_name: gpicl-sklearn\ntags: [in-context-learning, tabular-classification, scikit-learn]\n---\n"
        "# GPICL Transformer\n\n"
        "A general-purpose in-context learner (Kirsch et al., 2022) for `gpicl_sklearn.GPICLClassifier`.\n\n"
        f"Architecture: {arch['n_layers']} layers, d_model {arch['d_model']}, input_dim {arch['input_dim']}, "
        f"{arch['num_classes']} label slots, up to {arch['max_len'] - 1} context rows"
        f"{', LayerNorm of queries and keys' if arch.get('qk_norm') else ''}.\n\n"
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
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id}@{revision}" if revision else repo_id
    # Unreachable Hub: serve the cache only, at once (huggingface_hub would retry ~24 s).
    unreachable = None if constants.HF_HUB_OFFLINE else _hub_unreachable(constants.ENDPOINT)
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, local_files_only=unreachable is not None)
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, local_files_only=unreachable is not None)
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set" if unreachable is None else f"the Hub cannot be reached: {unreachable}"
        raise CheckpointError(
            f"checkpoint {at!r} is not a local folder and is not in the Hugging Face cache, and it cannot be "
            f"downloaded: offline ({why}). To work offline, download it once where the Hub is reachable "
            f"(`hf download {repo_id} --local-dir DIR`) and pass the folder's path (checkpoint=DIR), or "
            "fill the cache there and set HF_HUB_OFFLINE=1 (cache only, no network, no waiting)."
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


def _hub_unreachable(endpoint: str) -> str | None:
    """Why a TCP connection to the Hub ``endpoint`` (or the proxy that requests for it use)
    cannot be opened within :data:`HUB_CONNECT_TIMEOUT` seconds; ``None`` if it can."""
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # HTTPS_PROXY etc., as huggingface_hub's HTTP client reads them
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname, proxy_url.port or (443 if proxy_url.scheme == "https" else 80)
    if not host:
        return None  # an endpoint this check does not understand: leave it to huggingface_hub
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT).close()
    except TimeoutError:
        return f"no connection to {host}:{port} within {HUB_CONNECT_TIMEOUT:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e}"
    return None


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
    sha256 = hashlib.sha256(data).hexdigest()
    if "weights_sha256" in config and config["weights_sha256"] != sha256:
        raise CheckpointError(
            f"{weights}: SHA-256 {sha256} differs from weights_sha256 {config['weights_sha256']} in {config_path}: "
            "the weights changed after the checkpoint was saved (edited, corrupted, or from another checkpoint); "
            "download or publish it again"
        )
    stored = sum(t.numel() for t in tensors.values())
    if _size_estimate(cfg) > 2 * stored + 1_000_000:  # before allocating the model the config describes
        raise CheckpointError(
            f"{config_path}: the architecture describes a model of about {_size_estimate(cfg):,} parameters, but "
            f"{weights} holds {stored:,}: config.json and the weights do not belong together"
        )
    model = _empty_model(cfg)
    model.load_state_dict(_checked_tensors(tensors, model, weights), assign=True)
    return config, model.eval(), sha256


def _size_estimate(cfg: GPICLConfig) -> int:
    """The model's main parameter count (embeddings, attention, MLPs), from its architecture alone."""
    embeddings = cfg.d_model * (cfg.input_dim + cfg.max_len + 2 * cfg.num_classes + 1)
    per_layer = cfg.d_model * (4 * cfg.n_heads * cfg.head_dim + 2 * cfg.mlp_ratio * cfg.d_model)
    return embeddings + cfg.n_layers * per_layer


def _empty_model(cfg: GPICLConfig) -> GPICLTransformer:
    """The architecture, its random initialisation about to be replaced.

    Built on the CPU, not the "meta" device: that would skip the initialisation, but
    torch imports its compiler stack for it, 2 s in every fresh process (each Dask or
    joblib worker) against 0.1 s for the default model's initialisation. The caller's
    random stream is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        return GPICLTransformer(cfg)


def _layout_of(config: dict) -> str:
    # Checkpoints that record no layout are the paper's: every table projected.
    return config.get("preprocessing", {}).get("layout", "projection")


def _read_config(path: Path) -> tuple[dict, GPICLConfig]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # type: true == 1 in Python
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported; this gpicl-sklearn reads "
            f"format_version {FORMAT_VERSION} (a newer checkpoint needs a newer gpicl-sklearn)"
        )
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{path}: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    checksum = config.get("weights_sha256")
    if "weights_sha256" in config and not (isinstance(checksum, str) and _SHA256.match(checksum)):
        raise CheckpointError(f"{path}: weights_sha256 must be 64 lowercase hex digits, got {checksum!r}")
    for section in ("preprocessing", "training", "metrics"):
        if section in config and not isinstance(config[section], dict):
            raise CheckpointError(f"{path}: {section} must be a JSON object, got {_describe(config[section])}")
    layout = _layout_of(config)
    if layout not in LAYOUTS:
        raise CheckpointError(
            f"{path}: preprocessing.layout must be {' or '.join(map(repr, LAYOUTS))}, got {_describe(layout)}"
        )
    architecture = config.get("architecture")
    if not isinstance(architecture, dict):
        raise CheckpointError(f"{path}: architecture must be a JSON object, got {_describe(architecture)}")
    unknown = sorted(architecture.keys() - {f.name for f in fields(GPICLConfig)})
    if unknown:
        raise CheckpointError(f"{path}: invalid 'architecture': unknown fields {unknown}")
    for name, value in architecture.items():
        if name in _BOOLEAN_ARCHITECTURE:
            if type(value) is not bool:
                raise CheckpointError(f"{path}: architecture.{name} must be true or false, got {_describe(value)}")
        # Exactly int: JSON's 4.0, "4" and true would otherwise reach torch as sizes.
        elif type(value) is not int or value < 1:
            raise CheckpointError(f"{path}: architecture.{name} must be a positive integer, got {_describe(value)}")
    cfg = GPICLConfig.from_dict(architecture)
    if cfg.max_len < 2:
        raise CheckpointError(f"{path}: architecture.max_len must be at least 2 (a context row and a query)")
    if cfg.num_classes < 2:
        raise CheckpointError(f"{path}: architecture.num_classes must be at least 2")
    return config, cfg


def _describe(value) -> str:
    return f"{json.dumps(value)} ({'boolean' if isinstance(value, bool) else type(value).__name__})"


def _checked_tensors(tensors: dict, model: GPICLTransformer, path: str) -> dict:
    """``tensors`` in float32, after checking that they fit ``model`` and are finite."""
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
    checked = {}
    for k, v in tensors.items():
        if not v.is_floating_point():
            raise CheckpointError(f"{path}: tensor {k} has dtype {v.dtype}, expected floating point")
        checked[k] = v.float()  # float16's isfinite is several times slower on CPU
        if not torch.isfinite(checked[k]).all():
            raise CheckpointError(f"{path}: tensor {k} contains NaN or infinity")
    return checked
