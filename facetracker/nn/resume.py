"""Resume bookkeeping: the state a checkpoint carries, what a run folder holds when a run starts again."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import TrainConfig
from facetracker.nn.tensorboard_log import EVENTS_DIR
from facetracker.runs import run_folder as runs


def check_resume_state(state: dict, source: Path) -> None:
    """The checkpoint's bookkeeping is read from disk, so it is checked like any other input."""
    numbers = {"epochs_done": int, "best_val_iou": (int, float), "since_best": int}
    for key, kind in numbers.items():
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            raise ConfigError(f"{source}: '{key}' must be a number of at least 0, got {value!r}")
    if state.get("best_epoch") is not None and not isinstance(state["best_epoch"], int):
        raise ConfigError(f"{source}: 'best_epoch' must be an epoch number or null")
    state.setdefault("since_best", 0)


def fresh_state() -> dict:
    return {"epochs_done": 0, "best_val_iou": 0.0, "best_epoch": None, "since_best": 0}


def recovered_state(run_dir: Path, best_from_epoch: int = 1) -> dict:
    """The checkpoint's bookkeeping rebuilt from metrics.jsonl and status.json, for when
    checkpoint/state.json is lost or unreadable beside a checkpoint model. The best epoch is looked
    for as the run chose it: from `best_from_epoch` on (or the last epoch done, if sooner).

    An epoch counts as done when its last step was logged: its epoch record then carries that step
    number (a stop mid-epoch also logs an epoch record, but not the epoch's last step). Raises
    ConfigError when no finished epoch is on record.
    """
    records = runs.read_metrics(run_dir)
    logged_steps = {r.get("step") for r in records if r.get("kind") == "step"}
    done = [r for r in records if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int)
            and r.get("step") in logged_steps]
    source = run_dir / runs.CHECKPOINT_STATE
    if not done:
        raise ConfigError(f"{source}: missing or unreadable, and {runs.METRICS} records no finished epoch to "
                          "rebuild it from; start the run over with --overwrite")
    epochs_done = max(r["epoch"] for r in done)

    def val_iou(record: dict) -> float:
        value = record.get("val_mean_iou")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0

    counted_from = min(best_from_epoch, epochs_done)
    best = max((r for r in done if counted_from <= r["epoch"] <= epochs_done), key=lambda r: (val_iou(r), -r["epoch"]))
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    early = status.get("state") == "finished" and str(status.get("message") or "").startswith("stopped early")
    state = {"epochs_done": epochs_done, "best_val_iou": val_iou(best), "best_epoch": best["epoch"],
             "since_best": epochs_done - best["epoch"]}
    if early:
        state["early_stopped"] = True
    return state


def clear_results(run_dir: Path) -> None:
    """Starting over: no metrics, model or checkpoint of an earlier attempt may remain."""
    import shutil

    if not runs.results_in(run_dir):
        return
    for name in (runs.METRICS, runs.MODEL):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / runs.CHECKPOINT_DIR, ignore_errors=True)
    shutil.rmtree(run_dir / EVENTS_DIR, ignore_errors=True)
    runs.update_status(run_dir, epoch=None, step=None, progress=None, best_val_iou=None, best_epoch=None,
                       last_val=None, weights_used=None)


def patience_again(state: dict, config: TrainConfig, log: Callable[[str], None]) -> None:
    """A run that stopped early is resumed to train more epochs: its patience starts again.

    Carried over, the epochs without a better validation IoU would already fill the patience, and
    the run would stop after one epoch, whatever total was asked for. Counted afresh, it trains on
    towards the total and stops early again only after `early_stopping` epochs without a better one."""
    used_up = config.early_stopping and state.get("since_best", 0) >= config.early_stopping
    if not (used_up or state.get("early_stopped")):
        return
    if state["epochs_done"] < config.epochs:
        log(f"the run had stopped early at epoch {state['epochs_done']} (no better validation IoU since epoch "
            f"{state['best_epoch']}); it now trains on towards epoch {config.epochs}, and stops early again "
            + (f"after {config.early_stopping} epochs without a better one" if config.early_stopping else
               "only if early stopping is set"))
    state["since_best"] = 0
    state.pop("early_stopped", None)


def resume_state(config: TrainConfig, run_dir: Path, resume: bool, log: Callable[[str], None]) -> dict | None:
    """Step 1: the bookkeeping to carry on from (None: the run starts over), and config.json.

    config.json is written first in both cases, so what the run trains towards (a resume may raise
    the epoch count) is on record before any epoch runs: a later plain resume carries on to it.
    """
    state = None
    if resume and (run_dir / runs.CHECKPOINT_MODEL).exists():
        state = runs.read_json(run_dir / runs.CHECKPOINT_STATE)
        if not isinstance(state, dict):
            state = recovered_state(run_dir, config.best_from_epoch)
            log(f"note: {run_dir / runs.CHECKPOINT_STATE} was missing or unreadable; rebuilt from "
                f"{runs.METRICS}: {state['epochs_done']} epochs done, best at epoch {state['best_epoch']}")
            runs.write_json(run_dir / runs.CHECKPOINT_STATE, state)
        check_resume_state(state, run_dir / runs.CHECKPOINT_STATE)
        patience_again(state, config, log)
    elif resume:
        log("no epoch had finished before the run ended: starting it over from its config.json")
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    if state is None:
        clear_results(run_dir)
        return None
    # Records of an epoch the checkpoint does not hold (cut short by a kill or a stop) are dropped:
    # that epoch runs again and its records would otherwise appear twice.
    kept = [r for r in runs.read_metrics(run_dir) if int(r.get("epoch", 0) or 0) <= state["epochs_done"]]
    runs.atomic_write_text(run_dir / runs.METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    return state
