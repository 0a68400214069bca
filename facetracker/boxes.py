"""Box geometry, the leaf every wing shares: box types, IoU, containment, non-maximum suppression,
matching and AP.

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


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def containment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of the smaller box of each pair that lies inside the other, boxes [..., 4] in the same
    coordinates (broadcasting): 1 when one box holds the other whole, whatever their sizes, where
    IoU falls with the difference in size (0.25 for a box inside one four times its area).
    0 when a box has no area."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 2], b[..., 2])
    y1 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    smaller = np.minimum(_areas(a), _areas(b))
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1), 0.0)


def suppress_contained(boxes: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, score_margin: float,
                       keep_outer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes lying mostly inside a larger one merged with it: (indices kept [K], best first; their
    scores [K]). A pair is one object when at least `threshold` of the inner box's area lies inside
    the outer box (one share for all, or [N] one per box as the outer box of a pair) and the inner
    box does not score more than `score_margin` above the outer one (a confident object inside a
    doubtful larger box is an object of its own). Of such a pair

        the inner box scoring more than `score_margin` below the outer one goes (a weak part);
        else one box of the two stays: the outer one where `keep_outer` ([N] bool, per box) says so
            or is None, else the inner one.

    A kept box carries the best score of the boxes merged into it, as with `nms`, where the kept box
    is the best-scoring one: an object is as likely as its likeliest box says. Of two boxes of the
    same area, the lower-scoring one counts as the inner. Unlike `nms`, this does not depend on the
    IoU, which stays low for a small box inside a large one.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if len(boxes) < 2:
        return order.astype(np.int64), scores[order]
    keep_outer = np.ones(len(boxes), bool) if keep_outer is None else np.asarray(keep_outer, bool).reshape(-1)
    threshold = np.broadcast_to(np.asarray(threshold, np.float64), (len(boxes),))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    areas = _areas(boxes)
    # pair[i, j]: box i lies mostly inside the larger box j and does not score clearly higher
    larger = (areas[None, :] > areas[:, None]) | ((areas[None, :] == areas[:, None]) & (rank[None, :] < rank[:, None]))
    pair = (larger & (containment(boxes[:, None, :], boxes[None, :, :]) >= threshold[None, :])
            & (scores[:, None] <= scores[None, :] + score_margin))
    weaker = scores[:, None] < scores[None, :] - score_margin
    inner_goes = pair & (weaker | keep_outer[None, :])
    outer_goes = pair & ~weaker & ~keep_outer[None, :]
    dropped = inner_goes.any(axis=1) | outer_goes.any(axis=0)
    carried = scores.copy()
    for inner, outer in zip(*np.nonzero(inner_goes)):
        carried[outer] = max(carried[outer], scores[inner])
    for inner, outer in zip(*np.nonzero(outer_goes)):
        carried[inner] = max(carried[inner], scores[outer])
    kept = np.flatnonzero(~dropped)
    kept = kept[np.argsort(-carried[kept], kind="stable")]
    return kept.astype(np.int64), carried[kept]


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
