"""Tests of training.state: a save killed at any instant never loses the saved work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from training import state
from training.state import find_state, load_state, read_meta, save_state


class Killed(BaseException):
    """The process dies here (BaseException: no ``except Exception`` of the save catches it)."""


def model_at(step: int) -> torch.nn.Module:
    """A model whose weights say which step they were saved at."""
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(step)
    return model


def save(directory: Path, step: int) -> None:
    model = model_at(step)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # Adam moments: the optimiser's shard tensors are part of the state
    save_state(directory, model, optimizer, step=step, rng_states=[torch.Generator().get_state()], config={})


def loaded_step(directory: Path) -> int | None:
    """The step :func:`load_state` restores (checked against the weights), ``None`` without a state."""
    if find_state(directory) is None:
        return None
    model = torch.nn.Linear(3, 2)
    step, _ = load_state(directory, model, optimizer=None)
    assert torch.allclose(model.bias, torch.full_like(model.bias, step), atol=0.01), "weights of another step"
    assert read_meta(directory)["step"] == step
    return step


def _remove_one_file(path, *args, **kwargs) -> None:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else []
    if files:
        files[0].unlink()


def _write_half_safetensors(tensors, path, *args, **kwargs) -> None:
    REAL["save_file"](tensors, path, *args, **kwargs)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _write_half_text(path, text) -> None:
    Path(path).write_text(text[: len(text) // 2])


# Every operation of a save that touches the disk, and what a kill in its middle leaves.
REAL = {"replace": os.replace, "rmtree": shutil.rmtree, "save_file": state.save_file, "write": state._write_synced}
PARTIAL = {"replace": None, "rmtree": _remove_one_file, "save_file": _write_half_safetensors, "write": _write_half_text}


@pytest.fixture
def kill_at(monkeypatch):
    """``kill_at(k)``: the k-th disk operation of what follows dies half-done; returns the call counter."""

    def arm(k: int | None) -> list[int]:
        calls = [0]

        def wrap(name):
            def operation(*args, **kwargs):
                calls[0] += 1
                if calls[0] == k:
                    if PARTIAL[name] is not None:
                        PARTIAL[name](*args, **kwargs)
                    raise Killed(name)
                return REAL[name](*args, **kwargs)

            return operation

        monkeypatch.setattr(state.os, "replace", wrap("replace"))
        monkeypatch.setattr(state.shutil, "rmtree", wrap("rmtree"))
        monkeypatch.setattr(state, "save_file", wrap("save_file"))
        monkeypatch.setattr(state, "_write_synced", wrap("write"))
        return calls

    return arm


def killed_save(directory: Path, step: int, kill_at, k: int) -> bool:
    kill_at(k)
    try:
        save(directory, step)
    except Killed:
        return True
    finally:
        kill_at(None)
    return False


def operations_of_a_save(tmp_path: Path, kill_at) -> int:
    save(tmp_path / "count" / "state", 1)
    calls = kill_at(None)
    save(tmp_path / "count" / "state", 2)
    return calls[0]


def test_a_save_killed_at_any_operation_leaves_the_old_or_the_new_state(tmp_path, kill_at):
    n = operations_of_a_save(tmp_path, kill_at)
    assert n >= 8  # rmtree, shard, meta, mark, renames, ...: enough places to die
    for k in range(1, n + 1):
        directory = tmp_path / f"k{k}" / "state"
        save(directory, 3)
        assert killed_save(directory, 7, kill_at, k)
        assert loaded_step(directory) in (3, 7), f"killed at operation {k}"


def test_the_save_after_a_killed_save_loses_nothing_either(tmp_path, kill_at):
    # A run resumed from what a kill left, killed again in its next save, at every pair of places.
    n = operations_of_a_save(tmp_path, kill_at)
    for k in range(1, n + 1):
        for j in range(1, n + 1):
            directory = tmp_path / f"k{k}j{j}" / "state"
            save(directory, 3)
            killed_save(directory, 7, kill_at, k)
            resumed = loaded_step(directory)
            assert killed_save(directory, 9, kill_at, j)
            assert loaded_step(directory) in (resumed, 9), f"killed at operations {k}, then {j}"
        save(directory, 11)  # and an uninterrupted save then cleans up
        assert loaded_step(directory) == 11
        assert sorted(p.name for p in directory.parent.iterdir()) == ["state"]


def test_the_first_save_killed_leaves_no_state_and_a_later_save_works(tmp_path, kill_at):
    n = operations_of_a_save(tmp_path, kill_at)
    for k in range(1, n + 1):
        directory = tmp_path / f"k{k}" / "state"
        if killed_save(directory, 1, kill_at, k):
            assert loaded_step(directory) in (None, 1)
        save(directory, 2)
        assert loaded_step(directory) == 2


def test_an_unmarked_tmp_is_never_trusted(tmp_path):
    directory = tmp_path / "state"
    save(directory, 3)
    save(tmp_path / "newer" / "state", 8)
    shutil.copytree(tmp_path / "newer" / "state", tmp_path / "state.tmp")
    (tmp_path / "state.tmp" / state.COMPLETE_NAME).unlink()  # written, not yet marked complete
    assert find_state(directory) == directory and loaded_step(directory) == 3
    shutil.rmtree(directory)
    assert find_state(directory) is None
    with pytest.raises(FileNotFoundError, match="no complete training state"):
        read_meta(directory)


def test_a_carried_copy_keeps_the_step_and_rng_and_the_weights_in_fp16_without_the_moments(tmp_path):
    save(tmp_path / "state", step=3)
    with torch.no_grad():  # weights fp16 cannot hold exactly, so the test sees the rounding
        saved = torch.nn.Linear(3, 2)
        load_state(tmp_path / "state", saved, optimizer=None)
    carried = state.carry_copy(tmp_path / "state", tmp_path / "carried" / "state")
    tensors = {}
    for shard in sorted(carried.glob("state-*.safetensors")):
        tensors.update(state.load_file(shard))
    assert sorted(tensors) == ["model.bias", "model.weight"]  # the Adam moments are dropped
    assert all(t.dtype == torch.float16 for t in tensors.values())
    original, copy = read_meta(tmp_path / "state"), read_meta(carried)
    assert copy["optimizer"] is None
    assert {k: copy[k] for k in ("step", "rng_states", "config")} == {
        k: original[k] for k in ("step", "rng_states", "config")
    }

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    step, rng = load_state(carried, model, optimizer)
    assert step == 3 and len(rng) == 1 and optimizer.state_dict()["state"] == {}  # starts afresh
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, saved.state_dict()[name].half().float())


CARRIED = sorted((Path(__file__).parents[1] / "training" / "carried").glob("*/state"))


@pytest.mark.parametrize("found", CARRIED, ids=[p.parent.name for p in CARRIED])
def test_every_committed_carried_copy_loads_into_the_learner_its_config_names(found):
    """training/jobs/table2_seed_learners.sh resumes these: their weights must fit today's learners."""
    from training.learners import build_learner

    meta = read_meta(found)
    cfg = meta["config"]
    learner = build_learner(cfg["learner"], cfg["input_dim"], cfg["num_classes"], **cfg["learner_kwargs"])
    step, _ = load_state(found, learner, None)
    assert step == meta["step"] > 0
    assert all(torch.isfinite(p).all() for p in learner.parameters())
