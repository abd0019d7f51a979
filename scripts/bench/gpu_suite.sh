#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one run (about 6 minutes on one H100):
# generation speed (random OpenCALM-3B, bf16/fp16, with and without LoRA), batched
# evaluation throughput, fine-tuning throughput/MFU/memory for 3B, and whether 7B fits.
#
#   scripts/bench/gpu_suite.sh OUT_DIR PROMPTS_JSONL
#
# PROMPTS_JSONL: the sample questions retrieved and packed where the index is
# (bench_eval_batching.py --save-prompts). Each part has its own time limit and
# writes OUT_DIR/<part>.json; the log of all of them is OUT_DIR/suite.log.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR PROMPTS_JSONL}
prompts=${2:?usage: gpu_suite.sh OUT_DIR PROMPTS_JSONL}
models=${MODELS_DIR:-/tmp/opencalm-random}          # random weights, built once
py=${PYTHON:-python3}
bench=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out" "$models"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
log=$out/suite.log

part() {   # part NAME SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  timeout "$limit" "$@" >"$out/$name.json" 2>>"$log"
  echo "== $name: exit $? after $((SECONDS - start))s" | tee -a "$log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch, transformers, peft; print('torch', torch.__version__,
'transformers', transformers.__version__, 'peft', peft.__version__)"
  df -h "$models" | tail -1; } >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

part generate 150 "$py" "$bench/bench_generate.py" --opencalm-3b "$models/3b" \
  --dtype bf16 --dtype fp16 --lora --prompts 5 --max-new-tokens 64 --json
part finetune-3b 150 "$py" "$bench/bench_finetune.py" --model "$models/3b" \
  --seq 512 --seq 1024 --setting fp16:4:nogroup --setting bf16:4 --setting bf16:16 \
  --setting bf16:8:nogc --steps 10 --json
part eval-batching 80 "$py" "$bench/bench_eval_batching.py" --opencalm-3b "$models/3b" \
  --prompts "$prompts" --questions 74 --batch-sizes 1,16 --max-new-tokens 64 --dtype bf16 \
  --seconds-per-size 35 --json
part finetune-7b 120 "$py" "$bench/bench_finetune.py" --arch 7b --model-dir "$models" \
  --seq 1024 --setting fp16:4:nogroup --steps 4 --json
part finetune-3b-varied 50 "$py" "$bench/bench_finetune.py" --model "$models/3b" \
  --lengths varied --seq 1024 --setting fp16:4:nogroup --setting bf16:16 --steps 8 --json
