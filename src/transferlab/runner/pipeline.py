"""A pipeline task (e.g. task=transfer): its stages in one process, one subfolder each, then its table.

How a stage's config is made from the root config is `config/stages.py`.
"""

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.analysis.tables import markdown, write_csv
from transferlab.config.stages import stage_config
from transferlab.distributed.world import is_global_zero
from transferlab.runner.stage import run_stage
from transferlab.runner.summary import write_summary
from transferlab.utils.io import atomic_write_text

log = logging.getLogger("transferlab")


def run_pipeline(cfg: DictConfig, out: Path) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for name in cfg.task.stages:
        log.info("stage %s", name)
        stage_cfg = stage_config(cfg, name, out)
        results[name] = run_stage(stage_cfg, out / name)
    if not is_global_zero():  # DDP: every rank ran every stage; rank 0 writes the table and metrics.json
        return results.get(cfg.task.get("primary"), {})
    return summarize(cfg, out, results)


def summarize(cfg: DictConfig, out: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pipeline's table (printed, transfer.md, transfer.csv) and its own metrics.json."""
    baseline = cfg.task.get("baseline")
    base_acc = results.get(baseline, {}).get("test/acc") if baseline else None
    rows = []
    for name, stage_cfg in cfg.task.stages.items():
        if not stage_cfg.get("report", True):
            continue
        r = results[name]
        acc = r.get("test/acc")
        rows.append({
            "stage": name, "method": stage_cfg.get("label") or name, "peft": r.get("peft") or "-", "lr": r.get("lr"),
            "pretrained": "yes" if r.get("pretrained") else "no",
            "trainable_params": int(r["params/trainable"]), "trainable_pct": round(r["params/trainable_pct"], 2),
            "test_acc": round(acc, 4) if acc is not None else None,
            "gain_vs_" + str(baseline): round(acc - base_acc, 4) if (base_acc is not None and acc is not None and name != baseline) else None,
        })
    table = markdown(rows)
    atomic_write_text(out / f"{cfg.task.name}.md", table + "\n")
    write_csv(out / f"{cfg.task.name}.csv", rows)
    print(f"\n{cfg.task.name} ({cfg.data.name}, model={cfg.model.name}, seed={cfg.seed}) -> {out}\n{table}\n", flush=True)

    summary: dict[str, Any] = {"task": cfg.task.name, "data": cfg.data.name, "model": cfg.model.name, "seed": int(cfg.seed)}
    for name, r in results.items():
        summary.update({f"{name}/{k}": v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    primary = cfg.task.get("primary")
    if primary in results:
        summary.update({k: v for k, v in results[primary].items()})
        summary["task"] = cfg.task.name
    for row in rows:
        gain = row.get("gain_vs_" + str(baseline))
        if gain is not None:
            summary[f"gain/{row['stage']}"] = gain
    summary["time/wall_s"] = sum(r.get("time/wall_s", 0.0) for r in results.values())
    write_summary(out, summary)
    return summary
