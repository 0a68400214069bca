"""Files replaced whole: a reader sees the old content or the new, never half of it.

The content goes to a temporary file in the same folder (so the rename stays on one file system),
is flushed to disk, and then renamed over the target. A crash, a `kill -9` or a full disk leaves
the previous file as it was and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes(path: str | Path, content: bytes) -> None:
    """Replace `path` with `content` atomically (mode 0644, like a file written the usual way)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))
