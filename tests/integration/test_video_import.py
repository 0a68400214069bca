"""`label --video` twice with two recordings of the same file name: both are kept, each with its own labels.

Two phones, two days, one name (`clip.mp4`). The first video holds real faces, the second real photos
without a face (both from faces-helen); named by the file alone, the second import replaced the
first one's frames and left their labels behind, so photos without a face became labelled faces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels
from facetracker.inference.detect import YUNET, reference_detector
from tests.conftest import REPO

FRAMES = 4


def write_video(path: Path, images: list[np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for image in images:
            frame = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def same_named_videos(helen, tmp_path_factory) -> tuple[Path, Path]:
    """(monday/clip.mp4 with faces, tuesday/clip.mp4 without)."""
    samples = data_lib.load_dataset(helen, check_pixels=False).samples
    faces = [s for s in samples if s.has_face][:FRAMES]
    empty = [s for s in samples if not s.has_face][:FRAMES]

    def bgr(sample):
        return cv2.cvtColor(sample_pixels(sample, max_side=800), cv2.COLOR_RGB2BGR)

    root = tmp_path_factory.mktemp("videos")
    return (write_video(root / "monday" / "clip.mp4", [bgr(s) for s in faces]),
            write_video(root / "tuesday" / "clip.mp4", [bgr(s) for s in empty]))


def label(folder: Path, video: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "facetracker", "label", str(folder), "--video", str(video),
                             "--every", "0.1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def snapshot(folder: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for sub in ("images", "labels")
            for p in sorted((folder / sub).iterdir())}


def test_a_second_video_of_the_same_name_never_replaces_the_first_ones_frames(tmp_path, same_named_videos):
    monday, tuesday = same_named_videos
    folder = tmp_path / "dataset"
    assert f"{FRAMES} video frames added" in label(folder, monday)
    first = snapshot(folder)
    labelled = [name for name in first if name.startswith("labels/")]
    assert len(labelled) >= FRAMES - 1, "YuNet pre-labels the faces of the first video"

    assert f"{FRAMES} video frames added" in label(folder, tuesday)
    after = snapshot(folder)
    assert {name: after.get(name) for name in first} == first, "the first video's photos and labels are untouched"
    new_images = sorted(name for name in after if name.startswith("images/") and name not in first)
    assert len(new_images) == FRAMES and all(name.startswith("images/clip-") for name in new_images)
    assert not [name for name in after if name.startswith("labels/") and name not in first], \
        "the second video's photos hold no face, so they get no label"

    # every label still describes the photo it was drawn on: YuNet finds a face where a label says so
    yunet = reference_detector(YUNET)
    for name in labelled:
        image = folder / "images" / f"{Path(name).stem}.jpg"
        assert yunet.detect(cv2.imread(str(image))).faces, f"{name} labels a photo without a face"
        assert json.loads((folder / name).read_text())["imagePath"] == f"../images/{image.name}"

    assert "0 video frames added" in label(folder, monday), "the same video again adds nothing"
    assert snapshot(folder) == after
