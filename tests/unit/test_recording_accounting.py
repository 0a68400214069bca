"""Every photo a recording planned is accounted for: saved, or reported with the reason it was not
taken (a gap in the stream, a black or frozen frame, the disk refusing it, the recording ending
first); and a request the recorder refuses keeps its answer while the page redraws. On real webcam
frames (webcam-tutorial)."""

from __future__ import annotations

import errno
import os

import cv2
import numpy as np
import pytest

from facetracker.inference.detect import YUNET, reference_detector
from facetracker.labelling.prelabel import prelabel_boxes
from facetracker.labelling.recording import (
    ANSWER_S,
    CannotRecord,
    Missed,
    MissingPhoto,
    Phase,
    Recorder,
    RecordingPlan,
    describe_missing,
)
from tests.helpers.clock import Clock

FPS = 15


@pytest.fixture(scope="module")
def faces(webcam) -> list[np.ndarray]:
    """Real webcam frames with a face (1280x720), each different from the next."""
    folder = webcam / "train"
    labelled = {p.stem for p in (folder / "labels").glob("*.json")}
    frames = [cv2.imread(str(p)) for p in sorted((folder / "images").glob("*.jpg")) if p.stem in labelled]
    assert len(frames) >= 40 and all(f is not None for f in frames)
    return [cv2.resize(f, (640, 360)) for f in frames]


@pytest.fixture(scope="module")
def prelabel():
    detector = reference_detector(YUNET)
    return lambda frame: prelabel_boxes(frame, detector.detect)


def started(tmp_path, plan: RecordingPlan, prelabel, frame: np.ndarray) -> tuple[Recorder, Clock]:
    """A recorder with the camera on, its recording started at clock time 100 (t = 0)."""
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    clock.now = 99.9
    recorder.feed(frame.copy())
    clock.now = 100.0
    recorder.start(tmp_path / "faces", plan, prelabel, source="YuNet")
    return recorder, clock


def stream(recorder: Recorder, clock: Clock, faces: list[np.ndarray], until: float, gaps=(),
           photos_per_s: float = 2.0) -> None:
    """Frames at FPS from t = 0 to `until`, none inside the (start, end) `gaps`. Within one photo
    slot the camera shows one image, the next slot another."""
    for i in range(int(until * FPS) + 1):
        t = round(i / FPS, 4)
        if any(start < t < end for start, end in gaps):
            continue
        clock.now = 100.0 + t
        recorder.feed(faces[int(t * photos_per_s) % len(faces)].copy())


def test_a_gap_that_swallows_a_photo_is_reported_with_its_reason(tmp_path, faces, prelabel):
    """The plan of 40 face photos at 2 per second, under load: two gaps between frames of about
    0.9 s; one covers a whole photo slot, the other straddles two slots and costs nothing."""
    plan = RecordingPlan(face_s=20, photos_per_s=2, no_face_s=0, countdown_s=0)
    recorder, clock = started(tmp_path, plan, prelabel, faces[0])
    # frames at 6.93 then 7.87: none in the slot 7.0-7.5; at 12.6 then 13.47: frames in each slot it touches
    stream(recorder, clock, faces, 20.2, gaps=[(6.95, 7.85), (12.6, 13.45)])
    status = recorder.status()
    assert status.phase is Phase.DONE and status.planned == 40
    assert status.saved == status.face_photos == 39
    assert len((list((tmp_path / "faces" / "images").glob("*.jpg")))) == 39
    assert status.dropped == 0
    assert status.missed == 1 and len(status.missing) == 1
    missing = status.missing[0]
    assert (missing.phase, missing.number, missing.of, missing.due_s, missing.kind) == (Phase.FACE, 15, 40, 7.0,
                                                                                       Missed.NO_FRAME)
    assert missing.reason == "no frame arrived for 0.9 s"
    assert status.saved + len(status.missing) == status.planned
    assert describe_missing(status.missing) == [
        "photo 15 of 40 with your face (due 7.0 s into the recording): no frame arrived for 0.9 s"]


def test_every_planned_photo_is_saved_or_missing_with_its_reason(tmp_path, faces, prelabel):
    plan = RecordingPlan(face_s=3, photos_per_s=2, no_face_s=2, countdown_s=1)
    recorder, clock = started(tmp_path, plan, prelabel, faces[0])
    black = np.zeros_like(faces[0])

    def feed(t: float, frame: np.ndarray) -> None:
        clock.now = 100.0 + t
        recorder.feed(frame.copy())

    # face phase 1-4 s, slots at 1.0, 1.5, ... 3.5; no-face phase 5-7 s, slots at 5.0 ... 6.5
    feed(1.0, faces[1])  # saved
    feed(1.5, black)  # dropped: black
    feed(2.0, faces[1])  # dropped: the same as the last photo
    feed(2.5, faces[2])  # saved
    feed(2.6, faces[3])  # slot 2.5 taken already
    # nothing from 2.6 to 3.7: the slot at 3.0 is missed; 3.7 falls in the slot at 3.5, taken
    feed(3.7, faces[4])
    feed(5.0, faces[5])  # saved (a face seen out of view)
    recorder.stop()
    status = recorder.status()
    assert status.planned == 10 and status.saved == 4
    kinds = [(m.phase, m.number, m.kind) for m in status.missing]
    assert kinds == [(Phase.FACE, 2, Missed.BLACK), (Phase.FACE, 3, Missed.FROZEN), (Phase.FACE, 5, Missed.NO_FRAME),
                     *((Phase.NO_FACE, n, Missed.ENDED) for n in (2, 3, 4))]
    assert status.saved + len(status.missing) == status.planned
    assert (status.dropped, status.missed) == (2, 4)
    assert status.missing[2].reason == "no frame arrived for 1.1 s"
    assert status.faces_seen and status.faces_seen[0].startswith("rec-") and "-noface-" in status.faces_seen[0]
    lines = describe_missing(status.missing)
    assert lines[0] == ("photo 2 of 6 with your face (due 1.5 s into the recording): the frame was black "
                        "(very dark, or nearly one colour)")
    assert lines[-1] == ("photos 2-4 of 4 out of view (due 5.5-6.5 s into the recording): the recording had ended "
                         "(stopped by hand during the out-of-view photos)")


def test_a_stream_that_stops_leaves_the_rest_of_the_plan_missing(tmp_path, faces, prelabel):
    plan = RecordingPlan(face_s=4, photos_per_s=1, no_face_s=0, countdown_s=0)
    recorder, clock = started(tmp_path, plan, prelabel, faces[0])
    stream(recorder, clock, faces, 1.2, photos_per_s=1)  # then the stream stalls for good
    clock.now = 100.0 + 6.0
    status = recorder.status()
    assert status.phase is Phase.DONE and status.saved == 2
    assert [(m.number, m.reason) for m in status.missing] == [(3, "no frame arrived for 2.8 s"),
                                                              (4, "no frame arrived for 2.8 s")]


def test_a_frame_right_after_a_late_photo_waits_for_the_next_one(tmp_path, faces, prelabel):
    """After a stall, the late photo and the next are kept at least half a slot apart, so the next
    does not nearly repeat it; a slot whose only frames came that soon is reported as such."""
    plan = RecordingPlan(face_s=3, photos_per_s=2, no_face_s=0, countdown_s=0)
    recorder, clock = started(tmp_path, plan, prelabel, faces[0])
    for t, frame in [(0.0, faces[1]), (0.95, faces[2]), (1.0, faces[3]), (1.2, faces[4]), (1.3, faces[5]),
                     (1.96, faces[6]), (2.0, faces[7]), (2.05, faces[8]), (3.2, faces[9])]:
        clock.now = 100.0 + t
        recorder.feed(frame.copy())
    status = recorder.status()
    names = sorted(p.name for p in (tmp_path / "faces" / "images").glob("*.jpg"))
    # kept: 0.0, 0.95 (late in its slot), 1.2 (1.0 came too soon after 0.95), 1.96; the slot at 2.0 had
    # only frames too soon after 1.96, the slot at 2.5 none
    assert status.saved == len(names) == 4
    assert [(m.number, m.kind) for m in status.missing] == [(5, Missed.TOO_SOON), (6, Missed.NO_FRAME)]
    assert status.missing[0].reason == "the frames of its slot all came right after the previous photo"


def test_a_disk_that_refuses_a_photo_is_its_reason(tmp_path, faces, prelabel, monkeypatch):
    plan = RecordingPlan(face_s=2, photos_per_s=2, no_face_s=0, countdown_s=0)
    recorder, clock = started(tmp_path, plan, prelabel, faces[0])
    clock.now = 100.0
    recorder.feed(faces[1].copy())
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    clock.now = 100.5
    recorder.feed(faces[2].copy())
    monkeypatch.undo()
    status = recorder.status()
    assert status.saved == 1 and status.planned == 4
    refused, *ended = status.missing
    assert refused.kind is Missed.NOT_SAVED
    assert refused.reason.startswith("the disk refused it: No space left on device")
    assert [m.kind for m in ended] == [Missed.ENDED, Missed.ENDED]
    assert "a photo could not be written" in ended[0].reason


def test_a_refused_request_keeps_its_answer_while_the_page_redraws(tmp_path, faces, prelabel):
    plan = RecordingPlan(face_s=10, photos_per_s=1, no_face_s=5, countdown_s=3)
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    with pytest.raises(CannotRecord, match="No recording is running"):
        recorder.stop()
    assert recorder.status().answer == "No recording is running: there is nothing to stop."
    recorder.feed(faces[0].copy())
    recorder.start(tmp_path / "faces", plan, prelabel)
    assert recorder.status().answer is None, "a request that acts clears the last answer"
    clock.now += 4
    with pytest.raises(CannotRecord) as refused:
        recorder.start(tmp_path / "faces", plan, prelabel)
    assert str(refused.value) == ("A recording is running (the photos with your face now; it ends in 17 s); it goes "
                                  "on. A new one can start once it ends or you stop it.")
    clock.now += ANSWER_S - 1  # the page redraws its panel many times meanwhile
    assert recorder.status().answer == str(refused.value)
    clock.now += 1
    assert recorder.status().answer is None
    clock.now += 3
    with pytest.raises(CannotRecord) as refused:
        recorder.take_one(tmp_path / "faces", prelabel)
    assert "A recording is running (the out-of-view photos now; it ends in 4 s)" in str(refused.value)
    assert "Take one once it ends or you stop it" in recorder.status().answer
    with pytest.raises(CannotRecord) as asked_first:  # what the page asks before it makes a pre-labeller
        recorder.refuse_while_running("take one")
    assert str(asked_first.value) == str(refused.value)
    recorder.stop()
    assert recorder.status().answer is None
    recorder.refuse_while_running("start")  # nothing runs: nothing to refuse


def test_the_plan_counts_a_last_shorter_slot():
    assert RecordingPlan(face_s=20, photos_per_s=2, no_face_s=5).planned == 50
    assert RecordingPlan(face_s=2.5, photos_per_s=2, no_face_s=0).planned == 5
    assert RecordingPlan(face_s=1, photos_per_s=0.5, no_face_s=0.2).planned == 2
    assert RecordingPlan(face_s=0.5, photos_per_s=10, no_face_s=0).photos(Phase.FACE) == 5


def test_missing_photos_are_grouped_by_phase_and_reason():
    missing = [MissingPhoto(Phase.FACE, n, 10, n * 0.5, Missed.ENDED, "the recording had ended") for n in (7, 8, 9)]
    missing.insert(0, MissingPhoto(Phase.FACE, 2, 10, 1.0, Missed.NO_FRAME, "no frame arrived for 0.9 s"))
    assert describe_missing(missing) == [
        "photo 2 of 10 with your face (due 1.0 s into the recording): no frame arrived for 0.9 s",
        "photos 7-9 of 10 with your face (due 3.5-4.5 s into the recording): the recording had ended"]
