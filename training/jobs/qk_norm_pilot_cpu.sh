#!/usr/bin/env bash
# CPU pilot: does a LayerNorm of queries and keys (GPICLConfig.qk_norm) keep meta-training on
# the task prior stable at a high learning rate? Two small prior models (4 x 128, 256 rows,
# 16 sequences per step, lr LR) side by side, one thread each, then both scored on held-out
# prior draws (training.prior_eval). Runs in runs/qk_pilot/; about 20 minutes on 2 cores.
#   GPICL_DATA_ROOT=../shared/datasets bash training/jobs/qk_norm_pilot_cpu.sh
set -eu -o pipefail
STEPS=${STEPS:-2000} LR=${LR:-3e-3} out=runs/qk_pilot
mkdir -p "$out"
for qk in false true; do
  OMP_NUM_THREADS=1 python -m training.train --config training/configs/prior_8x256.json \
    --compile false --cuda-graph false --length 256 --batch-size 16 --steps "$STEPS" --lr "$LR" \
    --warmup-steps 200 --log-every 100 --ckpt-every 100000 --out-dir "$out/qk_$qk" \
    --learner-kwargs "{\"max_len\": 256, \"d_model\": 128, \"n_layers\": 4, \"n_heads\": 4, \"head_dim\": 32, \"qk_norm\": $qk}" \
    > "$out/qk_$qk.log" 2>&1 &
done
wait
for qk in false true; do
  python -m training.publish --run "$out/qk_$qk" --out "$out/ckpt_qk_$qk" > /dev/null
done
python -m training.prior_eval "$out/ckpt_qk_false" "$out/ckpt_qk_true" --batches 8 --batch-size 16
