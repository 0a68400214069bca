"""Detectors: faces found on a frame of any size, by a trained model's runtime or a reference detector.

`Detector` wraps a runtime (see `facetracker.inference.runtimes`): it prepares the frame with
`data.model_input` or letterboxes it (the same functions training used), decodes every face of a
dense model, maps boxes back to pixels and optionally smooths a single box over frames. YuNet and
OpenCV's Haar cascade answer through the same `detect(frame) -> Detection`.

The frame path goes one way: the app's pages -> `live` -> `Detector` -> a runtime.
`facetracker.inference.models` is the one door that opens a model for a use.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import cv2
import numpy as np

from facetracker.boxes import PixelBox
from facetracker.data.images import model_input
from facetracker.inference.dense import (
    DEFAULT_THRESHOLD,
    closer_tile_face,
    closer_tiles,
    decode,
    letterbox,
    merge_faces,
    tile_inputs,
)
from facetracker.inference.runtimes import load_runtime
from facetracker.inference.yunet import YuNetDetector

HAAR = "haar"
"""The model key of OpenCV's Haar cascade, the classical baseline that needs no training."""
HAAR_LABEL = "OpenCV Haar cascade"
YUNET = "yunet"
"""The model key of YuNet (see `facetracker.inference.yunet`), the reference detector that ships with the package."""
YUNET_LABEL = "YuNet (OpenCV model zoo)"
REFERENCE_LABELS = {YUNET: YUNET_LABEL, HAAR: HAAR_LABEL}
"""The detectors that need no training, best first: what a trained model is compared with."""

SINGLE_BOX_THRESHOLD = 0.5
"""The face probability from which a single-box model's face counts, unless told otherwise."""


def default_threshold(runtime) -> float:
    """The threshold a model's faces are counted from unless told otherwise: its kind's."""
    return DEFAULT_THRESHOLD if getattr(runtime, "dense", False) else SINGLE_BOX_THRESHOLD




@dataclasses.dataclass(frozen=True)
class FaceBox:
    """One face in a frame: pixel box (x0, y0, x1, y1), score, and the tracker's ID (0: untracked)."""

    box: PixelBox
    score: float
    track_id: int = 0


@dataclasses.dataclass(frozen=True)
class Detection:
    probability: float
    """The most confident face's probability (for a single-box model, its face/no-face output)."""
    box: PixelBox | None
    """Pixel box (x0, y0, x1, y1) of the most confident face when one was found, else None."""
    model_ms: float
    faces: tuple[FaceBox, ...] = ()
    """Every face found, most confident first; a single-box model finds at most one."""

    def __post_init__(self) -> None:
        if not self.faces and self.box is not None:  # a single-box detection is its own one face
            object.__setattr__(self, "faces", (FaceBox(self.box, self.probability),))

    @property
    def found(self) -> bool:
        return self.box is not None


class Detector:
    """Face probability and pixel box for BGR frames of any size.

    Thread-safe: the webcam callback runs in a worker thread. Each viewer has its own Detector (its
    threshold and smoothing) over a runtime shared by all, which serialises its own calls where it
    must; the lock here guards only this detector's smoothing state.
    """

    def __init__(self, runtime_or_path, threshold: float | None = None, smoothing: float = 0.0,
                 look_closer: bool = False):
        self.runtime = runtime_or_path if hasattr(runtime_or_path, "predict") else load_runtime(runtime_or_path)
        self.threshold = default_threshold(self.runtime) if threshold is None else threshold
        """A face counts from this probability; None: the model kind's (`default_threshold`)."""
        self.smoothing = smoothing
        """0 draws each frame's box as it is; towards 1 the box follows the face more slowly but steadily."""
        self.look_closer = look_closer
        """A dense model also searches the frame in tiles at twice the scale (`dense.closer_tiles`)
        and merges the boxes of every pass to one a face (`dense.merge_faces`): for photos, where
        faces half as small are worth about seven model calls. Live video does not."""
        self._lock = threading.Lock()
        self._smoothed: np.ndarray | None = None

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        if getattr(self.runtime, "dense", False):
            return self._detect_every_face(frame_bgr)
        height, width = frame_bgr.shape[:2]
        image = model_input(frame_bgr, self.runtime.input_wh[0], bgr=True)[None]  # a single-box model is square
        start = time.perf_counter()
        out = self.runtime.predict(image)[0]
        model_ms = (time.perf_counter() - start) * 1000
        with self._lock:
            probability = float(out[0])
            box = np.clip(out[1:5], 0.0, 1.0)
            if not (probability >= self.threshold and np.isfinite(out[:5]).all()):  # NaN is no face
                self._smoothed = None
                return Detection(probability, None, model_ms)
            if self.smoothing > 0 and self._smoothed is not None:
                box = self.smoothing * self._smoothed + (1 - self.smoothing) * box
            self._smoothed = box
        x0, y0, x1, y1 = (box * [width, height, width, height]).round().astype(int)
        return Detection(probability, (int(x0), int(y0), int(x1), int(y1)), model_ms)


    def _detect_every_face(self, frame_bgr: np.ndarray) -> Detection:
        """A dense model: the frame letterboxed, every cell's face decoded, overlaps suppressed."""
        size = self.runtime.input_wh
        image, placed = letterbox(frame_bgr, size, bgr=True)
        tiles = closer_tiles(placed.width, placed.height, size) if self.look_closer else []
        tile_images = tile_inputs(frame_bgr, tiles, size, bgr=True)
        start = time.perf_counter()
        rows = self.runtime.predict(image[None])[0]
        # One call per tile: an interpreter resized between batch sizes would reallocate every frame.
        tile_rows = [self.runtime.predict(tile_image[None])[0] for tile_image in tile_images]
        model_ms = (time.perf_counter() - start) * 1000
        boxes, scores = decode(rows, threshold=self.threshold)
        every_box, every_score = [placed.to_frame(boxes)], [scores]
        for tile, cells in zip(tiles, tile_rows):
            boxes, scores = decode(cells, threshold=self.threshold)
            whole = tile.whole(boxes, size)
            every_box.append(tile.to_frame(boxes[whole], size))
            every_score.append(scores[whole])
        if self.look_closer:
            boxes, scores = merge_faces(every_box, every_score, whole_in_tile=closer_tile_face(tiles, size))
        else:
            boxes, scores = every_box[0], every_score[0]
        faces = tuple(FaceBox(tuple(int(v) for v in box.round()), float(score)) for box, score in zip(boxes, scores))
        top = max(float(np.nanmax(r[:, 0])) if len(r) else 0.0 for r in [rows, *tile_rows])
        return Detection(top, faces[0].box if faces else None, model_ms, faces)


class HaarDetector:
    """OpenCV's Haar cascade, the classical baseline: every face it finds, the largest first. It says
    face or no face (probability 1 or 0), so it has no threshold, and its boxes are not smoothed."""

    def __init__(self, min_size: int = 40):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load OpenCV's Haar cascade from {path}")
        self.min_size = min_size
        self._lock = threading.Lock()

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        start = time.perf_counter()
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        with self._lock:  # CascadeClassifier is not documented as thread-safe
            faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(self.min_size, self.min_size))
        model_ms = (time.perf_counter() - start) * 1000
        if len(faces) == 0:
            return Detection(0.0, None, model_ms)
        boxes = sorted(((int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in faces),
                       key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return Detection(1.0, boxes[0], model_ms, tuple(FaceBox(box, 1.0) for box in boxes))


class YuNetFrameDetector:
    """YuNet (see `facetracker.inference.yunet`) behind the same `detect(frame) -> Detection` as the others:
    every face with its score, the most confident first."""

    def __init__(self, threshold: float = 0.6, max_side: int | None = 320):
        self.yunet = YuNetDetector(score_threshold=threshold, max_side=max_side)

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        faces = self.yunet.detect_all(frame_bgr)
        if not faces:
            return Detection(0.0, None, self.yunet.last_ms)
        return Detection(faces[0].score, faces[0].box, self.yunet.last_ms,
                         tuple(FaceBox(face.box, face.score) for face in faces))


def reference_detector(key: str, threshold: float = 0.6, max_side: int | None = 320):
    """The detector of a reference key (YUNET or HAAR), which needs no training. YuNet sees the frame
    shrunk to `max_side` (the live path's 320 by default) and reports faces scoring `threshold` or more."""
    if key == YUNET:
        return YuNetFrameDetector(threshold, max_side)
    if key == HAAR:
        return HaarDetector()
    raise ValueError(f"unknown reference detector {key!r}; choose one of {', '.join(REFERENCE_LABELS)}")
