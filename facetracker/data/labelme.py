"""labelme files as this app writes them: one image, a `face` rectangle (pixel corners) per face."""

from __future__ import annotations

import json

from facetracker.boxes import Box


def labelme_json(image_name: str, width: int, height: int, box: Box | None, description: str = "") -> str:
    """A labelme 5 file for one image with at most one `face` rectangle (pixel corners)."""
    return labelme_faces_json(image_name, width, height, [] if box is None else [(box, description)])


def labelme_faces_json(image_name: str, width: int, height: int, faces: list[tuple[Box, str]]) -> str:
    """A labelme 5 file for one image with a `face` rectangle (pixel corners, a description) per face."""
    shapes = []
    for box, description in faces:
        x0, y0, x1, y1 = (float(v) for v in box)
        shapes.append({"label": "face", "points": [[x0, y0], [x1, y1]], "group_id": None,
                       "description": description, "shape_type": "rectangle", "flags": {}, "mask": None})
    return json.dumps({"version": "5.6.1", "flags": {}, "shapes": shapes, "imagePath": image_name,
                       "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}, indent=1)
