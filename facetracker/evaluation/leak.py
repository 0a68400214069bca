"""The leak of a face-hiding run: how often a labelled face was not hidden.

A face-frame (one labelled face in one frame) leaks when less than `COVERED_ENOUGH` of its box, the
part inside the frame, is covered. The leak is the share of labelled face-frames that leak; a tool
that hides frame by frame and one that tracks faces are compared on the same detections.

Labels are MOTChallenge ground truth, the field's format for boxes in video (`gt.txt`): one line per
face per frame, `frame, id, left, top, width, height[, consider, class, visibility]`, frames counted
from 1, pixels; a line whose `consider` flag is 0 is not counted (as in MOTChallenge).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from facetracker.inference.blur import Cover

COVERED_ENOUGH = 0.9
"""A face counts as hidden when at least this share of its box is covered."""


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    frame: int
    """From 0, the first frame of the video."""
    face: int
    box: tuple[float, float, float, float]
    """Corners (x0, y0, x1, y1) in the frame's pixels."""


def read_mot_labels(path: str | Path) -> list[FaceFrame]:
    """The face-frames of a MOTChallenge ground-truth file; ValueError naming the file and line for a
    line that is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of MOTChallenge boxes (frame, id, left, top, width, height)") \
            from None
    found = []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 6:
            raise ValueError(f"{path}, line {number}: {len(row)} fields; a MOTChallenge line has at least 6 "
                             "(frame, id, left, top, width, height)")
        try:
            values = [float(value) for value in row[:7]]
        except ValueError:
            raise ValueError(f"{path}, line {number}: a field is not a number") from None
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"{path}, line {number}: a field is not a finite number")
        frame, face, left, top, width, height = values[:6]
        if frame < 1 or frame != int(frame):
            raise ValueError(f"{path}, line {number}: frame {row[0].strip()} is not a frame number (from 1)")
        if width <= 0 or height <= 0:
            raise ValueError(f"{path}, line {number}: a box of {width:g}x{height:g} px")
        if len(values) > 6 and values[6] == 0:  # MOTChallenge: not to be considered
            continue
        found.append(FaceFrame(int(frame) - 1, int(face), (left, top, left + width, top + height)))
    return found


def covered_share(box: Sequence[float], covered: np.ndarray) -> float | None:
    """The share of the box's pixels (those inside the frame) that `covered` marks; None when no
    pixel of the box is inside the frame."""
    height, width = covered.shape
    x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
    x1, y1 = min(width, round(box[2])), min(height, round(box[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    return float(covered[y0:y1, x0:x1].mean())


@dataclasses.dataclass(frozen=True)
class Leak:
    face_frames: int
    """Labelled face-frames inside the video's frames."""
    leaked: int
    frames: int
    covered_area: float
    """Mean share of a frame's area that is covered: the price of the margins and the whole frames."""
    whole_frames: int

    @property
    def rate(self) -> float:
        return self.leaked / self.face_frames if self.face_frames else 0.0

    def describe(self) -> str:
        return (f"{100 * self.rate:.2f}% of {self.face_frames} labelled face-frames leaked ({self.leaked}); "
                f"{100 * self.covered_area:.1f}% of the picture covered on average, "
                f"the whole frame in {self.whole_frames} of {self.frames} frames")


def measure_leak(covers: Sequence[Cover], labels: Sequence[FaceFrame], size: tuple[int, int],
                 labels_name: str = "the labels") -> Leak:
    """The leak of the covers (one per frame, in order) of a video of `size` (width, height) against
    its labelled face-frames. ValueError when a label is for a frame the video does not have."""
    width, height = size
    by_frame: dict[int, list[FaceFrame]] = {}
    for face in labels:
        if face.frame >= len(covers):
            raise ValueError(f"{labels_name}: a face is labelled in frame {face.frame + 1}, but the video has "
                             f"{len(covers)} frames")
        by_frame.setdefault(face.frame, []).append(face)
    counted = leaked = 0
    area = 0.0
    for index, cover in enumerate(covers):
        covered = cover.mask(width, height)
        area += float(covered.mean())
        for face in by_frame.get(index, ()):
            share = covered_share(face.box, covered)
            if share is None:  # the label lies wholly outside the frame: no face to hide
                continue
            counted += 1
            leaked += share < COVERED_ENOUGH
    return Leak(counted, leaked, len(covers), area / len(covers) if covers else 0.0,
                sum(cover.whole_frame for cover in covers))
