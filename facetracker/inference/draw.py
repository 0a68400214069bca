"""Faces drawn on frames and photos: a box with its label on a tab, scaled to the image."""

from __future__ import annotations

import cv2
import numpy as np

from facetracker.inference.detect import Detection, FaceBox

BOX_COLOUR_BGR = (0, 200, 0)


def draw_labelled_box(image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int],
                      label: str | None = None) -> np.ndarray:
    """Draw a pixel box, with its label on a filled tab above it, onto the image (in place) and
    return it. Line and text scale with the image: they read alike on a thumbnail and a 1280 px frame."""
    height, width = image.shape[:2]
    side = max(height, width)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, max(2, round(side / 200)))
    if label:
        scale = max(0.4, side / 1000)
        weight = 1 if scale < 0.8 else 2
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        top = max(y0 - th - 8, 0)
        cv2.rectangle(image, (x0, top), (x0 + tw + 8, top + th + 8), colour, -1)
        cv2.putText(image, label, (x0 + 4, top + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), weight,
                    cv2.LINE_AA)
    return image


def draw_faces(frame_bgr: np.ndarray, faces: tuple[FaceBox, ...] | list[FaceBox], label: str = "face") -> np.ndarray:
    """Draw every face's box with its label, tracker ID (when it has one) and score onto the frame
    (in place) and return it."""
    for face in faces:
        name = f"{label} {face.track_id}" if face.track_id else label
        draw_labelled_box(frame_bgr, face.box, BOX_COLOUR_BGR, f"{name} {face.score:.2f}")
    return frame_bgr


def draw_detection(frame_bgr: np.ndarray, detection: Detection, label: str = "face") -> np.ndarray:
    """Draw every face of the detection with its label and probability onto the frame (in place)."""
    return draw_faces(frame_bgr, detection.faces, label)
