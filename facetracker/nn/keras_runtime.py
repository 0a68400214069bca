"""A `.keras` face tracker as a runtime (see `facetracker.inference.runtimes`): for the commands that
score or time a model in memory. The app and the live path run the exported TFLite files instead."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from facetracker.nn.export import input_for, network_at
from facetracker.nn.model import is_dense, load_model


class KerasRuntime:
    """A `.keras` model (or a face tracker in memory) called directly through one traced function,
    as Keras' `predict()` costs far too much a call for video (see
    docs/notes/2026-11-28-what-makes-it-fast.md); with a fixed input signature no later call traces
    or builds a graph. `frame` (width, height): a dense model's network is rebuilt for camera frames
    of that size, as the live path runs it (`dense.input_for_frame`); a single-box model is unchanged."""

    name = "keras"

    def __init__(self, path_or_model, frame: tuple[int, int] | None = None):
        self.model = path_or_model if hasattr(path_or_model, "net") else load_model(path_or_model)
        self.dense = is_dense(self.model)
        net = network_at(self.model, input_for(self.model, frame) if self.dense else None)
        height, width = (int(v) for v in net.input_shape[1:3])
        self.input_wh = (width, height)
        spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="image")
        self._call = tf.function(lambda x: net(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._call(np.asarray(images, np.float32)).numpy()
