"""The face tracker: an ImageNet backbone with two heads, face/no-face and box, trained as one model.

    120x120 RGB (0..255) -> preprocessing -> backbone (no top) -+-> class head -> p(face)
                                                                +-> box head   -> [x0, y0, x1, y1]

    class head (every variant)  global max-pool -> dense 2048 relu -> dense 1 sigmoid
    box head, one of `HEADS`:
      design   the last feature map -> global max-pool -> dense 2048 relu -> dense 4 sigmoid
      spatial  the stride-16 map -> conv 1x1 (32) -> flatten -> dropout -> dense 256 relu -> dense 4 sigmoid
      grid     the stride-16 map -> conv 3x3 (64) -+-> conv 1x1 (1): each cell's "where is the face" score
                                                   +-> conv 1x1 (4) sigmoid: each cell's distances to the edges
               -> `GridBox`: a softmax over the cells' scores averages the cells' boxes

"design" is the original design exactly; "spatial" and "grid" keep where things are in the picture,
which a global max-pool throws away (see `build_network`).

The network outputs one (batch, 5) tensor `[p, x0, y0, x1, y1]`: a single output keeps its order in
every export format (TFLite may reorder several outputs).

The dense head (the `multi` preset) finds every face instead of one (see `build_dense_network`,
`DenseFaceTracker` and `facetracker.inference.dense`): a square letterboxed input, and one row
`[p, x0, y0, x1, y1]` for each cell of its stride-8 grid, (batch, cells, 5).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from facetracker.config.catalog import (
    BACKBONE_WEIGHT_FILES,
    HEADS,
    INPUT_SIZE,
    keras_cache_dir,
)
from facetracker.inference.dense import InputSize, input_wh


class WeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the Keras cache nor downloadable."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    build: callable
    preprocessing: str  # "caffe": BGR minus ImageNet mean; "tf": scale to [-1, 1]; "none": built in
    weights_file: str  # what Keras caches in $KERAS_HOME/models


BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(
        lambda **kw: keras.applications.VGG16(include_top=False, **kw), "caffe",
        BACKBONE_WEIGHT_FILES["vgg16"]),
    "mobilenetv2-0.35": Backbone(
        lambda **kw: keras.applications.MobileNetV2(include_top=False, alpha=0.35, **kw), "tf",
        BACKBONE_WEIGHT_FILES["mobilenetv2-0.35"]),
    "mobilenetv2-0.5": Backbone(
        lambda **kw: keras.applications.MobileNetV2(include_top=False, alpha=0.5, **kw), "tf",
        BACKBONE_WEIGHT_FILES["mobilenetv2-0.5"]),
    "mobilenet-0.25": Backbone(
        lambda **kw: keras.applications.MobileNet(include_top=False, alpha=0.25, **kw), "tf",
        BACKBONE_WEIGHT_FILES["mobilenet-0.25"]),
    "mobilenetv3small": Backbone(
        lambda **kw: keras.applications.MobileNetV3Small(
            include_top=False, include_preprocessing=True, minimalistic=False, **kw), "none",
        BACKBONE_WEIGHT_FILES["mobilenetv3small"]),
}


@keras.saving.register_keras_serializable(package="facetracker")
class ImagenetPreprocess(layers.Layer):
    """The backbone's own input scaling, inside the model so a saved model is self-contained."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, "float32")
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype="float32")
        if self.mode == "tf":
            return images / 127.5 - 1.0
        return images

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="facetracker")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, normalising with batch statistics in TensorFlow's fused kernel.

    Keras 3 computes the batch moments, then scales and shifts, with a dozen separate element-wise
    ops: on a CPU their forward and backward passes took two thirds of a MobileNetV2 training step.
    The fused kernel does it in one op each way, with the same variables and results (the moving
    variance stays the biased one, as Keras keeps it). With stored statistics (inference, frozen
    batch norm) Keras' own scale-and-shift is kept: oneDNN's fused kernel is slow for one image.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm or self.synchronized
                or len(inputs.shape) != 4 or self.axis not in (-1, 3)
                or keras.backend.standardize_dtype(inputs.dtype) != "float32"):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,), tf.float32)
        beta = self.beta if self.center else tf.zeros((channels,), tf.float32)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        count = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # the kernel returns it unbiased
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def with_fused_batch_norm(network: keras.Model) -> keras.Model:
    """The same network and weights, its BatchNormalization layers computed by the fused kernel."""
    if not any(type(layer) is layers.BatchNormalization for layer in network.layers):
        return network

    def clone(layer):
        kind = FusedBatchNormalization if type(layer) is layers.BatchNormalization else type(layer)
        return kind.from_config(layer.get_config())

    fused = keras.models.clone_model(network, clone_function=clone)
    fused.set_weights(network.get_weights())
    return fused


def build_backbone(name: str, weights: str | None, size: InputSize = INPUT_SIZE) -> keras.Model:
    """The backbone at a square input of `size`, or (width, height) for the dense network's other shapes."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if weights == "imagenet":
        # Read the cache folder now, not when keras was imported, so KERAS_HOME set later counts.
        cached = keras_cache_dir() / spec.weights_file
        if cached.is_file():
            weights = str(cached)
    try:
        width, height = input_wh(size)
        network = spec.build(weights=weights, input_shape=(height, width, 3))
    except Exception as error:  # Keras raises a bare Exception on a failed download
        if weights != "imagenet":
            raise
        reason = str(error).split(" -- ")[-1].splitlines()[0][:120]
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not in the Keras cache ({keras_cache_dir() / spec.weights_file}) "
            f"and the download failed ({reason}). Go online once, copy the file there, "
            "or train from random initialisation with --weights none."
        ) from None
    return with_fused_batch_norm(network)


def _with_finer_map(backbone: keras.Model) -> keras.Model:
    """The backbone with a second output: its last feature map at twice the final resolution
    (stride 16), where a face's position is still resolved to a few pixels of the input."""
    final = backbone.output
    finer = [layer.output for layer in backbone.layers[1:]
             if len(layer.output.shape) == 4 and layer.output.shape[1] > final.shape[1]
             and not isinstance(layer, layers.ZeroPadding2D)]
    return keras.Model(backbone.input, [finer[-1], final], name=backbone.name)


@keras.saving.register_keras_serializable(package="facetracker")
class GridBox(layers.Layer):
    """Boxes voted by the cells of a feature grid, weighted by where the face is.

    Each cell proposes a box by its distances (0..1 of the image) to the four edges from the cell's
    centre; a softmax over the cells' `where` scores weights the proposals. Inputs: `where`
    (batch, H, W, 1) and `edges` (batch, H, W, 4); output (batch, 4) `[x0, y0, x1, y1]` in [0, 1].
    """

    def call(self, inputs):
        where, edges = inputs
        h, w = where.shape[1], where.shape[2]
        cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(1, h * w, 4).astype("float32")
        signs = np.array([-1, -1, 1, 1], "float32")
        boxes = centres + signs * ops.reshape(edges, (-1, h * w, 4))
        weights = ops.softmax(ops.reshape(where, (-1, h * w)), axis=-1)
        return ops.clip(ops.sum(boxes * weights[:, :, None], axis=1), 0.0, 1.0)


def build_network(backbone: str = "vgg16", weights: str | None = "imagenet", *, head: str = "design",
                  size: int = INPUT_SIZE, dense_units: int = 2048) -> keras.Model:
    """The functional network.

    `head="design"` is the original two heads exactly. The other two keep the class head and give
    the box head the backbone's stride-16 feature map in its layout, instead of global max-pooling:
    pooling keeps *what* is in the picture and throws away *where*, which is all a box head needs.
    `head="spatial"`: a 1x1 convolution, flatten, dense layers. `head="grid"`: convolutions only,
    see `GridBox`; the same weights serve every position, so a face the model saw in one place is
    found in another, which matters most when few photos train the features from scratch.
    """
    if head not in HEADS or head == "dense":
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(h for h in HEADS if h != 'dense')}"
                         " (the dense head is build_dense_network)")
    features_net = build_backbone(backbone, weights, size)
    if head != "design":
        features_net = _with_finer_map(features_net)
    images = keras.Input((size, size, 3), name="image")
    x = ImagenetPreprocess(BACKBONES[backbone].preprocessing, name="preprocess")(images)
    if head != "design":
        finer, features = features_net(x)
    else:
        features = features_net(x)

    c = layers.GlobalMaxPooling2D(name="class_pool")(features)
    c = layers.Dense(dense_units, activation="relu", name="class_dense")(c)
    face = layers.Dense(1, activation="sigmoid", name="face")(c)

    if head == "design":
        r = layers.GlobalMaxPooling2D(name="box_pool")(features)
        r = layers.Dense(dense_units, activation="relu", name="box_dense")(r)
        box = layers.Dense(4, activation="sigmoid", name="box")(r)
    elif head == "spatial":
        r = layers.Conv2D(32, 1, activation="relu", name="box_conv")(finer)
        r = layers.Flatten(name="box_flatten")(r)
        r = layers.Dropout(0.2, name="box_dropout")(r)
        r = layers.Dense(256, activation="relu", name="box_dense")(r)
        box = layers.Dense(4, activation="sigmoid", name="box")(r)
    else:
        r = layers.Conv2D(64, 3, padding="same", activation="relu", name="box_conv")(finer)
        where = layers.Conv2D(1, 1, name="box_where")(r)
        # Edges start a quarter of the image from the cell's centre: a mid-sized box inside the frame.
        edges = layers.Conv2D(4, 1, activation="sigmoid", name="box_edges",
                              bias_initializer=keras.initializers.Constant(-1.0986))(r)
        box = GridBox(name="box")([where, edges])

    out = layers.Concatenate(name="face_and_box")([face, box])
    return keras.Model(images, out, name=f"facetracker_{backbone.replace('.', '_')}")


# ----------------------------------------------------------------------------------------------
# The dense detector (head "dense", the `multi` preset): every face, at any size


def _tap(backbone: keras.Model, stride: int, height: int, preferred: str) -> keras.KerasTensor:
    """The backbone's feature map at `stride`: the named layer when the backbone has it, else the
    last layer at that stride. For MobileNetV2 at stride 8 that is block 6's expansion (96 channels
    at alpha 0.5, computed anyway) rather than block 5's 16-channel output, which carries too little
    for faces of 10-25 px; at strides 16 and 32 the last residual sums."""
    names = {layer.name: layer for layer in backbone.layers}
    if preferred in names:
        return names[preferred].output
    found = [layer.output for layer in backbone.layers[1:]
             if len(layer.output.shape) == 4 and layer.output.shape[1] == height // stride
             and not isinstance(layer, layers.ZeroPadding2D)]
    if not found:
        raise ValueError(f"backbone {backbone.name} has no feature map at stride {stride}")
    return found[-1]


@keras.saving.register_keras_serializable(package="facetracker")
class DecodeCells(layers.Layer):
    """Each cell's score and box, as rows `[score, x0, y0, x1, y1]` (box in 0..1 of the input).

    Inputs: `logit` (batch, H, W, 1) and `distances` (batch, H, W, 4), the log of each edge's
    distance from the cell's centre in units of 4 cells (0 means 4 cells, about a 32 px face at
    stride 8). Output (batch, H*W, 5), cells row by row as in `dense.grid_centres`. The box decoding
    lives in the network, so an exported model carries it; only NMS is left (`dense.decode`).
    """

    def call(self, inputs):
        logit, distances = inputs
        h, w = logit.shape[1], logit.shape[2]
        cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(1, h * w, 4).astype("float32")
        unit = np.array([4.0 / w, 4.0 / h, 4.0 / w, 4.0 / h], "float32")
        signs = np.array([-1, -1, 1, 1], "float32")
        reach = ops.exp(ops.clip(ops.reshape(distances, (-1, h * w, 4)), -6.0, 4.0)) * unit
        boxes = centres + signs * reach
        score = ops.sigmoid(ops.reshape(logit, (-1, h * w, 1)))
        return ops.concatenate([score, boxes], axis=-1)


def build_dense_network(backbone: str = "mobilenetv2-0.5", weights: str | None = "imagenet", *,
                        size: InputSize = 256, width: int = 64) -> keras.Model:
    """The dense network: backbone maps at strides 8, 16 and 32, merged top-down (as a feature
    pyramid does) into one stride-8 map, then two small convolution heads on every cell.

    The stride-8 grid (32x32 cells at 256 px) resolves faces of 8 px; the coarser maps bring the
    context a 200 px face needs. Depthwise-separable convolutions keep the head to a few tenths of
    a millisecond on a CPU.

    `size`: the square side it trains at, or (width, height), both multiples of 32: every layer is a
    convolution, so the same weights run at any such shape (`dense_network_at`).
    """
    width_px, height = input_wh(size)
    base = build_backbone(backbone, weights, size)
    taps = [_tap(base, 8, height, "block_6_expand_relu"), _tap(base, 16, height, "block_12_add"),
            _tap(base, 32, height, "block_15_add")]
    features_net = keras.Model(base.input, taps, name=base.name)
    images = keras.Input((height, width_px, 3), name="image")
    x = ImagenetPreprocess(BACKBONES[backbone].preprocessing, name="preprocess")(images)
    c8, c16, c32 = features_net(x)
    p = layers.Conv2D(width, 1, activation="relu", name="lateral_32")(c32)
    p = layers.UpSampling2D(2, name="up_32")(p)
    p = layers.Add(name="merge_16")([p, layers.Conv2D(width, 1, activation="relu", name="lateral_16")(c16)])
    p = layers.UpSampling2D(2, name="up_16")(p)
    p = layers.Add(name="merge_8")([p, layers.Conv2D(width, 1, activation="relu", name="lateral_8")(c8)])
    p = layers.SeparableConv2D(width, 3, padding="same", activation="relu", name="head_conv1")(p)
    p = layers.SeparableConv2D(width, 3, padding="same", activation="relu", name="head_conv2")(p)
    # A prior probability of 0.01 face per cell at the start (the focal loss paper's), so the many
    # empty cells do not swamp the first steps.
    logit = layers.Conv2D(1, 1, name="cell_logit", bias_initializer=keras.initializers.Constant(-4.595))(p)
    distances = layers.Conv2D(4, 1, name="cell_distances")(p)
    rows = DecodeCells(name="cells")([logit, distances])
    return keras.Model(images, rows, name=_dense_name(backbone))


def _dense_name(backbone: str) -> str:
    return f"facetracker_dense_{backbone.replace('.', '_')}"


def dense_network_at(net: keras.Model, size: tuple[int, int]) -> keras.Model:
    """The same dense network (same weights) for a (width, height) input, both multiples of 32.

    Why: the network trains on square letterboxed photos, but a 640x480 camera frame fills only
    320x240 of a 320x320 input; the live network sees it at 384x288 instead (`dense.input_for_frame`),
    no grey quarter computed and small faces larger. Every layer is a convolution, so the same
    weights answer for the same pixels.
    """
    width, height = size
    if height % 32 or width % 32:
        raise ValueError(f"a dense network's input must be a multiple of 32 px each way, not {width}x{height}")
    backbones = {_dense_name(name): name for name in BACKBONES}
    if net.name not in backbones:
        raise ValueError(f"{net.name} is not a dense FaceTracker network")
    channels = int(net.get_layer("lateral_32").filters)
    shaped = build_dense_network(backbones[net.name], None, size=(width, height), width=channels)
    shaped.set_weights(net.get_weights())
    return shaped


# ----------------------------------------------------------------------------------------------
# Losses


def localization_loss(true_box, pred_box):
    """Per sample: squared error of the top-left corner plus squared error of width and height."""
    corner = ops.sum(ops.square(true_box[:, :2] - pred_box[:, :2]), axis=-1)
    true_size = true_box[:, 2:] - true_box[:, :2]
    pred_size = pred_box[:, 2:] - pred_box[:, :2]
    size = ops.sum(ops.square(true_size - pred_size), axis=-1)
    return corner + size


def giou_loss(true_box, pred_box):
    """Per sample: 1 - generalised IoU (an option; scale-free, unlike the corner+size loss)."""
    x0 = ops.maximum(true_box[:, 0], pred_box[:, 0])
    y0 = ops.maximum(true_box[:, 1], pred_box[:, 1])
    x1 = ops.minimum(true_box[:, 2], pred_box[:, 2])
    y1 = ops.minimum(true_box[:, 3], pred_box[:, 3])
    inter = ops.maximum(x1 - x0, 0.0) * ops.maximum(y1 - y0, 0.0)
    area_t = (true_box[:, 2] - true_box[:, 0]) * (true_box[:, 3] - true_box[:, 1])
    area_p = ops.maximum(pred_box[:, 2] - pred_box[:, 0], 0.0) * ops.maximum(pred_box[:, 3] - pred_box[:, 1], 0.0)
    union = area_t + area_p - inter + 1e-7
    hull = (ops.maximum(true_box[:, 2], pred_box[:, 2]) - ops.minimum(true_box[:, 0], pred_box[:, 0])) * (
        ops.maximum(true_box[:, 3], pred_box[:, 3]) - ops.minimum(true_box[:, 1], pred_box[:, 1])) + 1e-7
    return 1.0 - (inter / union - (hull - union) / hull)


BOX_LOSSES = {"corner_size": localization_loss, "giou": giou_loss}


@keras.saving.register_keras_serializable(package="facetracker")
class FaceTracker(keras.Model):
    """Trains both heads with one loss: binary cross-entropy + box loss on face samples only.

    The original summed the box error over every sample, so no-face images pulled boxes towards
    their meaningless zeros; here the box term averages over the samples that hold a face.
    Losses are divided by the global batch, so gradients summed over replicas are right under
    `tf.distribute`.
    """

    def __init__(self, net: keras.Model, box_loss: str = "corner_size", box_weight: float = 1.0,
                 class_weight: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.box_loss = box_loss
        self.box_weight = box_weight
        self.class_weight = class_weight
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, images, training=False):
        return self.net(images, training=training)

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.class_loss_tracker, self.box_loss_tracker]

    def compute_losses(self, has_face, true_box, output):
        """(total, class, box) for one replica's batch, each already divided for the global batch."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        has_face = ops.reshape(ops.cast(has_face, "float32"), (-1,))
        prob = ops.clip(output[:, 0], 1e-7, 1.0 - 1e-7)
        bce = -(has_face * ops.log(prob) + (1.0 - has_face) * ops.log(1.0 - prob))
        global_batch = ops.cast(ops.shape(prob)[0] * replicas, "float32")
        class_loss = ops.sum(bce) / global_batch
        per_sample_box = BOX_LOSSES[self.box_loss](ops.cast(true_box, "float32"), output[:, 1:])
        global_faces = ops.maximum(ops.sum(has_face) * replicas, 1.0)
        box_loss = ops.sum(per_sample_box * has_face) / global_faces
        total = self.class_weight * class_loss + self.box_weight * box_loss
        return total, class_loss, box_loss

    def _track(self, total, class_loss, box_loss):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.total_loss_tracker.update_state(total * replicas)
        self.class_loss_tracker.update_state(class_loss * replicas)
        self.box_loss_tracker.update_state(box_loss * replicas)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, (has_face, box) = data
        with tf.GradientTape() as tape:
            output = self(images, training=True)
            total, class_loss, box_loss = self.compute_losses(has_face, box, output)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return self._track(total, class_loss, box_loss)

    def test_step(self, data):
        images, (has_face, box) = data
        output = self(images, training=False)
        return self._track(*self.compute_losses(has_face, box, output))

    def get_config(self):
        return {
            "net": keras.saving.serialize_keras_object(self.net),
            "box_loss": self.box_loss, "box_weight": self.box_weight, "class_weight": self.class_weight,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        net = keras.saving.deserialize_keras_object(config.pop("net"))
        return cls(net, **config)


@keras.saving.register_keras_serializable(package="facetracker")
class DenseFaceTracker(FaceTracker):
    """The dense detector, trained with one loss over every cell of the grid.

    Targets per cell (see `dense.cell_targets`): `has_face` (batch, cells) and `true_box`
    (batch, cells, 4). The face term is the focal loss (RetinaNet's, alpha 0.25, gamma 2): a photo
    has a thousand cells and a few faces, and plain cross-entropy would spend the training on
    easy empty cells. The box term is 1 - GIoU over the cells that learn a face: scale-free, so a
    10 px face counts as much as a 200 px one. Both are divided by the number of those cells in
    the global batch (at least 1).
    """

    def compute_losses(self, has_face, true_box, output):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        positive = ops.cast(has_face, "float32")
        prob = ops.clip(output[..., 0], 1e-6, 1.0 - 1e-6)
        p_true = positive * prob + (1.0 - positive) * (1.0 - prob)
        alpha = positive * 0.25 + (1.0 - positive) * 0.75
        focal = -alpha * ops.square(1.0 - p_true) * ops.log(p_true)
        global_faces = ops.maximum(ops.sum(positive) * replicas, 1.0)
        class_loss = ops.sum(focal) / global_faces
        per_cell_box = giou_loss(ops.reshape(ops.cast(true_box, "float32"), (-1, 4)),
                                 ops.reshape(output[..., 1:], (-1, 4)))
        box_loss = ops.sum(per_cell_box * ops.reshape(positive, (-1,))) / global_faces
        total = self.class_weight * class_loss + self.box_weight * box_loss
        return total, class_loss, box_loss


def is_dense(model: keras.Model) -> bool:
    """Whether the model answers per cell ([cells, 5] rows per image) rather than with one box."""
    return isinstance(model, DenseFaceTracker)


@keras.saving.register_keras_serializable(package="facetracker")
class PhasedCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up then cosine decay, once for the frozen-backbone steps at `lr` and once more for
    fine-tuning at `lr * finetune_scale` (it lives here so loading a checkpoint knows it)."""

    def __init__(self, lr, total_steps, warmup_steps, freeze_steps=0, finetune_scale=1.0):
        self.lr, self.total_steps, self.warmup_steps = lr, total_steps, warmup_steps
        self.freeze_steps, self.finetune_scale = freeze_steps, finetune_scale

    @staticmethod
    def _warm_cosine(step, peak, steps, warmup):
        warm = peak * (step + 1.0) / max(warmup, 1)
        progress = ops.clip((step - warmup) / max(steps - warmup, 1), 0.0, 1.0)
        cosine = peak * (0.01 + 0.99 * 0.5 * (1.0 + ops.cos(3.141592653589793 * progress)))
        return ops.where(step < warmup, warm, cosine)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if not self.freeze_steps:
            return self._warm_cosine(step, self.lr, self.total_steps, self.warmup_steps)
        heads = self._warm_cosine(step, self.lr, self.freeze_steps, self.warmup_steps)
        tuning = self._warm_cosine(step - self.freeze_steps, self.lr * self.finetune_scale,
                                   self.total_steps - self.freeze_steps, self.warmup_steps)
        return ops.where(step < self.freeze_steps, heads, tuning)

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "freeze_steps": self.freeze_steps, "finetune_scale": self.finetune_scale}


def build_model(backbone: str = "vgg16", weights: str | None = "imagenet", *, head: str = "design",
                box_loss: str = "corner_size", box_weight: float = 1.0, class_weight: float = 0.5,
                size: int = INPUT_SIZE) -> FaceTracker:
    """The face tracker. `weights="imagenet"` raises `WeightsUnavailable` offline with an empty cache."""
    if head == "dense":
        net = build_dense_network(backbone, weights if weights != "none" else None, size=size)
        model = DenseFaceTracker(net, box_loss="giou", box_weight=box_weight, class_weight=class_weight)
    else:
        net = build_network(backbone, weights if weights != "none" else None, head=head, size=size)
        model = FaceTracker(net, box_loss=box_loss, box_weight=box_weight, class_weight=class_weight)
    model.build((None, size, size, 3))
    return model


@keras.saving.register_keras_serializable(package="facetracker")
class MirrorImage(layers.Layer):
    """Flip images left to right. (Models saved before `WithMirrorImages` use it.)"""

    def call(self, images):
        return ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="facetracker")
class UnmirrorOutput(layers.Layer):
    """Map `[p, x0, y0, x1, y1]` predicted on a mirrored image back to the original image."""

    def call(self, output):
        return unmirror(output)


def unmirror(output):
    p, x0, y0, x1, y1 = (output[:, i:i + 1] for i in range(5))
    return ops.concatenate([p, 1.0 - x1, y0, 1.0 - x0, y1], axis=-1)


@keras.saving.register_keras_serializable(package="facetracker")
class WithMirrorImages(layers.Layer):
    """Append each image's mirror image to the batch: N images in, 2N out."""

    def call(self, images):
        return ops.concatenate([images, ops.flip(images, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="facetracker")
class AverageWithMirror(layers.Layer):
    """Undo `WithMirrorImages`: average each prediction with its mirror image's, mapped back."""

    def call(self, output):
        direct, mirrored = ops.split(output, 2, axis=0)
        return (direct + unmirror(mirrored)) / 2.0


def with_flip_average(net: keras.Model) -> keras.Model:
    """Test-time augmentation: the mean of the predictions on the image and on its mirror image.

    Twice the model work for steadier boxes (held-out faces-helen, `fast`: mean IoU +0.02). The
    image and its mirror go through the network as one batch of two, which a runtime like
    XNNPACK runs faster than two calls of one.
    """
    images = keras.Input(net.input_shape[1:], name="image")
    out = AverageWithMirror(name="flip_average")(net(WithMirrorImages(name="with_mirror")(images)))
    return keras.Model(images, out, name=f"{net.name}_flip_average")


def inference_copy(model: FaceTracker, flip_average: bool = False) -> FaceTracker:
    """The same network without optimiser state: what `model.keras` and exports hold."""
    net = with_flip_average(model.net) if flip_average and not is_dense(model) else model.net
    copy = type(model)(net, box_loss=model.box_loss, box_weight=model.box_weight,
                       class_weight=model.class_weight)
    size = int(model.net.input_shape[1])
    copy.build((None, size, size, 3))
    return copy


def load_model(path: str | Path) -> FaceTracker:
    """Load a saved `.keras` face tracker without running any code stored in the file.

    Raises FileNotFoundError when there is no file, and ValueError saying what the file is and why
    it is refused: not a Keras file at all, a Lambda layer (code), or a Keras model of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    _check_keras_archive(path)
    code = _code_in_archive(path)
    if code:
        raise ValueError(f"{path}: refused: the model holds code ({code}), which this app never runs: a model "
                         "file is data here. Use a model saved by `python -m facetracker train`") from None
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "safe_mode" in reason or "Lambda" in reason:
            raise ValueError(f"{path}: refused: the model holds code (a Lambda layer), which this app never runs: "
                             "a model file is data here") from None
        raise ValueError(f"{path}: not a usable FaceTracker model ({reason[:300]})") from None
    if not isinstance(model, FaceTracker):
        outputs = _describe_outputs(model)
        raise ValueError(f"{path}: not a FaceTracker model: it is a plain Keras model ({type(model).__name__}, "
                         f"{outputs}), not one saved by this app's training, the only kind the app runs "
                         "(its output is read as a face probability and a box). Train one with "
                         "`python -m facetracker train`, or choose a run's model.keras") from None
    return model


CODE_CLASSES = {"Lambda": "a Lambda layer", "__lambda__": "a Python lambda", "TFOpLambda": "a TensorFlow op layer"}
KNOWN_MODULES = ("keras", "facetracker")
"""Classes of these packages are what a FaceTracker's config names; any other class is code from
somewhere else, which loading the model would import and run."""
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def _code_in_archive(path: Path) -> str | None:
    """What code a .keras archive's config.json asks to run when loaded (a Lambda layer, a Python
    function, a class from outside Keras and FaceTracker), in words; None when it names none.
    Read from the config alone, before Keras deserialises anything."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                return None  # Keras refuses such a file by itself; nothing of it is deserialised here
            config = json.loads(archive.read(info).decode("utf-8"))
    except (KeyError, OSError, ValueError, RecursionError, zipfile.BadZipFile):
        return None  # not a readable config: Keras' own load says what is wrong with it
    pending = [config]
    while pending:  # without recursion: a hostile config may nest deeply
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        pending.extend(item.values())
        class_name, module = item.get("class_name"), item.get("module")
        if not isinstance(class_name, str):
            continue
        name = item.get("config", {}).get("name") if isinstance(item.get("config"), dict) else None
        called = f" '{name}'" if isinstance(name, str) else ""
        if class_name in CODE_CLASSES:
            return f"{CODE_CLASSES[class_name]}{called}"
        if isinstance(module, str) and module.split(".")[0] not in KNOWN_MODULES:
            what = "a Python function" if class_name == "function" else f"the class {class_name}"
            return f"{what} from the Python module '{module}'"
        registered = item.get("registered_name")
        if isinstance(registered, str) and ">" in registered and registered.split(">")[0] not in KNOWN_MODULES:
            return f"the layer class {class_name}{called} of the package '{registered.split('>')[0]}'"
    return None


def _check_keras_archive(path: Path) -> None:
    """Refuse, by its first bytes, a file that cannot be a .keras archive (which is a zip)."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise ValueError(f"{path}: not a Keras file: it is empty (0 bytes); a .keras model is a zip archive")
    if head.startswith(b"\x89HDF"):
        raise ValueError(f"{path}: not a Keras file (zip): it is an HDF5 file, the legacy .h5 format, which is "
                         "not read here; load it in Keras and save it as .keras")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras file (zip): its first bytes are {head!r}, not a zip archive's")


def _describe_outputs(model: keras.Model) -> str:
    """"N outputs of shape ...", as far as the model tells."""
    try:
        shapes = [tuple(output.shape) for output in model.outputs]
    except (AttributeError, TypeError, ValueError):
        shapes = []
    if not shapes:
        return "outputs of unknown shape (a model class of its own)"
    listed = ", ".join(str(shape) for shape in shapes)
    return f"{len(shapes)} output{'s' if len(shapes) != 1 else ''} of shape {listed}"


def backbone_layer(model: FaceTracker) -> keras.Model:
    """The backbone inside the network (for freezing and unfreezing)."""
    return next(layer for layer in model.net.layers if isinstance(layer, keras.Model))


def batchnorm_layers(backbone: keras.Model) -> list[layers.BatchNormalization]:
    return [layer for layer in backbone.layers if isinstance(layer, layers.BatchNormalization)]


def set_backbone_trainable(backbone: keras.Model, trainable: bool, freeze_batchnorm: bool) -> None:
    """Train (or freeze) the backbone; with `freeze_batchnorm` its batch-norm layers stay frozen.

    Keras runs a non-trainable BatchNormalization in inference mode, with its stored statistics:
    small augmented batches would otherwise replace ImageNet's statistics with noisy ones.
    """
    backbone.trainable = trainable
    if trainable and freeze_batchnorm:
        for layer in batchnorm_layers(backbone):
            layer.trainable = False
