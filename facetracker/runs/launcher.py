"""Start, stop and resume a training run as its own process, so closing a browser never stops it.

The app does not train in its own process: it writes the run's `TrainConfig` as `<run_dir>/config.json`
and runs `python -m facetracker train --run-dir DIR` (the same command a person would type; a resume
adds `--resume`) in a new session, with its output in `<run_dir>/train.log`. Everything the app shows
afterwards comes from the run folder (see `facetracker.runs.run_folder`), so a reload or a second browser tab
finds the live run and never starts another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from facetracker.config.training import TrainConfig
from facetracker.runs import ownership, processes
from facetracker.runs import run_folder as runs

LAUNCH_LOCK = ".launch.lock"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# A run that has not taken over the lock the launcher took for it is still importing TensorFlow: it
# has not installed its SIGTERM handler, so a signal ends it at once and nothing is lost.
EARLY_EXIT_WAIT_S = 5.0


def live_pid(run_dir: str | Path) -> int | None:
    """The pid of the live process that owns the run folder, or None when nobody trains in it.

    Never a recorded pid: the holder of the run lock (see `ownership.owner_process`).
    """
    owner = ownership.owner_process(Path(run_dir))
    return owner[0] if owner else None


def live_runs(runs_root: str | Path) -> list[Path]:
    """Run folders under the root with a live training process."""
    return [run for run in runs.list_runs(runs_root, every_name=True) if live_pid(run)]


def new_run_name(runs_root: str | Path, data: str | Path, backbone: str | None) -> str:
    """`<dataset>-<backbone>-<date-time>`: readable in a list, unique under the root."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(data).name}-{backbone or 'preset'}").strip("-.") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{base}-{stamp}"
    suffix = 1
    while (Path(runs_root) / name).exists():
        suffix += 1
        name = f"{base}-{stamp}-{suffix}"
    return name


@contextlib.contextmanager
def _launch_lock(runs_root: Path) -> Iterator[None]:
    """Serialise check-then-spawn across threads and processes (two tabs clicking Start together)."""
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / LAUNCH_LOCK, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def train_command(run_dir: Path, *, resume: bool = False) -> list[str]:
    """The `python -m facetracker train` command line for a run folder holding its config.json."""
    return [sys.executable, "-m", "facetracker", "train", "--run-dir", str(run_dir)] + (["--resume"] if resume else [])


def child_environment() -> dict[str, str]:
    """This process's environment for a child `python -m facetracker...`: the package importable
    from wherever the child starts, whether or not it is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
    return env


def _spawn(run_dir: Path, command: list[str]) -> int:
    """Start `command` as the run's owner: it inherits the run lock, taken here, so it owns the run
    from its first instant (before it has imported anything), and nobody else can."""
    env = child_environment()
    env.setdefault("PYTHONUNBUFFERED", "1")
    lock = ownership.lock_for_child(run_dir)
    try:
        env[ownership.LOCK_FD_ENV] = str(lock)
        with open(run_dir / runs.LOG, "ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=str(PACKAGE_PARENT), env=env, start_new_session=True, pass_fds=(lock,))
        # Its start time, read before anything can reap it, names this process and no later one
        # that is given the same pid.
        start = processes.process_start_time(process.pid)
        ownership.record_child(lock, run_dir, process.pid, start)
    finally:
        os.close(lock)  # the child holds the lock now; it drops when the child ends
    runs.update_status(run_dir, state="starting", pid=process.pid, pid_start=start)
    # Reap it when it ends, or it stays a zombie of the app's process until the app exits.
    threading.Thread(target=process.wait, name=f"reap-train-{process.pid}", daemon=True).start()
    return process.pid


def _refuse_if_busy(run_dir: Path, runs_root: Path, exclusive: bool) -> None:
    pid = live_pid(run_dir)
    if pid:
        raise ownership.RunLocked(f"{run_dir.name} is already training (process {pid}); stop it before starting it again")
    if exclusive:
        others = [run for run in live_runs(runs_root) if run.resolve() != run_dir.resolve()]
        if others:
            raise ownership.RunLocked(f"{runs.display_name(others[0])} is training right now; one run at a time shares this "
                                 "machine's cores, so stop it or wait for it to finish")


def start_run(runs_root: str | Path, name: str, config: TrainConfig, *, exclusive: bool = True) -> Path:
    """Launch a new training run of `config` in `<runs_root>/<name>`; returns the run folder.

    The config is written as the run's config.json before the process starts, which trains from it.
    Raises `ownership.RunLocked` when that folder (or, with `exclusive`, any run under the root) has a
    live training process, and FileExistsError when the folder is already used by a past run.
    """
    runs_root = Path(runs_root)
    if len(name) > 100:
        raise ValueError(f"a run name can have at most 100 characters; this one has {len(name):,}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    run_dir = runs_root / name
    data = str(Path(config.data).resolve())
    with _launch_lock(runs_root):
        _refuse_if_busy(run_dir, runs_root, exclusive)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir.name}: a run of that name exists; pick another name or resume it")
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(run_dir / runs.CONFIG, config.replace(data=data).to_json())
        pid = _spawn(run_dir, train_command(run_dir))
        # Written before the child runs, so every viewer sees a live run from this instant on.
        runs.update_status(run_dir, state="starting", pid=pid, started=time.time(), error=None,
                           message="starting the training process", data=data, epochs=config.epochs)
    return run_dir


def resume_run(run_dir: str | Path, *, epochs: int | None = None, exclusive: bool = True) -> Path:
    """Carry on a stopped, failed or finished run in a new process: from its last checkpoint, or
    from the start when it ended before its first epoch finished.

    A new epoch count is written to config.json before the process starts, so a later resume
    carries on towards it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir.name}: nothing to resume (no {runs.CONFIG})")
    with _launch_lock(run_dir.parent):
        _refuse_if_busy(run_dir, run_dir.parent, exclusive)
        config = TrainConfig.load(run_dir / runs.CONFIG)
        if epochs is not None and epochs != config.epochs:
            config = config.replace(epochs=epochs)
            config.validate(f"{run_dir.name}: resume")
            runs.atomic_write_text(run_dir / runs.CONFIG, config.to_json())
        (run_dir / runs.STOP).unlink(missing_ok=True)
        pid = _spawn(run_dir, train_command(run_dir, resume=True))
        how = "resuming from the checkpoint" if (run_dir / runs.CHECKPOINT_MODEL).exists() else "starting over"
        runs.update_status(run_dir, state="starting", pid=pid, error=None, message=how, epochs=config.epochs)
    return run_dir


def stop_run(run_dir: str | Path, *, force: bool = False) -> str:
    """Ask a run to stop; returns what was done, in words.

    The STOP file makes the run finish its current step, save and exit. A process that has not
    started training yet (still importing) is sent SIGTERM, as is any process when `force`. Only
    the holder of the run's lock is ever signalled, never a process because a file names it: a
    copy of a live run folder is not running, and Stop on it leaves the original alone.
    """
    run_dir = Path(run_dir)
    owner = ownership.owner_process(run_dir)
    if not owner:
        return f"{run_dir.name} is not running"
    pid, start = owner
    # Read once: a process that dies of the signal drops the lock at once.
    training = not ownership.owner_is_starting(run_dir)
    runs.atomic_write_text(run_dir / runs.STOP, f"stop requested at {time.ctime()}\n")
    if training and not force:
        return f"asked {run_dir.name} to stop; it saves and exits after the current step"
    if not processes.signal_process(pid, start, signal.SIGTERM):
        return f"{run_dir.name} ended before it could be signalled"
    if training:  # its handler stops it cleanly after the step
        return f"sent SIGTERM to {run_dir.name} (process {pid}); it saves and exits after the current step"
    deadline = time.monotonic() + EARLY_EXIT_WAIT_S
    while processes.is_same_process(pid, start) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not processes.is_same_process(pid, start):
        status = runs.read_json(run_dir / runs.STATUS, {}) or {}
        if isinstance(status, dict) and status.get("state") in runs.ACTIVE_STATES:
            runs.update_status(run_dir, state="stopped", error=None,
                               message="stopped before training began")
    return f"stopped {run_dir.name} before training began"


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    """The end of the run's train.log (what the process printed)."""
    try:
        with open(Path(run_dir) / runs.LOG, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure_reason(run_dir: str | Path) -> str | None:
    """Why a run failed, in one line: the status' error, refined by the CLI's own `error:` line."""
    status = runs.read_status(run_dir)
    if status.get("state") != "failed":
        return None
    error_lines = [line[len("error: "):] for line in log_tail(run_dir, 200).splitlines() if line.startswith("error: ")]
    logged = error_lines[-1] if error_lines else None
    reason = status.get("error")
    # A process that died before train() ran (bad options, import error) only left its words in the log.
    if logged and (not reason or "ended without finishing" in reason):
        return logged
    return reason or logged or "the run failed; see train.log"
