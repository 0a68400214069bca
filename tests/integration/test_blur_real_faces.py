"""`facetracker blur` on real faces: a clip made from group photos and portraits (tests/helpers/clip.py), every
face labelled in every frame, blurred by the command as a user runs it, its leak measured by `--check`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from facetracker.evaluation.leak import read_mot_labels
from tests.conftest import REPO, require
from tests.helpers.clip import build_clip

LEAK_TARGET = 0.005


@pytest.fixture(scope="module")
def clip(data_root, tmp_path_factory):
    require(data_root / "faces-afw-groups", "faces-afw-groups")
    require(data_root / "faces-helen", "faces-helen")
    return build_clip(tmp_path_factory.mktemp("clip"), data_root, seed=0)


def run_blur(clip, out, *flags: str) -> subprocess.CompletedProcess:
    """`facetracker blur` on the clip with --check, as a user runs it (this checkout's package)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "facetracker", "blur", str(clip.video), "-o", str(out), *flags,
                           "--check", str(clip.labels)], cwd=REPO, env={**os.environ, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=600, check=False)


def leak_of(line: str) -> tuple[float, int]:
    found = re.search(r"([\d.]+)% of (\d+) labelled face-frames", line)
    assert found, line
    return float(found.group(1)) / 100, int(found.group(2))


def sharpness(image: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    patch = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(patch, cv2.CV_64F).var())


def test_every_face_of_a_real_clip_is_blurred_and_the_sound_frames_and_size_are_kept(clip, tmp_path):
    out = tmp_path / "blurred.mp4"
    done = run_blur(clip, out)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert f"leak: labelled faces less than 90% covered, against {clip.labels}" in lines
    tracked = next(line for line in lines if line.startswith("  tracked, as written:"))
    per_frame = next(line for line in lines if line.startswith("  frame by frame (tracker off):"))
    (tracked_leak, counted), (per_frame_leak, _) = leak_of(tracked), leak_of(per_frame)
    assert counted == clip.face_frames
    assert tracked_leak <= LEAK_TARGET, done.stdout
    assert per_frame_leak > tracked_leak, "the tracker hides what frame-by-frame blurring lets through"
    assert "1 sound stream kept" in done.stdout

    with av.open(str(out)) as container:
        assert [stream.type for stream in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.codec.canonical_name == "aac"
        sound_s = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
        blurred = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    assert sound_s == pytest.approx(clip.frames / clip.rate, abs=0.1)
    assert len(blurred) == clip.frames and blurred[0].shape[1::-1] == clip.size
    with av.open(str(clip.video)) as container:
        originals = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    faces = [face for face in read_mot_labels(clip.labels)
             if (face.box[2] - face.box[0]) >= 40 and (face.box[3] - face.box[1]) >= 40][::10]
    assert len(faces) >= 20
    softened = [sharpness(blurred[f.frame], f.box) / max(sharpness(originals[f.frame], f.box), 1e-6) for f in faces]
    assert np.median(softened) < 0.05, "the labelled faces' detail is gone in the written frames"


def test_the_whole_frame_is_covered_while_a_real_face_is_unsure(clip, tmp_path):
    out = tmp_path / "boxed.mkv"
    done = run_blur(clip, out, "--mode", "box", "--whole-frame-when-unsure")
    assert done.returncode == 0, done.stderr[-2000:]
    tracked = next(line for line in done.stdout.splitlines() if line.startswith("  tracked, as written:"))
    whole = int(re.search(r"the whole frame in (\d+) of", tracked).group(1))
    assert 0 < whole < clip.frames and leak_of(tracked)[0] <= LEAK_TARGET, done.stdout
    with av.open(str(out)) as container:
        dark = [frame.to_ndarray(format="gray").max() < 30 for frame in container.decode(video=0)]
    assert len(dark) == clip.frames and sum(dark) >= whole, "each unsure frame is boxed out whole"
