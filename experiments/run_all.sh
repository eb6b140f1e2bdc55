#!/usr/bin/env bash
# Run the four generalization studies concurrently, sharing the machine's cores:
#   bash experiments/run_all.sh [TOTAL_JOBS [OVERRIDE...]]   (default 2 jobs; each study gets about a quarter)
# e.g. bash experiments/run_all.sh 16 trainer=gpu   (every run on the GPU)
# Each study writes experiments/<study>/{results.json,results.csv,table.md,*.png}; per-study wall
# times go to experiments/timings.txt. Run folders: outputs/studies/<study> (git-ignored).
set -u
cd "$(dirname "$0")/.."
total=${1:-2}
shift $(( $# > 0 ? 1 : 0 ))
extra=("$@")
q=$(( total / 4 > 0 ? total / 4 : 1 ))
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"${PYTHON:-python3}" -c "
from concurrent.futures import ProcessPoolExecutor
import os
from transferlab.data.mnist1d import GENERATOR_DEFAULTS, generate
import yaml
shifts = yaml.safe_load(open('conf/data/mnist1d_shift.yaml'))['test_shifts']
gen = {**GENERATOR_DEFAULTS, 'num_samples': 5000, 'seed': 42}
cache = os.environ.get('TRANSFERLAB_CACHE', '~/.cache/transferlab')
with ProcessPoolExecutor($total) as p:
    list(p.map(generate, [gen] + [{**gen, **k} for k in shifts.values()], [cache] * (1 + len(shifts))))
"
: > experiments/timings.txt
run() {
  local study=$1; shift
  local start=$SECONDS
  "${PYTHON:-python3}" "experiments/$study/run.py" "$@" ${extra[@]:+--override "${extra[@]}"} > "experiments/$study.log" 2>&1
  echo "$study rc=$? wall_s=$(( SECONDS - start )) args=$*" >> experiments/timings.txt
}
run label_efficiency --jobs $(( q * 2 )) &
run robustness --jobs $q &
run peft_frontier --jobs $(( q * 3 / 4 > 0 ? q * 3 / 4 : 1 )) &
run probe_vs_finetune --jobs $(( q * 3 / 4 > 0 ? q * 3 / 4 : 1 )) &
wait
cat experiments/timings.txt
