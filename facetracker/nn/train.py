"""Training: a dataset folder in, a run folder out (see `facetracker.runs.run_folder` for what it holds).

`train(config)` runs in the calling process and is what `python -m facetracker train` calls; the app
starts that command as its own process, so closing the browser never stops a run. The config itself
(`TrainConfig`, presets) lives in `facetracker.config.training`, which needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

# After facetracker.nn.model, which sets TensorFlow's log level before TensorFlow loads.
import keras  # noqa: E402
import numpy as np
import tensorflow as tf  # noqa: E402

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import TrainConfig
from facetracker.data import datasets as data_lib
from facetracker.data.augment import augment, augment_faces, build_transform, make_scene
from facetracker.evaluation.evaluate import score
from facetracker.evaluation.face_metrics import PhotoResult, score_photos
from facetracker.evaluation.verdict import comparison_line, run_verdict
from facetracker.inference.dense import (
    DEFAULT_THRESHOLD,
    cell_targets,
    decode,
    letterbox,
    top_cells,
)
from facetracker.io import atomic
from facetracker.labelling.prelabel import PrelabelFit, yunet_prelabel_fit
from facetracker.nn.export import write_runtime_files
from facetracker.nn.model import (
    PhasedCosine,
    WeightsUnavailable,
    backbone_layer,
    batchnorm_layers,
    build_model,
    inference_copy,
    load_model,
    set_backbone_trainable,
)
from facetracker.nn.tensorboard_log import EVENTS_DIR, RunEvents
from facetracker.runs import run_folder as runs

# ----------------------------------------------------------------------------------------------
# Data pipeline


@dataclasses.dataclass
class ImageCache:
    """Decoded images made square, with their labels: decoded once, augmented many times.

    For the single-box heads each photo is stretched to the square, as `data.model_input` does at
    inference; for the dense head it is letterboxed (`dense.letterbox`), as the live path does, and
    the boxes are moved with it."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    boxes: np.ndarray  # float32 [N, 4], the largest face (zeros for no-face)
    has_face: np.ndarray  # float32 [N]
    samples: list[data_lib.Sample]
    faces: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Every face of each image [n_i, 4], in the same coordinates as `boxes`."""


def build_cache(samples: list[data_lib.Sample], size: int, log: Callable[[str], None] = print,
                skipped: list | None = None, letterboxed: bool = False) -> ImageCache:

    images, kept, faces = [], [], []
    for sample in samples:
        try:
            pixels = data_lib.sample_pixels(sample, max_side=size * 2)
        except (ValueError, OSError) as error:
            item = data_lib.Skipped(sample.image, str(error))
            log(str(item))
            if skipped is not None:
                skipped.append(item)
            continue
        boxes = np.array(sample.faces, np.float32).reshape(-1, 4)
        if letterboxed:
            image, placed = letterbox(pixels, size)
            boxes = placed.to_input(boxes).astype(np.float32)
        else:
            image = data_lib.model_input(pixels, size)
        images.append(image)
        faces.append(boxes)
        kept.append(sample)
    boxes = np.array([f[0] if len(f) else (0.0, 0.0, 0.0, 0.0) for f in faces], np.float32).reshape(-1, 4)
    has_face = np.array([s.has_face for s in kept], np.float32)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return ImageCache(stacked, boxes, has_face, kept, faces)


def training_dataset(cache: ImageCache, config: TrainConfig, batch_size: int, shard: tuple[int, int] = (1, 0)):
    """Shuffled, batched, augmented on the fly in parallel, prefetched; shapes are set for Keras.

    Each parallel call augments a whole batch of indices: one `numpy_function` per image cost
    more than the augmentation itself (docs/notes/2026-11-28-what-makes-it-fast.md).

    `shard` picks this worker's share of the images (see `image_order`).
    """
    local = threading.local()  # one Albumentations pipeline per worker thread: no shared RNG state
    size = config.image_size

    def augment_batch(indices):
        transform = getattr(local, "transform", None)
        if transform is None:
            local.transform = transform = build_transform(
                config.augment, size, seed=config.seed * 1000 + threading.get_ident() % 1000)
        images = np.empty((len(indices), size, size, 3), np.uint8)
        has_face = np.zeros(len(indices), np.float32)
        boxes = np.zeros((len(indices), 4), np.float32)
        for row, index in enumerate(indices):
            box = tuple(cache.boxes[index]) if cache.has_face[index] else None
            images[row], new_box = augment(transform, cache.images[index], box)
            if new_box is not None:
                has_face[row] = 1.0
                boxes[row] = new_box
        return images, has_face, boxes

    def map_fn(indices):
        images, has_face, boxes = tf.numpy_function(augment_batch, [indices], (tf.uint8, tf.float32, tf.float32))
        images.set_shape((None, size, size, 3))
        has_face.set_shape((None,))
        boxes.set_shape((None, 4))
        return tf.cast(images, tf.float32), (has_face, boxes)

    # Endless, so Keras keeps one iterator for the whole run: a finite one is torn down and rebuilt
    # at every epoch, which stalled each epoch's start while augmentation workers wound down (see
    # docs/notes/2026-11-28-what-makes-it-fast.md).
    # `steps_per_epoch` marks the epochs; every pass over the copies is shuffled anew.
    return (image_order(len(cache.images), config, shard).batch(batch_size, drop_remainder=False)
            .map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .prefetch(tf.data.AUTOTUNE))


def dense_training_dataset(cache: ImageCache, config: TrainConfig, batch_size: int, shard: tuple[int, int] = (1, 0)):
    """As `training_dataset`, for the dense head: each sample is a scene (`augment.make_scene`: the
    photo, a mosaic or the photo zoomed out), augmented with all its faces, and the targets are
    per cell (`dense.cell_targets`)."""

    local = threading.local()
    size = config.image_size
    cells = (size // 8) ** 2
    backgrounds = np.flatnonzero(cache.has_face < 0.5)

    def augment_batch(indices):
        if getattr(local, "transform", None) is None:
            seed = config.seed * 1000 + threading.get_ident() % 1000
            local.transform = build_transform(config.augment, size, seed=seed)
            local.rng = np.random.default_rng(seed)
        images = np.empty((len(indices), size, size, 3), np.uint8)
        has_face = np.zeros((len(indices), cells), np.float32)
        boxes = np.zeros((len(indices), cells, 4), np.float32)
        for row, index in enumerate(indices):
            scene, scene_faces = make_scene(local.rng, config.augment, cache.images, cache.faces, int(index),
                                            backgrounds)
            images[row], kept = augment_faces(local.transform, scene, scene_faces)
            targets = cell_targets(kept, size)
            has_face[row], boxes[row] = targets[:, 0], targets[:, 1:]
        return images, has_face, boxes

    def map_fn(indices):
        images, has_face, boxes = tf.numpy_function(augment_batch, [indices], (tf.uint8, tf.float32, tf.float32))
        images.set_shape((None, size, size, 3))
        has_face.set_shape((None, cells))
        boxes.set_shape((None, cells, 4))
        return tf.cast(images, tf.float32), (has_face, boxes)

    return (image_order(len(cache.images), config, shard).batch(batch_size, drop_remainder=False)
            .map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .prefetch(tf.data.AUTOTUNE))


def image_order(n: int, config: TrainConfig, shard: tuple[int, int] = (1, 0)):
    """The endless stream of image indices training draws: `config.copies` of each per pass, every
    pass shuffled anew from `config.seed`. `shard=(count, index)` keeps every count-th index from
    the index-th on; seeded alike, the workers of a cluster then share out each pass."""

    indices = tf.data.Dataset.range(n).repeat(config.copies).shuffle(n * config.copies, seed=config.seed,
                                                                     reshuffle_each_iteration=True).repeat()
    return indices.shard(*shard) if shard[0] > 1 else indices


def validation_inputs(cache: ImageCache, size: int) -> np.ndarray:
    return np.stack([data_lib.model_input(img, size) for img in cache.images]) if len(cache.images) else \
        np.zeros((0, size, size, 3), np.uint8)


# ----------------------------------------------------------------------------------------------
# Training


class StopRequested:
    """Set by SIGTERM or a STOP file; the run then ends cleanly after saving.

    With several workers (`across_workers`) a stop one of them sees must stop them all after the
    same step: a worker that trains on waits in the next step's collectives for the one that left.
    There only `agree`, which every worker calls after every step, changes what `check` says.
    """

    def __init__(self, run_dir: Path, across_workers: bool = False):
        self.run_dir = run_dir
        self.across_workers = across_workers
        self.reason: str | None = None
        self._requested: str | None = None

    def install(self) -> None:
        def handler(signum, frame):
            self._requested = f"stopped by signal {signal.Signals(signum).name}"

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def _requested_here(self) -> str | None:
        if self._requested is None and (self.run_dir / runs.STOP).exists():
            self._requested = "stopped from the STOP file"
        return self._requested

    def check(self) -> bool:
        if self.reason is None and not self.across_workers:
            self.reason = self._requested_here()
        return self.reason is not None

    def agree(self, strategy) -> bool:
        """`check`, after a step; with several workers, true on all of them when any was asked to stop."""
        if self.reason is None and self.on_any_worker(strategy, self._requested_here() is not None):
            self.reason = self._requested_here() or "stopped because another worker of the cluster was stopped"
        return self.reason is not None

    def on_any_worker(self, strategy, flag: bool) -> bool:
        """Whether `flag` holds on any worker. With several workers this is a collective: each worker
        must call it at the same point of training, as many times."""
        if not self.across_workers:
            return flag

        flags = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(float(flag)))
        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)) > 0


def _strategy(name: str):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy 'multiworker' needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy: str) -> bool:
    """Whether this process writes the run folder: always, except a multi-worker cluster's other workers.

    As in TensorFlow's multi-worker Keras guidance, the chief is the task of type "chief", or worker 0
    when the cluster names no chief. Read from TF_CONFIG before TensorFlow starts.
    """
    if strategy != "multiworker" or "TF_CONFIG" not in os.environ:
        return True
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
        task_type, task_index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG: not a cluster description ({error})") from None
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_index == 0


def _fit_across_workers(model, strategy_name: str) -> None:
    """Let Keras 3's `fit` run under MultiWorkerMirroredStrategy with several workers.

    Two steps of `fit` fail there, so this model instance gets its own version of each:
    - before the first step `fit` averages one input batch over the replicas (`strategy.reduce`)
      to build the model from its shapes; that batch is a structure, (images, (has_face, boxes)),
      which the strategy cannot reduce (it takes one tensor). The model and its optimizer are
      built before `fit` here, so that build has nothing to do and is skipped.
    - after each step it averages the logged losses over the workers along axis 0, which scalars
      do not have; each loss is therefore returned as a vector of one.
    """
    if strategy_name != "multiworker":
        return

    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    if unbuilt or not model.optimizer.built:
        raise RuntimeError(f"multi-worker training needs a built model before fit (unbuilt: {unbuilt or 'optimizer'})")
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    train_step = type(model).train_step.__get__(model)
    model.train_step = lambda data: {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}


def _training_data(cache: ImageCache, config: TrainConfig, global_batch: int, strategy):
    """The training dataset; with several workers, each one augments only its share of each batch.

    Left to Keras, every worker would augment every whole global batch and keep its part of it.
    """
    make = dense_training_dataset if config.head == "dense" else training_dataset
    if config.strategy != "multiworker":
        return make(cache, config, global_batch)

    def worker_dataset(context):
        try:
            batch = context.get_per_replica_batch_size(global_batch)
        except ValueError:
            raise ConfigError(f"batch_size {global_batch} must be a multiple of the {context.num_replicas_in_sync} "
                              "replicas of the cluster") from None
        return make(cache, config, batch, shard=(context.num_input_pipelines, context.input_pipeline_id))

    return strategy.distribute_datasets_from_function(worker_dataset)


def _worker_scratch_folder(run_dir: Path, resume: bool) -> Path:
    """A temporary run folder for a non-chief worker, deleted when it is done.

    Such a worker runs every step, validation and save exactly like the chief (the collective
    operations need all workers), but what it writes would only fight the chief over the run
    lock, status, metrics and model. On resume it starts from the run folder's checkpoint, which
    must therefore be on a disk every worker sees.
    """
    scratch = Path(tempfile.mkdtemp(prefix="facetracker-worker-"))
    if resume:
        for name in (runs.CHECKPOINT_MODEL, runs.CHECKPOINT_STATE, runs.METRICS, runs.SPLIT, runs.STATUS):
            if (run_dir / name).is_file():
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / name, scratch / name)
    return scratch


def _optimizer(config: TrainConfig, steps_per_epoch: int, freeze_epochs: int):
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    freeze = min(freeze_epochs, config.epochs) * steps_per_epoch
    if config.schedule == "cosine":
        lr = PhasedCosine(config.lr, total, warmup, freeze if freeze < total else 0, config.finetune_lr_scale)
    else:
        lr = config.lr
    if config.weight_decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)


def _freeze_epochs(config: TrainConfig, weights_used: str) -> int:
    """Fitting heads to a frozen backbone only makes sense when the backbone has learnt something."""
    return config.freeze_backbone_epochs if weights_used == "imagenet" else 0


def _save_model(model, path: Path, include_optimizer: bool, flip_average: bool = False) -> None:
    """Save atomically: a kill or a full disk mid-save leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path, suffix=".keras") as tmp:
        (model if include_optimizer else inference_copy(model, flip_average)).save(tmp)


RUNTIME_FILES_EVERY_S = 120
"""While a run trains, the TFLite files the app runs (`export.write_runtime_files`) follow its best
model at most this often: converting costs seconds of the training's CPU each time. At the end of
the run they are always written for the final model."""


def _save_best(model, run_dir: Path, config: TrainConfig, log: Callable[[str], None]) -> None:
    _save_model(model, run_dir / runs.MODEL, include_optimizer=False, flip_average=config.flip_average)
    if time.monotonic() - _runtime_files_written.setdefault(run_dir, time.monotonic()) >= RUNTIME_FILES_EVERY_S:
        _write_runtime_files(run_dir, log)


_runtime_files_written: dict[Path, float] = {}
"""When each run folder's TFLite files were last written in this process, or its first model saved
(monotonic seconds)."""


def _write_runtime_files(run_dir: Path, log: Callable[[str], None]) -> None:
    """The TFLite files the app runs, beside the run's best model; a failure is noted, not fatal:
    the app exports the model itself when they are missing."""
    if not (run_dir / runs.MODEL).is_file():
        return
    try:
        write_runtime_files(run_dir / runs.MODEL)
    except Exception as error:
        log(f"note: could not write the TFLite files the app runs ({_describe_error(error)}); the app "
            "will convert the model when it is first opened")
    _runtime_files_written[run_dir] = time.monotonic()


def _save_checkpoint(model, path: Path) -> None:
    """The checkpoint with its optimiser, saved with the whole backbone trainable.

    Keras builds a loaded model's optimiser over the variables trainable at load time: saved
    during the frozen phase, it would hold the heads' variables only, skip the saved state of the
    others and fail when the backbone is unfrozen. The optimiser was built over every variable
    (see `_build`), so the checkpoint is saved that way; the phase's flags are put back after.
    """
    backbone = backbone_layer(model)
    flags = [(backbone, backbone.trainable)] + [(layer, layer.trainable) for layer in backbone.layers]
    for layer, _ in flags:  # one by one: a frozen batch-norm layer stays frozen under a trainable backbone
        layer.trainable = True
    try:
        _save_model(model, path, include_optimizer=True)
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable


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
                 val_faces: list[np.ndarray] | None = None):
        super().__init__()
        self.val_faces = val_faces or []
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

    def validation_metrics(self) -> dict:
        outputs = [np.asarray(self.predict(self.val_inputs[i:i + 64].astype(np.float32)))
                   for i in range(0, len(self.val_inputs), 64)]
        out = np.concatenate(outputs) if outputs else np.zeros((0, 5), np.float32)
        if out.ndim == 3:  # a dense model: its most confident cell is its answer for the photo
            return dense_validation_metrics(out, self.val_has_face > 0.5, self.val_boxes, self.val_faces)
        return score(out[:, 0], out[:, 1:], self.val_has_face > 0.5, self.val_boxes)

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


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train into `run_dir`; returns the final status. Raises on errors after recording them.

    A folder that already holds a run's results is refused unless `resume` (carry on) or
    `overwrite` (start over); a folder holding only config.json (as the app leaves it) is not.

    In a multi-worker cluster only the chief writes `run_dir`; the other workers write a temporary
    folder of their own and delete it at the end.
    """
    run_dir = Path(run_dir)
    scratch = None if _is_chief(config.strategy) else _worker_scratch_folder(run_dir, resume)
    if scratch is not None:
        log(f"not the chief worker: the chief writes {run_dir}; this worker's files go to {scratch} "
            "(deleted at the end)")
        run_dir = scratch
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.acquire_lock(run_dir)
    except OSError as error:  # nothing can be recorded in a folder we cannot write
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise runs.RunFolderError(f"{run_dir}: {_describe_error(error)}") from None
    try:
        _refuse_to_replace(run_dir, resume, overwrite)
    except BaseException:
        runs.release_lock(run_dir)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    stop = StopRequested(run_dir, across_workers=config.strategy == "multiworker")
    stop.install()
    (run_dir / runs.STOP).unlink(missing_ok=True)
    try:
        runs.update_status(run_dir, state="starting", pid=os.getpid(), started=time.time(), error=None,
                           message="reading the dataset")
        status = _train(config, run_dir, resume, stop, log)
        return status
    except BaseException as error:
        message = _describe_error(error)
        try:
            runs.update_status(run_dir, state="failed", error=message)
        except OSError as status_error:  # a full or read-only disk refuses this too; read_status sees the dead pid
            log(f"could not record the failure in {runs.STATUS}: {status_error.strerror or status_error}")
        log(f"training failed: {message}")
        raise
    finally:
        runs.release_lock(run_dir)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _refuse_to_replace(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Training afresh replaces metrics, models and checkpoint: never without being asked to."""
    if resume or overwrite:
        return
    found = runs.results_in(run_dir)
    if found:
        raise runs.RunFolderError(
            f"{run_dir}: already holds a run ({', '.join(found)}); use --resume to carry on from its last "
            "checkpoint or --overwrite to start it over")


def _describe_error(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, OSError) and error.errno == 28:
        return (f"the disk is full ({error.filename or 'while writing'}); model.keras and the checkpoint keep "
                "their last complete version")
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to the run folder ({error.strerror}: {error.filename})"
    if isinstance(error, OSError) and error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot make the run folder ({error.strerror}: {error.filename})"
    if isinstance(error, (ValueError, RuntimeError, FileNotFoundError)) and str(error):
        return str(error).splitlines()[0]
    return "".join(traceback.format_exception_only(type(error), error)).strip()


# ----------------------------------------------------------------------------------------------
# The steps of a run


def _check_resume_state(state: dict, source: Path) -> None:
    """The checkpoint's bookkeeping is read from disk, so it is checked like any other input."""
    numbers = {"epochs_done": int, "best_val_iou": (int, float), "since_best": int}
    for key, kind in numbers.items():
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            raise ConfigError(f"{source}: '{key}' must be a number of at least 0, got {value!r}")
    if state.get("best_epoch") is not None and not isinstance(state["best_epoch"], int):
        raise ConfigError(f"{source}: 'best_epoch' must be an epoch number or null")
    state.setdefault("since_best", 0)


def fresh_state() -> dict:
    return {"epochs_done": 0, "best_val_iou": 0.0, "best_epoch": None, "since_best": 0}


def recovered_state(run_dir: Path, best_from_epoch: int = 1) -> dict:
    """The checkpoint's bookkeeping rebuilt from metrics.jsonl and status.json, for when
    checkpoint/state.json is lost or unreadable beside a checkpoint model. The best epoch is looked
    for as the run chose it: from `best_from_epoch` on (or the last epoch done, if sooner).

    An epoch counts as done when its last step was logged: its epoch record then carries that step
    number (a stop mid-epoch also logs an epoch record, but not the epoch's last step). Raises
    ConfigError when no finished epoch is on record.
    """
    records = runs.read_metrics(run_dir)
    logged_steps = {r.get("step") for r in records if r.get("kind") == "step"}
    done = [r for r in records if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int)
            and r.get("step") in logged_steps]
    source = run_dir / runs.CHECKPOINT_STATE
    if not done:
        raise ConfigError(f"{source}: missing or unreadable, and {runs.METRICS} records no finished epoch to "
                          "rebuild it from; start the run over with --overwrite")
    epochs_done = max(r["epoch"] for r in done)

    def val_iou(record: dict) -> float:
        value = record.get("val_mean_iou")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0

    counted_from = min(best_from_epoch, epochs_done)
    best = max((r for r in done if counted_from <= r["epoch"] <= epochs_done), key=lambda r: (val_iou(r), -r["epoch"]))
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    early = status.get("state") == "finished" and str(status.get("message") or "").startswith("stopped early")
    state = {"epochs_done": epochs_done, "best_val_iou": val_iou(best), "best_epoch": best["epoch"],
             "since_best": epochs_done - best["epoch"]}
    if early:
        state["early_stopped"] = True
    return state


def _clear_results(run_dir: Path) -> None:
    """Starting over: no metrics, model or checkpoint of an earlier attempt may remain."""
    import shutil

    if not runs.results_in(run_dir):
        return
    for name in (runs.METRICS, runs.MODEL):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / runs.CHECKPOINT_DIR, ignore_errors=True)
    shutil.rmtree(run_dir / EVENTS_DIR, ignore_errors=True)
    runs.update_status(run_dir, epoch=None, step=None, progress=None, best_val_iou=None, best_epoch=None,
                       last_val=None, weights_used=None)


def _resume_state(config: TrainConfig, run_dir: Path, resume: bool, log: Callable[[str], None]) -> dict | None:
    """Step 1: the bookkeeping to carry on from (None: the run starts over), and config.json.

    config.json is written first in both cases, so what the run trains towards (a resume may raise
    the epoch count) is on record before any epoch runs: a later plain resume carries on to it.
    """
    state = None
    if resume and (run_dir / runs.CHECKPOINT_MODEL).exists():
        state = runs.read_json(run_dir / runs.CHECKPOINT_STATE)
        if not isinstance(state, dict):
            state = recovered_state(run_dir, config.best_from_epoch)
            log(f"note: {run_dir / runs.CHECKPOINT_STATE} was missing or unreadable; rebuilt from "
                f"{runs.METRICS}: {state['epochs_done']} epochs done, best at epoch {state['best_epoch']}")
            runs.write_json(run_dir / runs.CHECKPOINT_STATE, state)
        _check_resume_state(state, run_dir / runs.CHECKPOINT_STATE)
    elif resume:
        log("no epoch had finished before the run ended: starting it over from its config.json")
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    if state is None:
        _clear_results(run_dir)
        return None
    # Records of an epoch the checkpoint does not hold (cut short by a kill or a stop) are dropped:
    # that epoch runs again and its records would otherwise appear twice.
    kept = [r for r in runs.read_metrics(run_dir) if int(r.get("epoch", 0) or 0) <= state["epochs_done"]]
    runs.atomic_write_text(run_dir / runs.METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    return state


def _split_samples(config: TrainConfig, run_dir: Path, resumed: bool, log: Callable[[str], None]):
    """Step 2: the dataset's samples with their split (a resumed run keeps its recorded split)."""
    dataset = data_lib.load_dataset(config.data, root=config.data_root)
    for item in dataset.skipped:
        log(str(item))
    for note in dataset.notes:
        log(f"note: {note}")
    samples = dataset.samples if dataset.has_splits else data_lib.assign_splits(
        dataset.samples, config.seed, config.val_fraction, config.test_fraction)
    recorded = resumed and (run_dir / runs.SPLIT).exists()
    if not dataset.has_splits and config.min_val_photos and not recorded:
        before = sum(s.split == "val" for s in samples)
        samples, moved = data_lib.top_up_validation(samples, config.min_val_photos)
        if moved:
            log(f"validation: the split by name left {before} photos; {len(moved)} more taken from the training "
                f"photos, spread over them in name order, to make {before + len(moved)} "
                f"(at least {config.min_val_photos} wanted)")
    if recorded:
        manifest = runs.read_json(run_dir / runs.SPLIT, {})
        if not (isinstance(manifest, dict) and all(isinstance(v, list) for v in manifest.values())):
            raise ConfigError(f"{run_dir / runs.SPLIT}: not a split manifest (expected lists of images per split)")
        by_path = {p: split for split, paths in manifest.items() for p in paths}
        samples = [dataclasses.replace(s, split=by_path.get(s.image, s.split)) for s in samples]
    runs.write_json(run_dir / runs.SPLIT, data_lib.split_manifest(samples))
    log(dataset.describe())
    return dataset, samples


def _stage(run_dir: Path, message: str, log: Callable[[str], None]) -> None:
    """What the run is doing before its first step (a minute or more on a small CPU), for the app's
    progress bar and the log: without it a person sees only "starting" that long."""
    runs.update_status(run_dir, message=message)
    log(f"{message}…")


def _caches(config: TrainConfig, run_dir: Path, dataset, samples, log: Callable[[str], None]):
    """Step 3: the training and validation images decoded once into memory."""
    _stage(run_dir, f"decoding {sum(s.split in ('train', 'val') for s in samples)} photos into memory", log)
    skipped: list = []
    letterboxed = config.head == "dense"
    train_cache = build_cache([s for s in samples if s.split == "train"], config.cache_size, log, skipped, letterboxed)
    val_cache = build_cache([s for s in samples if s.split == "val"], config.cache_size, log, skipped, letterboxed)
    if len(train_cache.images) == 0:
        raise data_lib.DatasetError(f"{config.data}: no usable training image; nothing to train on")
    if train_cache.has_face.sum() == 0:
        raise data_lib.DatasetError(f"{config.data}: no training image has a labelled face; label some first")
    if len(val_cache.images) == 0:
        log("note: no validation images; validating on the training images instead")
        val_cache = train_cache
    runs.update_status(run_dir, n_train=len(train_cache.images), n_val=len(val_cache.images),
                       skipped=len(dataset.skipped) + len(skipped))
    return train_cache, val_cache


def _build(config: TrainConfig, run_dir: Path, resumed: bool, strategy, steps_per_epoch: int,
           log: Callable[[str], None]):
    """Step 4: the model (the checkpoint's, or a new one with its optimiser) and the weights it started from."""
    with strategy.scope():
        if resumed:
            return load_model(run_dir / runs.CHECKPOINT_MODEL), runs.read_status(run_dir).get(
                "weights_used", config.weights)
        weights_used = config.weights
        build = dict(head=config.head, box_loss=config.box_loss, box_weight=config.box_weight,
                     class_weight=config.class_weight, size=config.image_size)
        try:
            model = build_model(config.backbone, config.weights, **build)
        except WeightsUnavailable as error:
            if not config.allow_random_weights:
                raise
            log(f"warning: {error} Going on from random initialisation as allowed.")
            weights_used = "none (ImageNet weights unavailable)"
            model = build_model(config.backbone, "none", **build)
        optimizer = _optimizer(config, steps_per_epoch, _freeze_epochs(config, weights_used))
        optimizer.build(model.trainable_variables)  # every variable, so unfreezing later needs no rebuild
        model.compile(optimizer=optimizer, jit_compile=False)
    return model, weights_used


def _phases(config: TrainConfig, weights_used: str, epochs_done: int) -> list[tuple[bool, int]]:
    """(backbone trainable, until epoch) for what is left: heads on a frozen backbone, then everything."""
    phases = []
    freeze_epochs = _freeze_epochs(config, weights_used)
    if freeze_epochs and epochs_done < freeze_epochs:
        phases.append((False, min(freeze_epochs, config.epochs)))
    phases.append((True, config.epochs))
    return phases


def _fit_phases(model, config: TrainConfig, strategy, weights_used: str, state: dict, train_data,
                steps_per_epoch: int, callback: RunFolderCallback, stop: StopRequested,
                log: Callable[[str], None]) -> None:
    """Step 5: fit each phase from where the run stands."""
    verbose = 1 if sys.stdout.isatty() else 2
    backbone = backbone_layer(model)
    freeze_bn = config.freeze_batchnorm and weights_used == "imagenet"
    for layer in batchnorm_layers(backbone):
        layer.momentum = config.bn_momentum
    if backbone.trainable:
        set_backbone_trainable(backbone, True, freeze_bn)
    for trainable, until in _phases(config, weights_used, state["epochs_done"]):
        if state["epochs_done"] >= until or stop.check() or state.get("early_stopped"):
            continue
        if backbone.trainable != trainable:
            set_backbone_trainable(backbone, trainable, freeze_bn)
            with strategy.scope():
                model.compile(optimizer=model.optimizer, jit_compile=False)
        log(("training the heads on a frozen backbone" if not trainable else "training the whole model")
            + f", epochs {state['epochs_done'] + 1}-{until}")
        model.fit(train_data, epochs=until, initial_epoch=state["epochs_done"], steps_per_epoch=steps_per_epoch,
                  callbacks=[callback], verbose=verbose)


def _with_enough_copies(config: TrainConfig, n_train: int, log: Callable[[str], None]) -> TrainConfig:
    """The config with as many augmented passes as `min_images_per_epoch` asks of these training images
    (worked out again on resume from the same images, so config.json keeps what was asked)."""
    copies = max(config.copies, math.ceil(config.min_images_per_epoch / max(n_train, 1)))
    if copies == config.copies:
        return config
    log(f"{n_train} training photos: {copies} augmented copies of each per epoch instead of {config.copies}, "
        f"so that an epoch holds at least {config.min_images_per_epoch} images")
    return config.replace(copies=copies)


def _prelabel_fit(train_cache: ImageCache, val_cache: ImageCache, run_dir: Path, stop: StopRequested,
                  log: Callable[[str], None]) -> PrelabelFit | None:
    """Step 6: YuNet's pre-labels on the validation photos, placed as the training labels place their
    boxes, for the verdict (a few seconds; skipped after a stop, and a failure only costs the figure).
    The photos are read again from disk: any deleted meanwhile are counted and left out."""
    if stop.check():
        return None
    _stage(run_dir, "comparing with YuNet's pre-labels on the validation photos", log)
    try:
        return yunet_prelabel_fit(train_cache.samples, val_cache.samples)
    except Exception as error:  # the model is trained and saved: the comparison must not fail the run
        log(f"note: could not compare with YuNet's pre-labels ({_describe_error(error)})")
        return None


def _prelabel_figures(fit: PrelabelFit | None) -> dict:
    """`run_verdict`'s pre-label arguments from what `_prelabel_fit` measured (nothing: not measured)."""
    if fit is None:
        return {}
    return {"prelabel_val_iou": fit.mean_iou, "prelabel_photos": fit.photos, "prelabel_unreadable": fit.unreadable}


def _train(config: TrainConfig, run_dir: Path, resume: bool, stop: StopRequested, log) -> dict:
    state = _resume_state(config, run_dir, resume, log)
    resumed = state is not None
    state = state or fresh_state()
    dataset, samples = _split_samples(config, run_dir, resumed, log)
    train_cache, val_cache = _caches(config, run_dir, dataset, samples, log)

    config = _with_enough_copies(config, len(train_cache.images), log)
    strategy = _strategy(config.strategy)
    steps_per_epoch = math.ceil(len(train_cache.images) * config.copies / config.batch_size)
    _stage(run_dir, f"{'loading the checkpoint' if resumed else 'building the model'} ({config.backbone})", log)
    model, weights_used = _build(config, run_dir, resumed, strategy, steps_per_epoch, log)
    runs.update_status(run_dir, weights_used=weights_used)
    _stage(run_dir, "preparing the first training step (TensorFlow compiles it once)", log)
    log(f"weights: {weights_used}; {len(train_cache.images)} training images x {config.copies} "
        f"augmented copies per epoch, batch {config.batch_size}, {steps_per_epoch} steps per epoch")

    callback = RunFolderCallback(
        run_dir, epochs=config.epochs, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size, stop=stop,
        val_inputs=validation_inputs(val_cache, config.image_size), val_has_face=val_cache.has_face,
        val_boxes=val_cache.boxes, val_faces=val_cache.faces, state=state, early_stopping=config.early_stopping,
        best_from_epoch=config.best_from_epoch, log=log,
        save_best=lambda m: _save_best(m, run_dir, config, log),
        save_checkpoint=lambda m: _save_checkpoint(m, run_dir / runs.CHECKPOINT_MODEL))
    _fit_across_workers(model, config.strategy)
    _fit_phases(model, config, strategy, weights_used, state,
                _training_data(train_cache, config, config.batch_size, strategy), steps_per_epoch, callback, stop, log)
    _write_runtime_files(run_dir, log)
    if stop.check():
        final = "stopped"
        message = f"{stop.reason} after epoch {state['epochs_done']}; resume to carry on"
    else:
        final = "finished"
        message = "stopped early: validation IoU stopped improving" if state.get("early_stopped") else None
    verdict = run_verdict(state["best_val_iou"], val_cache.has_face, val_cache.boxes, train_cache.has_face,
                          train_cache.boxes, validated_on_training=val_cache is train_cache,
                          **_prelabel_figures(_prelabel_fit(train_cache, val_cache, run_dir, stop, log)))
    log(comparison_line(verdict))
    for warning in verdict["warnings"]:
        log(f"warning: {warning}")
    status = runs.update_status(run_dir, state=final, message=message, eta_s=0, verdict=verdict,
                                progress=1.0 if final == "finished" else runs.read_status(run_dir).get("progress"),
                                finished=time.time())
    log(f"{final}: best validation mean IoU {state['best_val_iou']:.3f} at epoch {state['best_epoch']}; "
        f"model saved to {run_dir / runs.MODEL}")
    return status
