"""Helpers shared by the benchmark scripts: where results go and how they are written."""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import sys
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def command_line(module: str, argv: list[str] | None) -> str:
    """``python -m <module> <args>``: the command a result file names (``argv``: ``sys.argv[1:]`` if None)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def write_outputs(out_dir: Path, stem: str, markdown: str, data: dict) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` (strict JSON: NaN is refused) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown.rstrip() + "\n")
    js.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return md, js


def percent(value: float, half_width: float | None = None) -> str:
    """``"73.7"`` or ``"73.7 ± 2.1"`` from fractions."""
    text = f"{100 * value:.1f}"
    if half_width is not None and not math.isnan(half_width):
        text += f" ± {100 * half_width:.1f}"
    return text


@contextlib.contextmanager
def thread_limit(threads: int):
    """At most ``threads`` threads for BLAS, OpenMP (scikit-learn) and torch inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)
