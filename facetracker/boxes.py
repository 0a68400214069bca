"""Box geometry, the leaf every wing shares: box types, IoU, non-maximum suppression, matching and AP.

Boxes are corner form (x0, y0, x1, y1), in whatever coordinates the caller uses (normalised or
pixels), the same for both sides of a comparison. This module imports nothing of the package.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[float, float, float, float]
"""A box in normalised [0, 1] image coordinates (x0, y0, x1, y1), as labels are stored."""
PixelBox = tuple[int, int, int, int]
"""A box in whole pixels (x0, y0, x1, y1), as detectors report faces."""
AnyBox = Sequence[float]
"""Any four corner numbers (x0, y0, x1, y1)."""


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [..., 4] in the same coordinates (broadcasting)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 2], b[..., 2])
    y1 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4]."""
    return iou(np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]).reshape(len(a), len(b))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_faces: int) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while len(order) and len(kept) < max_faces:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = areas[best] + areas[rest] - inter
        order = rest[inter <= iou_threshold * np.where(union > 0, union, 1)]
    return np.array(kept, np.int64)


def greedy_match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray,
                 iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Predictions taken from the most confident down, each matched to the unmatched labelled box it
    overlaps most if their IoU reaches the threshold (the matching of PASCAL VOC and COCO).

    Returns (right [N] per prediction, IoU [M] per labelled box with the prediction matched to it, else 0).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = iou_matrix(np.asarray(boxes)[order], truth)
    right = np.zeros(len(order), bool)
    found = np.zeros(len(truth))
    taken = np.zeros(len(truth), bool)
    for rank, prediction in enumerate(order):
        if not len(truth):
            break
        candidates = np.where(taken, -1.0, overlaps[rank])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best] = True
            right[prediction] = True
            found[best] = candidates[best]
    return right, found


def average_precision(scores: np.ndarray, correct: np.ndarray, n_positives: int) -> float:
    """Area under the precision-recall curve (all-point interpolation, as in VOC 2010+)."""
    if n_positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    fp = np.cumsum(~correct[order])
    recall = np.concatenate([[0.0], tp / n_positives])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))
