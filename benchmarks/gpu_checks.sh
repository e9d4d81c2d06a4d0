#!/usr/bin/env bash
# Every GPU check and figure in one go (about 6 minutes on an H100), for a session that has a GPU:
#   1. the CUDA parity tests against ../shared/reference (or $SIPVIS_SHARED/reference)
#   2. `sipvis bench`: the R50 model (random weights) in fp16 and fp32 at batch 1 and 8, the demo model,
#      and the R50 as a TensorRT engine (when the tensorrt package is installed)
#   3. `sipvis live` latency on a 1280x720 clip played in real time (R50 random weights, demo model)
#   4. training throughput with AMP: the demo config and the paper's R50 recipe (speed only)
# Usage: benchmarks/gpu_checks.sh [OUT_DIR]      (default runs/gpu_checks; PYTHON picks the interpreter)
# Results: the printed log, OUT_DIR/*.json (bench) and OUT_DIR/*.jsonl (training logs); copy the
# figures into BENCHMARKS.md with the device and date.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-runs/gpu_checks}" && cd "${1:-runs/gpu_checks}" && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}           # DEVICE=cpu PRECISION=fp32 FRAMES=8 ITERS=2 only checks that the script runs
FRAMES=${FRAMES:-512}
PRECISION=${PRECISION:-fp16}
ITERS=${ITERS:-150}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SV="$PY -m sipvis.cli"
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

step "environment"
$PY -c "import sys, torch, torchvision, av; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| torchvision', torchvision.__version__, '| PyAV', av.__version__, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"

step "CUDA parity tests"
(cd "$REPO" && $PY -m pytest -q -p no:cacheprovider tests/test_parity.py -m cuda 2>&1 | tail -8)

step "bench: R50 (random weights), fp16, batch 8"
$SV bench --device "$DEVICE" --precision "$PRECISION" --batch 8 --frames "$FRAMES" --json "$OUT/bench_r50_fp16.json"
step "bench: demo model, fp16, batch 8"
$SV bench --weights demo --device "$DEVICE" --precision "$PRECISION" --batch 8 --frames "$FRAMES" --json "$OUT/bench_demo_fp16.json"
step "bench: R50, fp16 batch 1, fp32 batch 1 and 8"
$SV bench --device "$DEVICE" --precision "$PRECISION" --batch 1 --frames "$FRAMES" --json "$OUT/bench_r50_fp16_b1.json"
for b in 1 8; do
  $SV bench --device "$DEVICE" --precision fp32 --batch "$b" --frames "$FRAMES" --json "$OUT/bench_r50_fp32_b$b.json"
done

$PY -c "from sipvis.engine.bench import random_model; from sipvis.checkpoint import save_checkpoint
m = random_model(); save_checkpoint('$WORK/r50_random', m.cfg, m.state_dict())"
step "TensorRT: the R50 exported to an fp32 engine (640x384 input), bench at batch 1 and 8"
if [ "$DEVICE" != cuda ]; then
  echo "skipped: TensorRT needs DEVICE=cuda"
elif $PY -c "import tensorrt" 2>/dev/null; then
  $SV export --weights "$WORK/r50_random.safetensors" --format tensorrt --size 640x384 -o "$WORK/r50.engine" | tail -3
  for b in 1 8; do
    $SV bench --weights "$WORK/r50.engine" --device cuda --precision fp32 --batch "$b" --frames "$FRAMES" --json "$OUT/bench_r50_trt_b$b.json"
  done
else
  echo "skipped: tensorrt is not installed (pip install tensorrt)"
fi

step "live: a 1280x720 10 fps clip played in real time, 8 s each"
$SV synth "$WORK/clip" --videos 1 --frames 250 --seed 7 --split live --size 1280x720 --quiet
for weights in "$WORK/r50_random.safetensors" demo; do
  $SV live --source "$WORK/clip/live/videos/video_00001.mp4" --realtime --no-window --duration 8 \
      --weights "$weights" --device "$DEVICE" 2>&1 | tail -1
done

step "training throughput, AMP (steady rate: the last log lines)"
$SV synth "$WORK/data" --videos 60 --frames 24 --seed 0 --split train --no-clips --quiet
COMMON=(data.root="\"$WORK/data\"" 'data.val_split=""' train.log_interval=30 'train.step_iters=[100000]' train.amp=true)
$SV train "$REPO/configs/synth_demo.toml" "${COMMON[@]}" data.workers=4 train.iters="$ITERS" \
    -o "$WORK/amp_demo" --quiet --device "$DEVICE"
$SV train "$REPO/configs/ytvis_r50_1x.toml" "${COMMON[@]}" data.workers=8 train.iters="$ITERS" \
    'train.init="scratch"' -o "$WORK/amp_r50" --quiet --device "$DEVICE"
for run in amp_demo amp_r50; do
  cp "$WORK/$run/log.jsonl" "$OUT/train_$run.jsonl"
  echo "$run: $(grep '"train"' "$WORK/$run/log.jsonl" | tail -1 | cut -c1-300)"
done
step "done: $OUT"
