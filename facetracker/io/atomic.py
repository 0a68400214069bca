"""Files replaced whole: a reader sees the old content or the new, never half of it.

The content goes to a temporary file in the target's folder (so the rename stays on one file
system), is flushed to disk, and then renamed over the target. A crash, a `kill -9` or a full disk
leaves the previous file as it was and no temporary file behind.

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


def write_bytes(path: str | Path, content: bytes) -> None:
    """Write `content` to `path`: atomically for a regular file (or none yet), directly into a
    special file; through symbolic links to the file they name."""
    target, in_place, mode = _where(path)
    if in_place:
        with open(target, "wb") as handle:  # a folder raises IsADirectoryError here, as open() does
            handle.write(content)
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=f".tmp{suffix}")
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
