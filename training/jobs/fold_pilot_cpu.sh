#!/usr/bin/env bash
# CPU pilot (~12 minutes on 2 cores): does meta-training with --fold-projection learn like the
# direct Gram-trick sampling? A small Transformer on MNIST at 8x8 (64-d), the two runs side
# by side with one thread each and the same seed; meta-test accuracy on unseen MNIST tasks
# every 1000 steps in runs/fold_pilot/{direct,fold}/metrics.jsonl.
set -eu
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
COMMON=(--dataset mnist --image-size 8 --channels 1 --batch-size 128 --steps ${STEPS:-5000}
        --learner-kwargs '{"d_model": 64, "n_layers": 2, "n_heads": 4, "head_dim": 16}'
        --biased-steps 1500 --log-every 500 --eval-every 1000 --eval-datasets mnist --eval-tasks 32
        --eval-seqs 16 --ckpt-every 100000)
python -m training.train "${COMMON[@]}" --out-dir runs/fold_pilot/direct > runs/fold_pilot_direct.log 2>&1 &
python -m training.train "${COMMON[@]}" --fold-projection true --out-dir runs/fold_pilot/fold > runs/fold_pilot_fold.log 2>&1 &
wait
python - <<'PY'
import json
for name in ("direct", "fold"):
    log = [json.loads(line) for line in open(f"runs/fold_pilot/{name}/metrics.jsonl")]
    evals = [(r["step"], round(100 * sum(r["eval"]["mnist"]["acc"][90:]) / 10, 1)) for r in log if "eval" in r]
    rate = [r["steps_per_s"] for r in log if "steps_per_s" in r][-1]
    print(f"{name:>6}: {rate:.1f} steps/s; MNIST acc at positions 91-100 by step: {evals}")
PY
