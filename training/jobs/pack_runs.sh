#!/usr/bin/env bash
# Fit published runs into what a device call brings back (8 files of at most 16 MiB):
#   bash training/jobs/pack_runs.sh runs/pub "$OUT"
# Every file but the weights goes into one runs_meta.tar.gz; each run's model.safetensors is
# split into parts of 15 MiB, <run>.safetensors.00, .01, ... Reassemble on the other side with
#   tar -xzf runs_meta.tar.gz -C DIR && cat <run>.safetensors.* > DIR/<run>/model.safetensors
# (the config's weights_sha256 checks the result at load).
set -eu -o pipefail
src=${1:?folder of published runs} dest=${2:?output folder}
mkdir -p "$dest"
tar -czf "$dest/runs_meta.tar.gz" -C "$src" --exclude model.safetensors .
for run in "$src"/*/; do
  name=$(basename "$run")
  split -b 15M -d "$run/model.safetensors" "$dest/$name.safetensors."
done
ls -l "$dest"
