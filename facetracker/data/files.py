"""Reading a file of a dataset: inside the data root, a regular file, with errors that name the
problem (the one way a dataset's file is opened)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

OUTSIDE_ROOT = "it links outside the data root (the app reads only files inside it)"


class DatasetError(ValueError):
    """A dataset folder that cannot be used at all."""


class ImageError(ValueError):
    """An image file that cannot be decoded; the message is the reason."""


class OutsideRoot(ValueError):
    """A file whose real path (after following symbolic links) lies outside the data root."""


class LabelError(ValueError):
    """A label file that cannot be used; the message is the reason."""



def printable(text: str) -> str:
    """`text` with undecodable bytes of a file name shown as escapes: it can then be printed, written to
    JSON or shown in a browser (a name that is not UTF-8 reaches Python as lone surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are no escaped byte, e.g. from a JSON "\ud800"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def real_path_inside(path: str | Path, root: str | Path | None) -> Path:
    """The path to open: with a root, `path` with every symbolic link followed, refused (`OutsideRoot`)
    when that lies outside the root; without one, `path` as it is (the command line is unconfined)."""
    if root is None:
        return Path(path)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise OutsideRoot(OUTSIDE_ROOT)
    return Path(real)


def open_regular(path: str | Path, root: str | Path | None) -> BinaryIO:
    """Open a file for reading, inside the root (when given), refusing anything but a regular file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    """
    real = real_path_inside(path, root)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if root is not None:  # the checked path has no link left in it: one that appears since is refused
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(real, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(not_regular(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def not_regular(mode: int) -> str:
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "something else")
    return f"{kind}, not a regular file"


def read_bytes(path: str | Path, root: str | Path | None) -> bytes:
    try:
        with open_regular(path, root) as handle:
            return handle.read()
    except ImageError as error:  # a label that is not a regular file: the same words, as a label problem
        raise LabelError(str(error)) from None
