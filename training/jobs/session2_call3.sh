#!/usr/bin/env bash
# Session 2, device calls 3-5 (nvidia-h100-x4, the warm machine of calls 1-2), as one script:
#   1. training throughput: compile and compile+graph, 1 GPU and 4 GPUs (DDP)
#   2. C -> Cf: runs/C (Table 2's GPICL seed 1) continued with a cosine lr decay for 4.3 minutes
#      on GPU0, then published (the checkpoint shipped as gpicl_sklearn/checkpoints/default)
# (Session 2 ran these as separate calls; the first throughput call failed for want of
# GPICL_DATA_ROOT, and the publication of runs/final was repeated in call 4 after its
# weights had been too large for $OUT in call 2.)
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
OUT=${OUT:-runs/out}; mkdir -p $OUT

timeout 400 python -m benchmarks.train_throughput --modes compile,compile+graph --gpus 1,4 --out $OUT/tp
rm -f $OUT/tp/*.log

python training/jobs/decay_config.py runs/C runs/Cf 4.3
CUDA_VISIBLE_DEVICES=0 python -m training.train --config runs/Cf/continue.json --eval-datasets null > runs/Cf.log 2>&1
tail -n 3 runs/Cf.log
python -m training.publish --run runs/Cf --out $OUT/cf --n-tasks 128 --n-seqs 32
cp runs/Cf/metrics.jsonl $OUT/cf_metrics.jsonl
