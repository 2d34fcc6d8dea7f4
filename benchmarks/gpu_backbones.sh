#!/usr/bin/env bash
# The paper's three backbones on a lent GPU (issue 12 item 4: train-step throughput per backbone and input size),
# plus the torch.compile ResNet50 row at 224x224 that gpu_check.sh's 80 s part could not finish, and the train
# step's blur (config.data.augment_on_device) on the GPU. ~8 min.
#
#     bash benchmarks/gpu_backbones.sh     # carry .whl/ (ml_collections wheel); logs to $OUT (or .)
#
# Each part runs under its own timeout; rows print as they finish, so a timed-out part keeps its finished rows.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-.}"
LOG="$OUTDIR/gpu_backbones.log"
: >"$LOG"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | tee -a "$LOG"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
part() {  # part NAME SECONDS CMD...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s, $(date -u +%FT%TZ)): $*" | tee -a "$LOG"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | grep -v "^WARNING\|^I0000\|^E0000" | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
COMMON="--batch 128 --K 4 --steps 20 --warmup 3"
part "the train step's blur, config.data.augment_on_device (issue 23 item 3): batch 128, us per image" 60 $PY -c \
  "from benchmarks.input_pipeline import device_blur_cost as c; [print(s, c(16, s, 128)) for s in ((256, 128), (224, 224))]"
part "JAX bf16: resnet50 (baseline), resnet50x, inception_v2" ${T_BF16:-270} $PY benchmarks/train_throughput.py \
  --backbones resnet50,resnet50x,inception_v2 --sizes 256x128,224x224 --dtypes bfloat16 $COMMON
part "PyTorch torch.compile resnet50 224x224 bf16" ${T_COMPILE:-140} $PY benchmarks/torch_train_step.py \
  --sizes 224x224 --dtypes bfloat16 --compile_only $COMMON --warmup 5
part "JAX float32 (TF32): resnet50x, inception_v2" ${T_F32:-120} $PY benchmarks/train_throughput.py \
  --backbones resnet50x,inception_v2 --sizes 256x128,224x224 --dtypes float32 $COMMON
