"""What a training run is asked to do: `TrainConfig`, the presets, and how options make a config.

No TensorFlow here: the Train page and the command line's parser read these, and a run's
`config.json` is one `TrainConfig` written by whoever starts the run and read back by the training
process (and by every resume).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from facetracker.config.catalog import BACKBONE_NAMES, BOX_LOSS_NAMES, HEADS, WEIGHTS
from facetracker.config.jsonconfig import ConfigError, JsonConfig
from facetracker.data.augment import AUGMENT_FILE, AugmentConfig

STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("constant", "cosine")
MAX_EPOCHS = 10_000
# A cached image is cache_size^2 x 3 bytes: at 1024, 650 photos already take 2 GB of memory.
MAX_CACHE_SIZE = 1024
# Renamed fields: a config.json written under the old name still loads.
FORMER_NAMES = {"allow_random_fallback": "allow_random_weights"}


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take, from `low` to `high` inclusive: written once here, and
    read by `TrainConfig.validate`, the command line's flags and the Train page's fields."""

    low: float
    high: float
    whole: bool = False
    """A whole number (epochs, batch size), not any number."""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not _finite(value):
            return False
        return self.low <= value <= self.high and (not self.whole or float(value).is_integer())

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {self.low:g} to {self.high:g}"


SETTINGS: dict[str, Range] = {
    "epochs": Range(1, MAX_EPOCHS, whole=True),
    "batch_size": Range(1, 4096, whole=True),
    # Adam and AdamW: from a hundredth of the smallest rate any preset uses to well past the largest.
    "lr": Range(1e-6, 0.5),
    "copies": Range(1, 1000, whole=True),
}
"""The settings a person sets on the Train page and the command line, with their allowed values."""


@dataclasses.dataclass
class TrainConfig(JsonConfig):
    data: str = ""
    data_root: str | None = None
    """When set (the app sets its data root), every dataset file training reads must resolve inside
    this folder: a photo or label linking out of it is skipped. The command line leaves it unset."""
    preset: str | None = None
    backbone: str = "vgg16"
    weights: str = "imagenet"
    """"imagenet" or "none" (random initialisation)."""
    allow_random_weights: bool = False
    """Train from random initialisation when ImageNet weights cannot be had, instead of stopping."""
    head: str = "design"
    box_loss: str = "corner_size"
    box_weight: float = 1.0
    class_weight: float = 0.5
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    schedule: str = "constant"
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    freeze_backbone_epochs: int = 0
    """Train only the heads for this many epochs first (useful with ImageNet weights)."""
    finetune_lr_scale: float = 0.1
    """After the frozen epochs the whole model trains at lr times this: a full learning rate would
    wash out the ImageNet features the heads were just fitted to."""
    freeze_batchnorm: bool = True
    """With ImageNet weights, batch-norm layers keep their ImageNet statistics (inference mode)
    while fine-tuning; small augmented batches give noisy statistics."""
    bn_momentum: float = 0.9
    """Momentum of the backbone's batch-norm moving averages. Keras' MobileNets use 0.999, which
    needs thousands of steps to forget the initial statistics: with a few hundred steps from random
    weights the model then behaves differently at inference than in training."""
    copies: int = 1
    """Augmented passes over the training images per epoch."""
    min_images_per_epoch: int = 0
    """More passes than `copies` when the training images are few: an epoch then still holds at
    least this many augmented images, so 30 photos train as many steps as 60 and the schedule (and
    the epoch the best model is chosen from) means the same for both."""
    flip_average: bool = False
    """model.keras averages the predictions on each image and its mirror image (twice the model time)."""
    early_stopping: int = 0
    """Stop after this many epochs without a better validation mean IoU (0: never)."""
    best_from_epoch: int = 1
    """The best model is chosen, and early stopping counts, from this epoch on: an earlier epoch is
    kept only until this one (an untrained model can score best on a handful of validation photos,
    and would then be the one saved). A shorter run counts from its last epoch."""
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    image_size: int = 120
    cache_size: int = 224
    """Training images are decoded once, stretched to this square size and kept in memory."""
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_val_photos: int = 0
    """When the dataset is split by name (no split folders) and validation gets fewer photos than
    this, more are taken from the training photos, spread over the recording (see
    `data.top_up_validation`): a handful of validation photos cannot tell a model from a guess."""
    strategy: str = "default"

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        if isinstance(values, dict):
            for old, new in FORMER_NAMES.items():
                if old in values:
                    values = {**{k: v for k, v in values.items() if k != old}, new: values.get(new, values[old])}
        return super().from_dict(values, source=source)

    def validate(self, source: str = "training config") -> None:
        checks = [
            (self.backbone in BACKBONE_NAMES, f"backbone must be one of {', '.join(BACKBONE_NAMES)}"),
            (self.weights in WEIGHTS, "weights must be 'imagenet' or 'none'"),
            (self.head in HEADS, f"head must be one of {', '.join(HEADS)}"),
            (self.box_loss in BOX_LOSS_NAMES, f"box_loss must be one of {', '.join(BOX_LOSS_NAMES)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}"),
            *((getattr(self, name) in allowed, f"{name} must be {allowed.describe()}, got {getattr(self, name)}")
              for name, allowed in SETTINGS.items()),
            (_finite(self.box_weight) and 0 <= self.box_weight <= 1000,
             f"box_weight must be a number from 0 to 1000, got {self.box_weight}"),
            (_finite(self.class_weight) and 0 <= self.class_weight <= 1000,
             f"class_weight must be a number from 0 to 1000, got {self.class_weight}"),
            (self.box_weight + self.class_weight > 0, "box_weight and class_weight must not both be 0"),
            (_finite(self.weight_decay) and 0 <= self.weight_decay < 1,
             f"weight_decay must be at least 0 and below 1, got {self.weight_decay}"),
            (0 <= self.min_images_per_epoch <= 1_000_000,
             f"min_images_per_epoch must be from 0 to 1000000, got {self.min_images_per_epoch}"),
            (32 <= self.image_size <= 640, "image_size must be between 32 and 640"),
            (self.image_size <= self.cache_size <= MAX_CACHE_SIZE,
             f"cache_size must be between image_size ({self.image_size}) and {MAX_CACHE_SIZE}, got {self.cache_size}"),
            (0 <= self.val_fraction < 0.5 and 0 <= self.test_fraction < 0.5, "val/test fractions must be below 0.5"),
            (0 <= self.min_val_photos <= 10_000, f"min_val_photos must be from 0 to 10000, got {self.min_val_photos}"),
            (0 < self.finetune_lr_scale <= 1, "finetune_lr_scale must be in (0, 1]"),
            (0 <= self.bn_momentum < 1, "bn_momentum must be in [0, 1)"),
            (0 <= self.warmup_epochs <= self.epochs,
             f"warmup_epochs must be from 0 to epochs ({self.epochs}), got {self.warmup_epochs}"),
            # The frozen phase and the early-stop patience may outlast this run (a resume can lengthen
            # it; the loop cuts them at epochs), so they are bounded like epochs themselves.
            (0 <= self.freeze_backbone_epochs <= MAX_EPOCHS,
             f"freeze_backbone_epochs must be from 0 to {MAX_EPOCHS}, got {self.freeze_backbone_epochs}"),
            (0 <= self.early_stopping <= MAX_EPOCHS,
             f"early_stopping must be from 0 to {MAX_EPOCHS}, got {self.early_stopping}"),
            (1 <= self.best_from_epoch <= MAX_EPOCHS,
             f"best_from_epoch must be from 1 to {MAX_EPOCHS}, got {self.best_from_epoch}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}")


PRESETS: dict[str, dict] = {
    # The original design: VGG16 from ImageNet, both heads as drawn, Adam 1e-4, the tutorial's
    # augmentation. Needs the VGG16 ImageNet weights and time, and runs well below the camera's rate
    # live on a CPU; see docs/notes/2026-11-28-browser-frame-rate.md.
    "original": dict(backbone="vgg16", weights="imagenet", head="design", epochs=10, batch_size=8, lr=1e-4,
                     copies=4, augment={"crop_min_scale": 0.6, "crop_max_scale": 0.9}),
    # For a few dozen to a hundred webcam photos, in two to three minutes on 2 CPU cores: too few
    # photos to fine-tune a backbone, so MobileNetV2 alpha 0.5 keeps its ImageNet weights frozen
    # throughout and only the dense head learns (as `multi`'s, every face, at 192 px letterboxed:
    # every cell near a face is a training target, where a single-box head gets one box a photo).
    # An epoch holds at least 256 augmented images however few the photos, validation gets at
    # least 10 photos, and the best model is chosen from epoch 10 on.
    # On a recording's frames the dense head learnt in every run where the single-box grid head it
    # replaces failed one run of three, and 20 epochs found the same faces as 30 in less time; see
    # docs/notes/2026-11-30-quick-preset.md.
    "quick": dict(backbone="mobilenetv2-0.5", weights="imagenet", head="dense", image_size=192, cache_size=224,
                  epochs=20, batch_size=16, lr=1e-3, schedule="cosine", warmup_epochs=1,
                  freeze_backbone_epochs=MAX_EPOCHS, copies=4, min_images_per_epoch=256, early_stopping=10,
                  best_from_epoch=10, min_val_photos=10, box_weight=2.0, class_weight=1.0,
                  augment={"crop_min_scale": 0.5, "crop_max_scale": 1.0, "vflip_p": 0.0,
                           "zoom_out_p": 0.3, "zoom_out_max": 3.0}),
    # The real-time option: MobileNetV2 alpha 0.5 (its ImageNet weights are small and cached
    # offline), heads first on a frozen backbone, then everything at a tenth of the rate with
    # warm-up and cosine decay; the box head reads the stride-16 map in its layout (see
    # model.build_network); the saved model averages each image with its mirror image. The best
    # model is chosen once the whole model has trained two epochs. Alpha 0.5 rather than 0.35, and
    # the mirror-image average, for better boxes on held-out portraits; see
    # docs/notes/2026-11-28-single-box-presets.md.
    "fast": dict(backbone="mobilenetv2-0.5", weights="imagenet", head="spatial", epochs=30, batch_size=32,
                 lr=1e-3, schedule="cosine", warmup_epochs=1, freeze_backbone_epochs=3, copies=2,
                 early_stopping=8, best_from_epoch=5, box_weight=5.0, flip_average=True,
                 augment={"crop_min_scale": 0.5, "crop_max_scale": 1.0, "vflip_p": 0.0}),
    # Every face at any size: the dense detector (model.build_dense_network) on a 320x320
    # letterboxed input, MobileNetV2 alpha 0.5 from ImageNet, heads first on a frozen backbone;
    # trained on scenes that teach small faces and crowds (mosaics of up to 4x4 photos, zoom-out
    # onto other photos, both together) besides the photos themselves.
    "multi": dict(backbone="mobilenetv2-0.5", weights="imagenet", head="dense", image_size=320, cache_size=384,
                  epochs=20, batch_size=16, lr=1e-3, schedule="cosine", warmup_epochs=1,
                  freeze_backbone_epochs=2, finetune_lr_scale=0.3, copies=1, early_stopping=0,
                  box_weight=2.0, class_weight=1.0,
                  augment={"crop_p": 0.5, "crop_min_scale": 0.4, "crop_max_scale": 1.0, "vflip_p": 0.0,
                           "zoom_out_p": 0.4, "zoom_out_max": 8.0, "mosaic_p": 0.4, "mosaic_max": 4}),
}


# From random weights there are no ImageNet features to protect and a few hundred photos must stand
# in for them: no frozen phase, twice the rate, more augmented passes, no early stop while the
# features are still forming, and the grid box head (see model.build_network), whose weights serve
# every position of the face (it beat the flatten-and-dense head from random weights; see
# docs/notes/2026-11-28-single-box-presets.md). Applied on top of the preset when it trains with
# weights "none".
RANDOM_INIT: dict[str, dict] = {
    "fast": dict(head="grid", epochs=26, copies=5, lr=2e-3, warmup_epochs=2, freeze_backbone_epochs=0,
                 early_stopping=0),
}


def preset_values(preset: str | None, weights: str | None = None) -> dict:
    """The values a preset sets (with its random-initialisation variant for `weights="none"`)."""
    if not preset:
        return {}
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    if (weights or values.get("weights")) == "none":
        values.update(RANDOM_INIT.get(preset, {}))
    return values


def config_for(data: str | Path, preset: str | None = None, **overrides: Any) -> TrainConfig:
    """A checked config from defaults, then a preset (its random-init variant for weights "none"),
    then explicit overrides (None means not given; `augment` is an AugmentConfig)."""
    values: dict = {"data": str(data), **preset_values(preset, overrides.get("weights"))}
    augment_values = dict(values.pop("augment", {}))
    augment_override = overrides.pop("augment", None)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    # A preset's warm-up shrinks to a shorter run (`--preset fast --weights none --epochs 1`): the
    # schedule would cut it there anyway. A warm-up given explicitly is checked, not shrunk.
    epochs, warmup = values.get("epochs"), values.get("warmup_epochs")
    if "warmup_epochs" not in given and type(epochs) is int and type(warmup) is int:
        values["warmup_epochs"] = min(warmup, epochs)
    if augment_override is not None:
        augment_cfg = augment_override
    else:
        augment_cfg = AugmentConfig.from_dict(augment_values, source=f"preset {preset}")
    values["augment"] = augment_cfg.to_dict()
    return TrainConfig.from_dict(values, source="training options")


DEFAULT_PRESET = "multi"
"""What the app offers first: the preset that finds every face, in real time."""
SMALL_DATASET_PHOTOS = 150
"""Below this many photos a backbone cannot be fine-tuned without learning the photos by heart: the
`quick` preset, which keeps it frozen, suits such a dataset better."""


SMALL_DATASET_PRESET = "quick"
"""The preset for a dataset under `SMALL_DATASET_PHOTOS` photos."""


def suggested_preset(n_photos: int) -> str:
    """The preset that suits a dataset of this many photos."""
    return SMALL_DATASET_PRESET if n_photos < SMALL_DATASET_PHOTOS else DEFAULT_PRESET


def preset_advice() -> str:
    """Which preset to train first, in one sentence: what every page that points to training says."""
    return (f"with fewer than {SMALL_DATASET_PHOTOS} photos (a webcam recording), the `{SMALL_DATASET_PRESET}` "
            "preset gives a first model in two to three minutes on a CPU; from a few hundred photos, "
            f"`{DEFAULT_PRESET}` finds every face in real time")


def preset_augment(preset: str | None = DEFAULT_PRESET) -> AugmentConfig:
    """The augmentation a preset trains with (the defaults for none)."""
    return AugmentConfig.from_dict(preset_values(preset).get("augment", {}), source=f"preset {preset}")


def default_augment(data: str | Path) -> AugmentConfig | None:
    """The augmentation config saved in the dataset folder by the Augment page, if any."""
    path = Path(data) / AUGMENT_FILE
    return AugmentConfig.load(path) if path.is_file() else None
