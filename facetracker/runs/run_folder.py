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
                   time and the folder it was taken in (see `acquire_lock`)
    STOP           created by anyone who wants the run to stop

Writers replace files with `os.replace`, so a reader never sees half a file and a kill never
leaves a corrupt model behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from facetracker.config.jsonconfig import parse_json
from facetracker.io import atomic

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
LOCK = "run.lock"
STOP = "STOP"

ACTIVE_STATES = ("starting", "running")


class RunLocked(RuntimeError):
    """Another live process owns this run folder."""


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


# ------------------------------------------------------------------------------------------------
# Which process owns a run. Only the holder of the OS lock (flock) on the run's run.lock: the kernel
# drops it when the process dies, and a copy of the folder (`cp -r` of a live run) copies the file
# but never the lock. A pid written in a file is never enough to signal a process: after a kill -9
# the number can be given to an unrelated process, and a copied status.json names the original's
# live trainer. The holder writes its pid, its start time and the identity of the folder it locked
# into run.lock, and all three are checked before the pid is believed or signalled.


def pid_alive(pid: int | None) -> bool:
    """Some process (any process) has this pid and is not a zombie; says nothing about whose it is."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_start_time(pid: int | None) -> int | str | None:
    """When the process with this pid started (clock ticks after boot, /proc/<pid>/stat field 22).

    Together with the pid it names one process for the machine's uptime. None when there is no such
    process. Without /proc (macOS) `ps` gives the start time to the second.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): field 22 is fields[19]
        return None if fields[0] == "Z" else int(fields[19])
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    try:
        started = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return started or None


def is_same_process(pid: Any, start: Any) -> bool:
    """The process with this pid is the one that started at `start`; a pid without a start time is not trusted."""
    if start is None or not isinstance(pid, int) or isinstance(pid, bool):
        return False
    return pid_alive(pid) and process_start_time(pid) == start


def signal_process(pid: int, start: Any, signum: int = signal.SIGTERM) -> bool:
    """Send `signum` to the process only if it is still the one that started at `start`; True if sent.

    With a pidfd the check and the signal name the same process, so a pid reused in between cannot
    be hit.
    """
    if not is_same_process(pid, start):
        return False
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None
        if pidfd is not None:
            try:
                # The pidfd names whatever had the pid when it was opened; if that still has our
                # start time now, it is our process (a pid is not reused while its process lives).
                if process_start_time(pid) != start:
                    return False
                signal.pidfd_send_signal(pidfd, signum)
                return True
            except ProcessLookupError:
                return False
            finally:
                os.close(pidfd)
    if process_start_time(pid) != start:
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


LOCK_FD_ENV = "FACETRACKER_RUN_LOCK_FD"
"""Set by the launcher for the training process it starts: the number of the inherited file
descriptor that already holds the run's lock (see `lock_for_child`)."""
STARTING_MARK = "starting"
"""The last line of run.lock while the launcher holds the lock for a process that has not taken it
over yet (still importing TensorFlow, before its SIGTERM handler is installed)."""


def _folder_identity(run_dir: str | Path) -> str | None:
    """The run folder as the file system knows it (device and inode): a copy is another folder,
    a moved or linked-to one the same."""
    try:
        found = os.stat(run_dir)
    except OSError:
        return None
    return f"{found.st_dev}:{found.st_ino}"


def _lock_record(run_dir: str | Path) -> tuple[int | None, Any, str | None, bool]:
    """What the lock's holder wrote into run.lock: pid, start time, folder identity and whether the
    launcher still holds it for a process starting up ((None, None, None, False) when unreadable)."""
    try:
        lines = (Path(run_dir) / LOCK).read_text(encoding="utf-8", errors="replace").splitlines()
        parts = lines[0].split(maxsplit=1)
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None, None, None, False
    start: Any = parts[1].strip() if len(parts) > 1 else None
    with contextlib.suppress(TypeError, ValueError):
        start = int(start)
    folder = next((line.split(maxsplit=1)[1].strip() for line in lines[1:]
                   if line.startswith("folder ") and len(line.split()) > 1), None)
    return pid, start, folder, STARTING_MARK in (line.strip() for line in lines[1:])


def _write_lock_record(fd: int, run_dir: str | Path, pid: int, start: Any, starting: bool = False) -> None:
    record = f"{pid} {start}\nfolder {_folder_identity(run_dir)}\n" + (f"{STARTING_MARK}\n" if starting else "")
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)


def lock_held(run_dir: str | Path) -> bool:
    """Some live process holds the OS lock on run.lock (the kernel drops it when the process dies)."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # A shared probe: it conflicts only with the owner's exclusive lock. acquire_lock retries
        # for a moment, so a probe that happens to hold it then does not turn a starting run away.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _owner_record(run_dir: str | Path) -> tuple[int, Any, bool] | None:
    """(pid, start time, still starting) of the live process holding this folder's run lock, or None."""
    if not lock_held(run_dir):
        return None
    for _ in range(20):  # the owner writes its record just after taking the lock: wait for it, briefly
        pid, start, folder, starting = _lock_record(run_dir)
        if pid is not None:
            # A lock taken in another folder (run.lock hard-linked into a copy) is not this folder's.
            if folder is not None and folder != _folder_identity(run_dir):
                return None
            return (pid, start, starting) if is_same_process(pid, start) else None
        time.sleep(0.01)
    return None


def lock_owner(run_dir: str | Path) -> int | None:
    """The pid of the live process holding the run lock, or None when nobody holds it."""
    owner = _owner_record(run_dir)
    return owner[0] if owner else None


def owner_process(run_dir: str | Path) -> tuple[int, Any] | None:
    """(pid, start time) of the live process that owns the run folder, or None.

    Only the holder of the run lock: from the moment the launcher starts a training process (it
    takes the lock and hands it over, see `lock_for_child`) until that process ends. What
    status.json says about a pid is never enough: a copied run folder carries the original's.
    """
    owner = _owner_record(run_dir)
    return (owner[0], owner[1]) if owner else None


def owner_is_starting(run_dir: str | Path) -> bool:
    """The run's lock is held for a process the launcher started that has not taken it over yet
    (it is still importing; a signal ends it at once and nothing is lost)."""
    owner = _owner_record(run_dir)
    return bool(owner and owner[2])


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


# The run locks this process holds: path -> open file descriptor (closing it would drop the lock).
_held_locks: dict[str, int] = {}
# How long acquire_lock keeps trying: long enough to outlast another viewer's liveness probe.
LOCK_RETRY_S = 0.2


def _take_lock(run_dir: str | Path) -> int:
    """An open descriptor of run.lock holding its exclusive lock, or RunLocked after LOCK_RETRY_S.

    The lock is an OS lock (flock) on run.lock: taking it is atomic, so of any number of processes
    started at once exactly one wins, and a lock left by a killed process is free (the kernel
    dropped it), so a stale run.lock is simply locked again, never unlinked by a newcomer. Only the
    owner removes run.lock, while still holding it; whoever locked the removed file then sees that
    it is no longer the one at the path and tries again on the new one.
    """
    path = Path(run_dir) / LOCK
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                owner = lock_owner(run_dir)
                who = f"pid {owner}" if owner else "another process"
                raise RunLocked(f"{run_dir}: another training process ({who}) is using this run folder") from None
            time.sleep(0.01)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if not same_file:  # its owner removed it as we locked it: lock the one at the path now
            os.close(fd)
            continue
        return fd


def _inherited_lock(run_dir: str | Path) -> int | None:
    """The descriptor the launcher handed down holding this folder's run lock (see
    `lock_for_child`), or None when this process was not started for this folder."""
    number = os.environ.get(LOCK_FD_ENV)
    if not number:
        return None
    try:
        fd = int(number)
        if not os.path.samestat(os.fstat(fd), os.stat(Path(run_dir) / LOCK)):
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: succeeds at once
    except (ValueError, OSError):
        return None
    os.environ.pop(LOCK_FD_ENV, None)  # for this process only, not for anything it starts
    os.set_inheritable(fd, False)
    return fd


def acquire_lock(run_dir: str | Path) -> None:
    """Own the run folder for the life of this process, or raise RunLocked if a live process already does.

    A process the launcher started takes over the lock the launcher took for it; any other takes it
    itself (see `_take_lock`). Either way run.lock then names this process and the folder.
    """
    path = Path(run_dir) / LOCK
    key = str(path.resolve())
    if key in _held_locks:
        return
    fd = _inherited_lock(run_dir)
    if fd is None:
        fd = _take_lock(run_dir)
    try:
        _write_lock_record(fd, run_dir, os.getpid(), process_start_time(os.getpid()))
    except BaseException:
        os.close(fd)
        raise
    _held_locks[key] = fd


def lock_for_child(run_dir: str | Path) -> int:
    """Take the run lock for a process about to be started, so that it owns the run from its first
    instant: pass the returned descriptor to it (`pass_fds`, its number in LOCK_FD_ENV), record it
    with `record_child`, then close it here. The child keeps the lock until it ends, and takes it
    over in `acquire_lock`. Raises RunLocked when a live process holds it."""
    return _take_lock(run_dir)


def record_child(fd: int, run_dir: str | Path, pid: int, start: Any) -> None:
    """Name the started process in run.lock, marked as still starting (see `owner_is_starting`)."""
    _write_lock_record(fd, run_dir, pid, start, starting=True)


def release_lock(run_dir: str | Path) -> None:
    """Give the run folder up (the kernel drops the lock by itself when the process dies)."""
    path = Path(run_dir) / LOCK
    fd = _held_locks.pop(str(path.resolve()), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        path.unlink()  # while still holding it: see acquire_lock
    os.close(fd)


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
