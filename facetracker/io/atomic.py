"""Files replaced whole: a reader sees the old content or the new, never half of it.

The content goes to a temporary file in the target's folder (so the rename stays on one file
system), is flushed to disk, and then renamed over the target. A crash, a `kill -9` or a full disk
leaves the previous file as it was. A failed write removes its temporary file; a killed one cannot, so
each temporary file is named after its target and its writer, `.<target>.<pid>-<start>.<random>.tmp`
(the process id and its start time), and `dead_temps` finds those whose writer no longer runs.

A path is written as `open(path, "w")` would write it: a symbolic link is followed and the file it
names is replaced (the link stays a link); a special file (`/dev/stdout`, `/dev/null`, a FIFO, a
device) is written into directly, since renaming over it would replace the device node itself with
a regular file. Only a regular file, or nothing, is ever replaced. Every writer that replaces a
file goes through here, also those whose content a library writes to a path (`replacing`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

NEW_FILE_MODE = 0o644
"""The mode of a new file (mkstemp makes its temporary file 0600); a replaced file keeps its own."""


def _where(path: str | Path) -> tuple[Path, bool, int]:
    """(the path to write, whether to write into it in place, the mode a replacement gets).

    A path whose file exists and is not a regular file is written in place. Otherwise every
    symbolic link is followed to the file it names, which is then replaced (or made). A link the
    kernel alone can follow (`/dev/stdout` is `/proc/self/fd/1`) is written through in place too.
    An error to follow the path (a link loop: ELOOP) is raised as `open()` raises it.
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode):
        return Path(path), True, 0
    target = Path(os.path.realpath(path))
    if found is None:
        return target, False, NEW_FILE_MODE
    try:
        same = os.path.samestat(found, os.stat(target))
    except OSError:
        same = False
    if not same:
        return Path(path), True, 0
    return target, False, stat.S_IMODE(found.st_mode)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

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


def _stage(target: Path, content: bytes, mode: int, named: Path) -> Path:
    """`content` in a hidden temporary file beside `target`, flushed to disk, with `mode`; an error
    names `named` (the path the caller was given)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{writer_tag()}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _naming(error, named) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, named) from None
        raise
    return Path(tmp)


def stage_bytes(path: str | Path, content: bytes) -> Path:
    """`content` in a hidden temporary file beside the file `path` names (through symbolic links),
    flushed to disk, with the mode the file would get. The caller renames it onto
    `staged_target(path)` or removes it. An error names `path`."""
    target, _, mode = _where(path)
    return _stage(target, content, mode or NEW_FILE_MODE, Path(path))


def staged_target(path: str | Path) -> Path:
    """Where a file staged for `path` is renamed to: the file `path` names, through symbolic links."""
    return _where(path)[0]


def write_bytes(path: str | Path, content: bytes) -> None:
    """Write `content` to `path`: atomically for a regular file (or none yet), directly into a
    special file; through symbolic links to the file they name. An error names `path`."""
    target, in_place, mode = _where(path)
    if in_place:
        try:
            with open(target, "wb") as handle:  # a folder raises IsADirectoryError here, as open() does
                handle.write(content)
        except OSError as error:
            raise _naming(error, Path(path)) from None
        return
    tmp = _stage(target, content, mode, Path(path))
    try:
        os.replace(tmp, target)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, Path(path)) from None
        raise


def write_text(path: str | Path, text: str) -> None:
    """`write_bytes` of `text` in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def replacing(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path for a library that writes a file by name (Keras, tf2onnx); once the block
    ends without an error, its content takes `path`'s place as `write_bytes` would put it there.

    `suffix` ends the temporary name (".keras": Keras picks the format from it). On an error the
    temporary file is removed and `path` is left as it was.
    """
    target, in_place, mode = _where(path)
    folder = Path(tempfile.gettempdir()) if in_place else target.parent
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.{writer_tag()}.", suffix=f"{TEMP_SUFFIX}{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if in_place:
            with open(tmp, "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            tmp.unlink()
            return
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
