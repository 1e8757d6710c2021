#!/usr/bin/env bash
# Recipe experiments on 4 GPUs (one H100 each), one experiment per GPU, ~8 minutes each
# (training/RUNS.md, "Recipe experiments"):
#   GPU0  A: continue the shipped default weights with unbiased permutations (lr 3e-4)
#   GPU1  B: a wider model from scratch (d_model 512, head_dim 64), biased only for 3k steps
#   GPU2  C: the paper model from scratch, biased only for 3k steps (Table 2 GPICL seed 1)
#   GPU3  LSTM and outer-product LSTM, 3 seeds each, for Table 2 (six processes share it)
# Every GPICL run ends with a 64-task x 32-sequence meta-test (runs/<name>/final_eval.json).
# Usage (repository root, data copied to data_cache/): bash training/jobs/recipe_experiments.sh
# Then training/jobs/table2_seeds.sh on the same machine (it reads runs/).
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
mkdir -p runs
CFG=training/configs/default.json
MIN=${MINUTES:-8}
GPICL="--config $CFG --batch-size 512 --max-minutes $MIN --eval-every 5000 --eval-datasets mnist,fashion_mnist --ckpt-every 1000000"
EVAL="--n-tasks 64 --n-seqs 32 --datasets mnist,fashion_mnist,random,cifar10"

gpicl() {  # gpu name flags...
  local gpu=$1 name=$2; shift 2
  (CUDA_VISIBLE_DEVICES=$gpu python -m training.train $GPICL --out-dir runs/$name "$@" \
    && CUDA_VISIBLE_DEVICES=$gpu python -m training.evaluate --run runs/$name $EVAL --out runs/$name/final_eval.json) \
    > runs/$name.log 2>&1 &
}

gpicl 0 A --init-from gpicl_sklearn/checkpoints/default --biased-steps 0 --lr 3e-4 --lr-schedule constant --warmup-steps 200
gpicl 1 B --learner-kwargs '{"d_model": 512, "head_dim": 64}' --biased-steps 3000 --lr 5e-4 --lr-schedule constant --warmup-steps 500
gpicl 2 C --biased-steps 3000 --seed 1 --lr-schedule constant --max-minutes 7  # Table 2 seeds 2, 3 repeat its steps

OTHER="--config $CFG --compile false --cuda-graph false --max-minutes $MIN --eval-datasets null --ckpt-every 1000000"
for learner in lstm oplstm; do
  for seed in 0 1 2; do
    CUDA_VISIBLE_DEVICES=3 python -m training.train $OTHER --learner $learner --seed $seed \
      --out-dir runs/t2_${learner}_s$seed > runs/t2_${learner}_s$seed.log 2>&1 &
  done
done
wait
for f in runs/*.log; do echo "== $f"; tail -n 4 "$f"; done
