#!/usr/bin/env bash
# Every accelerator check of tokeff in one prepared call, for a lent GPU (H100/H200 class).
#
#   1. MFU of SmolLM2-360M, bfloat16, rows of 2048 tokens, against the device's dense vendor
#      peak (tokeff.devices.PEAK_FLOPS; H100/H200 bf16: 989 TFLOP/s), once per attention path:
#      cudnn (what "auto" runs on a GPU in bfloat16) and reference (the CPU's block attention).
#      Target >= 40% with cudnn. The table "attention path -> MFU" at the end of summary.txt
#      answers "which attention, what MFU" (docs/accelerators.md).
#   2. SmolLM2-135M, bfloat16, rows of 512 tokens (the CPU bench's shape, GPU-sized batch).
#   3. The same losses on GPU as on CPU: a few steps of the same seed and batch, GPU bfloat16
#      against CPU float32 (JAX_PLATFORMS=cpu), to bfloat16 tolerance (2% relative).
#   4. Points per minute of a 20-point tiny sweep (configs/sweep_tiny.py with 5 seeds) in a
#      fresh workdir.
#
# Outputs go under $OUT (a temporary directory when unset): one .txt per check and summary.txt.
# Each check has its own time limit and a failed check does not stop the others.
#
#   bash bench/gpu_check.sh            # from the repository root, with the project's python
#   PYTHON=.venv/bin/python OUT=/tmp/gpu bash bench/gpu_check.sh
#   TOKEFF_GPU_CHECK_TINY=1 ...        # the same pieces with tiny shapes (a CPU dry run)
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

if [[ -n "${TOKEFF_GPU_CHECK_TINY:-}" ]]; then  # CPU dry run: every piece, tiny shapes
  BIG=(--model tiny --rows 2 --seq-len 64 --steps 1)
  PATHS="reference cudnn splash"  # off GPU cudnn runs its XLA fallback, splash Pallas interpret mode
  SMALL=(--model tiny --rows 2 --seq-len 32 --steps 1)
  LOSS=(--model tiny --rows 2 --seq-len 32 --steps 2)
  SEEDS="(0,1)"
else
  BIG=(--model smollm2-360m --rows 8 --seq-len 2048 --steps 5)
  PATHS="cudnn reference"  # splash is the TPU's kernel (interpret mode only on a GPU: not timed)
  SMALL=(--model smollm2-135m --rows 32 --seq-len 512 --steps 5)
  LOSS=(--model smollm2-135m --rows 2 --seq-len 256 --steps 3)
  SEEDS="(0,1,2,3,4)"
fi

check() {  # check NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name" | tee -a "$SUMMARY"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s (log: $name.txt)" | tee -a "$SUMMARY"
  return $rc
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import jax; print(jax.__version__, jax.devices())" > "$OUT/devices.txt" 2>&1
cat "$OUT/devices.txt" | tee -a "$SUMMARY"

# 1 + 2: throughput and MFU per attention path (bench/train_throughput.py prints its own table).
for path in $PATHS; do
  check "mfu_360m_bf16_2048_$path" 300 "$PY" bench/train_throughput.py "${BIG[@]}" --dtype bfloat16 \
    --attention "$path" && grep -E "attention|step time|tokens/s|MFU|peak memory" \
    "$OUT/mfu_360m_bf16_2048_$path.txt" | tee -a "$SUMMARY"
done
check mfu_135m_bf16_512 200 "$PY" bench/train_throughput.py "${SMALL[@]}" --dtype bfloat16 \
  && grep -E "attention|step time|tokens/s|MFU|peak memory" "$OUT/mfu_135m_bf16_512.txt" | tee -a "$SUMMARY"
"$PY" - "$OUT" $PATHS <<'PY' 2>&1 | tee -a "$SUMMARY"
import os, re, sys
out, paths = sys.argv[1], sys.argv[2:]
print("attention path -> MFU (SmolLM2-360M shape, bf16; 'n/a' where the device's peak is unknown, e.g. CPU)")
for path in paths:
    try:
        text = open(os.path.join(out, f"mfu_360m_bf16_2048_{path}.txt")).read()
    except OSError:
        text = ""
    mfu = re.search(r"MFU \(vendor peak\)\s+(.*)", text)
    step = re.search(r"step time \(best / median\)\s+(\S+ s)", text)
    print(f"  {path:10s} MFU {mfu.group(1) if mfu else 'FAILED (see its log)'}"
          f"{f', best step {step.group(1)}' if step else ''}")
PY

# 3: losses, GPU bfloat16 vs CPU float32, same seed and batch.
check losses_gpu 200 "$PY" bench/train_throughput.py "${LOSS[@]}" --dtype bfloat16 \
  --losses-json "$OUT/losses_gpu_bf16.json"
JAX_PLATFORMS=cpu check losses_cpu 300 "$PY" bench/train_throughput.py "${LOSS[@]}" --dtype float32 \
  --losses-json "$OUT/losses_cpu_f32.json"
"$PY" - "$OUT/losses_gpu_bf16.json" "$OUT/losses_cpu_f32.json" <<'PY' 2>&1 | tee -a "$SUMMARY"
import json, sys
gpu, cpu = (json.load(open(p)) for p in sys.argv[1:3])
worst = max(abs(g - c) / abs(c) for g, c in zip(gpu["losses"], cpu["losses"]))
print(f"losses {gpu['backend']} {gpu['dtype']}: {gpu['losses']}")
print(f"losses {cpu['backend']} {cpu['dtype']}: {cpu['losses']}")
print(f"worst relative difference {worst:.2e}: {'OK' if worst < 2e-2 else 'FAIL'} (bf16 tolerance 2e-2)")
PY

# 4: a 20-point tiny sweep (4 points x 5 seeds) in a fresh workdir; points per minute.
SWEEP_DIR="$OUT/sweep_tiny"
rm -rf "$SWEEP_DIR"
t0=$SECONDS
check sweep_tiny 420 "$PY" -m tokeff.cli sweep --config configs/sweep_tiny.py --workdir "$SWEEP_DIR" \
  "--config.grid.seeds=$SEEDS"
seconds=$((SECONDS - t0))
"$PY" - "$SWEEP_DIR/results.jsonl" "$seconds" <<'PY' 2>&1 | tee -a "$SUMMARY"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
ok = sum(r.get("status") == "ok" for r in rows)
seconds = max(int(sys.argv[2]), 1)
print(f"sweep: {ok}/{len(rows)} points ok in {seconds} s: {60 * ok / seconds:.1f} points/minute (compile included)")
PY

echo "outputs: $OUT" | tee -a "$SUMMARY"
