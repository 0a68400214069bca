"""Pre-labels: boxes for photos nobody has labelled yet, from a detector, drawn as the dataset draws them.

The person then only checks each box instead of drawing it. A detector that was trained elsewhere
(YuNet: forehead to chin) finds the faces but places the edges by its own habit; when the dataset
already holds labelled faces, the detector is run on a sample of them and its boxes are moved onto
the dataset's habit (see `facetracker.convention`), so new labels match the old ones.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from facetracker import data as data_lib
from facetracker.convention import BoxConvention, fit_convention
from facetracker.detect import Detection, PixelBox
from facetracker.tracking import iou_matrix

CONVENTION_PHOTOS = 40
"""Labelled photos the convention is learnt from: its medians settle within a few dozen."""
MIN_OVERLAP = 0.2
"""A detected face overlapping a labelled one less than this is another face, not the same one."""


def learn_convention(samples: list[data_lib.Sample], detect: Callable[[np.ndarray], Detection],
                     photos: int = CONVENTION_PHOTOS) -> BoxConvention:
    """The dataset's box convention relative to `detect`'s boxes, from up to `photos` labelled photos
    spread over the dataset. A photo that cannot be read is passed over (the dataset's own listing
    names it)."""
    labelled = [sample for sample in samples if sample.has_face]
    if len(labelled) > photos:
        labelled = [labelled[int(i)] for i in np.linspace(0, len(labelled) - 1, photos)]
    pairs = []
    for sample in labelled:
        try:
            rgb = data_lib.sample_pixels(sample, max_side=640)
        except (ValueError, OSError):
            continue
        height, width = rgb.shape[:2]
        faces = detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)).faces
        if not faces:
            continue
        label = np.array(sample.box) * [width, height, width, height]
        overlaps = iou_matrix(np.array([face.box for face in faces], float), label[None])[:, 0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= MIN_OVERLAP:
            pairs.append((faces[best].box, tuple(label)))
    return fit_convention(pairs)


def prelabel_boxes(frame_bgr: np.ndarray, detect: Callable[[np.ndarray], Detection],
                   convention: BoxConvention = BoxConvention()) -> list[PixelBox]:
    """Every face `detect` finds in the frame, most confident first, moved onto the convention."""
    height, width = frame_bgr.shape[:2]
    boxes = []
    for face in detect(frame_bgr).faces:
        x0, y0, x1, y1 = convention.apply(face.box, width, height)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            boxes.append((int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))))
    return boxes
