"""Phone videos are read upright: a portrait video stored sideways with a rotation for the player.

A phone records a portrait video as landscape frames and adds a display matrix to the stream (older
files: a `rotate` tag) telling the player to turn them. The videos here are made from a real face
photo in the same way with PyAV (`set_display_rotation`, or the tag in a Matroska file), and read
back through every path that reads a video: the frames, the boxed video of the Detect page, and
`label --video`.
"""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from facetracker.boxes import iou_matrix
from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels
from facetracker.inference.detect import YUNET, reference_detector
from facetracker.inference.video import annotate_video, video_frames
from facetracker.labelling.prelabel import label_dataset

WIDTH, HEIGHT = 360, 480  # portrait, as the person holding the phone saw it
FRAMES = 6
# How the camera stored each frame for a rotation the player applies (counter-clockwise degrees).
STORED = {90: cv2.ROTATE_90_CLOCKWISE, -90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180}


@pytest.fixture(scope="module")
def portrait(helen) -> np.ndarray:
    """A real face photo cut to a portrait frame around its labelled face (BGR, WIDTH x HEIGHT)."""
    dataset = data_lib.load_dataset(helen, check_pixels=False)
    for sample in (s for s in dataset.samples if s.has_face):
        rgb = sample_pixels(sample, max_side=1200)
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = np.array(sample.box) * [width, height, width, height]
        side_w = min(width, max((x1 - x0) * 2.0, 1))
        side_h = side_w * HEIGHT / WIDTH
        if side_h > height:
            continue
        left = int(np.clip((x0 + x1) / 2 - side_w / 2, 0, width - side_w))
        top = int(np.clip((y0 + y1) / 2 - side_h / 2, 0, height - side_h))
        crop = rgb[top:top + int(side_h), left:left + int(side_w)]
        return cv2.cvtColor(cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    pytest.fail("no faces-helen photo fits a portrait frame")


def phone_video(path, portrait: np.ndarray, *, rotation: int | None = None, tag: str | None = None):
    """A video of `portrait` stored sideways, with a display matrix of `rotation` counter-clockwise
    degrees or an old-style `rotate` tag (clockwise degrees)."""
    turn = rotation if rotation is not None else -int(tag)
    stored = cv2.rotate(portrait, STORED[turn])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        else:
            stream.metadata["rotate"] = tag
        for _ in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


VARIANTS = [("display matrix -90 (a phone held upright)", "mp4", {"rotation": -90}),
            ("display matrix 90", "mov", {"rotation": 90}),
            ("display matrix 180", "mp4", {"rotation": 180}),
            ("rotate tag 90", "mkv", {"tag": "90"})]


@pytest.mark.parametrize("how, suffix, rotation", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_a_rotated_phone_video_is_read_upright_and_its_face_found(tmp_path, portrait, how, suffix, rotation):
    video = phone_video(tmp_path / f"phone.{suffix}", portrait, **rotation)
    frames = [frame for frame, _ in video_frames(video, max_frames=FRAMES)]
    assert len(frames) == FRAMES
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames), [f.shape for f in frames]
    assert np.abs(frames[0].astype(int) - portrait.astype(int)).mean() < 8, "the same picture, upright"
    yunet = reference_detector(YUNET)
    truth = np.array([yunet.detect(portrait).faces[0].box], float)
    for frame in frames:
        faces = yunet.detect(frame).faces
        assert faces and iou_matrix(np.array([f.box for f in faces], float), truth).max() > 0.7


def test_the_boxed_video_of_a_phone_video_is_upright(tmp_path, portrait):
    video = phone_video(tmp_path / "phone.mp4", portrait, rotation=-90)
    out = tmp_path / "boxed.mp4"
    figures = annotate_video(video, reference_detector(YUNET), out, max_frames=FRAMES)
    assert figures["frames"] == FRAMES and figures["with_face"] == FRAMES
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (WIDTH, HEIGHT)


def test_label_video_adds_upright_frames_of_a_phone_video_with_their_faces(tmp_path, portrait):
    video = phone_video(tmp_path / "phone.mp4", portrait, rotation=-90)
    folder = tmp_path / "dataset"
    done = label_dataset(folder, video=video, every_s=0.2, log=lambda _: None)
    assert done["frames"] == 3 and done["labelled"] == 3
    for image in sorted((folder / "images").iterdir()):
        assert cv2.imread(str(image)).shape == (HEIGHT, WIDTH, 3)
        label = json.loads((folder / "labels" / f"{image.stem}.json").read_text())
        assert (label["imageWidth"], label["imageHeight"]) == (WIDTH, HEIGHT) and len(label["shapes"]) == 1
