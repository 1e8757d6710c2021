#!/usr/bin/env bash
# Table 2's seeds and the continuation of the best recipe experiment, on 4 GPUs; runs after
# training/jobs/recipe_experiments.sh on the same machine (it reads its runs/):
#   GPU0  the best of A/B/C (mean of MNIST and FashionMNIST in final_eval.json) copied to
#         runs/final and continued with a cosine decay of the lr over this call's steps
#   GPU1  C's config with seed 2, GPU2 with seed 3, each for as many steps as C took
#   GPU3  VSML and MAML, 3 seeds each, for Table 2
# Then Table 2 (all methods, 3 seeds each) and the publication of runs/final go to $OUT.
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
MIN=${MINUTES:-7}
OUT=${OUT:-runs/out}; mkdir -p $OUT

# Pick the winner and continue a copy of it with a decay sized to this call's minutes.
WIN=$(python - <<'PY'
import json
from pathlib import Path
score = {}
for name in "ABC":
    r = json.loads(Path(f"runs/{name}/final_eval.json").read_text())["results"]
    score[name] = (r["mnist"]["final_acc"] + r["fashion_mnist"]["final_acc"]) / 2
print(max(score, key=score.get))
Path("runs/winner.txt").write_text(f"{score}\n")
PY
)
python training/jobs/decay_config.py runs/$WIN runs/final $MIN
C_STEPS=$(python -c "import json; print(json.load(open('runs/C/state/meta.json'))['step'])")

CUDA_VISIBLE_DEVICES=0 python -m training.train --config runs/final/continue.json > runs/final.log 2>&1 &
for seed in 2 3; do
  CUDA_VISIBLE_DEVICES=$((seed - 1)) python -m training.train --config training/configs/default.json \
    --batch-size 512 --biased-steps 3000 --seed $seed --lr-schedule constant --steps $C_STEPS \
    --max-minutes $MIN --eval-datasets null --ckpt-every 1000000 --out-dir runs/C_s$seed > runs/C_s$seed.log 2>&1 &
done
OTHER="--config training/configs/default.json --compile false --cuda-graph false --max-minutes $MIN --eval-datasets null --ckpt-every 1000000"
for seed in 0 1 2; do
  CUDA_VISIBLE_DEVICES=3 python -m training.train $OTHER --learner vsml --batch-size 8 --seed $seed \
    --out-dir runs/t2_vsml_s$seed > runs/t2_vsml_s$seed.log 2>&1 &
  CUDA_VISIBLE_DEVICES=3 python -m training.train $OTHER --learner maml --seed $seed \
    --out-dir runs/t2_maml_s$seed > runs/t2_maml_s$seed.log 2>&1 &
done
wait

runs() { ls -d "$@" 2>/dev/null | grep -v "\.log$" | paste -sd, -; }
# The weights are copied out in 14 MB parts (cat them back together): each file stays below
# 16 MiB, for transfers that limit the file size.
(CUDA_VISIBLE_DEVICES=0 python -m training.publish --run runs/final --out runs/ckpt --n-tasks 128 --n-seqs 32 \
  && mkdir -p $OUT/ckpt && cp runs/ckpt/*.json runs/ckpt/README.md $OUT/ckpt/ \
  && split -b 14M -d runs/ckpt/model.safetensors $OUT/ckpt/model.safetensors.part) > runs/publish.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python -m benchmarks.table2 --device cuda --out $OUT/table2 \
  --gpicl-runs "$(runs runs/C runs/C_s2 runs/C_s3)" \
  --lstm-runs "$(runs runs/t2_lstm_s*)" --oplstm-runs "$(runs runs/t2_oplstm_s*)" \
  --vsml-runs "$(runs runs/t2_vsml_s*)" --maml-runs "$(runs runs/t2_maml_s*)" > runs/table2.log 2>&1 &
wait
tar czf $OUT/logs.tar.gz runs/*.log runs/*/metrics.jsonl runs/*/final_eval.json runs/final/continue.json runs/winner.txt 2>/dev/null
for f in runs/*.log; do echo "== $f"; tail -n 3 "$f"; done
cat runs/winner.txt; cat $OUT/table2/table2.md 2>/dev/null | head -20
