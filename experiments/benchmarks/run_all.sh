#!/usr/bin/env bash
# Every CPU benchmark of issue 10, one after another (never in parallel: they time the same cores).
# Results: experiments/benchmarks/results/*.json; RESULTS.md is written from them by hand.
# About 12 minutes on 2 idle cores. Run it on a quiet machine: each result records the load average.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=experiments/benchmarks
python $B/overhead.py
python $B/short_run.py
python $B/startup.py
python $B/data_pipeline.py
python $B/peft_memory.py
python $B/scaling.py
