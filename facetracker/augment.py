"""Augmentation: one JSON-able config turned into an Albumentations pipeline.

The same `augment()` feeds training and renders the app's preview, so what you see is what trains.
Images arrive already stretched to a square (see `data.model_input`), as the model sees whole
frames at inference; crops keep roughly that square shape so faces are not distorted differently
in training than live.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from facetracker.data import Box
from facetracker.jsonconfig import ConfigError, JsonConfig

if TYPE_CHECKING:
    import albumentations as A


@dataclasses.dataclass
class AugmentConfig(JsonConfig):
    crop_p: float = 1.0
    """Probability of a random crop; the crop is then resized to the model's input size."""
    crop_min_scale: float = 0.5
    """Smallest crop, as a fraction of the image's area (the original cropped 450x450 of 640x480: 0.66)."""
    crop_max_scale: float = 1.0
    min_visibility: float = 0.5
    """A face with less than this share left inside the crop turns the sample into a no-face sample."""
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    brightness_contrast_p: float = 0.2
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    gamma_p: float = 0.2
    gamma_min: float = 80.0
    gamma_max: float = 120.0
    rgb_shift_p: float = 0.2
    rgb_shift_limit: int = 20

    def validate(self, source: str = "augmentation config") -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_p") or field.name in ("min_visibility", "brightness_limit", "contrast_limit"):
                if not 0.0 <= value <= 1.0:
                    raise ConfigError(f"{source}: {field.name} must be between 0 and 1, got {value}")
        if not 0.05 <= self.crop_min_scale <= self.crop_max_scale <= 1.0:
            raise ConfigError(f"{source}: need 0.05 <= crop_min_scale <= crop_max_scale <= 1")
        if not 1 <= self.gamma_min <= self.gamma_max <= 400:
            raise ConfigError(f"{source}: need 1 <= gamma_min <= gamma_max <= 400")
        if not 0 <= self.rgb_shift_limit <= 255:
            raise ConfigError(f"{source}: rgb_shift_limit must be between 0 and 255")


AUGMENT_FILE = "augment.json"
"""Saved into a dataset folder by the Augment page; training uses it by default."""


def build_transform(config: AugmentConfig, size: int, seed: int | None = None) -> A.Compose:
    """The Albumentations pipeline for one config and output size."""
    import albumentations as A  # imported here: the CLI parser and the Train page read AugmentConfig without it (1 s)

    transforms = [
        A.RandomResizedCrop(
            size=(size, size),
            scale=(config.crop_min_scale, config.crop_max_scale),
            ratio=(0.8, 1.25),
            p=config.crop_p,
        ),
        A.Resize(size, size),  # a no-op after a crop; sizes the image when no crop was drawn
        A.HorizontalFlip(p=config.hflip_p),
        A.VerticalFlip(p=config.vflip_p),
        A.RandomBrightnessContrast(
            brightness_limit=config.brightness_limit, contrast_limit=config.contrast_limit,
            p=config.brightness_contrast_p,
        ),
        A.RandomGamma(gamma_limit=(config.gamma_min, config.gamma_max), p=config.gamma_p),
        A.RGBShift(
            r_shift_limit=config.rgb_shift_limit, g_shift_limit=config.rgb_shift_limit,
            b_shift_limit=config.rgb_shift_limit, p=config.rgb_shift_p,
        ),
    ]
    # The box is moved by `augment` from the applied crop and flips, not by Albumentations' bbox
    # processor: that checks, clips and filters every box after every transform and cost 80% of
    # the time (1.1 ms of 1.3 ms an image), which made augmentation the bottleneck of training.
    # `augment` gives exactly its result (tests/test_bench.py compares the two).
    transform = A.Compose(transforms, seed=seed, save_applied_params=True)
    transform.min_visibility = config.min_visibility
    return transform


def augment(transform: A.Compose, image: np.ndarray, box: Box | None) -> tuple[np.ndarray, Box | None]:
    """Augment one RGB image and its normalised box; a face cropped away gives (image, None)."""
    out = transform(image=image)
    if box is None:
        return out["image"], None
    x0, y0, x1, y1 = box
    for name, params in out["applied_transforms"]:
        if name == "RandomResizedCrop":
            height, width = params["shape"][:2]
            left, top, right, bottom = params["crop_coords"]
            x0, x1 = ((x * width - left) / (right - left) for x in (x0, x1))
            y0, y1 = ((y * height - top) / (bottom - top) for y in (y0, y1))
        elif name == "HorizontalFlip":
            x0, x1 = 1.0 - x1, 1.0 - x0
        elif name == "VerticalFlip":
            y0, y1 = 1.0 - y1, 1.0 - y0
    area = (x1 - x0) * (y1 - y0)
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    visible = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    if area <= 0 or visible <= 0 or visible < getattr(transform, "min_visibility", 0.0) * area:
        return out["image"], None
    return out["image"], (float(x0), float(y0), float(x1), float(y1))
