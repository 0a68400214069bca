"""A run folder is how a training process talks to everyone else (the app, the CLI, a later resume).

    config.json    everything needed to repeat the run        (written once, atomically)
    split.json     which image went to train / val / test
    trained_on.json  the training photos in figures: what the model knows (`evaluation.trained_on`)
    status.json    state, progress, ETA, error                 (rewritten atomically)
    metrics.jsonl  one JSON object per line, appended          (readers skip a torn last line)
    checkpoint/    last epoch's model with optimiser state     (for --resume)
    tensorboard/   TensorBoard event files: the epochs' curves and validation photos (`nn.tensorboard_log`)
    model.keras    best epoch by validation mean IoU
    train.log      the process's output, when the app started it
    run.lock       flock-ed for its whole life by the process that owns the run; names its pid, its start
                   time and the folder it was taken in (see `runs.ownership`)
    STOP           created by anyone who wants the run to stop

Writers replace files with `os.replace`, so a reader never sees half a file and a kill never
leaves a corrupt model behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from facetracker.config.jsonconfig import parse_json
from facetracker.io import atomic
from facetracker.runs.ownership import owner_process
from facetracker.runs.processes import process_start_time

CONFIG = "config.json"
SPLIT = "split.json"
TRAINED_ON = "trained_on.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_MODEL = "checkpoint/model.keras"
CHECKPOINT_STATE = "checkpoint/state.json"
LOG = "train.log"
STOP = "STOP"

ACTIVE_STATES = ("starting", "running")



class RunFolderError(RuntimeError):
    """The run folder cannot be made or written (read-only, full, or its path runs through a file)."""


# Kept under its old name: launcher, train, predict and the Augment page write through it.
atomic_write_text = atomic.write_text


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return parse_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_metrics(run_dir: str | Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class DamagedRun(ValueError):
    """A run file exists but does not hold what a training process writes (hand-edited, another program's)."""


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete record of metrics.jsonl; a line still being written is left for next time.

    A line that is JSON but not an object (`[1, 2]`, `5`), or whose step, epoch or figures are not
    numbers, was not written by a training process: it is skipped like a torn line, so one bad
    line never hides the rest of the chart.
    """
    try:
        text = (Path(run_dir) / METRICS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = parse_json(line)
        except ValueError:
            continue
        if _record_fits(record):
            records.append(record)
    return records


_METRIC_TYPES = {"kind": (str,), "epoch": (int,), "step": (int,)}


def _record_fits(record: Any) -> bool:
    """An object whose fields the charts read have the types a training process writes."""
    if not isinstance(record, dict):
        return False
    for field, value in record.items():
        types = _METRIC_TYPES.get(field)
        if types is None and (field.endswith("loss") or field.startswith("val_")):
            types = (int, float)
        if types is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return False
    return True


def _damaged_status(run_dir: Path, status: Any) -> str | None:
    """Why status.json cannot be what a training process wrote, or None when its fields are of the right types."""
    if not isinstance(status, dict):
        return f"{STATUS} holds {type(status).__name__}, not an object"
    expected = {"state": (str,), "pid": (int, type(None)), "epoch": (int, type(None)), "epochs": (int, type(None)),
                "step": (int, type(None)), "total_steps": (int, type(None)),
                "progress": (int, float, type(None)), "eta_s": (int, float, type(None)),
                "images_per_s": (int, float, type(None)), "started": (int, float, type(None)),
                "updated": (int, float, type(None)), "best_val_iou": (int, float, type(None)),
                "best_epoch": (int, type(None)), "error": (str, type(None)), "message": (str, type(None)),
                "data": (str, type(None)), "last_val": (dict, type(None)), "verdict": (dict, type(None))}
    for field, types in expected.items():
        value = status.get(field)
        if field == "state" and value is None:
            return f"{STATUS} has no 'state'"
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else {"str": "text", "int": "a whole number",
                                                                  "float": "a number", "dict": "an object"}[t.__name__]
                                 for t in types)
            return f"{STATUS}: '{field}' is {json.dumps(value)[:40]}, not {wanted}"
    return None


def read_status(run_dir: str | Path) -> dict:
    """status.json, corrected when it says running but the process that wrote it is gone.

    A status.json whose fields are of the wrong types is reported as state "damaged" with the reason
    in "error", so the run is listed as such and nothing else breaks on it.
    """
    run_dir = Path(run_dir)
    try:
        status = parse_json((run_dir / STATUS).read_text(encoding="utf-8"))
    except OSError:
        return {"state": "none"} if not (run_dir / CONFIG).exists() else {"state": "unknown"}
    except ValueError:  # written atomically, so never torn: someone or something else wrote it
        return {"state": "damaged", "error": f"{STATUS} is not valid JSON"}
    damage = _damaged_status(run_dir, status)
    if damage:
        return {"state": "damaged", "error": damage}
    if status.get("state") in ACTIVE_STATES and owner_process(run_dir) is None:
        status = {**status, "state": "failed",
                  "error": f"the training process (pid {status.get('pid')}) ended without finishing "
                           "(killed or crashed); resume it to carry on from the last checkpoint"}
    return status


def update_status(run_dir: str | Path, **fields: Any) -> dict:
    status = read_json(Path(run_dir) / STATUS, default={})
    if not isinstance(status, dict):
        status = {}
    if fields.get("pid") == os.getpid():  # a process recording itself: its start time goes beside its pid
        fields.setdefault("pid_start", process_start_time(os.getpid()))
    status.update(fields, updated=time.time())
    write_json(Path(run_dir) / STATUS, status)
    return status



def is_utf8_name(name: str) -> bool:
    """False for a file name with bytes that are not UTF-8 (made outside the app, e.g. with a bytes
    path): no page, JSON file or browser can show it, so such folders are not listed."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_name(path: str | Path) -> str:
    """A path's name fit to show anywhere: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(Path(path).name).decode("utf-8", errors="replace")


def list_runs(runs_root: str | Path, *, every_name: bool = False) -> list[Path]:
    """Run folders under a root, newest first, including a run launched a moment ago that has no
    config.json yet (its status.json says it is starting).

    A folder whose name is not UTF-8 is left out (see `is_utf8_name`) unless `every_name` is set,
    as for the one-run-at-a-time check, which must see a training process in any folder."""
    root = Path(runs_root)
    try:
        found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                 and (every_name or is_utf8_name(p.name))
                 and ((p / CONFIG).exists() or (p / STATUS).exists())]
    except OSError:  # no runs folder yet, or unreadable
        return []

    def started(run: Path) -> float:
        marker = run / CONFIG if (run / CONFIG).exists() else run / STATUS
        try:
            return marker.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=started, reverse=True)


RESULTS = (METRICS, MODEL, CHECKPOINT_DIR)


def results_in(run_dir: str | Path) -> list[str]:
    """What a training attempt has left in the folder (metrics, model, checkpoint): training afresh
    would replace these. config.json, status.json and train.log alone are not results."""
    return [name for name in RESULTS if (Path(run_dir) / name).exists()]


SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def refuse_saved_model(path: str | Path) -> None:
    """Raise ValueError when the path is a TensorFlow SavedModel (its folder or its saved_model.pb).

    A SavedModel is a TensorFlow graph, and a graph can hold operations that read and write files
    when it is loaded or run; model files are data here, never code, and nothing proves that a
    SavedModel came from this program's export, so none is run.
    """
    path = Path(path)
    if path.name in SAVED_MODEL_FILES or (path.is_dir() and any((path / name).exists() for name in SAVED_MODEL_FILES)):
        raise ValueError(f"{path}: a TensorFlow SavedModel is refused as input: it is a TensorFlow graph, which can "
                         "read and write files when it runs, and model files are data, never code here; use the "
                         f"run's {MODEL} (loaded in Keras' safe mode) or a .tflite export "
                         "(python -m facetracker export --format tflite)")


def find_model(path: str | Path) -> Path:
    """A model file from a path that may be a run folder. A SavedModel is refused (see refuse_saved_model)."""
    path = Path(path)
    if path.is_dir() and (path / MODEL).exists():
        return path / MODEL
    refuse_saved_model(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: this run folder has no {MODEL} yet (has training finished an epoch?)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    return path


def remove_dead_temps(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files a writer left when it died mid-write (a kill -9 between writing and
    renaming), in the run folder and its checkpoint; a process that has just taken the run over calls
    this, so a killed run's copy or resume carries no leftovers. A temp of a live writer is kept."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        for temp, _ in atomic.dead_temps(folder):
            with contextlib.suppress(OSError):
                temp.unlink()
                removed.append(temp)
    return removed
