"""YuNet, the small face detector of OpenCV's model zoo, as the reference to measure our models by.

The model file (232,589 bytes, MIT; see `models/YUNET_LICENSE`) ships inside the package and runs
through OpenCV's `cv2.FaceDetectorYN`, so it needs no TensorFlow and no download. It finds every face
in a frame, each with a score and five landmarks (eyes, nose tip, mouth corners).

Its boxes follow the WIDER FACE convention (forehead to chin, ear to ear), which is not the brow-to-chin
box of our labels; compare box positions with that in mind, and face counts freely.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import cv2
import numpy as np

MODEL_FILE = Path(__file__).resolve().parents[1] / "models" / "face_detection_yunet_2023mar.onnx"
LICENSE_FILE = MODEL_FILE.parent / "YUNET_LICENSE"

# The zoo's demo defaults: a face below 0.6 is more often a false alarm than a face, and boxes
# overlapping by more than 0.3 IoU are one face.
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
TOP_K = 5000
# On an input 32 px or less on a side (a video ten times taller than wide, shrunk to 32x320) the
# network's output depends on what an earlier call left in its buffers: boxes where no face is, or
# inf and NaN. Such an image is padded to this side first, grey to the right and below.
MIN_SIDE = 64
PAD_GREY = 127


@dataclasses.dataclass(frozen=True)
class Face:
    """One face: pixel box (x0, y0, x1, y1), score in [0, 1], and five (x, y) landmarks."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


class YuNetDetector:
    """Every face in a BGR frame of any size.

    `max_side` caps the longer side of the image the network sees: the frame is shrunk to it first
    (never enlarged). YuNet finds faces from about 10 px up, so 320 keeps a face at webcam distance
    and runs in a few milliseconds; `None` keeps full resolution, for small faces in large photos.

    Thread-safe: one `cv2.FaceDetectorYN` holds its input size as state, so calls are serialised.
    """

    def __init__(self, score_threshold: float = SCORE_THRESHOLD, max_side: int | None = 320,
                 nms_threshold: float = NMS_THRESHOLD, model_file: str | Path = MODEL_FILE):
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {max_side!r}")
        model_file = Path(model_file)
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file}: YuNet's model file is missing (it ships with the package; "
                                    "reinstall it)")
        self.score_threshold = score_threshold
        self.max_side = max_side
        self._net = cv2.FaceDetectorYN.create(str(model_file), "", (320, 320), score_threshold, nms_threshold,
                                              TOP_K)
        self._input_size: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.last_ms = 0.0
        """Time of the last call's network run and decoding, in milliseconds."""

    def detect_all(self, frame_bgr: np.ndarray) -> list[Face]:
        """Every face found, most confident first."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape (height, width, 3), got {frame_bgr.shape}")
        height, width = frame_bgr.shape[:2]
        scale = 1.0
        image = frame_bgr
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            image = cv2.resize(frame_bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        if min(image.shape[:2]) < MIN_SIDE:
            padded = np.full((max(image.shape[0], MIN_SIDE), max(image.shape[1], MIN_SIDE), 3), PAD_GREY, image.dtype)
            padded[:image.shape[0], :image.shape[1]] = image
            image = padded  # boxes keep their coordinates: the frame is at the top left
        with self._lock:
            start = time.perf_counter()
            size = (image.shape[1], image.shape[0])
            if size != self._input_size:
                self._net.setInputSize(size)
                self._input_size = size
            _, rows = self._net.detect(np.ascontiguousarray(image))
            self.last_ms = (time.perf_counter() - start) * 1000
        if rows is None:
            return []
        rows = rows[np.isfinite(rows[:, :15]).all(axis=1)]  # a row with inf or NaN says nothing about a face
        faces = []
        for row in rows:
            x, y, w, h = row[:4] / scale
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(width, round(x + w)), min(height, round(y + h))
            if x1 <= x0 or y1 <= y0:
                continue
            points = tuple((float(px / scale), float(py / scale)) for px, py in row[4:14].reshape(5, 2))
            faces.append(Face((int(x0), int(y0), int(x1), int(y1)), float(row[14]), points))
        return sorted(faces, key=lambda face: face.score, reverse=True)
