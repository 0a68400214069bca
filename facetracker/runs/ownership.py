"""Which process owns a run. Only the holder of the OS lock (flock) on the run's run.lock: the kernel
drops it when the process dies, and a copy of the folder (`cp -r` of a live run) copies the file
but never the lock. A pid written in a file is never enough to signal a process: after a kill -9
the number can be given to an unrelated process, and a copied status.json names the original's
live trainer. The holder writes its pid, its start time and the identity of the folder it locked
into run.lock, and all three are checked before the pid is believed or signalled."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from facetracker.runs.processes import is_same_process, process_start_time

LOCK = "run.lock"


class RunLocked(RuntimeError):
    """Another live process owns this run folder."""


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
