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

from facetracker.boxes import Box
from facetracker.config.jsonconfig import ConfigError, JsonConfig

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
    zoom_out_p: float = 0.0
    """Probability of shrinking the photo onto a larger canvas (a no-face photo, or its mean colour),
    so that close-up portraits also teach faces seen from across a room. Dense models only."""
    zoom_out_max: float = 4.0
    """The most the photo shrinks: 4 turns a face a third of the frame wide into one a twelfth wide."""
    mosaic_p: float = 0.0
    """Probability of a mosaic: a grid of 2x2 up to `mosaic_max` x `mosaic_max` photos in one, so a
    frame holds many faces of many sizes, as a group photo does. Dense models only."""
    mosaic_max: int = 4

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
        if not 1.0 <= self.zoom_out_max <= 8.0:
            raise ConfigError(f"{source}: zoom_out_max must be from 1 to 8, got {self.zoom_out_max}")
        if not 2 <= self.mosaic_max <= 4:
            raise ConfigError(f"{source}: mosaic_max must be from 2 to 4 (a grid of up to 16 photos), got {self.mosaic_max}")


AUGMENT_FILE = "augment.json"
"""Saved into a dataset folder by the Augment page; training uses it by default."""


def build_transform(config: AugmentConfig, size: int, seed: int | None = None) -> A.Compose:
    """The Albumentations pipeline for one config and output size."""
    # Imported here: the CLI parser and the Train page read AugmentConfig without paying for
    # Albumentations' import (docs/speed.md).
    import albumentations as A

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
    # processor: that checks, clips and filters every box after every transform and took most of
    # the time, which made augmentation the bottleneck of training (see
    # docs/notes/2026-11-28-what-makes-it-fast.md).
    # `augment` gives exactly its result (tests/integration/test_bench.py compares the two).
    transform = A.Compose(transforms, seed=seed, save_applied_params=True)
    transform.min_visibility = config.min_visibility
    return transform


def augment(transform: A.Compose, image: np.ndarray, box: Box | None) -> tuple[np.ndarray, Box | None]:
    """Augment one RGB image and its normalised box; a face cropped away gives (image, None)."""
    out, boxes = augment_faces(transform, image, np.array([box] if box is not None else [], np.float64))
    return out, (tuple(float(v) for v in boxes[0]) if len(boxes) else None)


def augment_faces(transform: A.Compose, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augment one RGB image and every face on it (normalised boxes [n, 4]); faces cropped away
    (less than `min_visibility` of them left) are dropped."""
    out = transform(image=image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return out["image"], boxes
    x0, y0, x1, y1 = (boxes[:, i].copy() for i in range(4))
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
    x0, y0, x1, y1 = np.maximum(x0, 0.0), np.maximum(y0, 0.0), np.minimum(x1, 1.0), np.minimum(y1, 1.0)
    visible = np.maximum(x1 - x0, 0.0) * np.maximum(y1 - y0, 0.0)
    keep = (area > 0) & (visible > 0) & (visible >= getattr(transform, "min_visibility", 0.0) * area)
    return out["image"], np.stack([x0, y0, x1, y1], axis=-1)[keep]


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_LINEAR)


def make_scene(rng: np.random.Generator, config: AugmentConfig, images: np.ndarray, faces: list[np.ndarray],
               index: int, backgrounds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The picture one training sample starts from, before `augment_faces`: photo `index` as it is,
    or (with `mosaic_p`) a grid of k x k photos, it and others drawn at random; then (with
    `zoom_out_p`) that shrunk onto a larger canvas. A mosaic shrinks by at most `zoom_out_max / k`
    more, so no face ends smaller than a plain photo zoomed out the most. `images` are squares
    [N, S, S, 3]; `faces[i]` holds photo i's boxes in 0..1; `backgrounds` are indices of no-face
    photos for canvases. Returns the square picture and its boxes in 0..1, every face kept.

    Why both together: a 2x2 to 4x4 mosaic alone puts faces at a half to a quarter of their size,
    a zoom-out alone puts one face per sample at the smaller sizes; together they give many
    faces at the sizes of a room seen by a webcam (10-25 px of a 320 px input), where a model
    trained on either alone drew its boxes too large."""
    side = images.shape[1]
    scene, boxes, grid = images[index], np.asarray(faces[index], np.float64).reshape(-1, 4), 1
    if config.mosaic_p and rng.random() < config.mosaic_p:
        grid = int(rng.integers(2, config.mosaic_max + 1))
        cell = side // grid
        picked = [index, *rng.integers(0, len(images), grid * grid - 1)]
        rng.shuffle(picked)
        scene = np.empty((side, side, 3), np.uint8)
        scene[:] = images[index].mean(axis=(0, 1)).astype(np.uint8)
        placed = []
        for position, photo in enumerate(picked):
            row, col = divmod(position, grid)
            scene[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = _resized(images[photo], cell)
            offset = np.array([col, row, col, row], np.float64) * cell
            placed.append((np.asarray(faces[photo], np.float64).reshape(-1, 4) * cell + offset) / side)
        boxes = np.concatenate(placed)
    most = config.zoom_out_max / grid
    if config.zoom_out_p and most > 1 and rng.random() < config.zoom_out_p:
        # Log-uniform: each halving of the face's size is drawn as often.
        shrink = float(np.exp(rng.uniform(0.0, np.log(most))))
        small = max(8, int(side / shrink))
        if backgrounds is not None and len(backgrounds):
            canvas = images[int(rng.choice(backgrounds))].copy()
        else:
            canvas = np.empty((side, side, 3), np.uint8)
            canvas[:] = images[index].mean(axis=(0, 1)).astype(np.uint8)
        left, top = (int(v) for v in rng.integers(0, side - small + 1, 2))
        canvas[top:top + small, left:left + small] = _resized(scene, small)
        return canvas, (boxes * small + [left, top, left, top]) / side
    return scene, boxes
