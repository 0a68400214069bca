"""Videos far taller than wide (or wider than tall): YuNet sees them shrunk to a strip 32 px across,
where its raw output is garbage (inf, NaN, or boxes where no face is, changing with what it saw
before). The strip is padded before the network sees it, and rows with inf or NaN are dropped, so
such a video is boxed like any other; sides of 1 px are written out too."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetracker.inference.detect import YUNET, reference_detector
from facetracker.inference.video import annotate_video, video_frames
from facetracker.inference.yunet import YuNetDetector
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
)

THIN_SIZES = [(96, 960), (960, 96), (64, 640), (640, 64), (72, 720), (720, 72)]
FRAMES = 8


def face_strips(helen: Path, width: int, height: int, count: int = FRAMES) -> list[tuple[np.ndarray, tuple]]:
    """Real faces of faces-helen cut out as `width` x `height` frames, each with its face box
    (x0, y0, x1, y1) in the frame: the face fills the short side, in the middle of the long one."""
    frames = []
    for label in sorted((helen / "labels").glob("*.json"))[:count]:
        data = json.loads(label.read_text())
        image = cv2.imread(str(helen / "images" / Path(data["imagePath"]).name))
        (x0, y0), (x1, y1) = data["shapes"][0]["points"]
        x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        side = 1.3 * max(x1 - x0, y1 - y0)  # the short side of the cut, in photo pixels
        scale = min(width, height) / side
        centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
        move = np.float32([[scale, 0, width / 2 - centre_x * scale], [0, scale, height / 2 - centre_y * scale]])
        frame = cv2.warpAffine(image, move, (width, height), borderMode=cv2.BORDER_REPLICATE)
        box = tuple(float(v) for v in (width / 2 + (x0 - centre_x) * scale, height / 2 + (y0 - centre_y) * scale,
                                       width / 2 + (x1 - centre_x) * scale, height / 2 + (y1 - centre_y) * scale))
        frames.append((frame, box))
    return frames


def write_video(path: Path, frames: list[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def overlap(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("size", THIN_SIZES, ids=[f"{w}x{h}" for w, h in THIN_SIZES])
def test_a_thin_video_of_real_faces_is_boxed_where_the_faces_are(helen, tmp_path, size):
    strips = face_strips(helen, *size)
    video = write_video(tmp_path / "thin.mp4", [frame for frame, _ in strips])
    figures = annotate_video(video, reference_detector(YUNET), tmp_path / "boxed.mp4")
    assert figures["frames"] == FRAMES
    assert figures["with_face"] >= FRAMES - 2, figures
    with av.open(str(tmp_path / "boxed.mp4")) as boxed:
        assert boxed.streams.video[0].codec_context.width == size[0]
        assert sum(1 for _ in boxed.decode(video=0)) == FRAMES


@pytest.mark.parametrize("size", THIN_SIZES, ids=[f"{w}x{h}" for w, h in THIN_SIZES])
def test_yunet_finds_the_face_of_a_thin_frame_whatever_it_saw_before(helen, size):
    """Its raw output on a 32 px strip depends on the call before; padded, it does not."""
    strips = face_strips(helen, *size)
    before = [frame for frame, _ in face_strips(helen, 640, 64, count=2)] + [np.zeros((300, 40, 3), np.uint8)]
    for frame, truth in strips:
        found = set()
        for earlier in [None, *before]:
            detector = YuNetDetector()
            if earlier is not None:
                detector.detect_all(earlier)
            faces = detector.detect_all(frame)
            found.add(tuple(face.box for face in faces))
        assert len(found) == 1, found
        boxes = found.pop()
        assert all(np.isfinite(box).all() for box in boxes)
        if boxes:  # YuNet's ear-to-ear box is wider than the label's: a loose match
            assert overlap(boxes[0], truth) > 0.3, (boxes, truth)
    assert sum(bool(YuNetDetector().detect_all(frame)) for frame, _ in strips) >= FRAMES - 2


@pytest.mark.parametrize("size", [(1, 1000), (2, 3000), (3000, 2), (1, 1), (5, 4000)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_video_one_or_two_pixels_across_is_read_and_written(tmp_path, size):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(3)]
    video = write_video(tmp_path / "strip.avi", frames, codec="png", pix_fmt="rgb24")
    assert all(max(image.shape[:2]) <= 960 and min(image.shape[:2]) >= 1 for image, _ in video_frames(video, 10))
    figures = annotate_video(video, reference_detector(YUNET), tmp_path / "boxed.mp4")
    assert figures["frames"] == 3


def test_the_detect_page_boxes_a_thin_video(faces, helen):
    at = open_page("app_pages/detect.py")
    for size in [(96, 960), (960, 96)]:
        video = write_video(faces.parent / f"thin-{size[0]}x{size[1]}.mp4",
                            [frame for frame, _ in face_strips(helen, *size)])
        at.file_uploader(key="detect_upload").set_value((video.name, video.read_bytes(), "video/mp4")).run()
        assert_no_exception(at)
        assert not any("Cannot use this video" in e for e in texts(at, "error")), texts(at, "error")
        caption = next(c for c in texts(at, "caption") if "frames (at most" in c)
        assert caption.startswith(f"{FRAMES} frames") and "a face on 0" not in caption, caption
