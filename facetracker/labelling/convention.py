"""Where a dataset draws its boxes, learnt from its labelled faces, so a detector's boxes can follow it.

People label faces differently: brow to chin, hairline to chin, the whole head. A detector trained
elsewhere (YuNet: forehead to chin) agrees with them on *where* a face is but not on its edges. Each
edge of a labelled box, measured from the detector's box for the same face in units of that box's
size, is nearly constant within one dataset; its median over the labelled faces is the dataset's
convention, and applying it moves a detector's box onto that convention.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from facetracker.boxes import AnyBox as Box

# Fewer pairs than this and the median is one person's quirk, not the dataset's habit.
MIN_PAIRS = 3


@dataclasses.dataclass(frozen=True)
class BoxConvention:
    """Edge offsets (left, top, right, bottom) in units of the detector box's width or height."""

    offsets: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    pairs: int = 0
    """How many labelled faces it was learnt from (0: the detector's own boxes, unchanged)."""

    def apply(self, box: Box, width: int | None = None, height: int | None = None) -> tuple[float, ...]:
        """The box moved onto the convention, clipped to the image when its size is given."""
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = x1 - x0, y1 - y0
        left, top, right, bottom = self.offsets
        moved = [x0 + left * w, y0 + top * h, x1 + right * w, y1 + bottom * h]
        if width is not None and height is not None:
            moved = [min(max(moved[0], 0.0), width), min(max(moved[1], 0.0), height),
                     min(max(moved[2], 0.0), width), min(max(moved[3], 0.0), height)]
        return tuple(moved)


def fit_convention(pairs: Iterable[tuple[Box, Box]]) -> BoxConvention:
    """The convention from (detector box, labelled box) pairs of the same faces.

    Medians, not means: one mislabelled or mismatched face must not pull every later box.
    """
    rows = []
    for detected, labelled in pairs:
        x0, y0, x1, y1 = (float(v) for v in detected)
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        lx0, ly0, lx1, ly1 = (float(v) for v in labelled)
        rows.append(((lx0 - x0) / w, (ly0 - y0) / h, (lx1 - x1) / w, (ly1 - y1) / h))
    if len(rows) < MIN_PAIRS:
        return BoxConvention()
    offsets = np.median(np.asarray(rows), axis=0)
    return BoxConvention(tuple(float(v) for v in offsets), len(rows))
