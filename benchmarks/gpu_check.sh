#!/usr/bin/env bash
# One GPU throughput check, JAX beside PyTorch (issue 13 item 5; issue 23 items 3 and 5), for a lent H100/H200
# machine: ~7-8 min (parts 0 and 6 skipped with T_BLUR=0 T_PARTS=0: ~5 min).
#
# Run from the repository root on the device, with the ml_collections wheel carried in .whl/ (the machine
# has jax, flax, optax, orbax, absl-py, pyyaml and torch, but no TensorFlow, no ml_collections, no internet):
#
#     pip download ml_collections --no-deps -d .whl   # here, before (an untracked .whl/ travels with the tree)
#     bash benchmarks/gpu_check.sh            # log to $OUT/gpu_check.log (or ./gpu_check.log without $OUT)
#     SMOKE=1 bash benchmarks/gpu_check.sh    # the same parts on the CPU, tiny sizes: checks the script itself
#
# Exit status: the number of parts that failed or timed out (0: all ran).
# Parts, each under its own `timeout` so one hang cannot eat the lease:
#   1. machine: nvidia-smi, versions; bf16 / TF32 matmul ceilings measured with torch (8192^3 products)
#   2. JAX bare train step (benchmarks/train_throughput.py): resnet50, 224x224 and 256x128, float32 and bfloat16
#   3. JAX training-loop figure (train_throughput.py --loop), only once that flag exists
#   4. PyTorch reference step (benchmarks/torch_train_step.py), eager, same settings
#   5. PyTorch with torch.compile, bfloat16 only (compiling takes a minute or more per shape)
#   0. the train step's blur (config.data.augment_on_device, issue 23 item 3): us per image of a batch of 128
#   6. where the JAX step's time goes (benchmarks/step_parts.py: forward, backward, Adam's update alone and as one
#      fused buffer), ResNet50 224x224 bf16, and the whole step again under two XLA_FLAGS variants (T_PARTS=0: skip)
# then every result row again, together, at the end.
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-.}"
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
PY=${PY:-python3}  # the device's python3 holds jax and torch; a smoke test may name two pythons
TORCH_PY=${TORCH_PY:-$PY}

# Time limits of the parts, in seconds (with the versions and matmul parts: about 790 at most; expected total
# about 7-8 minutes on an H100; a device command may run 600 s: every part's rows are in the log as they finish).
T_JAX=${T_JAX:-330}
T_LOOP=${T_LOOP:-90}
T_TORCH=${T_TORCH:-100}
T_COMPILE=${T_COMPILE:-80}
T_PARTS=${T_PARTS:-150}
T_BLUR=${T_BLUR:-60}

FAILED=0

say() { echo "$@" | tee -a "$LOG"; }
part() {  # part NAME SECONDS CMD... : run CMD under timeout, teeing to the log; report its status
  local name=$1 limit=$2
  shift 2
  say ""
  say "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=$?
  [ $rc = 0 ] || FAILED=$((FAILED + 1))
  say "=== $name: exit $rc after $((SECONDS - start)) s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
}

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee -a "$LOG"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import ml_collections" 2>/dev/null ||
  say "WARNING: ml_collections is not importable: carry .whl/ with its wheel; the JAX parts will fail"

say "=== machine ($(date -u +%FT%TZ))"
nvidia-smi -L 2>&1 | tee -a "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
  --format=csv 2>&1 | tee -a "$LOG"
say "XLA_FLAGS=${XLA_FLAGS:-<unset>}"
timeout 60 $PY - <<'EOF' 2>&1 | tee -a "$LOG"
import platform, sys
print("python", sys.version.split()[0], platform.machine())
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_collections", "numpy", "torch", "torchvision"):
    try:
        module = __import__(name, fromlist=["_"])
        print(f"  {name} {getattr(module, '__version__', '?')}  ({module.__file__})")
    except Exception as e:  # report and go on: each part below says what it lacks
        print(f"  {name}: NOT importable ({type(e).__name__}: {e})")
try:
    import tensorflow  # noqa: F401
    print("  tensorflow: importable (the benchmarks do not use it)")
except ImportError:
    print("  tensorflow: not installed (expected)")
try:
    import jax
    print("  jax devices:", jax.devices())
except Exception as e:
    print("  jax devices: FAILED", e)
EOF

[ -n "$SMOKE" ] || part "matmul ceilings (torch, 8192^3, median of 10)" 45 $TORCH_PY - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("torch sees no CUDA device")
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, "SMs")
torch.backends.cuda.matmul.allow_tf32 = True
n = 8192
for dtype, label in ((torch.bfloat16, "bf16"), (torch.float32, "tf32")):
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(); a @ b; end.record(); end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    t = sorted(times)[len(times) // 2]
    print(f"  {label} matmul: {2 * n**3 / t / 1e12:.0f} TFLOP/s (median {t * 1e3:.2f} ms)")
EOF

if [ -n "$SMOKE" ]; then
  SIZES=64x32 BATCH="--batch 8 --K 2" TORCH_DEVICE="--device cpu" STEPS=1 JAX_WARMUP=1 TORCH_WARMUP=1
else
  SIZES=224x224,256x128 BATCH="--batch 128 --K 4" TORCH_DEVICE="" STEPS=20 JAX_WARMUP=3 TORCH_WARMUP=5
fi
if [ -n "$SMOKE" ]; then BLUR_SETTINGS="((64, 32),), 8"; else BLUR_SETTINGS="((256, 128), (224, 224)), 128"; fi
[ "$T_BLUR" = 0 ] || part "the train step's blur (augment_on_device): wall us, CPU us per image of the batch, device" "$T_BLUR" $PY -c \
  "from benchmarks.input_pipeline import device_blur_cost as c; sizes, b = $BLUR_SETTINGS; [print('blur', s, 'batch', b, c(16, s, b)) for s in sizes]"
JAX_ARGS="--backbones resnet50 --sizes $SIZES --dtypes bfloat16,float32 $BATCH --steps $STEPS --warmup $JAX_WARMUP"
# --loop prints each bare-step row, then the whole training loop's figure for the same setting.
part "JAX bare train step and whole loop" "$T_JAX" $PY benchmarks/train_throughput.py --loop $JAX_ARGS

TORCH_ARGS="$TORCH_DEVICE $BATCH --steps $STEPS --warmup $TORCH_WARMUP"
part "PyTorch eager step" "$T_TORCH" $TORCH_PY benchmarks/torch_train_step.py $TORCH_ARGS --sizes $SIZES \
  --dtypes float32,bfloat16
# 256x128 first: the paper's size gets its row even if compiling the second shape runs out of time.
part "PyTorch torch.compile step" "$T_COMPILE" $TORCH_PY benchmarks/torch_train_step.py $TORCH_ARGS \
  --sizes "$(echo $SIZES | tr , '\n' | sort -r | paste -sd,)" --dtypes bfloat16 --compile_only

if [ -n "$SMOKE" ]; then
  PARTS_ARGS="--backbone small_resnet --size 64x32 --dtype float32 --batch 8 --K 2 --steps 1 --warmup 1"
else
  PARTS_ARGS="--backbone resnet50 --size 224x224 --dtype bfloat16 --batch 128 --K 4 --steps 20 --warmup 3"
fi
[ "$T_PARTS" = 0 ] || part "JAX step parts and XLA flags" "$T_PARTS" $PY benchmarks/step_parts.py $PARTS_ARGS \
  --xla_flags="--xla_gpu_enable_triton_gemm=false;--xla_gpu_enable_command_buffer="

say ""
say "=== SUMMARY: every result row (GFLOP/img: XLA cost analysis for JAX, FlopCounterMode for torch)"
grep -E "^blur |^device:|^  whole loop|^  (forward|backward|adam|the rest|whole step)|^ +[0-9.]+ ms |^backbone |^\S+ +[0-9]+x[0-9]+ +(float32|bfloat16) |TIMED OUT|Error|error:|matmul:" "$LOG" \
  | tee "$OUTDIR/gpu_check_summary.txt"
say "=== $FAILED part(s) failed or timed out"
exit $FAILED
