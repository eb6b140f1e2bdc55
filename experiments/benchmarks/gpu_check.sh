#!/usr/bin/env bash
# GPU check of the scaling configs (issue 7), one script for one GPU machine, from the repo root:
#   OUT=/some/dir bash experiments/benchmarks/gpu_check.sh
# 1. trainer=gpu with 32-true / 16-mixed / bf16-mixed / bf16-true, each 32/16/bf16-mixed also compiled:
#    throughput, step time, peak memory, MFU and accuracy of a mid-sized transformer (gpu_check.py, one process);
# 2. the command-line path with trainer=ddp and trainer=fsdp on the one GPU (devices=1).
# Packages missing on that machine (hydra-core, omegaconf, antlr4, mnist1d: pure Python) and the
# generated MNIST-1D cache travel in .gpu_carry/ (git-ignored via .git/info/exclude). Prepare it here:
#   SP=$(python -c 'import hydra, os; print(os.path.dirname(os.path.dirname(hydra.__file__)))')
#   mkdir -p .gpu_carry/site && cp -r $SP/{hydra,omegaconf,antlr4,mnist1d} .gpu_carry/site/
#   TRANSFERLAB_CACHE=$PWD/.gpu_carry/cache python experiments/benchmarks/gpu_check.py /tmp/x --epochs 1 \
#       --variants 32-true --smoke        # CPU smoke run; also writes the 20k-sample MNIST-1D cache
# then carry .gpu_carry with the command. On a machine with everything installed, just run it.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_check_out}
RUNS=/tmp/gpu_check_runs
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.gpu_carry/site:$PWD/src:${PYTHONPATH:-}" TRANSFERLAB_CACHE="$PWD/.gpu_carry/cache"
PY=${PY:-python3}

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c "import sys, torch, pytorch_lightning as pl, torchmetrics, hydra, omegaconf
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__,
      'torchmetrics', torchmetrics.__version__, 'hydra', hydra.__version__, 'omegaconf', omegaconf.__version__)
print('gpu', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

timeout 480 $PY experiments/benchmarks/gpu_check.py "$RUNS" --epochs "${EPOCHS:-10}" 2>&1 | tee "$OUT/gpu_check.log" | grep -E '^\{|^\|'
cp "$RUNS"/gpu_results.json "$RUNS"/gpu_results.md "$OUT"/ 2>/dev/null

COMMON=(task=supervised data=mnist1d data.generator.num_samples=20000 data.batch_size=256 model=transformer
        model.width=256 model.depth=6 model.heads=8 model.patch_size=4 trainer.max_epochs=3 trainer.enable_progress_bar=false)
for t in ddp fsdp; do
  start=$(date +%s)
  timeout 150 $PY -m transferlab.train "${COMMON[@]}" trainer=$t trainer.devices=1 trainer.precision=bf16-mixed \
    hydra.run.dir="$RUNS/cli_$t" >"$RUNS/cli_$t.log" 2>&1
  echo "trainer=$t devices=1: rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/cli.txt"
  tail -n 25 "$RUNS/cli_$t.log" >>"$OUT/cli.txt"
done
$PY - "$RUNS" <<'EOF' | tee "$OUT/cli_results.json"
import json, sys
from pathlib import Path
keys = ("steps", "val/acc", "test/acc", "test/samples", "time/step_ms", "time/fit_s", "memory/peak_mb", "params/total")
out = {}
for t in ("ddp", "fsdp"):
    f = Path(sys.argv[1]) / f"cli_{t}" / "metrics.json"
    if f.is_file():
        m = json.loads(f.read_text())
        out[t] = {k: m.get(k) for k in keys} | {"checkpoint": m.get("checkpoint"),
                  "ckpt_exists": (f.parent / str(m.get("checkpoint"))).is_file()}
    else:
        out[t] = "no metrics.json"
print(json.dumps(out, indent=2))
EOF
