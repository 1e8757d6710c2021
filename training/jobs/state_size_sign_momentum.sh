#!/usr/bin/env bash
# The state-size study's LSTMs and outer-product LSTMs (benchmarks/state_size.py) meta-trained with the
# sign of momentum at lr 1e-4, the optimiser that took the plateau studies' Transformers off their
# plateau where Adam did not (benchmarks/results/plateau_optimiser/): with Adam all three plain LSTMs
# stayed on the plateau for 20,000 steps. Six runs at once on one GPU; LEARNERS=lstm trains the three
# plain LSTMs alone, OUT_NAME names the report. A call stopped by MINUTES resumes its runs on the same
# machine (runs/state_size_sign_momentum); the report goes to $OUT.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train mnist/test fashion_mnist/test
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
name=${OUT_NAME:-state_size_sign_momentum}
python3 -m benchmarks.state_size --learners "${LEARNERS:-lstm,oplstm}" --optimizer sign_momentum --lr 1e-4 \
  --steps "${STEPS:-60000}" --jobs 6 --max-minutes "${MINUTES:-8}" \
  --work-dir runs/state_size_sign_momentum --out "$OUT/$name" > "$OUT/$name.log" 2>&1
tail -n 20 "$OUT/$name.log"
