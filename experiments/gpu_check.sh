#!/usr/bin/env bash
# GPU readiness check, one GPU, under 5 minutes (model conversions into an empty cache included):
#   1. st_sg          symbol tuning (SmolLM2-135M, LoRA) with trainer=gpu, bf16-mixed (16-mixed where the GPU has no bf16)
#   2. label scorer   st_sg's checkpoint tested with model.decode=score (exact label scoring, mtic/models/label_scoring.py)
#                     on CUDA (fp32) and on the CPU, same 50 test sessions: intent agreement and max |score difference|
#   3. baseline_naive the HTC with trainer=gpu
#   4. deploy bench   experiments/bench_deploy.py --quick --device cuda: the eager PyTorch row on the GPU beside the CPU rows
# Figures go to experiments/reports/gpu_check.md (GPU_CHECK_REPORT=...), runs under outputs/gpu_check (GPU_CHECK_OUT=...).
# Without CUDA it stops at once with exit status 2. Usage: bash experiments/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${GPU_CHECK_OUT:-outputs/gpu_check}
REPORT=${GPU_CHECK_REPORT:-experiments/reports/gpu_check.md}
SCORE_SESSIONS=50

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "error: experiments/gpu_check.sh needs a CUDA GPU, and torch.cuda.is_available() is False here" \
       "(torch $(python -c 'import torch; print(torch.__version__)'))" >&2
  exit 2
fi
PRECISION=$(python -c 'import torch; print("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")')
rm -rf "$OUT" && mkdir -p "$OUT"
STEPS="$OUT/steps.tsv"
printf 'step\tstatus\twall_s\n' > "$STEPS"
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...: run it, log to $OUT/NAME.log, record status and wall time
  local name=$1 limit=$2 start status
  shift 2
  echo "[gpu_check] $name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" >> "$STEPS"
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "[gpu_check] $name failed (exit $status; 124 = over ${limit} s): tail of $OUT/$name.log" >&2
    tail -n 20 "$OUT/$name.log" >&2
  fi
}

COMMON=(logger=csv callbacks.progress=null)
step st_sg 150 python run.py +experiment=st_sg trainer=gpu trainer.precision="$PRECISION" "${COMMON[@]}" \
  hydra.run.dir="$OUT/st_sg"
CKPT="$OUT/st_sg/checkpoints/best.ckpt"
SCORE=(+experiment=st_sg model.decode=score pipeline.fit=false pipeline.checkpoint="$CKPT"
       data.max_eval_examples=$SCORE_SESSIONS "${COMMON[@]}")
step score_cuda 60 python run.py "${SCORE[@]}" trainer=gpu trainer.precision=32-true hydra.run.dir="$OUT/score_cuda"
step score_cpu 90 python run.py "${SCORE[@]}" trainer=cpu hydra.run.dir="$OUT/score_cpu"
step baseline_naive 90 python run.py +experiment=baseline_naive trainer=gpu trainer.precision="$PRECISION" \
  "${COMMON[@]}" hydra.run.dir="$OUT/baseline_naive"
step bench_deploy 150 python experiments/bench_deploy.py --quick --device cuda --backbones minilm-l6 \
  --work-dir "$OUT/bench" --out "$OUT/bench"

python experiments/gpu_check_report.py "$OUT" --precision "$PRECISION" --out "$REPORT" || failed=1
exit $failed
