#!/usr/bin/env bash
# Table 2's LSTM and outer-product LSTM rows (paper A.3 learners at the paper's 32x32x3 inputs,
# 512 sequences per step), 3 seeds each, meta-trained with the sign of momentum: with Adam at 1e-3
# all six stayed on the loss plateau for 5,000 steps, and the sign of momentum at lr 1e-4 took the
# state-size study's LSTMs off it (benchmarks/results/state_size_sign_momentum/). lr 3e-4: in a CPU
# pilot (LSTM 64 at 8x8, 128 sequences, biased permutations for 1,000 steps; training/RUNS.md) it
# left the plateau at 17,000 steps against 36,000 for lr 1e-4 and 23,000 for 1e-3. One learner's
# three seeds at once on one GPU (LEARNERS=lstm, the default, or oplstm; six runs ran out of its
# 80 GB, and at about 85 run-steps/s in all both learners need more steps than one session's
# device time: training/RUNS.md), each step one CUDA-graph replay. A call stopped by MINUTES
# resumes its runs on the same machine (runs/); the logs and metrics go to $OUT. SEEDS chooses seeds.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train
#
# EVAL=1, in a call of its own on the same machine, meta-tests the LEARNERS' rows into a copy of
# benchmarks/results/table2.json in $OUT/table2 (the other rows kept). Its data root holds the
# full test splits (the training root and CIFAR10's test split do not fit one call's 64 MiB):
# python training/jobs/data_cache.py ../shared/datasets data_eval mnist/test fashion_mnist/test cifar10/test
set -u
export PYTHONUNBUFFERED=1
if [ "${EVAL:-0}" = 1 ]; then
  export GPICL_DATA_ROOT=$PWD/data_eval
  mkdir -p "$OUT/table2" && cp benchmarks/results/table2.json "$OUT/table2/"
  methods=() rows=()
  for learner in ${LEARNERS:-lstm}; do
    case $learner in lstm) methods+=("LSTM") ;; oplstm) methods+=("Outer-product LSTM") ;; esac
    rows+=(--${learner}-runs "$(ls -d runs/t2_${learner}_s? | paste -sd, -)")
  done
  python -m benchmarks.table2 --device cuda --methods "$(IFS=,; echo "${methods[*]}")" --update \
    "${rows[@]}" --out "$OUT/table2" | tail -n 25
  exit
fi
export GPICL_DATA_ROOT=$PWD/data_cache
mkdir -p runs
OPTS="--config training/configs/default.json --optimizer sign_momentum --lr 3e-4 --lr-schedule constant --biased-steps 1000
  --compile false --cuda-graph true --steps ${STEPS:-50000} --max-minutes ${MINUTES:-8}
  --eval-datasets null --ckpt-every 1000000"
for learner in ${LEARNERS:-lstm}; do
  for seed in ${SEEDS:-0 1 2}; do
    python -m training.train $OPTS --learner $learner --seed $seed --out-dir runs/t2_${learner}_s$seed \
      > runs/t2_${learner}_s$seed.log 2>&1 &
  done
done
wait
for f in runs/t2_*lstm_s?.log; do echo "== $f"; tail -n 2 "$f"; done
tar czf "$OUT/table2_recurrent_logs.tar.gz" runs/t2_*lstm_s?.log runs/t2_*lstm_s?/metrics.jsonl
