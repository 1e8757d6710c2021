#!/usr/bin/env bash
# The fastest meta-training modes' step times, the attention kernels and the profiles of the captured
# step's replay, both settings, on one GPU, in one call of under 10 minutes; everything to $OUT
# (benchmarks/results/attention_kernels.*, profile_replay_*.md came from it).
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python -c "import torch;print(torch.__version__)"
mkdir -p $OUT/tp512 $OUT/tp128
timeout 150 python -m benchmarks.train_throughput --gpus 1 --steps 300 --settings 'B=512, 3072-d' \
  --modes compile+graph+fold+gram --out $OUT/tp512 > $OUT/tp512.log 2>&1; tail -3 $OUT/tp512.log
timeout 120 python -m benchmarks.train_throughput --gpus 1 --steps 300 --settings 'B=128, 784-d' \
  --modes compile+graph+gram --out $OUT/tp128 > $OUT/tp128.log 2>&1; tail -3 $OUT/tp128.log
timeout 60 python -m benchmarks.attention_kernels --out $OUT > $OUT/tp128/attention.log 2>&1
tail -20 $OUT/tp128/attention.log
timeout 90 python -m benchmarks.profile_step --batch-size 128 --image-size 0 --channels 1 --compile --cuda-graph \
  --gram-table --top 40 2> $OUT/tp128/profile.err > $OUT/profile_replay_128_784.md; head -60 $OUT/profile_replay_128_784.md
timeout 90 python -m benchmarks.profile_step --batch-size 512 --compile --cuda-graph --fold-projection --gram-table \
  --top 40 2> $OUT/tp512/profile.err > $OUT/profile_replay_512_3072_fold.md; head -60 $OUT/profile_replay_512_3072_fold.md
cd $OUT && tar czf logs.tgz tp512 tp128 && rm -rf tp512 tp128; ls $OUT
