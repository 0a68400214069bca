"""The Recorder a webcam frame callback feeds: phases, rate, black and frozen frames, files and labels,
on real webcam frames (webcam-tutorial) and synthetic black and repeated ones."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.inference.detect import YUNET, reference_detector
from facetracker.labelling.prelabel import prelabel_boxes
from facetracker.labelling.recording import (
    CannotRecord,
    Phase,
    Recorder,
    RecordingPlan,
    frame_problem,
)
from tests.helpers.clock import Clock


@pytest.fixture(scope="module")
def frames(webcam) -> dict[str, list[np.ndarray]]:
    """Real webcam frames at the camera's size (1280x720): with a face (labelled), and of the empty room."""
    folder = webcam / "train"
    labelled = {p.stem for p in (folder / "labels").glob("*.json")}
    images = sorted((folder / "images").glob("*.jpg"))
    faces = [cv2.imread(str(p)) for p in images if p.stem in labelled][:4]
    empty = [cv2.imread(str(p)) for p in images if p.stem not in labelled][:3]
    assert len(faces) == 4 and len(empty) == 3 and all(f is not None for f in faces + empty)
    return {"face": faces, "empty": empty}


@pytest.fixture(scope="module")
def prelabel():
    detector = reference_detector(YUNET)
    return lambda frame: prelabel_boxes(frame, detector.detect)


def feed_at(recorder: Recorder, clock: Clock, t: float, frame: np.ndarray) -> None:
    clock.now = 100.0 + t
    recorder.feed(frame.copy())


def test_a_recording_keeps_good_frames_drops_black_and_frozen_ones_and_labels_the_face_phase_only(
        tmp_path, frames, prelabel):
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    dataset = tmp_path / "faces"
    face, empty = frames["face"], frames["empty"]
    black = np.zeros_like(face[0])

    with pytest.raises(CannotRecord, match="press START"):
        recorder.start(dataset, RecordingPlan(), prelabel)
    feed_at(recorder, clock, -0.1, face[0])  # the camera is on
    plan = RecordingPlan(face_s=2, photos_per_s=2, no_face_s=1, countdown_s=1)
    clock.now = 100.0  # the recording starts at t = 0
    recorder.start(dataset, plan, prelabel, source="YuNet")
    with pytest.raises(CannotRecord, match="A recording is running"):
        recorder.start(dataset, plan, prelabel)
    with pytest.raises(CannotRecord, match="A recording is running"):
        recorder.take_one(dataset, prelabel)

    feed_at(recorder, clock, 0.5, face[0])  # countdown: nothing is taken
    status = recorder.status()
    assert status.phase is Phase.COUNTDOWN and status.seconds_left == pytest.approx(0.5) and status.saved == 0
    shown = recorder.overlay(face[0].copy())
    assert not np.array_equal(shown, face[0]), "the countdown is written on the video"
    # face phase, photos due at 1.0, 1.5, 2.0 and 2.5 s
    feed_at(recorder, clock, 1.0, face[0])  # kept
    feed_at(recorder, clock, 1.2, face[1])  # not due yet
    feed_at(recorder, clock, 1.5, black)  # black: dropped
    feed_at(recorder, clock, 2.01, face[0])  # the same as the last kept one: frozen
    feed_at(recorder, clock, 2.6, face[2])  # kept
    feed_at(recorder, clock, 2.7, face[3])  # not due
    assert recorder.status().phase is Phase.FACE
    feed_at(recorder, clock, 3.5, empty[0])  # step out: nothing is taken
    assert recorder.status().phase is Phase.STEP_OUT
    # no-face phase, due at 4.0 and 4.5 s: one empty room, one frame where a face is still in view
    feed_at(recorder, clock, 4.0, empty[1])
    feed_at(recorder, clock, 4.6, face[3])
    feed_at(recorder, clock, 5.1, empty[2])  # done
    status = recorder.status()
    assert status.phase is Phase.DONE and not status.busy and status.stopped_early is None
    assert (status.face_photos, status.labelled, status.no_face_photos, status.faces_in_no_face) == (2, 2, 2, 1)
    assert (status.dropped_black, status.dropped_frozen, status.errors) == (1, 1, 0), status.last_error
    assert status.sizes == {(1280, 720): 4}

    images = sorted((dataset / "images").glob("*.jpg"))
    labels = sorted((dataset / "labels").glob("*.json"))
    assert len(images) == 4 and len(labels) == 2
    assert {cv2.imread(str(p)).shape for p in images} == {face[0].shape}, "saved at the camera's size"
    assert [p.stem for p in labels] == [p.stem for p in images if "-face-" in p.name]
    for label in labels:
        content = json.loads(label.read_text())
        assert (content["imageWidth"], content["imageHeight"]) == (1280, 720)
        assert len(content["shapes"]) >= 1 and "YuNet" in content["shapes"][0]["description"]
    assert not any(p.name.startswith(".") for p in dataset.rglob("*")), "no temporary file left behind"
    summary = data.load_dataset(dataset, root=tmp_path).summary()
    assert (summary["faces"], summary["no_face"], summary["skipped"]) == (2, 2, 0)

    # A second recording into the same folder never overwrites the first one's photos.
    feed_at(recorder, clock, 5.2, face[1])
    clock.now = 105.3
    recorder.start(dataset, RecordingPlan(face_s=1, photos_per_s=1, no_face_s=0, countdown_s=0), prelabel)
    assert recorder.status().saved == 0, "each recording counts afresh"
    feed_at(recorder, clock, 5.3, face[1])
    feed_at(recorder, clock, 6.4, face[2])  # past its 1 s: done
    assert recorder.status().phase is Phase.DONE and recorder.status().face_photos == 1
    assert len(list((dataset / "images").glob("*.jpg"))) == 5


def test_stopping_and_a_camera_that_stops_end_the_recording_with_what_it_saved(tmp_path, frames, prelabel):
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    face = frames["face"]
    with pytest.raises(CannotRecord, match="No recording is running"):
        recorder.stop()
    feed_at(recorder, clock, 0, face[0])
    recorder.start(tmp_path / "a", RecordingPlan(face_s=10, countdown_s=0), prelabel)
    feed_at(recorder, clock, 0.0, face[0])
    feed_at(recorder, clock, 0.5, face[1])
    recorder.stop()
    status = recorder.status()
    assert status.phase is Phase.DONE and status.face_photos == 2
    assert "stopped by hand during the photos with your face" in status.stopped_early
    feed_at(recorder, clock, 1.0, face[2])
    assert recorder.status().face_photos == 2, "nothing is taken after the stop"

    recorder.start(tmp_path / "b", RecordingPlan(face_s=10, countdown_s=0), prelabel)
    feed_at(recorder, clock, 1.1, face[3])
    recorder.stream_ended()
    assert "the camera stopped during the photos with your face" in recorder.status().stopped_early
    assert len(list((tmp_path / "b" / "images").glob("*.jpg"))) == 1
    clock.now += 10  # no frame for 10 s: the camera is off
    with pytest.raises(CannotRecord, match="No frames are coming from the camera"):
        recorder.start(tmp_path / "b", RecordingPlan(), prelabel)


def test_one_photo_is_the_next_frame_that_is_not_black(tmp_path, frames, prelabel):
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    with pytest.raises(CannotRecord, match="press START"):
        recorder.take_one(tmp_path / "faces", prelabel)
    small = cv2.resize(frames["face"][0], (640, 360))
    feed_at(recorder, clock, 0, np.zeros_like(small))
    recorder.take_one(tmp_path / "faces", prelabel, source="YuNet")
    feed_at(recorder, clock, 0.1, np.zeros_like(small))
    assert recorder.status().single_pending and recorder.status().single is None
    feed_at(recorder, clock, 0.2, small)
    status = recorder.status()
    assert not status.single_pending and status.single is not None and status.single.box is not None
    assert (status.single.width, status.single.height) == (640, 360)
    assert json.loads(status.single.label.read_text())["shapes"][0]["description"] == "pre-label: YuNet"
    recorder.take_one(tmp_path / "faces", prelabel)
    recorder.stream_ended()
    status = recorder.status()
    assert not status.single_pending and "The camera stopped before the photo" in status.single_note


def test_a_folder_that_cannot_be_written_is_reported_not_raised(tmp_path, frames, prelabel):
    clock = Clock()
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "faces").symlink_to(outside)
    recorder = Recorder(root=root, clock=clock)
    feed_at(recorder, clock, 0, frames["face"][0])
    recorder.start(root / "faces", RecordingPlan(countdown_s=0), prelabel)
    feed_at(recorder, clock, 0.0, frames["face"][0])
    status = recorder.status()
    assert status.errors == 1 and "links outside the data root" in status.last_error
    assert list(outside.iterdir()) == []


def test_black_and_frozen_checks_on_real_frames(frames):
    face = frames["face"][0]
    assert frame_problem(np.zeros_like(face), None)[0] == "black"
    assert frame_problem(np.full_like(face, 128), None)[0] == "black", "one colour"
    assert frame_problem((face * 0.05).astype(np.uint8), None)[0] == "black", "a lens nearly covered"
    _, small = frame_problem(face, None)
    assert frame_problem(face, None)[0] is None
    resent = cv2.imdecode(cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)
    assert frame_problem(resent, small)[0] == "frozen", "the same frame through a codec again"
    noisy = np.clip(face + np.random.default_rng(0).normal(0, 3, face.shape), 0, 255).astype(np.uint8)
    assert frame_problem(noisy, small)[0] is None, "a still scene from a live camera is not frozen"
    moved = np.roll(face, 1, axis=1)  # the smallest movement of a person in front of the camera
    assert frame_problem(moved, small)[0] is None


@pytest.mark.parametrize("field, value", [("face_s", 0), ("photos_per_s", 0), ("photos_per_s", 50),
                                          ("no_face_s", -1), ("countdown_s", float("nan"))])
def test_a_plan_out_of_range_is_refused_with_a_reason(field, value):
    with pytest.raises(ValueError, match="must be a number from"):
        RecordingPlan(**{field: value})
