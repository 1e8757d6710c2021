#!/usr/bin/env bash
# CPU pilot (2 cores, ~25 minutes): do per-sequence random feature scales (--feature-scale,
# training/tasks.py) make a learner meta-trained on MNIST generalise better to an unseen
# dataset (FashionMNIST)? A small Transformer on MNIST at 8x8 (64-d), the two runs side by
# side with one thread each and the same seed; meta-test accuracy on unseen tasks from the
# MNIST and FashionMNIST test splits every 1000 steps in
# runs/feature_scale_pilot/{off,on}/metrics.jsonl.
set -eu
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
COMMON=(--dataset mnist --image-size 8 --channels 1 --batch-size 128 --steps ${STEPS:-5000}
        --learner-kwargs '{"d_model": 64, "n_layers": 2, "n_heads": 4, "head_dim": 16}'
        --biased-steps 1500 --log-every 500 --eval-every 1000 --eval-datasets mnist,fashion_mnist
        --eval-tasks 32 --eval-seqs 16 --ckpt-every 100000)
mkdir -p runs/feature_scale_pilot
python -m training.train "${COMMON[@]}" --out-dir runs/feature_scale_pilot/off > runs/feature_scale_pilot/off.log 2>&1 &
python -m training.train "${COMMON[@]}" --feature-scale ${SIGMA:-0.75} --out-dir runs/feature_scale_pilot/on \
    > runs/feature_scale_pilot/on.log 2>&1 &
wait
python - <<'PY'
import json
for name in ("off", "on"):
    log = [json.loads(line) for line in open(f"runs/feature_scale_pilot/{name}/metrics.jsonl")]
    for data in ("mnist", "fashion_mnist"):
        evals = [(r["step"], round(100 * sum(r["eval"][data]["acc"][90:]) / 10, 1)) for r in log if "eval" in r]
        print(f"{name:>3} {data:>13}: acc at positions 91-100 by step: {evals}")
PY
