"""A labelled video made at test time from real photos: a virtual camera pans and zooms over a wall of
group photos (faces-afw-groups) and portraits (faces-helen), and every labelled face is boxed in every
frame, its box following exactly from the camera's known transform.

The wall: four group photos side by side on top, four portraits (each scaled to the group photos'
height) below. The camera's path, by key frames of (centre, zoom):

    pan along the group photos      faces leave on one side and enter on the other
    zoom out to 0.6 between rows    faces small, both rows in view
    zoom in to 1.3 on a portrait    a large face, partly out of frame as the camera moves on
    pan along the portraits, back up to the group photos

A face is labelled in a frame while at least a quarter of its box is inside the frame; its label is
the part inside. Labels are written as MOTChallenge ground truth (`gt.txt`: frame from 1, face id,
left, top, width, height, 1, 1, visible fraction). The clip carries a sound track (a tone), so a
tool that rewrites the video can be checked for keeping it. Nothing here is kept in the repository:
the photos are research-only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from facetracker.data.datasets import load_dataset

FRAME = (640, 480)
ROW_HEIGHT = 480
GROUP_PHOTOS = 4
PORTRAITS = 4
MIN_VISIBLE = 0.25
"""A face is labelled while at least this fraction of its box is inside the frame."""
AUDIO_RATE = 48_000


@dataclasses.dataclass(frozen=True)
class Clip:
    video: Path
    labels: Path
    """MOTChallenge ground truth (gt.txt) of every face in every frame."""
    frames: int
    size: tuple[int, int]
    rate: int
    face_frames: int
    """Rows of the labels: one per face per frame it is labelled in."""
    photos: tuple[str, ...]
    """The photos on the wall, by name."""


@dataclasses.dataclass(frozen=True)
class _Face:
    id: int
    box: tuple[float, float, float, float]
    """On the wall, in its pixels."""


def _pick(samples, count: int, rng: np.random.Generator, at_least: int) -> list:
    usable = sorted((s for s in samples if len(s.faces) >= at_least), key=lambda s: s.name)
    if len(usable) < count:
        raise ValueError(f"only {len(usable)} photos with {at_least} or more labelled faces")
    return [usable[i] for i in sorted(rng.choice(len(usable), count, replace=False))]


def build_wall(data_root: Path, seed: int) -> tuple[np.ndarray, list[_Face], list[tuple[float, float]], list[str]]:
    """(the wall image, every labelled face on it, the centre of each photo, the photos' names)."""
    rng = np.random.default_rng(seed)
    groups = _pick(load_dataset(data_root / "faces-afw-groups", check_pixels=False).samples, GROUP_PHOTOS, rng, 2)
    portraits = _pick(load_dataset(data_root / "faces-helen", check_pixels=False).samples, PORTRAITS, rng, 1)
    rows = []
    for photos in (groups, portraits):
        placed = []
        for sample in photos:
            image = cv2.imread(sample.image)
            if image is None:
                raise ValueError(f"{sample.image}: cannot read the photo")
            scale = ROW_HEIGHT / image.shape[0]
            image = cv2.resize(image, (round(image.shape[1] * scale), ROW_HEIGHT), interpolation=cv2.INTER_AREA)
            placed.append((sample, image))
        rows.append(placed)
    width = max(sum(image.shape[1] for _, image in row) for row in rows)
    wall = np.full((ROW_HEIGHT * len(rows), width, 3), 96, np.uint8)
    faces, centres, names = [], [], []
    for row_index, row in enumerate(rows):
        x = (width - sum(image.shape[1] for _, image in row)) // 2
        y = row_index * ROW_HEIGHT
        for sample, image in row:
            height, w = image.shape[:2]
            wall[y:y + height, x:x + w] = image
            for face in sample.faces:
                x0, y0, x1, y1 = face
                faces.append(_Face(len(faces) + 1, (x + x0 * w, y + y0 * height, x + x1 * w, y + y1 * height)))
            centres.append((x + w / 2, y + height / 2))
            names.append(Path(sample.image).name)
            x += w
    return wall, faces, centres, names


def camera_path(centres: list[tuple[float, float]], seconds: float) -> list[tuple[float, tuple[float, float, float]]]:
    """Key frames (time in seconds, (centre x, centre y, zoom)) over the wall's photos."""
    group, portrait = centres[:GROUP_PHOTOS], centres[GROUP_PHOTOS:]
    between_rows = ((group[2][0] + group[3][0]) / 2, ROW_HEIGHT)
    keys = [(0.0, (*group[0], 1.0)),
            (0.3, (*group[2], 1.0)),
            (0.45, (*between_rows, 0.6)),
            (0.6, (*portrait[2], 1.3)),
            (0.8, (*portrait[0], 1.3)),
            (1.0, (*group[1], 1.0))]
    return [(share * seconds, key) for share, key in keys]


def _camera_at(keys, t: float) -> tuple[float, float, float]:
    for (t0, a), (t1, b) in itertools.pairwise(keys):
        if t <= t1:
            share = (t - t0) / (t1 - t0)
            share = (1 - math.cos(math.pi * share)) / 2  # the camera eases in and out of each move
            return tuple(u + (v - u) * share for u, v in zip(a, b))
    return keys[-1][1]


def _view(camera: tuple[float, float, float]) -> np.ndarray:
    """The affine map from wall pixels to frame pixels for a camera (centre x, centre y, zoom)."""
    cx, cy, zoom = camera
    width, height = FRAME
    return np.array([[zoom, 0, width / 2 - zoom * cx], [0, zoom, height / 2 - zoom * cy]], np.float64)


def frame_labels(faces: list[_Face], view: np.ndarray) -> list[tuple[int, tuple[float, float, float, float], float]]:
    """(face id, box inside the frame, visible fraction) of each face at least MIN_VISIBLE in view."""
    width, height = FRAME
    zoom, dx, dy = view[0, 0], view[0, 2], view[1, 2]
    found = []
    for face in faces:
        x0, y0, x1, y1 = face.box
        box = (zoom * x0 + dx, zoom * y0 + dy, zoom * x1 + dx, zoom * y1 + dy)
        inside = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height))
        area = (box[2] - box[0]) * (box[3] - box[1])
        seen = max(inside[2] - inside[0], 0.0) * max(inside[3] - inside[1], 0.0)
        if area > 0 and seen / area >= MIN_VISIBLE:
            found.append((face.id, inside, seen / area))
    return found


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave, wave])


def build_clip(folder: Path, data_root: Path, seed: int = 0, seconds: float = 10.0, rate: int = 25,
               audio: bool = True) -> Clip:
    """Write `clip.mp4` (H.264 640x480 at `rate` frames/s, with an AAC tone unless `audio` is False)
    and `gt.txt` into `folder`; the wall's photos are chosen by `seed`."""
    folder.mkdir(parents=True, exist_ok=True)
    wall, faces, centres, names = build_wall(data_root, seed)
    keys = camera_path(centres, seconds)
    video, labels = folder / "clip.mp4", folder / "gt.txt"
    count = round(seconds * rate)
    rows = []
    with av.open(str(video), "w") as output:
        stream = output.add_stream("libx264", rate=rate)
        stream.width, stream.height = FRAME
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        sound = output.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio else None
        for index in range(count):
            view = _view(_camera_at(keys, index / rate))
            image = cv2.warpAffine(wall, view, FRAME, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=(96, 96, 96))
            for face_id, (x0, y0, x1, y1), visible in frame_labels(faces, view):
                rows.append(f"{index + 1},{face_id},{x0:.1f},{y0:.1f},{x1 - x0:.1f},{y1 - y0:.1f},1,1,{visible:.3f}")
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, rate)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        if sound is not None:
            samples = _tone(seconds)
            step = 1024
            for start in range(0, samples.shape[1], step):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + step]), format="fltp",
                                                   layout="stereo")
                chunk.sample_rate = AUDIO_RATE
                chunk.pts = start
                chunk.time_base = Fraction(1, AUDIO_RATE)
                output.mux(sound.encode(chunk))
            output.mux(sound.encode())
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return Clip(video, labels, count, FRAME, rate, len(rows), tuple(names))
