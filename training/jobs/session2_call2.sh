#!/usr/bin/env bash
# Session 2, device call 2 (nvidia-h100-x4, same warm machine as call 1: runs/ is still there).
#   GPU0  the best of A/B/C (mean of MNIST and FashionMNIST in final_eval.json) copied to
#         runs/final and continued with a cosine decay of the lr over this call's steps
#   GPU1  C's config with seed 2, GPU2 with seed 3, each for as many steps as C took
#   GPU3  VSML and MAML, 3 seeds each, for Table 2
# Then Table 2 (all methods, 3 seeds each) and the publication of runs/final go to $OUT.
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
MIN=${MINUTES:-7}
OUT=${OUT:-runs/out}; mkdir -p $OUT

# Pick the winner, write its training config for the continuation, and size the decay from
# its measured steps/s so that the lr reaches its floor as the time runs out.
python - "$MIN" <<'PY'
import json, shutil, sys
from pathlib import Path
minutes = float(sys.argv[1])
score = {}
for name in "ABC":
    f = Path(f"runs/{name}/final_eval.json")
    if f.exists():
        r = json.loads(f.read_text())["results"]
        score[name] = (r["mnist"]["final_acc"] + r["fashion_mnist"]["final_acc"]) / 2
print("scores", score)
win = max(score, key=score.get)
shutil.rmtree("runs/final", ignore_errors=True)
shutil.copytree(f"runs/{win}", "runs/final")
cfg = json.loads(Path(f"runs/{win}/state/meta.json").read_text())["config"]
logs = [json.loads(l) for l in open(f"runs/{win}/metrics.jsonl") if '"loss"' in l]
step, rate = logs[-1]["step"], logs[-1]["steps_per_s"]
n = int(rate * (minutes * 60 - 75))  # 75 s: start-up and compilation
cfg.update(steps=step + n, lr_schedule="wsd", decay_steps=n, out_dir="runs/final", max_minutes=minutes, init_from=None)
for key in ("world_size", "input_dim"):
    cfg.pop(key)
Path("runs/final/continue.json").write_text(json.dumps(cfg, indent=1))
Path("runs/final/winner.txt").write_text(f"{win} {score}\n")
c_step = json.loads(Path("runs/C/state/meta.json").read_text())["step"]
Path("runs/c_steps.txt").write_text(str(c_step))
print(f"winner {win} at step {step}; continuing for {n} steps; C took {c_step} steps")
PY
C_STEPS=$(cat runs/c_steps.txt)

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

runs() { ls -d "$@" 2>/dev/null | paste -sd, -; }
CUDA_VISIBLE_DEVICES=0 python -m training.publish --run runs/final --out $OUT/ckpt --n-tasks 128 --n-seqs 32 \
  > runs/publish.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python -m benchmarks.table2 --device cuda --out $OUT/table2 \
  --gpicl-runs "$(runs runs/C runs/C_s2 runs/C_s3)" \
  --lstm-runs "$(runs runs/t2_lstm_s*)" --oplstm-runs "$(runs runs/t2_oplstm_s*)" \
  --vsml-runs "$(runs runs/t2_vsml_s*)" --maml-runs "$(runs runs/t2_maml_s*)" > runs/table2.log 2>&1 &
wait
tar czf $OUT/logs.tar.gz runs/*.log runs/*/metrics.jsonl runs/*/final_eval.json runs/final/continue.json runs/final/winner.txt 2>/dev/null
for f in runs/*.log; do echo "== $f"; tail -n 3 "$f"; done
cat runs/final/winner.txt; cat $OUT/table2/table2.md 2>/dev/null | head -20
