"""Copy a run and write the config that continues it with an lr decay sized to a time budget.

    python training/jobs/decay_config.py runs/C runs/Cf 4.3
    python -m training.train --config runs/Cf/continue.json

The copy resumes from the source's state (weights, Adam moments, RNG, step) with the
source's own training config, except: ``wsd`` schedule whose cosine decay (to
``min_lr_ratio``) spans the steps that fit in ``minutes`` at the source's last measured
steps/s, less 75 s for start-up and compilation, and ``max_minutes`` as a safety stop.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

START_UP_SECONDS = 75


def main(source: str, target: str, minutes: str) -> None:
    src, dst = Path(source), Path(target)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    cfg = json.loads((src / "state" / "meta.json").read_text())["config"]
    rates = [json.loads(line) for line in (src / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    step, rate = rates[-1]["step"], rates[-1]["steps_per_s"]
    n = int(rate * (float(minutes) * 60 - START_UP_SECONDS))
    cfg.update(
        steps=step + n, lr_schedule="wsd", decay_steps=n, out_dir=str(dst), max_minutes=float(minutes), init_from=None
    )
    for key in ("world_size", "input_dim"):  # recorded by train(), not TrainConfig fields
        cfg.pop(key)
    (dst / "continue.json").write_text(json.dumps(cfg, indent=1))
    print(f"{src} at step {step}: {dst} decays over {n} steps")


if __name__ == "__main__":
    main(*sys.argv[1:])
