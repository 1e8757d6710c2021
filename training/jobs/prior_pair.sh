#!/usr/bin/env bash
# Meta-train prior models side by side, one per GPU, in device calls of under 10 minutes on
# one warm machine (runs/ stays there between calls; each call resumes):
#   bash training/jobs/prior_pair.sh train 4x256 8x256     # configs training/configs/prior_<name>.json
#   bash training/jobs/prior_pair.sh decay 4x256 8x256     # last call: lr decays to 5% over DECAY_STEPS
# (on a fresh machine, with no saved state: INIT_FROM=<published run> decays those weights over
# DECAY_STEPS after 300 warm-up steps for the new optimizer)
# A run NAME@flag=value,flag=value adds flags to its config (8x256@lr=3e-4 runs
# prior_8x256.json with --lr 3e-4; its run folder is runs/prior_8x256_lr_3e-4, every character
# but letters, digits and ._- made _; e.g. 8x256_qk@prior={"max_features":300} for wider tables).
# GPUS_PER_RUN (default 1): a run of several GPUs trains data-parallel under torchrun (each
# GPU draws its own tasks: batch_size x GPUS_PER_RUN sequences per step). MINUTES (default 8)
# of training per call; INIT_FROM (optional): a new run starts from these checkpoint weights
# (a resume ignores it). Then each run's fp16 weights are published to
# $OUT/<run folder name>/ (model.safetensors, config.json, README.md) with its metrics;
# EVAL=1 then scores them beside the bundled default on held-out prior draws (training/prior_eval.py).
set -eu -o pipefail
export GPICL_DATA_ROOT=${GPICL_DATA_ROOT:-$PWD/data_cache} PYTHONUNBUFFERED=1
OUT=${OUT:-runs/out}; mkdir -p runs "$OUT"
mode=${1:?train or decay}; shift
per=${GPUS_PER_RUN:-1} gpu=0 safes=() published=()
for name in "$@"; do
  safe=$(printf %s "$name" | tr -c 'A-Za-z0-9._-' _) extra=()
  safes+=("$safe")
  run=runs/prior_$safe
  if [[ $name == *@* ]]; then
    IFS=, read -ra pairs <<< "${name#*@}"
    for kv in "${pairs[@]}"; do key=${kv%%=*}; extra+=("--${key//_/-}" "${kv#*=}"); done  # batch_size: --batch-size
  fi
  if [ "$mode" = decay ]; then  # a wsd schedule whose decay starts at the saved step
    at=$(python -c "from training.state import find_state, read_meta; s = find_state('$run/state'); print(read_meta(s)['step'] if s else '')")
    warm=()
    if [ -z "$at" ]; then  # a machine gone cold lost the state: decay INIT_FROM's weights, Adam warmed up anew
      : "${INIT_FROM:?no saved state in $run: set INIT_FROM to the published weights to decay}"
      at=0 warm=(--warmup-steps 300)  # wsd's decay starts where the warm-up ends (training/optim.py lr_at)
    fi
    extra+=(--lr-schedule wsd --steps $((at + ${DECAY_STEPS:-10000})) --decay-steps "${DECAY_STEPS:-10000}" --min-lr-ratio 0.05 "${warm[@]}")
  fi
  launch=(python) gpus=$(seq -s, "$gpu" $((gpu + per - 1)))
  [ "$per" -gt 1 ] && launch=(torchrun --standalone --nproc-per-node "$per")
  CUDA_VISIBLE_DEVICES=$gpus "${launch[@]}" -m training.train --config "training/configs/prior_${name%%@*}.json" \
    --out-dir "$run" --max-minutes "${MINUTES:-8}" ${INIT_FROM:+--init-from "$INIT_FROM"} "${extra[@]}" >> "$run.log" 2>&1 &
  gpu=$((gpu + per))
done
wait
for safe in "${safes[@]}"; do
  tail -n 4 "runs/prior_$safe.log"
  python -m training.publish --run "runs/prior_$safe" --out "$OUT/$safe"
  cp "runs/prior_$safe/metrics.jsonl" "$OUT/$safe/"  # 4 files a run: $OUT returns 8
  published+=("$OUT/$safe")
done
if [ "${EVAL:-0}" = 1 ]; then  # held-out prior draws, beside the bundled default (~30 s on a GPU)
  python -m training.prior_eval gpicl_sklearn/checkpoints/default "${published[@]}" --device cuda \
    --image-split train --batches 16 --batch-size 64
fi
