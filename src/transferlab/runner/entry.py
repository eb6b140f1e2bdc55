"""What every entry point shares: the config folder, Hydra's `key=value` command line, one-line errors.

`hydra_entry(config_name)` is the decorator each `python -m transferlab.X` main uses: Hydra parses
the command line and composes `conf/<config_name>.yaml`; a UserError (or a Hydra override or
composition mistake) becomes one `error:` line and exit 2.

The configs are the repository's `conf/`, shipped in the package as `transferlab.conf`; a user adds
their own folder with Hydra's `--config-dir DIR` or `hydra.searchpath=[file://DIR]`.
"""

import functools
import logging
import os
import sys
from pathlib import Path


def config_dir() -> str:
    """Where the entry points' configs are: `$TRANSFERLAB_CONFIG_DIR`; else, run from a source checkout
    (editable install or `PYTHONPATH=src`), its own `conf/`; else the installed package's copy."""
    if os.environ.get("TRANSFERLAB_CONFIG_DIR"):
        return os.environ["TRANSFERLAB_CONFIG_DIR"]
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return str(checkout / "conf")
    return "pkg://transferlab.conf"


CONFIG_DIR = config_dir()


RERUN_AFTER_WRITE_FAILED = "free space or set hydra.run.dir elsewhere, then rerun with resume=auto"  # train's
# what to do after a full disk, per entry point: only train resumes; export, predict and inspect write to out=
WRITE_FAILED_ADVICE = {"train": RERUN_AFTER_WRITE_FAILED,
                       **dict.fromkeys(("export", "predict", "inspect"), "free space or choose another out=, then rerun")}


def report_user_errors(fn, write_failed_advice: str = RERUN_AFTER_WRITE_FAILED):
    """A UserError becomes one line on stderr and exit code 2; anything else keeps its traceback.
    A full disk or read-only file system is one line too, ending with `write_failed_advice`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from transferlab.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as e:
            logging.getLogger("transferlab").debug("user error", exc_info=True)
            message, code = str(e), getattr(e, "exit_code", 2)
            if INTERRUPTED["by_user"] and message.startswith("SIGTERM"):  # our Ctrl-C handler sent it
                message, code = "interrupted (Ctrl-C)" + message[len("SIGTERM"):], 130
            print(f"error: {message}", file=sys.stderr, flush=True)
            log_to_files(message)
            raise SystemExit(code) from None
        except KeyboardInterrupt as e:
            saved = str(e.args[0]) if e.args and INTERRUPTED["by_user"] else ""
            message = ("interrupted (Ctrl-C)" + saved[len("SIGTERM"):] if saved.startswith("SIGTERM")
                       else "interrupted (Ctrl-C) before a checkpoint could be saved")
            print(f"error: {message}", file=sys.stderr, flush=True)
            log_to_files(message)
            raise SystemExit(130) from None
        except OSError as e:
            import errno

            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                log_to_files(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
                raise
            what = "disk full" if e.errno != errno.EROFS else "read-only file system"
            _exit_write_failed(what, getattr(e, "filename", None) or _run_folder(args), e.strerror, write_failed_advice)
        except Exception as e:
            failed = torch_write_failed(e) if isinstance(e, RuntimeError) else None  # torch.save's full disk
            if failed is None:
                log_to_files(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
                raise
            _exit_write_failed("disk full", _run_folder(args), failed, write_failed_advice)

    return wrapper


def _exit_write_failed(what: str, where: str, detail: str, advice: str) -> None:
    print(f"error: {what} while writing {where} ({detail}); {advice}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def torch_write_failed(e: BaseException) -> str | None:
    """torch.save's own message when its zip writer could not write (a full disk or quota: torch raises a
    RuntimeError, not an OSError): `[enforce fail at inline_container.cc:N] . PytorchStreamWriter failed writing
    file data/0: file write failed`, or `... unexpected pos 704 vs 598` (a short write to a path); else None."""
    text = (str(e).splitlines() or [""])[0]
    if not ("PytorchStreamWriter failed writing" in text or "file write failed" in text
            or ("inline_container.cc" in text and "unexpected pos" in text)):
        return None
    return text.split("] . ", 1)[-1].strip() if text.startswith("[enforce fail") else text.strip()


def _run_folder(args: tuple) -> str:
    """The run folder of the job `report_user_errors` wraps: its config's `paths.output_dir`, else Hydra's."""
    from omegaconf import DictConfig, OmegaConf

    if args and isinstance(args[0], DictConfig):
        folder = OmegaConf.select(args[0], "paths.output_dir", default=None, throw_on_resolution_failure=False)
        if folder:
            return str(folder)
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under Hydra
        return "the run folder"


INTERRUPTED = {"by_user": False}


def install_ctrl_c_handler() -> None:
    """The first Ctrl-C during training saves a checkpoint like SIGTERM (a second one stops at once).

    Lightning handles SIGTERM during fit (finish the batch, then FaultTolerance saves last.ckpt); outside
    fit SIGTERM has no handler, so a Ctrl-C there is an ordinary KeyboardInterrupt (nothing to save).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(signum, frame):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt
        INTERRUPTED["by_user"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("Ctrl-C: saving a checkpoint after this batch (press again to stop at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGINT, on_sigint)


def protect_run_folder() -> None:
    """At the start of every job, before validation can fail: mask secrets in what Hydra wrote
    (`.hydra/*.yaml`), mask them in every log record, and remove stale temporary files that a killed
    save left (`.NAME.PID.tmp` of a process that is gone)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        out = Path(hc.runtime.output_dir)
    except Exception:  # not under Hydra (a test calling the function directly)
        return
    if hc.output_subdir is None:  # no run folder (predict, export: `out=` files, run dir `.`): nothing to clean
        return
    from transferlab.tracking.redact import install_log_filter, redact_files
    from transferlab.utils.io import remove_stale_tmp

    install_log_filter()
    redact_files(out)
    removed = remove_stale_tmp(out)
    if removed:
        logging.getLogger("transferlab").warning("removed %d temporary file(s) left by a killed save: %s",
                                                 len(removed), ", ".join(str(p) for p in removed))


def log_to_files(message: str) -> None:
    """Record a run's final error in its log file (train.log) too, without repeating it on the console.

    A DDP child rank's console is the parent's; its log file is where rank 0 reads why it ended.
    """
    record = logging.LogRecord("transferlab", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def hydra_error_line(ex: BaseException) -> str | None:
    """One line for Hydra's own override/composition errors (None: not a user's config mistake)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        OmegaConfBaseException,
    )

    if isinstance(ex, ValueError) and "Config group override must be a string" in str(ex):
        typed = [a.split("=", 1)[0] for a in sys.argv[1:] if a.endswith("=null") and "." not in a.split("=", 1)[0]]
        group = typed[0] if typed else "GROUP"
        return (f"{group}=null: a config group takes an option name; to leave the group out type ~{group}"
                f"{' (callbacks=none also works)' if group == 'callbacks' else ''}")
    if isinstance(ex, OverrideParseException):
        return f"override {ex.override!r} is not valid override syntax ({ex.message.splitlines()[0]}); " \
               "write key=value, group=option, +new_key=value, or for sweeps key=a,b"
    if isinstance(ex, MissingConfigException):
        missing = str(ex.missing_cfg_file or "")
        group, _, option = missing.rpartition("/")
        if ex.options:
            return f"{group}={option} is not an option of group '{group}'; valid: {', '.join(sorted(ex.options))}"
        return str(ex).splitlines()[0]
    if isinstance(ex, ConfigCompositionException):
        cause = ex.__cause__
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "parent_node", None) is not None:
            valid = ", ".join(str(k) for k in cause.parent_node.keys() if not str(k).startswith("_"))
            return f"{cause.full_key} is not a config key; valid keys here: {valid} (add a new key with +{cause.full_key}=...)"
        lines = [line.strip() for line in str(ex).splitlines() if line.strip()]
        if isinstance(cause, OmegaConfBaseException):
            lines.append(str(cause).splitlines()[0])
        return " ".join(lines)
    return None


def friendly_hydra_errors(main_fn):
    """Hydra's override and composition errors become one line + exit 2 (HYDRA_FULL_ERROR=1 keeps Hydra's).

    Hydra reports its errors inside `run_and_report` (print, exit 1); we wrap that one function
    for the duration of the call, so real bugs in the task function keep Hydra's traceback.
    """

    @functools.wraps(main_fn)
    def wrapper(*args, **kwargs):
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return main_fn(*args, **kwargs)
        # Private Hydra API (hydra-core <1.4 in pyproject.toml; tests/test_architecture.py guards it): Hydra
        # prints its own errors inside `run_and_report` and offers no public hook to format them.
        import hydra._internal.utils as hydra_utils

        original = hydra_utils.run_and_report

        def run_and_report(func):
            def guarded():
                try:
                    return func()
                except Exception as ex:
                    line = hydra_error_line(ex)
                    if line is None:
                        raise
                    print(f"error: {line}", file=sys.stderr, flush=True)
                    raise SystemExit(2) from None

            return original(guarded)

        hydra_utils.run_and_report = run_and_report
        try:
            return main_fn(*args, **kwargs)
        finally:
            hydra_utils.run_and_report = original

    return wrapper


def hydra_entry(config_name: str, sweep: bool = False):
    """`@hydra_entry("eval")` on `main(cfg)`: Hydra's command line and the one-line error handling.

    `sweep=True` also wraps the job for multirun (a failing job is recorded, the sweep goes on).
    """
    import hydra

    def decorate(fn):
        @functools.wraps(fn)
        def guarded(cfg, *args, **kwargs):
            from transferlab.config.instantiate import widen_allowed_targets
            from transferlab.errors import Preempted

            protect_run_folder()
            install_ctrl_c_handler()
            widen_allowed_targets(cfg)
            try:
                return fn(cfg, *args, **kwargs)
            except Preempted as e:
                if INTERRUPTED["by_user"]:  # Ctrl-C ends a sweep too (a SIGTERM'd sweep job only ends itself)
                    raise KeyboardInterrupt(str(e)) from None
                raise

        job = guarded
        if sweep:
            from transferlab.sweeps.job import sweep_job

            job = sweep_job(guarded)
        app = friendly_hydra_errors(hydra.main(version_base="1.3", config_path=CONFIG_DIR,
                                               config_name=config_name)(report_user_errors(job, WRITE_FAILED_ADVICE.get(
                                                   config_name, "free space or set hydra.run.dir elsewhere, then rerun"))))

        @functools.wraps(app)
        def entry(*args, **kwargs):
            from transferlab.errors import UserError
            from transferlab.runner.cli_guard import check_command_line
            from transferlab.runner.run_folder import check_command_line_folder

            try:
                check_command_line(sys.argv[1:])
                if config_name in ("train", "eval"):  # the entry points that write a run folder
                    check_command_line_folder(sys.argv[1:])
            except UserError as e:
                print(f"error: {e}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            return app(*args, **kwargs)

        return entry

    return decorate
