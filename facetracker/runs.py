"""A run folder is how a training process talks to everyone else (the app, the CLI, a later resume).

    config.json    everything needed to repeat the run        (written once, atomically)
    split.json     which image went to train / val / test
    status.json    state, progress, ETA, error                 (rewritten atomically)
    metrics.jsonl  one JSON object per line, appended          (readers skip a torn last line)
    checkpoint/    last epoch's model with optimiser state     (for --resume)
    model.keras    best epoch by validation mean IoU
    train.log      the process's output, when the app started it
    run.lock       pid of the process that owns the run
    STOP           created by anyone who wants the run to stop

Writers replace files with `os.replace`, so a reader never sees half a file and a kill never
leaves a corrupt model behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = "config.json"
SPLIT = "split.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_MODEL = "checkpoint/model.keras"
CHECKPOINT_STATE = "checkpoint/state.json"
LOG = "train.log"
LOCK = "run.lock"
STOP = "STOP"

ACTIVE_STATES = ("starting", "running")


class RunLocked(RuntimeError):
    """Another live process owns this run folder."""


class RunFolderError(RuntimeError):
    """The run folder cannot be made or written (read-only, full, or its path runs through a file)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_metrics(run_dir: str | Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete line of metrics.jsonl; a line still being written is left for next time."""
    try:
        text = (Path(run_dir) / METRICS).read_text(encoding="utf-8")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_status(run_dir: str | Path) -> dict:
    """status.json, corrected when it says running but the process that wrote it is gone."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / STATUS, default=None)
    if not isinstance(status, dict):
        return {"state": "none"} if not (run_dir / CONFIG).exists() else {"state": "unknown"}
    if status.get("state") in ACTIVE_STATES and not pid_alive(status.get("pid")):
        status = {**status, "state": "failed",
                  "error": f"the training process (pid {status.get('pid')}) ended without finishing "
                           "(killed or crashed); resume it to carry on from the last checkpoint"}
    return status


def update_status(run_dir: str | Path, **fields: Any) -> dict:
    status = read_json(Path(run_dir) / STATUS, default={}) or {}
    status.update(fields, updated=time.time())
    write_json(Path(run_dir) / STATUS, status)
    return status


def acquire_lock(run_dir: str | Path) -> None:
    """Own the run folder, or raise RunLocked if a live process already does.

    O_EXCL makes the create atomic, so two processes started at once cannot both win; a lock left
    by a dead process is taken over.
    """
    lock = Path(run_dir) / LOCK
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and pid_alive(owner):
                raise RunLocked(f"{run_dir}: another training process (pid {owner}) is using this run folder")
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return
    raise RunLocked(f"{run_dir}: could not take the run lock")


def release_lock(run_dir: str | Path) -> None:
    lock = Path(run_dir) / LOCK
    try:
        if int(lock.read_text().strip()) == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


def lock_owner(run_dir: str | Path) -> int | None:
    try:
        owner = int((Path(run_dir) / LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    return owner if pid_alive(owner) else None


def list_runs(runs_root: str | Path) -> list[Path]:
    """Run folders under a root, newest first, including a run launched a moment ago that has no
    config.json yet (its status.json says it is starting)."""
    root = Path(runs_root)
    try:
        found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
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


def find_model(path: str | Path) -> Path:
    """A model file from a path that may be a run folder."""
    path = Path(path)
    if path.is_dir() and (path / MODEL).exists():
        return path / MODEL
    if path.is_dir() and (path / "saved_model.pb").exists():
        return path
    if path.is_dir():
        raise FileNotFoundError(f"{path}: this run folder has no {MODEL} yet (has training finished an epoch?)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    return path
