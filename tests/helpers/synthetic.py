"""Small synthetic datasets made at test time: a bright 'face' blob on a noisy background."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np


def face_image(width: int, height: int, box: tuple[int, int, int, int] | None, seed: int = 0) -> np.ndarray:
    """BGR image with an orange ellipse filling `box` (pixels) on grey noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        cv2.ellipse(image, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360,
                    (80, 160, 240), -1)
    return image


def labelme(image_name: str, width: int, height: int, box, image_data: bytes | None = None, **extra) -> str:
    shapes = []
    if box is not None:
        shapes.append({"label": "face", "points": [[box[2], box[3]], [box[0], box[1]]],  # corners in any order
                       "shape_type": "rectangle", "flags": {}, "group_id": None})
    record = {"version": "5.6.1", "flags": {}, "shapes": shapes, "imagePath": f"../images/{image_name}",
              "imageData": base64.b64encode(image_data).decode() if image_data else None,
              "imageHeight": height, "imageWidth": width}
    record.update(extra)
    return json.dumps(record)


def make_labelme_dataset(root: Path, n_faces: int = 6, n_empty: int = 2, size=(160, 120), split: str | None = None,
                         seed: int = 0) -> list[tuple[str, tuple | None]]:
    """images/ + labels/ (inside `split/` when given); returns (stem, pixel box or None) per image."""
    base = root / split if split else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made = []
    width, height = size
    for i in range(n_faces + n_empty):
        stem = f"{split or 'img'}_{i:03d}"
        box = None
        if i < n_faces:
            w = int(rng.integers(width // 4, width // 2))
            h = int(rng.integers(height // 4, height // 2))
            x0 = int(rng.integers(0, width - w))
            y0 = int(rng.integers(0, height - h))
            box = (x0, y0, x0 + w, y0 + h)
        cv2.imwrite(str(base / "images" / f"{stem}.jpg"), face_image(width, height, box, seed=i))
        if box is not None or i % 2:  # some no-face images have an empty label, some none at all
            (base / "labels" / f"{stem}.json").write_text(labelme(f"{stem}.jpg", width, height, box))
        made.append((stem, box))
    return made
