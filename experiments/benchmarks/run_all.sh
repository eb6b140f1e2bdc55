#!/usr/bin/env bash
# Every CPU benchmark of issue 10, one after another (never in parallel: they time the same cores).
# Results: experiments/benchmarks/results/*.json; RESULTS.md is written from them by results_md.py.
# Run it on a quiet machine: each result records the load average (under load 10-12 it takes ~1 hour).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=experiments/benchmarks
python $B/overhead.py --size small --threads 1
python $B/overhead.py --size mid --threads 1
python $B/profile_step.py --size small --threads 1
python $B/step_parts.py --threads 1
python $B/hook_costs.py
python $B/short_run.py
python $B/startup.py
python $B/sweep_threads.py
python $B/data_pipeline.py
python $B/peft_memory.py
python $B/scaling.py
python $B/results_md.py
