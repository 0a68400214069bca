"""The run folder's callback: per-step progress, per-epoch validation, the best model kept, early stopping."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from facetracker.boxes import iou
from facetracker.evaluation.evaluate import score
from facetracker.evaluation.face_metrics import PhotoResult, score_photos
from facetracker.inference.dense import (
    DEFAULT_THRESHOLD,
    decode,
    top_cells,
)
from facetracker.nn.stopping import StopRequested
from facetracker.nn.tensorboard_log import RunEvents
from facetracker.runs import run_folder as runs

LOSS_KEYS = ("loss", "class_loss", "box_loss")


def dense_validation_metrics(out: np.ndarray, has_face: np.ndarray, largest: np.ndarray,
                             faces: list[np.ndarray]) -> dict:
    """A dense model's validation metrics: the single-box ones (`evaluate.score`) of its most
    confident cell against each photo's largest face, so runs of every preset compare and the
    best epoch is chosen alike; and `ap50`, `recall` over every face (`face_metrics`)."""

    top = top_cells(out)
    metrics = score(top[:, 0], top[:, 1:], has_face, largest, DEFAULT_THRESHOLD)
    if len(faces) == len(out):
        photos = [PhotoResult.of(*decode(rows, threshold=0.05), truth) for rows, truth in zip(out, faces)]
        every = score_photos(photos, DEFAULT_THRESHOLD)
        metrics.update(ap50=every["ap50"], face_recall=every["recall"])
    return metrics


class RunFolderCallback(keras.callbacks.Callback):
    """Writes metrics and status, validates, checkpoints, keeps the best model, obeys STOP.

    `state` is the run's bookkeeping (`epochs_done`, `best_val_iou`, `best_epoch`, `since_best`),
    updated in place and written to checkpoint/state.json after every epoch. `save_best(model)`
    and `save_checkpoint(model)` write model.keras and the checkpoint.

    Up to `best_from_epoch` (or the run's last epoch, if sooner) every epoch replaces model.keras,
    so a stopped run still has a model; from it on only a better one does, and only then does the
    early-stopping patience count.
    """

    def __init__(self, run_dir: Path, *, epochs: int, steps_per_epoch: int, batch_size: int,
                 stop: StopRequested, val_inputs: np.ndarray, val_has_face: np.ndarray, val_boxes: np.ndarray,
                 state: dict, save_best: Callable, save_checkpoint: Callable, early_stopping: int = 0,
                 best_from_epoch: int = 1, log: Callable[[str], None] = print,
                 val_faces: list[np.ndarray] | None = None,
                 moved: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__()
        self.val_faces = val_faces or []
        self.moved = moved
        """The moved validation photos and their faces' boxes (`pipeline.moved_validation`): each
        epoch's `moved_mean_iou`, which the verdict reads for the best epoch."""
        self.run_dir = run_dir
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.stop = stop
        self.val_inputs = val_inputs
        self.val_has_face = val_has_face
        self.val_boxes = val_boxes
        self.state = state
        self.save_best = save_best
        self.save_checkpoint = save_checkpoint
        self.early_stopping = early_stopping
        self.best_from_epoch = best_from_epoch
        self.log = log
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.steps_done_here = 0
        self.window: list[float] = []
        self.predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        self.events = RunEvents(self.run_dir, self.log)  # TensorBoard's view of the curves

    def on_train_end(self, logs=None):
        self.events.close()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        self.steps_done_here += 1
        self.window = (self.window + [now])[-20:]
        global_step = self.epoch * self.steps_per_epoch + batch + 1
        record = {"kind": "step", "epoch": self.epoch + 1, "step": global_step, "time": round(now, 3)}
        record.update({k: float(v) for k, v in (logs or {}).items() if k in LOSS_KEYS})
        runs.append_metrics(self.run_dir, record)
        total_steps = self.epochs * self.steps_per_epoch
        rate = (len(self.window) - 1) / (self.window[-1] - self.window[0]) if len(self.window) > 1 else 0.0
        eta = (total_steps - global_step) / rate if rate else None
        if batch % 5 == 0 or batch + 1 == self.steps_per_epoch:
            runs.update_status(self.run_dir, state="running", message=None, epoch=self.epoch + 1, epochs=self.epochs,
                               step=global_step, total_steps=total_steps,
                               progress=round(global_step / total_steps, 4),
                               images_per_s=round(rate * self.batch_size, 1),
                               eta_s=round(eta, 1) if eta is not None else None)
        if self.stop.agree(self.model.distribute_strategy):
            self.model.stop_training = True

    def outputs(self, inputs: np.ndarray) -> np.ndarray:
        outputs = [np.asarray(self.predict(inputs[i:i + 64].astype(np.float32))) for i in range(0, len(inputs), 64)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 5), np.float32)

    def validation_metrics(self) -> dict:
        out = self.outputs(self.val_inputs)
        if out.ndim == 3:  # a dense model: its most confident cell is its answer for the photo
            metrics = dense_validation_metrics(out, self.val_has_face > 0.5, self.val_boxes, self.val_faces)
        else:
            metrics = score(out[:, 0], out[:, 1:], self.val_has_face > 0.5, self.val_boxes)
        if self.moved is not None and len(self.moved[0]):
            moved = self.outputs(self.moved[0])
            answers = top_cells(moved) if moved.ndim == 3 else moved
            metrics["moved_mean_iou"] = float(iou(answers[:, 1:], self.moved[1]).mean())
        return metrics

    @staticmethod
    def _saved_words(saved: bool, epoch: int, counted_from: int) -> str:
        if not saved:
            return ""
        if epoch < counted_from:
            return f" (saved model.keras until epoch {counted_from}, from which the best is kept)"
        return " (best, saved model.keras)"

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        metrics = self.validation_metrics()
        record = {"kind": "epoch", "epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                  "time": time.time(), **{k: float(v) for k, v in (logs or {}).items() if k in LOSS_KEYS},
                  **{f"val_{k}": v for k, v in metrics.items()
                     if k in ("mean_iou", "iou50", "accuracy", "ap50", "face_recall")}}
        runs.append_metrics(self.run_dir, record)
        self.events.epoch(epoch + 1, record, getattr(self.model, "optimizer", None), self.predict, self.val_inputs, self.val_faces)
        val_iou = metrics["mean_iou"] if not math.isnan(metrics["mean_iou"]) else 0.0
        # A stop in the middle of an epoch must not count that epoch as done on resume.
        finished_epoch = not (self.stop.check() and self.model.stop_training and
                              self.steps_done_here % self.steps_per_epoch != 0)
        counted_from = min(self.best_from_epoch, self.epochs)
        improved = epoch + 1 <= counted_from or val_iou > state["best_val_iou"] or state["best_epoch"] is None
        if improved:
            state.update(best_val_iou=val_iou, best_epoch=epoch + 1, best_metrics=metrics)
            self.save_best(self.model)
        state["epochs_done"] = epoch + 1 if finished_epoch else epoch
        state["since_best"] = 0 if improved else state.get("since_best", 0) + 1
        self.save_checkpoint(self.model)
        (self.run_dir / runs.CHECKPOINT_DIR).mkdir(exist_ok=True)
        runs.write_json(self.run_dir / runs.CHECKPOINT_STATE, state)
        runs.update_status(self.run_dir, best_val_iou=round(state["best_val_iou"], 4),
                           best_epoch=state["best_epoch"], last_val=metrics)
        self.log(f"epoch {epoch + 1}/{self.epochs}: loss {record.get('loss', float('nan')):.4f}, "
                 f"val mean IoU {metrics['mean_iou']:.3f}, IoU>=0.5 {metrics['iou50']:.2f}, "
                 f"accuracy {metrics['accuracy']:.3f}" + self._saved_words(improved, epoch + 1, counted_from))
        # The workers' validation IoU can differ slightly (docs/operations.md, several machines):
        # all of them follow any that stops.
        if self.early_stopping and self.stop.on_any_worker(self.model.distribute_strategy,
                                                           state["since_best"] >= self.early_stopping):
            self.log(f"no better validation IoU for {self.early_stopping} epochs: stopping early")
            state["early_stopped"] = True
            self.model.stop_training = True
