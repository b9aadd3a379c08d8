#!/usr/bin/env bash
# Everything this project uses a lent GPU machine for, as one run: train learned tools on
# CBSD68 in bf16 (trainings started side by side share the GPU, each with its own
# batch-making processes), evaluate them on McMaster, then time every learned tool through
# the model pool in fp32 and half precision (benchmarks/gpu_tools.py, with the new weights).
#
#   benchmarks/gpu_session.sh DATA OUT [MINUTES] [DEVICE]
#
# MINUTES: each training's length, or, for one that gives --steps, the time after which it is stopped.
#
# DATA holds CBSD68/ and McMaster/; weights, the timing report and the training logs go to
# OUT. TRAIN_OVERRIDES adds tools-train options to every training (the last ones win), so a try
# on the CPU can be tiny:
#   TRAIN_OVERRIDES="--steps 3 --batch-size 2 --patch-size 32 --workers 1" GPU_IMAGES=1 benchmarks/gpu_session.sh DATA /tmp/out 1 cpu
set -uo pipefail
data=$1 out=$2 minutes=${3:-4} device=${4:-cuda}
mkdir -p "$out" /tmp/tir-logs
cd "$(dirname "$0")/.."
if ! python3 -c "import tiragent.server" 2>/dev/null; then
  # Without an install: link the top-level packages where pyproject's package-dir maps them.
  for pkg in server eval agent train; do [ -e "tiragent/$pkg" ] || ln -s "../$pkg" "tiragent/$pkg"; done
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# Seconds after which a training is interrupted (it then keeps its checkpoint, not weights).
limit=$(python3 -c "print(int($minutes * 60 + 150))")
train() {  # NAME WORKERS BATCH [tools train options]
  local name=$1 workers=$2 batch=$3
  shift 3
  timeout -s INT "$limit" python3 -m tiragent.cli tools train --data "$data/CBSD68" --eval-data "$data/McMaster" \
    --out /tmp/tir-runs --device "$device" --minutes "$minutes" --workers "$workers" --batch-size "$batch" \
    --checkpoint-every 100000 "$@" ${TRAIN_OVERRIDES:-} >"/tmp/tir-logs/$name.log" 2>&1 &
}
# The first stage of the shipped JPEG network (then fine-tuned on the CPU: see the Makefile's
# weights target). The session of docs/learned_tools.md trained four other networks beside it.
train dejpeg_unet 3 64 --task dejpeg --steps 5275 --weights "$out/dejpeg_unet.safetensors"
wait
for log in /tmp/tir-logs/*.log; do
  echo "== $log"
  tr '\r' '\n' <"$log" | grep -v '^\s*$' | tail -n 40
done >"$out/train_log.txt"
grep -E '==|psnr_out|Error|error' "$out/train_log.txt" | head -60

python3 benchmarks/gpu_tools.py --weights "$out" --device "$device" --images "${GPU_IMAGES:-6}" --callers 16 \
  --data "$data/McMaster" --name tools_gpu 2>&1 | tail -n 30
cp docs/benchmarks/tools_gpu.md docs/benchmarks/tools_gpu.json "$out/"
