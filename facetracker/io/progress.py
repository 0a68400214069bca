"""One progress bar for every long command: a `tqdm` bar on stderr, drawn only when stderr is a
terminal, so that CI logs and captured output stay as they were.

The package's long jobs report progress through a `progress(done, total)` callback; `progress_bar`
is such a callback, drawn as a bar:

    with progress_bar("every face", unit="photo") as progress:
        evaluate_faces(model, data, progress=progress)
"""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Iterator


class ProgressBar:
    """A `progress(done, total)` callback that moves a tqdm bar (or nothing, when it is off)."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def __call__(self, done: int, total: int | None = None) -> None:
        """`done` of `total` (None: not known); a count lower than the last starts the bar again."""
        if self.bar is None:
            return
        if done < self.bar.n:  # a new pass over the photos
            self.bar.reset(total)
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        if done != self.bar.n:
            self.bar.update(done - self.bar.n)


def shown(stream: IO | None = None) -> bool:
    """Whether a bar would be drawn on `stream` (stderr by default): only on a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "photo",
                 stream: IO | None = None) -> Iterator[ProgressBar]:
    """A bar named `description` on stderr (or `stream`) while the block runs, closed after it;
    when the stream is no terminal, a callback that does nothing."""
    stream = sys.stderr if stream is None else stream
    if not shown(stream):
        yield ProgressBar(None)
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, file=stream, dynamic_ncols=True, leave=False)
    try:
        yield ProgressBar(bar)
    finally:
        bar.close()
