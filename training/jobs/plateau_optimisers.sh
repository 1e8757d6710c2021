#!/usr/bin/env bash
# The paper's optimiser interventions against the loss plateau (Fig. 8, 9), three seeds each, on one
# GPU, one study per call so that each call finishes its runs on a fresh machine:
#   bash training/jobs/plateau_optimisers.sh "Adam epsilon"   # epsilon 1e-8 (the base run), 1e-12, 1e-16
#   bash training/jobs/plateau_optimisers.sh optimiser        # the base run, sign of momentum at lr 1e-3, 1e-4
# 9 runs trained at once: the small runs' CUDA-graph replays share the GPU at about 550 steps/s in
# all (15 runs at once: 36 steps/s each), so 25,000 steps each take about 7 minutes. A call stopped
# by MINUTES resumes its runs on the same machine (runs/plateau_optimisers); the report goes to $OUT.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train mnist/test
set -u
study=${1:?a study: "Adam epsilon" or optimiser}
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
name=plateau_$(echo "$study" | tr 'A-Z ' 'a-z_')
python3 -m benchmarks.plateaus --steps "${STEPS:-25000}" --jobs 9 --seeds 0,1,2 \
  --studies "$study" --adam-eps 1e-8,1e-12,1e-16 \
  --work-dir runs/plateau_optimisers --max-minutes "${MINUTES:-8.5}" --out "$OUT/$name" \
  > "$OUT/$name.log" 2>&1
tail -n 30 "$OUT/$name.log"
