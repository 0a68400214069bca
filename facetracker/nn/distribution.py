"""Training on several devices or machines: the tf.distribute strategy, the chief worker, the data split across them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import TrainConfig
from facetracker.nn.pipeline import ImageCache, dense_training_dataset, training_dataset
from facetracker.runs import run_folder as runs


def strategy_for(name: str):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy 'multiworker' needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: str) -> bool:
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


def fit_across_workers(model, strategy_name: str) -> None:
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


def distributed_data(cache: ImageCache, config: TrainConfig, global_batch: int, strategy):
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


def worker_scratch_folder(run_dir: Path, resume: bool) -> Path:
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
