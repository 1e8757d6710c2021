#!/usr/bin/env bash
# The paper's optimiser interventions against the loss plateau (Fig. 8, 9), three seeds each, on one
# GPU: Adam's epsilon at 1e-8 (the base run), 1e-12 and 1e-16, and the sign of momentum at lr 1e-3
# and 1e-4; 15 runs trained at once. Each call trains for at most MINUTES and resumes the runs of the
# call before on the same machine (runs/plateau_optimisers); the report goes to $OUT.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train mnist/test
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
python3 -m benchmarks.plateaus --steps "${STEPS:-25000}" --jobs 15 --seeds 0,1,2 \
  --studies "Adam epsilon,optimiser" --adam-eps 1e-8,1e-12,1e-16 \
  --work-dir runs/plateau_optimisers --max-minutes "${MINUTES:-8}" --out "$OUT/plateau_optimisers" \
  > "$OUT/plateau_optimisers.log" 2>&1
tail -n 30 "$OUT/plateau_optimisers.log"
