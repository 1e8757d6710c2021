#!/usr/bin/env bash
# The shipped default checkpoint and the training throughput table, on 4 GPUs; runs after
# training/jobs/recipe_experiments.sh on the same machine (it continues its runs/C):
#   1. training throughput: compile and compile+graph, 1 GPU and 4 GPUs (DDP)
#      (benchmarks/results/train_throughput.md)
#   2. C -> Cf: runs/C (Table 2's GPICL seed 1) continued with a cosine lr decay for 4.3 minutes
#      on GPU0, then published (the checkpoint shipped as gpicl_sklearn/checkpoints/default)
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
