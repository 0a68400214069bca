"""Training: a dataset folder in, a run folder out (see `facetracker.runs.run_folder` for what it holds).

`train(config)` runs in the calling process and is what `python -m facetracker train` calls; the app
starts that command as its own process, so closing the browser never stops a run. The config itself
(`TrainConfig`, presets) lives in `facetracker.config.training`, which needs no TensorFlow.

This module holds the run's steps, in order; each job they call has its own module: the input
(`pipeline`), stop requests (`stopping`), several devices or machines (`distribution`), the
run-folder callback (`run_callback`), what is saved (`saving`), resume bookkeeping (`resume`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import keras

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import TrainConfig
from facetracker.data import datasets as data_lib
from facetracker.evaluation.trained_on import describe_training
from facetracker.evaluation.verdict import comparison_line, run_verdict
from facetracker.labelling.prelabel import PrelabelFit, yunet_prelabel_fit
from facetracker.nn.distribution import (
    distributed_data,
    fit_across_workers,
    is_chief,
    strategy_for,
    worker_scratch_folder,
)
from facetracker.nn.errors import describe_error
from facetracker.nn.model import (
    PhasedCosine,
    WeightsUnavailable,
    backbone_layer,
    batchnorm_layers,
    build_model,
    load_model,
    set_backbone_trainable,
)
from facetracker.nn.pipeline import (
    ImageCache,
    build_cache,
    moved_validation,
    validation_inputs,
)
from facetracker.nn.resume import fresh_state, resume_state
from facetracker.nn.run_callback import RunFolderCallback
from facetracker.nn.saving import save_best, save_checkpoint, write_run_runtime_files
from facetracker.nn.stopping import StopRequested
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs

# ----------------------------------------------------------------------------------------------
# Data pipeline


# ----------------------------------------------------------------------------------------------
# Training


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


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train into `run_dir`; returns the final status. Raises on errors after recording them.

    A folder that already holds a run's results is refused unless `resume` (carry on) or
    `overwrite` (start over); a folder holding only config.json (as the app leaves it) is not.

    In a multi-worker cluster only the chief writes `run_dir`; the other workers write a temporary
    folder of their own and delete it at the end.
    """
    run_dir = Path(run_dir)
    scratch = None if is_chief(config.strategy) else worker_scratch_folder(run_dir, resume)
    if scratch is not None:
        log(f"not the chief worker: the chief writes {run_dir}; this worker's files go to {scratch} "
            "(deleted at the end)")
        run_dir = scratch
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        ownership.acquire_lock(run_dir)
        runs.remove_dead_temps(run_dir)
    except OSError as error:  # nothing can be recorded in a folder we cannot write
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise runs.RunFolderError(f"{run_dir}: {describe_error(error)}") from None
    try:
        _refuse_to_replace(run_dir, resume, overwrite)
    except BaseException:
        ownership.release_lock(run_dir)
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
        message = describe_error(error)
        try:
            runs.update_status(run_dir, state="failed", error=message)
        except OSError as status_error:  # a full or read-only disk refuses this too; read_status sees the dead pid
            log(f"could not record the failure in {runs.STATUS}: {status_error.strerror or status_error}")
        log(f"training failed: {message}")
        raise
    finally:
        ownership.release_lock(run_dir)
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


# ----------------------------------------------------------------------------------------------
# The steps of a run


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
        log(f"note: could not compare with YuNet's pre-labels ({describe_error(error)})")
        return None


def _prelabel_figures(fit: PrelabelFit | None) -> dict:
    """`run_verdict`'s pre-label arguments from what `_prelabel_fit` measured (nothing: not measured)."""
    if fit is None:
        return {}
    return {"prelabel_val_iou": fit.mean_iou, "prelabel_photos": fit.photos, "prelabel_unreadable": fit.unreadable,
            "prelabel_own_labels": fit.own_labels}


def _train(config: TrainConfig, run_dir: Path, resume: bool, stop: StopRequested, log) -> dict:
    state = resume_state(config, run_dir, resume, log)
    resumed = state is not None
    state = state or fresh_state()
    dataset, samples = _split_samples(config, run_dir, resumed, log)
    train_cache, val_cache = _caches(config, run_dir, dataset, samples, log)
    runs.write_json(run_dir / runs.TRAINED_ON, describe_training(train_cache.samples, config))

    config = _with_enough_copies(config, len(train_cache.images), log)
    strategy = strategy_for(config.strategy)
    steps_per_epoch = math.ceil(len(train_cache.images) * config.copies / config.batch_size)
    _stage(run_dir, f"{'loading the checkpoint' if resumed else 'building the model'} ({config.backbone})", log)
    model, weights_used = _build(config, run_dir, resumed, strategy, steps_per_epoch, log)
    runs.update_status(run_dir, weights_used=weights_used)
    _stage(run_dir, "preparing the first training step (TensorFlow compiles it once)", log)
    log(f"weights: {weights_used}; {len(train_cache.images)} training images x {config.copies} "
        f"augmented copies per epoch, batch {config.batch_size}, {steps_per_epoch} steps per epoch")

    moved = moved_validation(val_cache, config.image_size)
    callback = RunFolderCallback(
        run_dir, epochs=config.epochs, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size, stop=stop,
        val_inputs=validation_inputs(val_cache, config.image_size), val_has_face=val_cache.has_face,
        val_boxes=val_cache.boxes, val_faces=val_cache.faces, moved=moved, state=state,
        early_stopping=config.early_stopping,
        best_from_epoch=config.best_from_epoch, log=log,
        save_best=lambda m: save_best(m, run_dir, config, log),
        save_checkpoint=lambda m: save_checkpoint(m, run_dir / runs.CHECKPOINT_MODEL))
    fit_across_workers(model, config.strategy)
    _fit_phases(model, config, strategy, weights_used, state,
                distributed_data(train_cache, config, config.batch_size, strategy), steps_per_epoch, callback, stop, log)
    write_run_runtime_files(run_dir, log)
    # A run resumed from a checkpoint of an older version has no moved figure for its best epoch.
    moved_iou = (state.get("best_metrics") or {}).get("moved_mean_iou")
    moved_iou = moved_iou if isinstance(moved_iou, (int, float)) and not isinstance(moved_iou, bool) else None
    if stop.check():
        final = "stopped"
        message = f"{stop.reason} after epoch {state['epochs_done']}; resume to carry on"
    else:
        final = "finished"
        message = (f"stopped early at epoch {state['epochs_done']} of the {config.epochs} asked for: no better "
                   f"validation IoU for {config.early_stopping} epochs after epoch {state['best_epoch']}; resume to "
                   "train on (the count of epochs without a better one starts again)"
                   if state.get("early_stopped") and state["epochs_done"] < config.epochs else None)
    verdict = run_verdict(state["best_val_iou"], val_cache.has_face, val_cache.boxes, train_cache.has_face,
                          train_cache.boxes, validated_on_training=val_cache is train_cache,
                          model_moved_iou=moved_iou, moved_boxes=moved[1] if moved_iou is not None else None,
                          **_prelabel_figures(_prelabel_fit(train_cache, val_cache, run_dir, stop, log)))
    log(comparison_line(verdict))
    for warning in verdict["warnings"]:
        log(f"warning: {warning}")
    status = runs.update_status(run_dir, state=final, message=message, eta_s=0, verdict=verdict,
                                progress=1.0 if final == "finished" else runs.read_status(run_dir).get("progress"),
                                finished=time.time())
    log(f"{final}: best validation mean IoU {state['best_val_iou']:.3f} at epoch {state['best_epoch']}; "
        f"model saved to {run_dir / runs.MODEL}" + (f"; {message}" if final == "finished" and message else ""))
    return status
