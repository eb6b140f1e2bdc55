"""A pipeline task (e.g. task=transfer): several stages in one process, one subfolder each.

Each stage is the root config with the stage's `task` (and `peft`, if given) swapped in and
its other groups (`data`, `trainer`, `optimizer`, ...) merged on top. `init_from: <stage>`
hands that stage's last checkpoint to `task.pretrained`.
"""

import csv
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.summary import atomic_write_text, write_summary

log = logging.getLogger("transferlab")

REPLACED = ("task", "peft")
STAGE_KEYS = ("init_from", "label", "report")


def stage_config(cfg: DictConfig, name: str, out: Path) -> DictConfig:
    stage = OmegaConf.to_container(cfg.task.stages[name], resolve=True)
    root = OmegaConf.to_container(cfg, resolve=False)
    init_from = stage.pop("init_from", None)
    for key in STAGE_KEYS:
        stage.pop(key, None)
    for key in REPLACED:
        if key in stage:
            root[key] = stage.pop(key)
    new = OmegaConf.merge(OmegaConf.create(root), OmegaConf.create(stage))
    new.paths.output_dir = str(out / name)
    if init_from:
        new.task.pretrained = str(out / init_from / "checkpoints" / "last.ckpt")
    return new


def run_pipeline(cfg: DictConfig, out: Path) -> dict[str, Any]:
    from transferlab.run import run_stage

    results: dict[str, dict[str, Any]] = {}
    for name in cfg.task.stages:
        log.info("stage %s", name)
        stage_cfg = stage_config(cfg, name, out)
        results[name] = run_stage(stage_cfg, out / name)
    from transferlab.distributed import is_global_zero

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
            "stage": name, "method": stage_cfg.get("label") or name, "peft": r.get("peft") or "-",
            "pretrained": "yes" if r.get("pretrained") else "no",
            "trainable_params": int(r["params/trainable"]), "trainable_pct": round(r["params/trainable_pct"], 2),
            "test_acc": round(acc, 4) if acc is not None else None,
            "gain_vs_" + str(baseline): round(acc - base_acc, 4) if (base_acc is not None and acc is not None and name != baseline) else None,
        })
    header = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("-" if row[h] is None else str(row[h]) for h in header) + " |" for row in rows]
    table = "\n".join(lines)
    atomic_write_text(out / f"{cfg.task.name}.md", table + "\n")
    with open(out / f"{cfg.task.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
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
