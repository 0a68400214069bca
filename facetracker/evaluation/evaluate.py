"""How good is a model: box overlap on face images and face/no-face decisions on all images.

    n_faces, n_empty  images with and without a face
    mean_iou          mean IoU of the predicted box over face images (whatever the probability)
    iou50             share of face images whose box has IoU >= 0.5
    accuracy          face/no-face decisions right at the threshold
    precision, recall of "face" at the threshold
    ap50              average precision, a detection counting as right when IoU >= 0.5
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from facetracker.boxes import average_precision, iou
from facetracker.data import datasets as data_lib
from facetracker.data.images import model_input, sample_pixels
from facetracker.evaluation.coco_eval import coco_metrics
from facetracker.evaluation.face_metrics import score_detector
from facetracker.inference import models
from facetracker.inference.dense import input_wh, letterbox, top_cells
from facetracker.inference.detect import SINGLE_BOX_THRESHOLD, default_threshold
from facetracker.runs import run_folder as runs


def score(probs: np.ndarray, boxes: np.ndarray, has_face: np.ndarray, true_boxes: np.ndarray,
          threshold: float = 0.5) -> dict[str, float]:
    """The metrics above from predictions (probs [N], boxes [N, 4]) and truth (has_face [N], boxes [N, 4])."""
    probs = np.asarray(probs, np.float64).reshape(-1)
    has_face = np.asarray(has_face, bool).reshape(-1)
    overlaps = iou(boxes, true_boxes)
    face_overlaps = overlaps[has_face]
    said_face = probs >= threshold
    tp = int(np.sum(said_face & has_face))
    fp = int(np.sum(said_face & ~has_face))
    fn = int(np.sum(~said_face & has_face))
    n = len(probs)
    return {
        "n_faces": int(has_face.sum()),
        "n_empty": int((~has_face).sum()),
        "mean_iou": float(face_overlaps.mean()) if len(face_overlaps) else float("nan"),
        "iou50": float((face_overlaps >= 0.5).mean()) if len(face_overlaps) else float("nan"),
        "accuracy": float(np.mean(said_face == has_face)) if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "ap50": average_precision(probs, has_face & (overlaps >= 0.5), int(has_face.sum())),
    }


@dataclasses.dataclass
class Evaluation:
    metrics: dict[str, float]
    samples: list[data_lib.Sample]
    probs: np.ndarray
    boxes: np.ndarray
    ious: np.ndarray
    """IoU per sample (0 for no-face images)."""
    skipped: list[data_lib.Skipped]


def evaluate_samples(predict: Callable[[np.ndarray], np.ndarray], samples: list[data_lib.Sample],
                     size: int | tuple[int, int], threshold: float = 0.5, batch_size: int = 32,
                     progress: Callable[[int, int], None] | None = None, dense: bool = False) -> Evaluation:
    """Run `predict` (uint8 [N, height, width, 3] -> [N, 5]) over samples, fed whole as at inference;
    `size` is the input's side, or (width, height) for a dense model's non-square input.

    `dense`: the model answers per cell ([N, cells, 5]) on letterboxed photos; its most confident
    cell is scored as its answer, mapped back to the photo."""
    width, height = input_wh(size)

    kept, skipped, outputs = [], [], []
    batch, batch_samples, placements = [], [], []

    def flush():
        if batch:
            out = np.asarray(predict(np.stack(batch)), np.float32)
            if dense:
                top = top_cells(out)
                scale = [[p.width, p.height, p.width, p.height] for p in placements]
                boxes = np.concatenate([p.to_frame(row[1:]) for p, row in zip(placements, top)]) / scale
                out = np.concatenate([top[:, :1], boxes], axis=1).astype(np.float32)
            outputs.append(out)
            kept.extend(batch_samples)
            batch.clear()
            batch_samples.clear()
            placements.clear()

    for i, sample in enumerate(samples):
        try:
            pixels = sample_pixels(sample, max_side=max(width * 4, height * 4, 480))
        except (ValueError, OSError) as error:
            skipped.append(data_lib.Skipped(sample.image, str(error)))
            continue
        if dense:
            image, placed = letterbox(pixels, size)
            batch.append(image)
            placements.append(placed)
        else:
            batch.append(model_input(pixels, width))  # a single-box model is square
        batch_samples.append(sample)
        if len(batch) == batch_size:
            flush()
        if progress:
            progress(i + 1, len(samples))
    flush()
    out = np.concatenate(outputs) if outputs else np.zeros((0, 5), np.float32)
    has_face = np.array([s.has_face for s in kept], bool)
    true_boxes = np.array([s.box or (0, 0, 0, 0) for s in kept], np.float32).reshape(-1, 4)
    metrics = score(out[:, 0], out[:, 1:], has_face, true_boxes, threshold)
    ious = np.where(has_face, iou(out[:, 1:], true_boxes), 0.0)
    return Evaluation(metrics, kept, out[:, 0], out[:, 1:], ious, skipped)


def evaluate(model: str | Path, data: str | Path, split: str | None = None, threshold: float | None = None,
             progress: Callable[[int, int], None] | None = None, root: str | Path | None = None) -> Evaluation:
    """Evaluate a model file or run folder on a dataset folder (one split, or all of it).

    With a `root` (the app's data root), images and labels linking out of it are skipped."""
    runtime = models.open_runtime(model, models.PHOTO)
    threshold = default_threshold(runtime) if threshold is None else threshold
    dataset, samples = _chosen_samples(model, data, split, root)
    result = evaluate_samples(runtime.predict, samples, runtime.input_wh, threshold, progress=progress,
                              dense=getattr(runtime, "dense", False))
    result.skipped = dataset.skipped + result.skipped
    return result


REFERENCE_SCORE_FLOOR = 0.3
"""A reference detector reports faces from this score up when scored: its AP ranks them all."""
DENSE_SCORE_FLOOR = 0.05
"""Likewise for a dense model's cells."""


@dataclasses.dataclass
class FaceEvaluation:
    metrics: dict[str, float]
    """See `facetracker.evaluation.face_metrics`."""
    samples: list[data_lib.Sample]
    photos: list
    """The `face_metrics.PhotoResult` of each sample: its boxes, scores and labelled faces in pixels."""
    skipped: list[data_lib.Skipped]
    threshold: float
    """The threshold recall and precision were counted at."""


def evaluate_faces(model: str | Path, data: str | Path, split: str | None = None, threshold: float | None = None,
                   progress: Callable[[int, int], None] | None = None, root: str | Path | None = None,
                   far: bool = False, look_closer: bool = True) -> tuple[dict[str, float], list[data_lib.Skipped]]:
    """Per-face metrics (see `facetracker.evaluation.face_metrics`) of a model file, run folder or reference
    detector key (`yunet`, `haar`) on a dataset folder: every box it gives against every labelled face.
    `far`: each photo shrunk onto a larger canvas first (`face_metrics.far_away`).
    `look_closer`: a dense model also searches each photo in tiles (`detect.Detector.look_closer`),
    as the app does for photos, and as YuNet sees them here (at their own resolution); False scores
    it as live video runs it: the whole frame in one pass, a .keras model's network shaped for the
    webcam's frames (`dense.LIVE_FRAME`, `dense.LIVE_ZOOM`)."""
    result = evaluate_every_face(model, data, split, threshold, progress, root, far, look_closer)
    return result.metrics, result.skipped


def evaluate_every_face(model: str | Path, data: str | Path, split: str | None = None, threshold: float | None = None,
                        progress: Callable[[int, int], None] | None = None, root: str | Path | None = None,
                        far: bool = False, look_closer: bool = True) -> FaceEvaluation:
    """As `evaluate_faces`, with each photo's boxes and faces kept (to show the faces missed)."""
    use = models.PHOTO if look_closer else models.LIVE
    if models.is_reference(model):
        threshold = SINGLE_BOX_THRESHOLD if threshold is None else threshold
        detector = models.open_detector(model, models.PHOTO, threshold=min(threshold, REFERENCE_SCORE_FLOOR))
    else:
        runtime = models.open_runtime(model, use)
        # Every box, ranked by its probability (a dense model's from a low floor: its empty cells
        # would only fill the suppression with a thousand near-zero boxes).
        detector = models.open_detector(model, use, runtime=runtime,
                                        threshold=DENSE_SCORE_FLOOR if getattr(runtime, "dense", False) else 0.0)
        threshold = default_threshold(runtime) if threshold is None else threshold
    dataset, samples = _chosen_samples(model, data, split, root)
    metrics, photos, skipped = score_detector(detector.detect, samples, threshold, progress=progress, far=far)
    metrics.update(coco_metrics(photos))  # COCO's own figures beside ours, from pycocotools
    by_image = {sample.image: sample for sample in samples}
    kept = [by_image[photo.image] for photo in photos]
    return FaceEvaluation(metrics, kept, photos, dataset.skipped + skipped, threshold)


def _chosen_samples(model: str | Path, data: str | Path, split: str | None, root: str | Path | None):
    dataset = data_lib.load_dataset(data, check_pixels=False, root=root)
    samples = dataset.samples
    if split:
        if dataset.has_splits:
            samples = dataset.split(split)
        else:
            samples = [s for s in _run_split(model, dataset) if s.split == split]
        if not samples:
            raise data_lib.DatasetError(f"{data}: the split '{split}' holds no image")
    return dataset, samples


def _run_split(model: str | Path, dataset: data_lib.Dataset) -> list[data_lib.Sample]:
    """The split the model's run used, when the model sits in a run folder; else the seeded default."""
    run_dir = Path(model) if Path(model).is_dir() else Path(model).parent
    manifest = runs.read_json(run_dir / runs.SPLIT)
    if isinstance(manifest, dict):
        by_name = {Path(p).name: split for split, paths in manifest.items() for p in paths}
        return [dataclasses.replace(s, split=by_name.get(Path(s.image).name)) for s in dataset.samples]
    return data_lib.assign_splits(dataset.samples)


def format_metrics(metrics: dict[str, float]) -> str:
    parts = []
    for key, value in metrics.items():
        parts.append(f"{key} {value}" if isinstance(value, int) else f"{key} {value:.3f}")
    return ", ".join(parts)
