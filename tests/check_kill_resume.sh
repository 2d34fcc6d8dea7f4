#!/usr/bin/env bash
# The full-size SIGKILL check of issue 5, on the demo config (tests/test_resume.py does the same on tiny data):
#   bash tests/check_kill_resume.sh        (from the repository root, in the installed environment; 1-4 min)
# Kill a run with SIGKILL at a random step after its first checkpoint, restart it, compare with an uninterrupted run.
set -u
FLAGS="--config.num_train_steps=200 --config.checkpoint_every_steps=20 --config.eval_every_steps=100 --config.seed=3"
rm -rf runs/whole runs/killed
python train.py --config configs/synthetic.py --workdir runs/whole $FLAGS > runs/whole.log 2>&1
python train.py --config configs/synthetic.py --workdir runs/killed $FLAGS > runs/killed.1.log 2>&1 &
PID=$!
until [ -d runs/killed/checkpoints/20 ]; do sleep 0.05; done   # the first checkpoint is committed
sleep "$((RANDOM % 3)).$((RANDOM % 10))"                        # then a random moment (0-3 s: some steps later)
kill -9 $PID; wait $PID 2>/dev/null
echo "SIGKILL at step $(grep -o '[0-9]*/200' runs/killed.1.log | tail -1 | cut -d/ -f1) (the bar's last); checkpoints: $(ls runs/killed/checkpoints | tr '\n' ' ')"
[ -d runs/killed/checkpoints/200 ] && echo "the run had finished before the kill: nothing was tested, run again"
python train.py --config configs/synthetic.py --workdir runs/killed $FLAGS > runs/killed.2.log 2>&1
echo "restart exit $?; $(grep resuming runs/killed.2.log)"
python - <<'PY'
import json
def final(workdir):
    records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
    train = [r for r in records if "dataset" not in r]
    evals = [r for r in records if "dataset" in r]
    return train[-1]["step"], train[-1]["loss"], evals[-1]["mAP"], evals[-1]["rank1"]
a, b = final("runs/whole"), final("runs/killed")
print("uninterrupted: step %d loss %.9g mAP %.9g rank-1 %.9g" % a)
print("killed+resume: step %d loss %.9g mAP %.9g rank-1 %.9g" % b)
print("identical" if a == b else "DIFFERENT")
PY
