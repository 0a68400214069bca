"""The training input: photos decoded once into a cache, then endless augmented batches (tf.data)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from facetracker.config.training import TrainConfig
from facetracker.data import datasets as data_lib
from facetracker.data.augment import augment, augment_faces, build_transform, make_scene
from facetracker.data.images import model_input, sample_pixels
from facetracker.evaluation.verdict import MOVED_PHOTOS_MOST, moved_photos
from facetracker.inference.dense import (
    cell_targets,
    letterbox,
)


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
            pixels = sample_pixels(sample, max_side=size * 2)
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
            image = model_input(pixels, size)
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
    return np.stack([model_input(img, size) for img in cache.images]) if len(cache.images) else \
        np.zeros((0, size, size, 3), np.uint8)


def moved_validation(cache: ImageCache, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation photos with a face (at most `MOVED_PHOTOS_MOST`, spread over them), moved
    (`verdict.moved_photos`), as model inputs, and their faces' boxes: where the verdict tells a
    model that finds faces from one that learnt a place."""
    faces = np.flatnonzero(cache.has_face > 0.5)
    if len(faces) > MOVED_PHOTOS_MOST:
        faces = faces[np.linspace(0, len(faces) - 1, MOVED_PHOTOS_MOST).round().astype(int)]
    images, boxes = moved_photos(cache.images[faces], cache.boxes[faces])
    inputs = np.stack([model_input(img, size) for img in images]) if len(images) else \
        np.zeros((0, size, size, 3), np.uint8)
    return inputs, boxes.astype(np.float32)
