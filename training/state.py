"""Exactly-resumable training state (weights, optimiser moments, RNG, step) that a kill never loses.

Tensors go into safetensors shards of at most ``SHARD_BYTES`` each (a resume state with Adam
moments is ~3x the weights; shards below 16 MiB pass transfers that limit the file size); the step,
RNG states, config and shard list go into ``meta.json``.

A save writes ``<dir>.tmp``, fsyncs every file, marks it complete (the file ``COMPLETE``,
written last), and only then swaps it in: ``<dir>`` -> ``<dir>.old``, ``<dir>.tmp`` ->
``<dir>``, remove ``<dir>.old``, each rename made durable by an fsync of the parent
folder. Whatever instant a save is killed at, one complete state survives: the previous
one (``<dir>`` or ``<dir>.old``) or the new one (``<dir>.tmp`` once complete, or ``<dir>``).
:func:`find_state` picks the complete one with the highest step, and the next save first
moves that one back to ``<dir>`` before it clears anything.

:func:`carry_copy` (``python -m training.state STATE DEST``) writes the part of a state that a
run needs on another machine: fp16 weights, step, RNG and config, without the optimiser moments.
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
META_NAME = "meta.json"
COMPLETE_NAME = "COMPLETE"


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (renames, new files), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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


def _complete_step(candidate: Path) -> int | None:
    """The step of the state in ``candidate`` if it is complete, else ``None``.

    ``<dir>.tmp`` counts only with its ``COMPLETE`` mark; ``<dir>`` and ``<dir>.old`` are
    reached only by renaming a complete folder, so a readable ``meta.json`` whose shards
    are all there suffices (states written before the mark existed have none).
    """
    if candidate.name.endswith(".tmp") and not (candidate / COMPLETE_NAME).is_file():
        return None
    try:
        meta = json.loads((candidate / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not all((candidate / name).is_file() for name in meta.get("shards", ())):
        return None
    return meta.get("step")


def find_state(directory: str | Path) -> Path | None:
    """The folder holding the newest complete state saved to ``directory``; ``None`` if none.

    Looks at ``directory``, ``directory.tmp`` and ``directory.old`` (see the module docstring).
    """
    directory = Path(directory)
    steps = {}
    for candidate in (directory, _sibling(directory, ".tmp"), _sibling(directory, ".old")):
        step = _complete_step(candidate)
        if step is not None:
            steps[candidate] = step
    return max(steps, key=steps.get, default=None)  # ties: the first, `directory` itself


def _recover(directory: Path) -> None:
    """Put the newest complete state back at ``directory`` (after a save was killed)."""
    found = find_state(directory)
    if found is None or found == directory:
        return
    if directory.exists():  # incomplete, or older than `found`
        if found.name.endswith(".old"):
            shutil.rmtree(directory)
        else:  # `found` is the .tmp: keep the older state as .old until the swap is durable
            old = _sibling(directory, ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            _fsync(directory.parent)
    os.replace(found, directory)
    _fsync(directory.parent)


def save_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    rng_states: list[Tensor],
    config: dict,
) -> None:
    """Write the full training state of ``model``/``optimizer`` at ``step`` to ``directory``.

    A kill at any instant leaves the previous state or this one loadable (module docstring).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _recover(directory)
    tmp, old = _sibling(directory, ".tmp"), _sibling(directory, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    shards = _shards(tensors)
    names = [f"state-{i:02d}-of-{len(shards):02d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, tmp / name)
        _fsync(tmp / name)
    meta = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "rng_states": [base64.b64encode(s.cpu().numpy().tobytes()).decode() for s in rng_states],
        "optimizer": optim_meta,
        "config": config,
        "shards": names,
    }
    _write_synced(tmp / META_NAME, json.dumps(meta, indent=1))
    _write_synced(tmp / COMPLETE_NAME, f"{step}\n")  # last: everything above is on disk
    _fsync(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
        _fsync(directory.parent)
    os.replace(tmp, directory)
    _fsync(directory.parent)
    shutil.rmtree(old, ignore_errors=True)
    _fsync(directory.parent)


def _located(directory: str | Path) -> Path:
    found = find_state(directory)
    if found is None:
        raise FileNotFoundError(f"no complete training state at {directory} (nor its .tmp or .old)")
    return found


def read_meta(directory: str | Path) -> dict:
    """``meta.json`` of the newest complete state saved to ``directory`` (see :func:`find_state`)."""
    return json.loads((_located(directory) / META_NAME).read_text())


def load_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[int, list[Tensor]]:
    """Restore ``model`` (and ``optimizer``) in place from the newest complete state saved to
    ``directory``; returns ``(step, rng_states)``."""
    found = _located(directory)
    meta = json.loads((found / META_NAME).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{found}: unsupported state format {meta.get('format_version')!r}")
    tensors: dict[str, Tensor] = {}
    shards = (
        [found / name for name in meta["shards"]] if "shards" in meta else sorted(found.glob("state-*.safetensors"))
    )
    for shard in shards:
        tensors.update(load_file(shard))
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_sd)  # copies into the model's own dtypes (a carried copy is fp16)
    om = meta["optimizer"]
    if optimizer is not None and om is not None:  # a carried copy has none: the optimiser starts afresh
        state = {int(i): {key: tensors[f"optim.{i}.{key}"] for key in keys} for i, keys in om["state_keys"].items()}
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    rng = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in meta["rng_states"]]
    return meta["step"], rng


def carry_copy(directory: str | Path, dest: str | Path) -> Path:
    """Write a copy of the newest complete state in ``directory`` to ``dest``, small enough to
    travel between machines; returns ``dest``.

    The copy keeps the step, RNG states and config, the model's floating-point weights in fp16,
    and drops the optimiser's moments (two more copies of the weights, in fp32, for Adam):
    resuming from it continues the run at its step, on its data stream, with the optimiser
    started afresh. A run that outlives the machine it trains on is carried this way (a
    device call brings back files of at most 16 MiB, and sends at most 64 MiB).
    """
    found, dest = _located(directory), Path(dest)
    meta = json.loads((found / META_NAME).read_text())
    tensors: dict[str, Tensor] = {}
    for shard in meta["shards"]:
        tensors.update(load_file(found / shard))
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("model.")}
    shards = _shards(weights)
    names = [f"state-{i:02d}-of-{len(shards):02d}.safetensors" for i in range(len(shards))]
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, dest / name)
    meta.update(optimizer=None, shards=names)
    (dest / META_NAME).write_text(json.dumps(meta, indent=1))
    (dest / COMPLETE_NAME).write_text(f"{meta['step']}\n")
    return dest


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a run's state as a carried copy (fp16 weights, no optimiser moments): "
        "python -m training.state runs/a/state carried/a/state"
    )
    parser.add_argument("state", help="a run's state folder (<out_dir>/state)")
    parser.add_argument("dest", help="the folder to write the copy to")
    args = parser.parse_args()
    print(carry_copy(args.state, args.dest))
