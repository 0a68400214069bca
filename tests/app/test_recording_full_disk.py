"""A recording on a full disk stops at its first photo that cannot be written and keeps the photos
saved before it, each face photo with its label and no label without its photo; what a recording
killed mid-write (kill -9) leaves is tidied the next time a recording starts in that dataset or the
dataset is opened, and only files of writers that no longer run are touched."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.inference.detect import YUNET, reference_detector
from facetracker.io import atomic
from facetracker.labelling import capture
from facetracker.labelling.prelabel import prelabel_boxes
from facetracker.labelling.recording import (
    Phase,
    Recorder,
    RecordingPlan,
    frame_problem,
)
from tests.conftest import REPO
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    faces,
    no_webrtc_session,
    open_page,
    root,
)
from tests.helpers.clock import Clock

PLAN = RecordingPlan(face_s=3, photos_per_s=2, no_face_s=2, countdown_s=0)
"""Six face photos (t = 0, 0.5, ... 2.5 s), then four without a face (t = 3 .. 4.5 s)."""


@pytest.fixture(scope="module")
def frames(webcam) -> dict[str, list[np.ndarray]]:
    """Real webcam frames (1280x720), with the face and of the empty room, all different."""
    folder = webcam / "train"
    labelled = {p.stem for p in (folder / "labels").glob("*.json")}
    images = sorted((folder / "images").glob("*.jpg"))
    with_face = [cv2.imread(str(p)) for p in images if p.stem in labelled][:6]
    empty = [cv2.imread(str(p)) for p in images if p.stem not in labelled]
    empty = [frame for frame in empty if frame_problem(frame, None)[0] is None][::2][:4]  # not black, not frozen
    assert len(with_face) == 6 and len(empty) == 4
    return {"face": with_face, "empty": empty}


@pytest.fixture(scope="module")
def prelabel():
    detector = reference_detector(YUNET)
    return lambda frame: prelabel_boxes(frame, detector.detect)


def disk_full_after(monkeypatch, writes: int) -> list[int]:
    """Every file written after the first `writes` (photos and labels alike) fails as on a full
    disk, where fsync is where delayed allocation reports it."""
    done = [0]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        done[0] += 1
        if done[0] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return done


def record(dataset: Path, frames, prelabel, tmp_path: Path) -> Recorder:
    clock = Clock()
    recorder = Recorder(root=tmp_path, clock=clock)
    clock.now = 99.9
    recorder.feed(frames["face"][0].copy())  # the camera is on
    clock.now = 100.0
    recorder.start(dataset, PLAN, prelabel)
    sequence = [(i * 0.5, frames["face"][i]) for i in range(6)] + [(3 + i * 0.5, frames["empty"][i]) for i in range(4)]
    for t, frame in sequence:
        clock.now = 100.0 + t
        recorder.feed(frame.copy())
    return recorder


def check_pairs(dataset: Path) -> tuple[list[str], list[str]]:
    """(face photos, no-face photos) as saved, after checking that every label has its photo and
    every face-phase photo its label, and that no temporary file is left."""
    images = {p.stem for p in (dataset / "images").glob("*.jpg")}
    labels = {p.stem for p in (dataset / "labels").glob("*.json")} if (dataset / "labels").exists() else set()
    assert labels <= images, f"labels without their photo: {labels - images}"
    face = sorted(s for s in images if "-face-" in s)
    assert set(face) == labels, f"face photos without their label: {set(face) - labels}"
    leftovers = [p.name for p in dataset.rglob(".*")]
    assert not leftovers, leftovers
    if images:
        loaded = data.load_dataset(dataset)
        assert len(loaded.samples) == len(images) and not loaded.skipped
    return face, sorted(images - set(face))


# Writes in order: face photo 1, its label, face photo 2, its label, ... then the no-face photos.
@pytest.mark.parametrize("writes, face_saved, empty_saved", [
    (0, 0, 0),  # the very first photo
    (4, 2, 0),  # the third face photo itself
    (5, 2, 0),  # the third face photo's label, after its photo
    (12, 6, 0),  # the first no-face photo
    (14, 6, 2)])  # the third no-face photo
def test_a_full_disk_stops_the_recording_at_the_first_failed_write_and_keeps_whole_pairs(
        tmp_path, monkeypatch, frames, prelabel, writes, face_saved, empty_saved):
    dataset = tmp_path / "faces"
    written = disk_full_after(monkeypatch, writes)
    recorder = record(dataset, frames, prelabel, tmp_path)
    monkeypatch.undo()
    status = recorder.status()
    assert status.phase is Phase.DONE
    assert status.errors == 1, status.last_error
    assert "No space left on device" in status.stopped_early and str(dataset) in status.stopped_early
    assert f"the {face_saved + empty_saved} photo(s) saved before it are kept" in status.stopped_early
    assert written[0] == writes + 1, "nothing is written after the first failure"
    assert (status.face_photos, status.no_face_photos) == (face_saved, empty_saved)
    face, empty = check_pairs(dataset)
    assert (len(face), len(empty)) == (face_saved, empty_saved)


def test_a_recording_with_room_to_spare_writes_its_whole_plan(tmp_path, frames, prelabel):
    dataset = tmp_path / "faces"
    status = record(dataset, frames, prelabel, tmp_path).status()
    assert status.errors == 0 and not status.stopped_early
    face, empty = check_pairs(dataset)
    assert (len(face), len(empty)) == (6, 4) and status.labelled >= 5


# ----------------------------------------------------------------------------------------------
# kill -9 in the middle of a write

KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, cv2
    from facetracker.labelling import capture
    dataset, where = sys.argv[1], sys.argv[2]
    frame = cv2.imread(sys.argv[3])
    real_replace, real_fsync = os.replace, os.fsync

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "before-photo-named":  # the label is written, the photo still in its temporary file
        os.replace = lambda src, dst: die() if str(dst).endswith(".jpg") else real_replace(src, dst)
    elif where == "writing-photo":  # the photo half written, no label yet
        os.fsync = die
    boxes = None if where == "writing-no-face-photo" else [(100, 100, 300, 300)]
    if where == "writing-no-face-photo":
        os.fsync = die
    capture.save_frame(dataset, frame, boxes, sys.argv[4])
""")


def killed_while_saving(dataset: Path, where: str, frame_file: Path, name: str = "rec-killed") -> None:
    result = subprocess.run([sys.executable, "-c", KILLED, str(dataset), where, str(frame_file), name], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


@pytest.fixture
def frame_file(tmp_path, frames) -> Path:
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frames["face"][0])
    return path


def hidden(dataset: Path) -> list[str]:
    return sorted(p.name for p in dataset.rglob(".*"))


@pytest.mark.parametrize("where, photo_kept", [("before-photo-named", True), ("writing-photo", False),
                                               ("writing-no-face-photo", False)])
def test_the_next_recording_tidies_what_a_killed_one_left(tmp_path, frames, prelabel, frame_file, where, photo_kept):
    dataset = tmp_path / "faces"
    killed_while_saving(dataset, where, frame_file)
    assert hidden(dataset), "the killed writer left its temporary file"
    recorder = Recorder(root=tmp_path, clock=Clock())
    recorder.feed(frames["face"][0].copy())
    recorder.start(dataset, PLAN, prelabel)
    recorder.stop()
    assert hidden(dataset) == []
    photo, label = dataset / "images" / "rec-killed.jpg", dataset / "labels" / "rec-killed.json"
    assert photo.exists() == photo_kept and label.exists() == photo_kept
    if photo_kept:  # the complete photo whose label was written takes its name: the pair is whole
        assert cv2.imread(str(photo)).shape == frames["face"][0].shape
        loaded = data.load_dataset(dataset)
        assert [s.has_face for s in loaded.samples] == [True] and not loaded.skipped


def test_opening_the_dataset_page_tidies_what_a_killed_recording_left(faces, frame_file):
    killed_while_saving(faces, "before-photo-named", frame_file)
    killed_while_saving(faces, "writing-photo", frame_file, name="rec-killed-2")
    assert hidden(faces)
    assert_no_exception(open_page("app_pages/dataset.py"))
    assert hidden(faces) == []
    assert (faces / "images" / "rec-killed.jpg").is_file() and (faces / "labels" / "rec-killed.json").is_file()


def test_temporary_files_of_live_writers_are_left_alone(tmp_path):
    images = tmp_path / "faces" / "images"
    images.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = atomic._start_time(sleeper.pid)
        mine = images / f".a.jpg.{atomic.writer_tag()}.abcdefgh.tmp"
        other = images / f".b.jpg.{sleeper.pid}-{start}.abcdefgh.tmp"
        reused = images / f".c.jpg.{sleeper.pid}-{start + 1}.abcdefgh.tmp"  # its pid, another start: dead
        gone = images / ".d.jpg.999999999-1.abcdefgh.tmp"
        old_fresh, old_stale = images / ".e.jpg.abcdefgh.tmp", images / ".f.jpg.abcdefgh.tmp"
        for path in (mine, other, reused, gone, old_fresh, old_stale):
            path.write_bytes(b"half a photo")
        two_hours_ago = time.time() - 7200
        os.utime(old_stale, (two_hours_ago, two_hours_ago))
        assert capture.finish_interrupted_writes(tmp_path / "faces") == {"removed": 3, "completed": 0}
        assert sorted(p.name for p in images.iterdir()) == sorted([mine.name, other.name, old_fresh.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    capture.finish_interrupted_writes(tmp_path / "faces")
    assert sorted(p.name for p in images.iterdir()) == sorted([mine.name, old_fresh.name])


def test_a_failed_pair_write_leaves_neither_file(tmp_path, monkeypatch, frames):
    dataset = tmp_path / "faces"
    real_replace = os.replace

    def replace(src, dst):  # the label lands, the photo's rename fails
        if str(dst).endswith(".jpg"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error") as raised:
        capture.save_frame(dataset, frames["face"][0], [(10, 10, 200, 200)], "pair")
    assert raised.value.filename == str(dataset / "images" / "pair.jpg")
    assert [p.name for p in dataset.rglob("*") if p.is_file()] == []
