"""COCO's detection figures, computed by pycocotools' own COCOeval, beside the project's.

`face_metrics.score_photos` computes AP50 and AP50:95 its own way; people compare detectors by
COCO's numbers, so the same per-face results are also handed to COCOeval:

    coco_map50        COCO's AP at IoU 0.5 (what COCO's tables call AP50)
    coco_map50_95     COCO's AP averaged over IoU 0.50:0.05:0.95 (COCO's headline "AP")
    coco_ap_small     AP50:95 over faces of area < 32² px
    coco_ap_medium    ... 32² to 96² px
    coco_ap_large     ... over 96² px

Areas are in pixels of the photo as it was scored (at most 640 px a side). A figure COCO cannot
compute (no labelled face of that size) is NaN.

Why the two can differ: COCOeval samples the precision-recall curve at 101 recall points where ours
takes its whole area (all-point interpolation, as VOC 2010+); COCOeval keeps the 100 most confident
boxes of a photo where ours keeps all. The matching itself (most confident box first, to the
unmatched face it overlaps most) is the same, and nothing here is a crowd region or ignored.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Iterable

COCO_KEYS = ("coco_map50", "coco_map50_95", "coco_ap_small", "coco_ap_medium", "coco_ap_large")
# The places of these figures in COCOeval.stats (its summarize() order).
_STATS = {"coco_map50_95": 0, "coco_map50": 1, "coco_ap_small": 3, "coco_ap_medium": 4, "coco_ap_large": 5}
FACE = {"id": 1, "name": "face", "supercategory": "face"}


def _xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_ground_truth(photos: list) -> dict:
    """The labelled faces of `face_metrics.PhotoResult`s as a COCO dataset (photo i has id i + 1)."""
    images, annotations = [], []
    for index, photo in enumerate(photos, start=1):
        images.append({"id": index})
        for box in photo.truth:
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": FACE["id"],
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [FACE]}


def coco_detections(photos: list) -> list[dict]:
    """Every predicted box with its score, in COCO's results format."""
    return [{"image_id": index, "category_id": FACE["id"], "bbox": _xywh(box), "score": float(score)}
            for index, photo in enumerate(photos, start=1) for box, score in zip(photo.boxes, photo.scores)]


def coco_metrics(photos: Iterable) -> dict[str, float]:
    """COCO's figures (`COCO_KEYS`) of per-face results (`face_metrics.PhotoResult`), from pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    photos = list(photos)
    nan = dict.fromkeys(COCO_KEYS, float("nan"))
    if not any(len(photo.truth) for photo in photos):
        return nan  # COCO's AP needs a labelled face
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its every step
        truth = COCO()
        truth.dataset = coco_ground_truth(photos)
        truth.createIndex()
        detections = coco_detections(photos)
        if detections:
            found = truth.loadRes(detections)
        else:  # loadRes refuses an empty list; no box found means an AP of 0
            found = COCO()
            found.dataset = {"images": truth.dataset["images"], "annotations": [], "categories": [FACE]}
            found.createIndex()
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {key: (float(stats[place]) if stats[place] >= 0 else float("nan")) for key, place in _STATS.items()}


def library() -> str:
    """The library and version the COCO figures come from."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pycocotools {version('pycocotools')}"
    except PackageNotFoundError:
        return "pycocotools"


def _shown(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_coco(metrics: dict) -> str:
    """One line: COCO's mAP50, mAP50:95 and AP by size beside the project's AP50 and AP50:95."""
    if "coco_map50" not in metrics:
        return "COCO: not computed"
    return (f"COCO ({library()}, 101-point): mAP50 {_shown(metrics['coco_map50'])}, "
            f"mAP50:95 {_shown(metrics['coco_map50_95'])}, AP small {_shown(metrics['coco_ap_small'])}, "
            f"medium {_shown(metrics['coco_ap_medium'])}, large {_shown(metrics['coco_ap_large'])}; "
            f"ours (all-point): AP50 {_shown(metrics.get('ap50'))}, AP50:95 {_shown(metrics.get('ap50_95'))}")
