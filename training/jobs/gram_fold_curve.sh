#!/usr/bin/env bash
# Does sampling through the Gram table with the folded embedding (bf16 products) change the learning
# curve? The paper model from the same seed, 6,000 steps of `C`'s recipe (training/RUNS.md: biased
# permutations for 3,000 steps, lr 1e-3 constant), directly and with --fold-projection --gram-table,
# both at once on one GPU; metrics to $OUT.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train mnist/test fashion_mnist/test
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
run() {
  python -m training.train --config training/configs/default.json --out-dir runs/curve_$1 --steps 6000 \
    --biased-steps 3000 --lr-schedule constant --log-every 250 --eval-every 2000 --ckpt-every 100000 \
    --max-minutes 4.5 "${@:2}" > $OUT/curve_$1.log 2>&1
}
run direct &
run fold_gram --fold-projection true --gram-table true &
wait
for r in direct fold_gram; do cp runs/curve_$r/metrics.jsonl $OUT/curve_$r.jsonl; grep '^eval' $OUT/curve_$r.log; done
