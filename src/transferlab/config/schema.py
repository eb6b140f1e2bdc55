"""The config schema: type and range of every known key, checked without importing torch.

A rule applies only where its key exists, so one table serves every group option
(`task.mask_ratio` is checked whenever a task has it). Keys of `_target_` nodes that the
table does not list are checked against the target's signature in `validate.py`; the keys of
a plain node that code reads key by key (`task.decoder`, `data.generator`) are the ones this
table lists under it (`CLOSED_SECTIONS`).

Integer keys are declared `int` even where the code would accept a float: the code casts
(`int(decoder["depth"])`), so `task.decoder.depth=2.5` would silently train depth 2.
"""

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from transferlab.errors import ConfigError

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """`kind` int | number | str | bool | list; an optional range (lo/hi, open or closed) or choices."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()
    item: "Rule | None" = None
    also: tuple[Any, ...] = ()  # extra literal values allowed besides the kind (e.g. 'auto', -1)

    def describe(self) -> str:
        if self.choices:
            text = f"one of {list(self.choices)}"
        else:
            noun = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
                    "list": "a list"}[self.kind]
            if self.kind == "list" and self.item is not None:
                noun = f"a list of {self.item.describe().removeprefix('an ').removeprefix('a ')}s"
            text = noun + _range_text(self)
        extras = [repr(v) if isinstance(v, str) else str(v) for v in self.also]
        if self.optional:
            extras.append("null")
        return text + (f" (or {' or '.join(extras)})" if extras else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range_text(r: Rule) -> str:
    if r.lo is None and r.hi is None:
        return ""
    if r.lo == 0 and r.lo_open and r.hi is None:
        return " > 0"
    if r.lo is not None and r.hi is None:
        return f" {'>' if r.lo_open else '>='} {_num(r.lo)}"
    if r.lo is None:
        return f" {'<' if r.hi_open else '<='} {_num(r.hi)}"
    return f" in {'(' if r.lo_open else '['}{_num(r.lo)}, {_num(r.hi)}{')' if r.hi_open else ']'}"


def _ok(rule: Rule, value: Any) -> bool:
    if value is None:
        return rule.optional
    if any(value == v and type(value) is type(v) for v in rule.also):
        return True
    if rule.choices:
        return value in rule.choices
    if rule.kind == "bool":
        return isinstance(value, bool)
    if rule.kind == "str":
        return isinstance(value, str)
    if rule.kind == "list":
        return isinstance(value, (list, tuple, ListConfig)) and (rule.item is None or all(_ok(rule.item, v) for v in value))
    if isinstance(value, bool):
        return False
    if rule.kind == "int" and not isinstance(value, int):
        return False
    if rule.kind == "number" and not (isinstance(value, (int, float)) and math.isfinite(value)):
        return False
    if rule.lo is not None and (value <= rule.lo if rule.lo_open else value < rule.lo):
        return False
    if rule.hi is not None and (value >= rule.hi if rule.hi_open else value > rule.hi):
        return False
    return True


def positive_int(**kw: Any) -> Rule:
    return Rule("int", lo=0, lo_open=True, **kw)


def non_negative_int(**kw: Any) -> Rule:
    return Rule("int", lo=0, **kw)


def unit(lo_open: bool = False, hi_open: bool = True, **kw: Any) -> Rule:
    """A number in [0, 1) by default (probabilities, ratios)."""
    return Rule("number", lo=0, hi=1, lo_open=lo_open, hi_open=hi_open, **kw)


PRECISIONS = ("32-true", "32", 32, "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "64", 64, "16", 16,
              "bf16", "transformer-engine")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")

SCHEMA: dict[str, Rule] = {
    "seed": Rule("int", lo=0, hi=2**32 - 1),  # Lightning replaces a seed outside this range by a random one
    "overwrite": Rule("bool"),
    "resume_force": Rule("bool"),
    "test_ckpt": Rule("str", choices=("last", "best")),
    "resume": Rule("str", optional=True),
    "optimized_metric": Rule("str", optional=True),
    "allowed_targets": Rule("list", item=Rule("str")),
    "threads": Rule("int", lo=1, also=("auto",)),
    "extra_allowed_targets": Rule("list", item=Rule("str")),
    "tags": Rule("list", item=Rule("str")),
    "ckpt_path": Rule("str", optional=True),
    # data
    "data.batch_size": positive_int(),
    "data.eval_batch_size": positive_int(optional=True),
    "data.labels_per_class": positive_int(optional=True),
    "data.fraction": unit(lo_open=True, hi_open=False, optional=True),
    "data.val_fraction": unit(),
    "data.test_fraction": unit(lo_open=True),
    "data.num_workers": non_negative_int(),
    "data.split_seed": Rule("int"),
    "data.test_seed": Rule("int"),
    "data.shift_seed": Rule("int"),
    "data.classes": Rule("list", item=non_negative_int(), optional=True),  # and >= 2 distinct (check_schema)
    "data.normalize": Rule("bool"),
    "data.pin_memory": Rule("bool"),
    # model
    "model.dropout": unit(),
    "model.hidden": positive_int(),
    "model.depth": positive_int(),
    "model.width": positive_int(),
    "model.heads": positive_int(),
    "model.kernel_size": positive_int(),
    "model.patch_size": positive_int(),
    "model.mlp_ratio": Rule("number", lo=0, lo_open=True),
    "model.channels": Rule("list", item=positive_int()),
    "model.pool": Rule("str", choices=("cls", "mean", "last", "auto")),  # last, auto: model=hf
    "data.max_length": Rule("int", lo=2),
    "data.tokenizer.vocab_size": Rule("int", lo=5, lo_open=True),
    "data.tokenizer.kind": Rule("str", choices=("wordpiece", "bpe")),
    "data.tokenizer.min_frequency": positive_int(),
    # data=mnist1d's generator knobs (data/mnist1d.py GENERATOR_DEFAULTS, tests/test_overrides.py keeps them equal)
    "data.generator.num_samples": positive_int(),
    "data.generator.train_split": unit(lo_open=True),
    "data.generator.template_len": positive_int(),
    "data.generator.padding": Rule("list", item=non_negative_int()),
    "data.generator.scale_coeff": Rule("number", lo=0),
    "data.generator.max_translation": non_negative_int(),
    "data.generator.corr_noise_scale": Rule("number", lo=0),
    "data.generator.iid_noise_scale": Rule("number", lo=0),
    "data.generator.shear_scale": Rule("number", lo=0),
    "data.generator.final_seq_length": positive_int(),
    "data.generator.seed": Rule("int"),
    # model=hf's random config
    "model.hidden_size": positive_int(),
    "model.num_layers": positive_int(),
    "model.num_heads": positive_int(),
    "model.intermediate_size": positive_int(),
    # task
    "task.label_smoothing": unit(),
    "task.head_dropout": unit(),
    "task.mask_ratio": unit(lo_open=True, hi_open=True),
    "task.mask_mode": Rule("str", choices=("random", "block")),
    "task.temperature": Rule("number", lo=0, lo_open=True),
    "task.pretrained": Rule("str", optional=True),
    "task.monitor_mode": Rule("str", choices=("min", "max")),
    "task.eval_seed": Rule("int"),
    "task.decoder.width": positive_int(),
    "task.decoder.depth": positive_int(),
    "task.decoder.heads": positive_int(),
    "task.decoder.mlp_ratio": Rule("number", lo=0, lo_open=True),
    "task.mlm.mask_ratio": unit(lo_open=True, hi_open=True),
    "task.mlm.random_prob": unit(hi_open=False),
    "task.mlm.keep_prob": unit(hi_open=False),
    "task.mlm.mask_id": non_negative_int(optional=True),
    "task.projection.hidden": positive_int(),
    "task.projection.dim": positive_int(),
    "task.probe.linear.lr": Rule("number", lo=0, lo_open=True),
    "task.probe.linear.weight_decay": Rule("number", lo=0),
    "task.probe.knn.k": positive_int(),
    "task.probe.knn.temperature": Rule("number", lo=0, lo_open=True),
    "task.probe.knn.bank_size": positive_int(),
    # peft
    "peft.r": positive_int(),
    "peft.rank": positive_int(),
    "peft.lora_alpha": Rule("number", lo=0, lo_open=True),
    "peft.alpha": Rule("number", lo=0, lo_open=True),
    "peft.lora_dropout": unit(),
    "peft.dropout": unit(),
    "peft.target_modules": Rule("list", item=Rule("str"), optional=True),
    "peft.feature_norm": Rule("str", choices=("batchnorm", "none")),
    "peft.bottleneck": positive_int(),
    "peft.trainable_blocks": non_negative_int(),  # 0: a linear probe
    "peft.optimizer.lr": Rule("number", lo=0, lo_open=True),
    "peft.optimizer.weight_decay": Rule("number", lo=0),
    "peft.trainer.max_epochs": positive_int(),
    "peft.model.pool": Rule("str", choices=("cls", "mean")),
    "task.trainer.max_epochs": positive_int(),
    # optimizer / scheduler
    "optimizer.lr": Rule("number", lo=0, lo_open=True),
    "optimizer.weight_decay": Rule("number", lo=0),
    "optimizer.momentum": unit(),
    "optimizer.betas": Rule("list", item=unit()),  # and exactly two (check_schema)
    "optimizer.layer_decay": Rule("number", lo=0, hi=1, lo_open=True, optional=True),
    "scheduler.warmup_steps": non_negative_int(optional=True),  # null: warmup_fraction of the steps
    "scheduler.warmup_fraction": unit(),
    "scheduler.min_lr_ratio": unit(hi_open=False),
    # trainer
    "trainer.accelerator": Rule("str", choices=ACCELERATORS),
    "trainer.devices": Rule("int", lo=0, lo_open=True, also=("auto", -1)),
    "trainer.num_nodes": positive_int(),
    "trainer.precision": Rule("str", choices=PRECISIONS),
    "trainer.max_epochs": Rule("int", lo=0, lo_open=True, optional=True, also=(-1,)),  # 0 would train nothing
    "trainer.max_steps": Rule("int", lo=0, lo_open=True, also=(-1,)),
    "trainer.min_epochs": non_negative_int(optional=True),
    "trainer.check_val_every_n_epoch": positive_int(optional=True),
    "trainer.log_every_n_steps": positive_int(),
    "trainer.accumulate_grad_batches": positive_int(),
    "trainer.gradient_clip_val": Rule("number", lo=0, optional=True),
    "trainer.num_sanity_val_steps": Rule("int", lo=0, also=(-1,)),
    "trainer.deterministic": Rule("bool", also=("warn",)),
    "trainer.limit_train_batches": Rule("number", lo=0, lo_open=True, optional=True),
    "trainer.limit_val_batches": Rule("number", lo=0, optional=True),
    "trainer.limit_test_batches": Rule("number", lo=0, lo_open=True, optional=True),
    "callbacks.model_checkpoint.every_n_train_steps": non_negative_int(optional=True),
    "callbacks.fault_tolerance.every_n_train_steps": positive_int(optional=True),
    "callbacks.model_checkpoint.save_top_k": Rule("int", lo=-1),
    "callbacks.early_stopping.patience": non_negative_int(),
    "callbacks.step_stats.skip": non_negative_int(),
}
# switches: `no`, `off` or `False ` typed for one is a string, and a string is true where code tests it
BOOL_KEYS = (
    "compile", "train", "test", "model.pretrained", "optimizer.nesterov", "data.tokenizer.lowercase",
    "data.generator.shuffle_seq", "peft.use_dora", "peft.use_rslora", "task.gather_negatives", "task.mlm.tie_weights",
    "task.norm_pix_loss", "task.projection.batch_norm", "task.save_adapter", "task.tie_weights", "task.probe.enabled",
    "task.probe.knn.enabled", "task.probe.linear.enabled", "extras.enforce_tags", "extras.ignore_warnings",
    "extras.print_config", "callbacks.fault_tolerance.atomic_checkpoints", "callbacks.fault_tolerance.check_finite",
    "callbacks.fault_tolerance.restore_rng", "callbacks.fault_tolerance.save_on_sigterm",
    "callbacks.model_checkpoint.auto_insert_metric_name", "callbacks.model_checkpoint.enable_version_counter",
    "callbacks.model_checkpoint.save_weights_only", "callbacks.progress_bar.leave", "trainer.benchmark",
    "trainer.detect_anomaly", "trainer.enable_checkpointing", "trainer.enable_model_summary",
    "trainer.enable_progress_bar", "trainer.sync_batchnorm", "trainer.use_distributed_sampler",
)
SCHEMA.update({key: Rule("bool") for key in BOOL_KEYS if key not in SCHEMA})

# plain nodes (no `_target_`) whose keys code reads one by one -> who reads them (check_closed_sections)
CLOSED_SECTIONS = {
    "data.generator": "data/mnist1d.py",
    "task.decoder": "tasks/masked.py",
    "task.mlm": "tasks/masked.py",
    "task.projection": "tasks/contrastive.py",
    "task.probe": "tasks/ssl.py",
    "task.probe.linear": "callbacks/online_probes.py",
    "task.probe.knn": "callbacks/online_probes.py",
    "peft.optimizer": "conf/optimizer/adamw.yaml",
    "peft.trainer": "conf/trainer/*.yaml and task=transfer's target_trainer",
    "peft.model": "conf/model/transformer.yaml and hf.yaml",
    "task.trainer": "conf/trainer/*.yaml",
    "extras": "runner/extras.py",
}


def section_keys(section: str) -> list[str]:
    """The keys SCHEMA lists directly under `section` (a sub-node counts as one key)."""
    return sorted({k[len(section) + 1:].split(".", 1)[0] for k in SCHEMA if k.startswith(section + ".")})


def check_closed_sections(cfg: DictConfig) -> None:
    """A key under a CLOSED_SECTIONS node that SCHEMA does not list there is read by nobody
    (`+data.generator.num_sample=300` generated the default 5000 signals): refused, with a did-you-mean
    and the valid keys. How each section takes a new key (`+a.b.c=...`):
    - closed (this check): data.generator, task.decoder/mlm/projection/probe(.linear/.knn)/trainer, peft.optimizer,
      peft.trainer, peft.model (defaults only some conf interpolations read), extras;
    - `_target_` nodes: the target's signature (validate.py `_check_keys`): `+trainer.X` is any argument of
      Lightning's Trainer (it takes no **kwargs), `+task.X` any the task class accepts, a callback's or a
      logger's its class's; targets that forward **kwargs (DDPStrategy) are left open;
    - open, as new keys are what they are for: `paths` (interpolation targets), `model.config` (passed
      to transformers as is), new names under `callbacks`/`logger` (with a `_target_`), `data.test_shifts`
      and `task.stages`; new root keys unless close to a known one (validate.py `check_root_typos`);
    - checked by their reader when it is built, before training: `data.tokenizer`,
      `task.augment.<modality>`, `data.test_shifts.<name>`;
    - a pipeline's `task.source`/`target`/`*_trainer`/`*_optimizer`: their keys land in a stage's
      `data`/`trainer`/`optimizer`, checked there per stage.
    """
    import difflib

    for section, reader in CLOSED_SECTIONS.items():
        node = OmegaConf.select(cfg, section, default=None)
        if not isinstance(node, DictConfig):
            continue
        valid = section_keys(section)
        for key in map(str, node.keys()):
            if key in valid:
                continue
            value = node[key]
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{section}.{key}", value, f"not a key of {section} (read key by key in {reader}): "
                              f"{hint}valid keys are {valid}")


def check_schema(cfg: DictConfig, schema: dict[str, Rule] = SCHEMA) -> None:
    """Raise ConfigError for the first key whose value breaks its rule (keys absent from cfg are skipped)."""
    for key, rule in schema.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if rule.kind == "list" and isinstance(value, list) and key == "data.classes" and len(set(value)) != len(value):
            raise ConfigError(key, value, "a list of distinct class ids")
        if key == "data.classes" and isinstance(value, list) and len(value) < 2:
            raise ConfigError(key, value, "at least two class ids (a classifier needs two classes), or null for all")
        if key == "optimizer.betas" and isinstance(value, list) and len(value) != 2:
            raise ConfigError(key, value, "a list of two numbers in [0, 1), e.g. [0.9, 0.999]")
        if key.startswith("trainer.limit_") and isinstance(value, float) and value > 1:
            raise ConfigError(key, value, "a fraction in (0, 1] or a whole number of batches")
        if not _ok(rule, value):
            raise ConfigError(key, value, rule.describe())
    check_closed_sections(cfg)
    check_combinations(cfg)


# a monitored metric's direction: a loss-like one is minimised, an accuracy-like one maximised
LOSS_LIKE = ("loss", "nll", "ece", "perplexity")
SCORE_LIKE = ("acc", "f1", "auroc", "mean_acc")


def check_combinations(cfg: DictConfig) -> None:
    """Keys that are each valid but together would make one of them do nothing (or the opposite)."""
    monitor = OmegaConf.select(cfg, "task.monitor", default=None)
    mode = OmegaConf.select(cfg, "task.monitor_mode", default=None)
    if isinstance(monitor, str) and mode in ("min", "max"):
        last = monitor.rsplit("/", 1)[-1]
        want = "min" if last.endswith(LOSS_LIKE) else "max" if last.endswith(SCORE_LIKE) else None
        if want and want != mode:
            raise ConfigError("task.monitor_mode", mode, f"'{want}' for task.monitor={monitor} (best.ckpt, early stopping "
                              f"and task.handoff=best would pick the {'worst' if want == 'min' else 'lowest'} epoch); "
                              f"set task.monitor_mode={want}")
    fraction = OmegaConf.select(cfg, "data.fraction", default=None)
    if OmegaConf.select(cfg, "data.labels_per_class", default=None) is not None and fraction not in (None, 1, 1.0):
        raise ConfigError("data.fraction", fraction, "null when data.labels_per_class is set (the k-shot subset is "
                          "taken from all training examples; fraction would be ignored)")
