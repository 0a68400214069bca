"""Files replaced whole: a reader sees the old content or the new, never half of it.

The content goes to a temporary file in the same folder (so the rename stays on one file system),
is flushed to disk, and then renamed over the target. A crash, a `kill -9` or a full disk leaves
the previous file as it was. A failed write removes its temporary file; a killed one cannot, so
each temporary file is named after its target and its writer, `.<target>.<pid>-<start>.<random>.tmp`
(the process id and its start time), and `dead_temps` finds those whose writer no longer runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TEMP_SUFFIX = ".tmp"
UNTAGGED_STALE_S = 3600.0
"""A temporary file without a writer in its name (written before names carried one) is left alone
for this long: no write takes an hour."""


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot, /proc/<pid>/stat field 22); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_tag() -> str:
    """`<pid>-<start time>` of this process (the pid alone where the start time cannot be read)."""
    pid = os.getpid()
    start = _start_time(pid)
    return f"{pid}-{start}" if start is not None else str(pid)


def _writer_alive(tag: str) -> bool:
    pid_text, _, start_text = tag.partition("-")
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, ValueError):
        return False
    if not start_text:
        return True
    start = _start_time(pid)
    return start is None or start == int(start_text)  # a pid now given to another process: that writer died


def stage_bytes(path: str | Path, content: bytes) -> Path:
    """`content` in a hidden temporary file beside `path`, flushed to disk (mode 0644, like a file
    written the usual way). The caller renames it onto `path` or removes it. An error names `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer_tag()}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, path) from None
        raise
    return Path(tmp)


def write_bytes(path: str | Path, content: bytes) -> None:
    """Replace `path` with `content` atomically."""
    path = Path(path)
    tmp = stage_bytes(path, content)
    try:
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, path) from None
        raise


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (same errno, same subclass) naming the file it was writing, which a failed
    write(2) or fsync(2) does not."""
    if error.filename is not None:
        return error
    return OSError(error.errno, error.strerror, str(path)) if error.errno is not None else error


def temp_target(temp: str | Path) -> tuple[str, str | None] | None:
    """(the target's file name, the writer's tag or None) of one of our temporary files, else None."""
    name = Path(temp).name
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    parts = name[1:-len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) == 3 and parts[1].replace("-", "", 1).isdigit():
        return parts[0], parts[1]
    parts = name[1:-len(TEMP_SUFFIX)].rsplit(".", 1)  # an older name: `.<target>.<random>.tmp`
    return (parts[0], None) if len(parts) == 2 and parts[0] else None


def dead_temps(folder: str | Path) -> list[tuple[Path, str]]:
    """(temporary file, its target's name) for each temporary file in the folder whose writer no
    longer runs (or, for a name without a writer, that is older than UNTAGGED_STALE_S)."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        parsed = temp_target(entry.name)
        if parsed is None or not entry.is_file(follow_symlinks=False):
            continue
        target, tag = parsed
        if tag is not None:
            dead = not _writer_alive(tag)
        else:
            try:
                dead = time.time() - entry.stat(follow_symlinks=False).st_mtime > UNTAGGED_STALE_S
            except OSError:
                continue
        if dead:
            found.append((Path(entry.path), target))
    return found
