#!/usr/bin/env bash
# A long run of the paper model on 4 GPUs (DDP + CUDA graphs, 512 sequences per GPU) in
# jobs of under 10 minutes on one machine (runs/ stays there between jobs):
#   bash training/jobs/long_4gpu.sh train     # first and later jobs: starts or resumes runs/long
#   bash training/jobs/long_4gpu.sh finish    # last job: a copy, runs/long_decay, with the lr decayed,
#                                             # then published to $OUT/ckpt (model card on the GPU)
# Further arguments go to training.train (a CPU smoke run: NPROC=2 ... train --steps 4 --compile false ...).
# Biased permutations only through the plateau (3k steps): the recipe experiments' lever (training/RUNS.md).
# $OUT gets the metrics and log of every job; the 48 MB resume state stays on the machine.
set -eu -o pipefail
export GPICL_DATA_ROOT=${GPICL_DATA_ROOT:-$PWD/data_cache} PYTHONUNBUFFERED=1
MIN=${MINUTES:-8.5}
OUT=${OUT:-runs/out}; mkdir -p runs $OUT
train() { torchrun --standalone --nproc-per-node "${NPROC:-4}" -m training.train "$@"; }

case ${1:?train or finish} in
  train)
    train --config training/configs/default.json --out-dir runs/long --biased-steps 3000 \
      --lr-schedule constant --eval-datasets mnist,fashion_mnist --eval-every 10000 --max-minutes "$MIN" "${@:2}" \
      2>&1 | tee -a runs/long.log
    run=runs/long ;;
  finish)
    python training/jobs/decay_config.py runs/long runs/long_decay "$MIN"
    train --config runs/long_decay/continue.json "${@:2}" 2>&1 | tee -a runs/long_decay.log
    python -m training.publish --run runs/long_decay --out $OUT/ckpt --n-tasks 128 --n-seqs 32
    run=runs/long_decay ;;
  *) echo "usage: $0 train|finish" >&2; exit 2 ;;
esac
cp $run/metrics.jsonl $OUT/metrics.jsonl
cp runs/*.log $OUT/
