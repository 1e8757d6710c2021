"""Atomic, exactly-resumable training state: weights, optimiser moments, RNG, step.

Tensors go into safetensors shards of at most ``SHARD_BYTES`` each (a GPU job may only
return files of 16 MiB, and a resume state with Adam moments is ~3x the weights); the
step, RNG states and config go into ``meta.json``. A new state is written to
``<dir>.tmp`` and swapped in with renames, so an interrupted write never leaves a
half-written state behind.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

SHARD_BYTES = 15_000_000
FORMAT_VERSION = 1


def _shards(tensors: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += nbytes
    return shards + [current] if current else shards


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {
        f"optim.{idx}.{key}": v.detach().cpu().contiguous()
        for idx, entry in sd["state"].items()
        for key, v in entry.items()
    }
    groups = [{k: (float(v) if isinstance(v, Tensor) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "state_keys": {str(i): sorted(e) for i, e in sd["state"].items()}}


def save_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    rng_states: list[Tensor],
    config: dict,
) -> None:
    """Write the full training state of ``model``/``optimizer`` at ``step`` to ``directory``."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    shards = _shards(tensors)
    for i, shard in enumerate(shards):
        save_file(shard, tmp / f"state-{i:02d}-of-{len(shards):02d}.safetensors")
    meta = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "rng_states": [base64.b64encode(s.cpu().numpy().tobytes()).decode() for s in rng_states],
        "optimizer": optim_meta,
        "config": config,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "meta.json").read_text())


def load_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[int, list[Tensor]]:
    """Restore ``model`` (and ``optimizer``) in place; returns ``(step, rng_states)``."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: unsupported state format {meta.get('format_version')!r}")
    tensors: dict[str, Tensor] = {}
    for shard in sorted(directory.glob("state-*.safetensors")):
        tensors.update(load_file(shard))
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_sd)
    if optimizer is not None:
        om = meta["optimizer"]
        state = {int(i): {key: tensors[f"optim.{i}.{key}"] for key in keys} for i, keys in om["state_keys"].items()}
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    rng = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in meta["rng_states"]]
    return meta["step"], rng
