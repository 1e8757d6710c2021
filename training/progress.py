"""A run's record: ``<out_dir>/metrics.jsonl`` lines, progress prints and the time limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from gpicl_sklearn.checkpoint import atomic_write as replace_atomically

METRICS_NAME = "metrics.jsonl"


def append_record(out_dir: Path, record: dict) -> None:
    """Add one JSON line to the run's metrics."""
    with open(out_dir / METRICS_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_records(out_dir: Path) -> list[dict]:
    """The run's metrics, one dict per line, in the order they were written."""
    return [json.loads(line) for line in (Path(out_dir) / METRICS_NAME).read_text().splitlines()]


def drop_records_after(out_dir: Path, step: int) -> None:
    """Keep the records of steps up to ``step``: a run resumed there logs the later ones again.

    A line cut short by a kill mid-write is dropped too.
    """
    path = out_dir / METRICS_NAME
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    replace_atomically(path, lambda tmp: tmp.write_text("".join(kept)))


class Progress:
    """Loss logging of the training loop and its wall-clock limit.

    Parameters
    ----------
    out_dir : Path
        Where ``metrics.jsonl`` is appended to (by the main process only).
    start_step : int
        The step the run starts or resumes at (for the first steps/s).
    max_minutes : float or None
        Time after which :meth:`log` reports that the run is out of time.
    world : int
        Processes of the run; the logged loss is their mean.
    is_main : bool
        Whether this process prints and writes.
    device : torch.device
        Where the loss all-reduce runs.
    """

    def __init__(
        self, out_dir: Path, start_step: int, max_minutes: float | None, world: int, is_main: bool, device
    ) -> None:
        self.out_dir, self.max_minutes, self.world, self.is_main, self.device = (
            out_dir,
            max_minutes,
            world,
            is_main,
            device,
        )
        self.start_time = self.last_time = time.time()
        self.last_step = start_step

    def log(self, step: int, loss: Tensor, lr: float) -> bool:
        """Print and record the loss at ``step``; whether the run is out of time (on every rank).

        The only host synchronisation of the loop: the loss is read here, not every step.
        """
        loss_value = float(loss)
        now = time.time()
        out_of_time = self.max_minutes is not None and now - self.start_time > 60 * self.max_minutes
        if self.world > 1:  # mean loss; every rank stops when rank 0 runs out of time
            t = torch.tensor([loss_value / self.world, float(out_of_time)], device=self.device)
            dist.all_reduce(t)
            loss_value, out_of_time = t[0].item(), bool(t[1].item())
        rate = (step - self.last_step) / (now - self.last_time)
        self.last_time, self.last_step = now, step
        if self.is_main:
            print(f"step {step:>7d}  loss {loss_value:.4f}  lr {lr:.2e}  {rate:6.1f} steps/s", flush=True)
            record = {"step": step, "loss": loss_value, "lr": lr, "steps_per_s": rate, "time": now - self.start_time}
            append_record(self.out_dir, record)
        return out_of_time
