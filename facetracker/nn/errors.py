"""A failure of a run told in one line, for its log and its status."""

from __future__ import annotations

import errno
import traceback


def describe_error(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, OSError) and error.errno == 28:
        return (f"the disk is full ({error.filename or 'while writing'}); model.keras and the checkpoint keep "
                "their last complete version")
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to the run folder ({error.strerror}: {error.filename})"
    if isinstance(error, OSError) and error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot make the run folder ({error.strerror}: {error.filename})"
    if isinstance(error, (ValueError, RuntimeError, FileNotFoundError)) and str(error):
        return str(error).splitlines()[0]
    return "".join(traceback.format_exception_only(type(error), error)).strip()
