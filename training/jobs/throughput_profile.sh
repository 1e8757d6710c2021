#!/usr/bin/env bash
# Throughput of the fastest modes with and without inductor autotuning, the attention kernels and the
# replay profiles of both settings, on one GPU, in one call of under 10 minutes; everything to $OUT.
# Data: python training/jobs/data_cache.py ../shared/datasets data_cache mnist/train
set -u
export GPICL_DATA_ROOT=$PWD/data_cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python -c "import torch;print(torch.__version__)"
timeout 240 python -m benchmarks.train_throughput --gpus 1 --steps 300 --settings 'B=512, 3072-d' --modes 'compile+graph+fold+gram,compile+graph+fold+gram autotune' --out $OUT/tp512 > $OUT/tp512.log 2>&1; tail -8 $OUT/tp512.log
timeout 150 python -m benchmarks.train_throughput --gpus 1 --steps 300 --settings 'B=128, 784-d' --modes 'compile+graph+gram,compile+graph+gram autotune' --out $OUT/tp128 > $OUT/tp128.log 2>&1; tail -8 $OUT/tp128.log
mkdir -p $OUT/tp128; timeout 45 python -m benchmarks.attention_kernels --out $OUT > $OUT/tp128/attn.log 2>&1; tail -14 $OUT/tp128/attn.log
timeout 70 python -m benchmarks.profile_step --batch-size 128 --image-size 0 --channels 1 --compile --cuda-graph --gram-table --top 40 > $OUT/prof128.md 2>&1; head -60 $OUT/prof128.md
timeout 70 python -m benchmarks.profile_step --batch-size 512 --compile --cuda-graph --fold-projection --gram-table --top 40 > $OUT/prof512.md 2>&1; head -60 $OUT/prof512.md
cd $OUT && tar czf logs.tgz tp512 tp128 && rm -rf tp512 tp128; ls $OUT
