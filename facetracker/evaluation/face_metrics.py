"""How well a detector finds every face: each predicted box matched to each labelled face.

A photo may hold any number of faces. Per photo, predictions are taken from the most confident down,
each matched to the unmatched labelled face it overlaps most if their IoU reaches the threshold
(the matching of PASCAL VOC and COCO). Over a set of photos:

    n_photos, n_faces    photos scored, labelled faces in them
    ap50                 average precision, a prediction right when it matches at IoU >= 0.5
    ap50_95              mean of the average precisions at IoU 0.50, 0.55, ... 0.95 (COCO's AP)
    recall, precision    at the score threshold and IoU 0.5
    mean_iou             mean IoU of the labelled faces that were found (matched at IoU >= 0.5)
    recall_<size>        recall of faces by their width in pixels (see SIZE_BINS)
    photo_accuracy       photos rightly said to hold a face or none (any prediction over the threshold)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from facetracker.boxes import average_precision, greedy_match
from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
# Face width in pixels of the photo as scored: below 32 a face is a few cells of any detector's
# feature map; the bins follow the sizes a webcam gives from arm's length to across a room.
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("tiny", 0, 16), ("small", 16, 32), ("medium", 32, 96), ("large", 96, float("inf")))


@dataclasses.dataclass(frozen=True)
class PhotoResult:
    """One photo: what the detector said and what is labelled, in the same pixel coordinates."""

    boxes: np.ndarray
    """Predicted boxes [N, 4] (x0, y0, x1, y1)."""
    scores: np.ndarray
    """Their scores [N]."""
    truth: np.ndarray
    """Labelled faces [M, 4]."""
    image: str = ""
    """The photo's file, when known."""

    @classmethod
    def of(cls, boxes: Sequence, scores: Sequence, truth: Sequence, image: str = "") -> "PhotoResult":
        return cls(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).reshape(-1),
                   np.asarray(truth, np.float64).reshape(-1, 4), image)


def match(photo: PhotoResult, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(right [N] per prediction, IoU [M] per labelled face with the prediction matched to it, else 0)."""
    return greedy_match(photo.boxes, photo.scores, photo.truth, iou_threshold)


def _confident(photo: PhotoResult, threshold: float) -> PhotoResult:
    keep = photo.scores >= threshold
    return PhotoResult(photo.boxes[keep], photo.scores[keep], photo.truth, photo.image)


def score_photos(photos: Iterable[PhotoResult], threshold: float = 0.5) -> dict[str, float]:
    """The metrics above over a set of photos."""
    photos = list(photos)
    n_faces = sum(len(p.truth) for p in photos)
    scores = np.concatenate([p.scores for p in photos]) if photos else np.zeros(0)
    metrics: dict[str, float] = {"n_photos": len(photos), "n_faces": n_faces}
    aps = []
    for iou_threshold in IOU_THRESHOLDS:
        matched = [match(p, iou_threshold) for p in photos]
        right = np.concatenate([r for r, _ in matched]) if matched else np.zeros(0, bool)
        aps.append(average_precision(scores, right, n_faces))
        if iou_threshold == 0.5:
            metrics["ap50"] = aps[0]
            confident = scores >= threshold
            n_right = int(np.sum(right & confident))
            metrics["precision"] = n_right / int(confident.sum()) if confident.sum() else float("nan")
    # Recall at the threshold: a face counts as found when a confident prediction matches it.
    face_iou = np.concatenate([match(_confident(p, threshold))[1] for p in photos]) if photos else np.zeros(0)
    hits = face_iou >= 0.5
    metrics["recall"] = float(hits.mean()) if n_faces else float("nan")
    metrics["mean_iou"] = float(face_iou[hits].mean()) if hits.any() else float("nan")
    widths = np.concatenate([p.truth[:, 2] - p.truth[:, 0] for p in photos]) if photos else np.zeros(0)
    for name, low, high in SIZE_BINS:
        in_bin = (widths >= low) & (widths < high)
        metrics[f"recall_{name}"] = float(hits[in_bin].mean()) if in_bin.any() else float("nan")
        metrics[f"n_{name}"] = int(in_bin.sum())
    metrics["ap50_95"] = float(np.nanmean(aps)) if n_faces else float("nan")
    said_face = np.array([bool(np.any(p.scores >= threshold)) for p in photos])
    has_face = np.array([len(p.truth) > 0 for p in photos])
    metrics["photo_accuracy"] = float(np.mean(said_face == has_face)) if photos else float("nan")
    return metrics


FAR_CANVAS = (640, 480)
FAR_FACE_WIDTHS = (0.05, 0.20)
"""`far_away`: the largest face ends up this share of the canvas's width (32 to 128 px of 640)."""


def far_away(rgb: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The photo shrunk onto a 640x480 canvas of smooth random texture, at a random place, so that its
    largest face takes a share of the canvas's width within `FAR_FACE_WIDTHS`: the faces a webcam
    sees across a room, made from close-ups. Returns the canvas and the labelled faces [n, 4] moved
    with the photo (pixels)."""
    canvas_w, canvas_h = FAR_CANVAS
    noise = rng.integers(0, 256, (canvas_h // 32 + 1, canvas_w // 32 + 1, 3)).astype(np.uint8)
    canvas = cv2.resize(noise, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC)
    height, width = rgb.shape[:2]
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    largest = float((truth[:, 2] - truth[:, 0]).max()) if len(truth) else width / 3
    scale = rng.uniform(*FAR_FACE_WIDTHS) * canvas_w / max(largest, 1.0)
    scale = min(scale, canvas_w / width, canvas_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = int(rng.integers(0, canvas_w - new_w + 1)), int(rng.integers(0, canvas_h - new_h + 1))
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas, truth * [new_w / width, new_h / height, new_w / width, new_h / height] + [left, top, left, top]


def score_detector(detect: Callable[[np.ndarray], "object"], samples: list[data_lib.Sample], threshold: float = 0.5,
                   max_side: int = 640, progress: Callable[[int, int], None] | None = None, far: bool = False,
                   ) -> tuple[dict[str, float], list[PhotoResult], list[data_lib.Skipped]]:
    """Run `detect` (BGR frame -> detect.Detection) on each sample's photo, as a camera frame of at
    most `max_side` pixels, and score every face it gives against every labelled face. The detector
    should report its weak faces too (a low threshold of its own): AP ranks them; recall and precision
    count those at `threshold`. `far`: each photo is first moved far away (`far_away`, seeded)."""
    photos, skipped = [], []
    rng = np.random.default_rng(0)
    for index, sample in enumerate(samples):
        try:
            rgb = sample_pixels(sample, max_side=max_side)
        except (ValueError, OSError) as error:
            skipped.append(data_lib.Skipped(sample.image, str(error)))
            continue
        height, width = rgb.shape[:2]
        truth = [np.array(face) * [width, height, width, height] for face in sample.faces]
        if far:
            rgb, truth = far_away(rgb, np.array(truth), rng)
        detection = detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        photos.append(PhotoResult.of([f.box for f in detection.faces], [f.score for f in detection.faces], truth,
                                     sample.image))
        if progress:
            progress(index + 1, len(samples))
    return score_photos(photos, threshold), photos, skipped
