"""Which process is which: alive, its start time (so a reused pid is never mistaken for it), and
signalling it only when it is still the same process."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


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
