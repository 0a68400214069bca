"""TensorBoard event files in a run folder: the curves of each epoch and a few validation photos.

    tensorboard/   events.out.tfevents.*   train/loss ..., val/mean_iou ..., learning_rate; val/photos

`tensorboard --logdir runs/NAME` shows them (`pip install tensorboard`: since TensorFlow 2.21 it is
not installed with TensorFlow). The files are written with TensorFlow's own summary writer and
`tf.summary.write`, which need no tensorboard package: `tf.summary.scalar` and `tf.summary.image`
are tensorboard's and fail without it. Each value carries the metadata those two would give it
(plugin `scalars` or `images`), so TensorBoard shows them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from facetracker.inference.dense import DEFAULT_THRESHOLD, decode

EVENTS_DIR = "tensorboard"
PHOTOS = 4
"""Validation photos drawn each epoch, spread over the validation set."""
TRUTH_COLOUR = (40, 200, 60)
PREDICTED_COLOUR = (230, 40, 40)
# The epoch record's keys shown as curves, and their names in TensorBoard.
CURVES = {"loss": "train/loss", "class_loss": "train/class_loss", "box_loss": "train/box_loss",
          "val_mean_iou": "val/mean_iou", "val_iou50": "val/iou50", "val_accuracy": "val/accuracy",
          "val_ap50": "val/ap50", "val_face_recall": "val/face_recall"}


def _metadata(plugin: str) -> bytes:
    data = summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    return summary_pb2.SummaryMetadata(plugin_data=data).SerializeToString()


def learning_rate(optimizer) -> float | None:
    """The optimiser's rate at its current step (a schedule is evaluated there), or None."""
    try:
        return float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None


def draw_boxes(image: np.ndarray, truth: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The photo with its labelled faces (green) and the model's boxes with their scores (red);
    boxes are normalised [n, 4] (x0, y0, x1, y1)."""
    drawn = np.ascontiguousarray(image.copy())
    height, width = drawn.shape[:2]
    scale = np.array([width, height, width, height])
    for box in np.asarray(truth, float).reshape(-1, 4):
        x0, y0, x1, y1 = (box * scale).round().astype(int)
        cv2.rectangle(drawn, (x0, y0), (x1, y1), TRUTH_COLOUR, 1)
    for box, score in zip(np.asarray(boxes, float).reshape(-1, 4), scores):
        x0, y0, x1, y1 = (box * scale).round().astype(int)
        cv2.rectangle(drawn, (x0, y0), (x1, y1), PREDICTED_COLOUR, 1)
        cv2.putText(drawn, f"{score:.2f}", (x0, max(y0 - 3, 9)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, PREDICTED_COLOUR, 1,
                    cv2.LINE_AA)
    return drawn


def validation_photos(predict: Callable, inputs: np.ndarray, faces: Sequence[np.ndarray],
                      count: int = PHOTOS) -> list[np.ndarray]:
    """`count` validation photos spread over the set, each drawn with its faces and the model's boxes:
    a single-box model's box with its probability; a dense model's faces as `dense.decode` gives them,
    or, while it finds none, its most confident box, so that the first epochs show what it learns."""
    if not len(inputs):
        return []
    chosen = np.unique(np.linspace(0, len(inputs) - 1, min(count, len(inputs))).round().astype(int))
    out = np.asarray(predict(inputs[chosen].astype(np.float32)))
    drawn = []
    for row, index in zip(out, chosen):
        if row.ndim == 2:  # a dense model: a row per cell
            boxes, scores = decode(row, threshold=DEFAULT_THRESHOLD)
            if not len(boxes):
                boxes, scores = decode(row, threshold=0.0, max_faces=1)
        else:
            boxes, scores = row[None, 1:], row[:1]
        truth = faces[index] if index < len(faces) else np.zeros((0, 4))
        drawn.append(draw_boxes(inputs[index], truth, boxes, scores))
    return drawn


class RunEvents:
    """The event file of one training process. A failure to write it (a full disk, say) is told once
    and ends the logging, never the run."""

    def __init__(self, run_dir: str | Path, log: Callable[[str], None] = print):
        self.folder = Path(run_dir) / EVENTS_DIR
        self.log = log
        self.writer = None
        self.failed = False

    def _write(self, write: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            if self.writer is None:
                self.writer = tf.summary.create_file_writer(str(self.folder))
            with self.writer.as_default():
                write()
            self.writer.flush()
        except Exception as error:  # the curves are a view of the run: losing them must not stop it
            self.failed = True
            self.log(f"note: the TensorBoard event file in {self.folder} is no longer written ({error})")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        def write() -> None:
            for tag, value in values.items():
                if value is not None and np.isfinite(value):
                    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                                     metadata=_metadata("scalars"))

        self._write(write)

    def images(self, step: int, tag: str, images: Sequence[np.ndarray]) -> None:
        """RGB uint8 photos of one size, as TensorBoard's image summary holds them: width, height, PNGs."""
        if not len(images):
            return
        height, width = images[0].shape[:2]
        encoded = [cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes() for image in images]

        def write() -> None:
            tensor = tf.constant([str(width).encode(), str(height).encode(), *encoded], tf.string)
            tf.summary.write(tag, tensor, step=step, metadata=_metadata("images"))

        self._write(write)

    def epoch(self, epoch: int, record: dict, optimizer, predict: Callable, inputs: np.ndarray,
              faces: Sequence[np.ndarray]) -> None:
        """An epoch's curves (from its metrics.jsonl record), the learning rate, and validation photos."""
        values = {name: record.get(key) for key, name in CURVES.items() if key in record}
        values["learning_rate"] = learning_rate(optimizer)
        self.scalars(epoch, values)
        if not self.failed:
            try:
                photos = validation_photos(predict, inputs, faces)
            except Exception as error:  # as above: a drawing problem must not stop the run
                self.log(f"note: no validation photos for TensorBoard this epoch ({error})")
                photos = []
            self.images(epoch, "val/photos", photos)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # closing flushes; a write failure was told already
                pass
