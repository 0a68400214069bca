"""The package modules the app stands on: launcher, capture, atomic files, the live frame path, video
files, WebRTC settings, the model key, workspace listing."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import av
import cv2
import numpy as np
import pytest

from facetracker.data.datasets import load_dataset
from facetracker.inference import detect, draw, live, models, runtimes, video, webrtc
from facetracker.inference.dense import LIVE_FRAME
from facetracker.inference.detect import Detection
from facetracker.io import atomic
from facetracker.labelling import capture
from facetracker.runs import launcher, ownership, processes, workspace
from facetracker.runs import run_folder as runs
from tests.helpers import browser as bt

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class FakeTraining:
    """What the launcher ran instead of training, and the processes it started."""

    def __init__(self):
        self.command = SLEEP
        self.started: list[int] = []
        self.commands: list[list[str]] = []


@pytest.fixture
def fake_training():
    """Launches run a stand-in command; every process started is killed afterwards."""
    fake = FakeTraining()
    real_spawn = launcher._spawn

    def spawn(run_dir, command):
        fake.commands.append(command)
        pid = real_spawn(run_dir, fake.command)
        fake.started.append(pid)
        return pid

    with mock.patch.object(launcher, "_spawn", side_effect=spawn):
        yield fake
    for pid in fake.started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_dead(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while processes.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------
# launcher


def config(data, **options):
    from facetracker.config.training import config_for

    return config_for(data, **options)


def test_start_refuses_a_second_run_and_stop_ends_one_still_starting(tmp_path, fake_training):
    started, commands = fake_training.started, fake_training.commands
    run_dir = launcher.start_run(tmp_path, "one", config(tmp_path / "faces", backbone="mobilenet-0.25",
                                                         weights="none", epochs=2))
    status = runs.read_status(run_dir)
    assert status["state"] == "starting" and status["pid"] == started[0] and processes.pid_alive(started[0])
    assert commands[0][1:] == ["-m", "facetracker", "train", "--run-dir", str(run_dir)]
    recorded = json.loads((run_dir / runs.CONFIG).read_text())
    assert (recorded["epochs"], recorded["backbone"], recorded["data"]) == (2, "mobilenet-0.25",
                                                                            str((tmp_path / "faces").resolve()))
    assert "$ " in (run_dir / runs.LOG).read_text()
    assert launcher.live_runs(tmp_path) == [run_dir]

    with pytest.raises(ownership.RunLocked, match="already training"):
        launcher.start_run(tmp_path, "one", config(tmp_path / "faces"))
    with pytest.raises(ownership.RunLocked, match="one run at a time"):
        launcher.start_run(tmp_path, "two", config(tmp_path / "faces"))
    assert len(started) == 1

    message = launcher.stop_run(run_dir)
    assert "before training began" in message
    wait_dead(started[0])
    assert not processes.pid_alive(started[0])
    assert runs.read_status(run_dir)["state"] == "stopped"
    assert launcher.stop_run(run_dir) == "one is not running"


def test_two_tabs_pressing_start_at_once_launch_one_run(tmp_path, fake_training):
    started = fake_training.started
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def press(name):
        barrier.wait()
        try:
            launcher.start_run(tmp_path, name, config(tmp_path))
            outcomes.append("started")
        except ownership.RunLocked:
            outcomes.append("refused")

    threads = [threading.Thread(target=press, args=(f"tab{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["started"]
    assert len(started) == 1


def test_a_process_that_dies_at_once_reports_the_cli_error(tmp_path, fake_training):
    started = fake_training.started
    fake_training.command = [sys.executable, "-c",
                        "import sys; print('error: /data/x: no such folder', file=sys.stderr); sys.exit(2)"]
    run_dir = launcher.start_run(tmp_path, "bad", config(tmp_path / "x"))
    wait_dead(started[0])
    assert runs.read_status(run_dir)["state"] == "failed"
    assert launcher.failure_reason(run_dir) == "/data/x: no such folder"
    assert "no such folder" in launcher.log_tail(run_dir)


def test_resume_needs_a_config_and_names_are_checked(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        launcher.resume_run(run_dir)
    with pytest.raises(ValueError, match="run name"):
        launcher.start_run(tmp_path, "../escape", config(tmp_path))
    name = launcher.new_run_name(tmp_path, tmp_path / "my faces", "mobilenetv2-0.35")
    assert name.startswith("my-faces-mobilenetv2-0.35-") and not (tmp_path / name).exists()


def test_a_resume_with_more_epochs_records_them_before_the_process_starts(tmp_path, fake_training):
    """A plain resume later (or the app's Resume box) must carry on to the new total, not the old one."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    runs.write_json(run_dir / runs.CONFIG, config(tmp_path, backbone="mobilenet-0.25", epochs=6).to_dict())
    runs.write_json(run_dir / runs.STATUS, {"state": "finished"})
    launcher.resume_run(run_dir, epochs=9)
    assert json.loads((run_dir / runs.CONFIG).read_text())["epochs"] == 9
    assert fake_training.commands[0][1:] == ["-m", "facetracker", "train", "--run-dir", str(run_dir), "--resume"]
    assert workspace.run_summary(run_dir).epochs == 9


def test_a_run_that_ended_before_its_first_epoch_can_be_started_again(tmp_path, fake_training):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    runs.write_json(run_dir / runs.CONFIG, config(tmp_path, backbone="mobilenet-0.25", epochs=2).to_dict())
    runs.write_json(run_dir / runs.STATUS, {"state": "failed", "error": "killed"})
    assert workspace.run_summary(run_dir).resumable
    launcher.resume_run(run_dir)
    assert runs.read_json(run_dir / runs.STATUS)["message"] == "starting over"


def test_the_launch_command_is_one_the_cli_accepts(tmp_path):
    from facetracker.cli import build_parser

    args = build_parser().parse_args(launcher.train_command(tmp_path / "run")[3:])
    assert (args.command, args.run_dir, args.data, args.resume) == ("train", str(tmp_path / "run"), None, False)
    resume = build_parser().parse_args(launcher.train_command(tmp_path, resume=True)[3:])
    assert resume.resume and resume.epochs is None


# ----------------------------------------------------------------------------------------------
# capture


def test_a_capture_is_a_labelled_sample_that_can_be_corrected(tmp_path):
    frame = bt.face_frames_from_dataset(n=1)[0]
    saved = capture.save_capture(tmp_path / "mine", frame, (100.4, 80, 700, 300), source="test")
    assert saved.box == (100, 80, 640, 300), "clipped to the frame"
    dataset = load_dataset(tmp_path / "mine")
    assert len(dataset.samples) == 1 and not dataset.skipped
    assert dataset.samples[0].box == pytest.approx((100 / 640, 80 / 480, 1.0, 300 / 480))
    assert cv2.imread(str(saved.image)).shape == frame.shape

    capture.relabel(saved.label, None)
    assert load_dataset(tmp_path / "mine").samples[0].box is None
    capture.relabel(saved.label, (10, 20, 110, 220))
    assert load_dataset(tmp_path / "mine").samples[0].box == pytest.approx((10 / 640, 20 / 480, 110 / 640, 220 / 480))
    with pytest.raises(ValueError, match="empty"):
        capture.relabel(saved.label, (50, 50, 50, 90))
    capture.discard(saved)
    assert not saved.image.exists() and not saved.label.exists()


def test_captures_into_a_split_dataset_go_to_its_training_split(tmp_path):
    (tmp_path / "split" / "train" / "images").mkdir(parents=True)
    (tmp_path / "split" / "val" / "images").mkdir(parents=True)
    saved = capture.save_capture(tmp_path / "split", np.full((48, 64, 3), 90, np.uint8), None)
    assert saved.image.parent == tmp_path / "split" / "train" / "images"
    assert load_dataset(tmp_path / "split").samples[0].split == "train"
    with pytest.raises(ValueError, match="colour image"):
        capture.save_capture(tmp_path / "split", np.zeros((48, 64), np.uint8), None)


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "a.json"
    atomic.write_text(target, "first ü")
    atomic.write_bytes(target, b"second")
    assert target.read_bytes() == b"second" and oct(target.stat().st_mode & 0o777) == "0o644"
    with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")), pytest.raises(OSError):
        atomic.write_text(target, "third")
    assert target.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


# ----------------------------------------------------------------------------------------------
# live frame path


class FixedDetector:
    def __init__(self, box=(10, 10, 60, 60)):
        self.box = box

    def detect(self, frame):
        return Detection(0.9, self.box, 2.5)


def test_live_processor_counts_draws_and_survives_errors():
    processor = live.LiveProcessor(FixedDetector())
    frame = np.zeros((120, 160, 3), np.uint8)
    outputs = [processor.process(frame.copy()) for _ in range(5)]
    assert all(out.any() for out in outputs) and not frame.any()
    stats = processor.stats()
    assert (stats["frames"], stats["detections"], stats["errors"]) == (5, 5, 0)
    assert stats["fps"] > 0 and stats["model_ms"] == pytest.approx(2.5)
    last, detection = processor.last_frame()
    assert last.shape == frame.shape and detection.box == (10, 10, 60, 60)

    class Broken:
        def detect(self, frame):
            raise ValueError("bad frame")

    processor.detector = Broken()
    raw = np.full((120, 160, 3), 7, np.uint8)
    assert processor.process(raw) is raw
    stats = processor.stats()
    assert stats["errors"] == 1 and "ValueError: bad frame" in stats["last_error"]


class GroupDetector:
    """Two faces, the second drifting right by 4 px a frame."""

    def __init__(self):
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        faces = (detect.FaceBox((10, 10, 50, 60), 0.9), detect.FaceBox((80 + 4 * self.calls, 20, 120 + 4 * self.calls, 70), 0.8))
        return Detection(0.9, faces[0].box, 1.0, faces)


def test_live_faces_are_tracked_with_ids_counted_and_drawn():
    clock = Clock()
    processor = live.LiveProcessor(GroupDetector(), clock=clock)
    frame = np.zeros((120, 240, 3), np.uint8)
    for _ in range(6):
        processor.process(frame.copy())
        clock.now += 1 / 30
    stats = processor.stats()
    assert stats["faces_now"] == 2 and stats["faces_seen"] == 2
    assert sorted(face.track_id for face in processor._last_faces) == [1, 2]
    moving = max(processor._last_faces, key=lambda face: face.box[0])
    assert moving.track_id == 2 and moving.box[0] > 90  # the drifting face keeps its ID as it moves
    drawn = processor.redraw(frame.copy())
    assert (drawn[60:70, 10:12] == draw.BOX_COLOUR_BGR).all(axis=-1).any()  # each face's box is on the video
    processor.detector = FixedDetector()  # the moving face leaves; the other stays, with its ID
    for _ in range(60):
        processor.process(frame.copy())
        clock.now += 1 / 30
    assert processor.stats()["faces_now"] == 1 and processor.stats()["faces_seen"] == 2
    assert [face.track_id for face in processor._last_faces] == [1]


def test_yunet_on_the_live_path_finds_every_face_of_a_real_group_photo(data_root):
    from tests.conftest import require

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    label = max(sorted((groups / "labels").glob("*.json")), key=lambda f: len(json.loads(f.read_text())["shapes"]))
    photo = cv2.imread(str(groups / "images" / f"{label.stem}.jpg"))
    frame = cv2.resize(photo, (640, 480), interpolation=cv2.INTER_AREA)
    processor = live.LiveProcessor(detect.reference_detector(detect.YUNET))
    for _ in range(3):
        processor.process(frame)
    assert processor.stats()["faces_now"] >= 5
    assert processor.stats()["faces_now"] == len({face.track_id for face in processor._last_faces})


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class TimedDetector(FixedDetector):
    """Takes `cost_s` of the clock per frame, as a model of that speed would."""

    def __init__(self, clock: Clock, cost_s: float):
        super().__init__()
        self.clock, self.cost_s, self.calls = clock, cost_s, 0

    def detect(self, frame):
        self.clock.now += self.cost_s
        self.calls += 1
        return super().detect(frame)


@pytest.fixture
def ends_streams():
    """LiveProcessors whose streams the test ends, as the page's `on_video_ended` would."""
    processors = []
    yield processors.append
    for processor in processors:
        processor.end_stream()


def stream(processor, clock, frames_at_once, count=30, interval_s=1 / 30):
    """`count` camera frames 1/30 s apart, handed over `frames_at_once` at a time (or later, when the
    previous ones took longer)."""
    outputs = []
    arrival = clock.now
    for _ in range(0, count, frames_at_once):
        arrival += interval_s * frames_at_once
        clock.now = max(clock.now, arrival)
        outputs += processor.process_queue([np.zeros((120, 160, 3), np.uint8) for _ in range(frames_at_once)])
    return outputs


def test_live_processor_runs_the_model_on_every_frame_it_has_time_for(ends_streams):
    clock = Clock()
    fast = TimedDetector(clock, cost_s=0.008)
    processor = live.LiveProcessor(fast, clock=clock)
    ends_streams(processor)
    outputs = stream(processor, clock, 1) + stream(processor, clock, 3)  # then bursts of three
    assert len(outputs) == 60 and all(out[10:60, 10:60].any() for out in outputs), "a box on every frame"
    assert fast.calls == 60 and processor.stats()["camera_frames"] == 60


def test_the_collector_skips_loaded_objects_while_streams_run(ends_streams):
    import gc

    first, second = live.LiveProcessor(FixedDetector()), live.LiveProcessor(FixedDetector())
    ends_streams(first), ends_streams(second)
    frame = np.zeros((120, 160, 3), np.uint8)
    first.process_queue([frame])
    frozen = gc.get_freeze_count()
    assert frozen > 1000, "the libraries loaded by now are frozen"
    second.process_queue([frame])
    first.end_stream()
    first.end_stream()  # ended twice: counted once
    assert gc.get_freeze_count() >= frozen, "another viewer still streams"
    second.end_stream()
    assert gc.get_freeze_count() == 0, "the last stream's end hands them back to the collector"


def test_a_stream_that_dies_without_its_end_unfreezes_the_collector(ends_streams, monkeypatch):
    import gc

    clock = Clock()
    dead, viewer = live.LiveProcessor(FixedDetector(), clock=clock), live.LiveProcessor(FixedDetector(), clock=clock)
    ends_streams(dead), ends_streams(viewer)
    frame = np.zeros((120, 160, 3), np.uint8)
    dead.process_queue([frame])  # its browser goes away: no more frames, and no end reported
    assert gc.get_freeze_count() > 1000
    clock.now += live.STREAM_SILENT_S / 2
    assert live.end_silent_streams() == 0 and gc.get_freeze_count() > 1000, "a short pause is no end"
    clock.now += live.STREAM_SILENT_S
    viewer.process_queue([frame])  # the next stream's start ends the silent one
    assert dead.stats()["frames"] == 1 and live._streaming == {viewer}
    clock.now += live.STREAM_SILENT_S + 1
    assert live.end_silent_streams() == 1, "the page's refresh ends a silent stream"
    assert gc.get_freeze_count() == 0

    monkeypatch.setattr(live, "WATCH_EVERY_S", 0.02)
    dead.process_queue([frame])  # frames again: a stream again
    assert gc.get_freeze_count() > 1000
    clock.now += live.STREAM_SILENT_S + 1  # silent again, and nobody calls anything: the timer does
    deadline = time.monotonic() + 5
    while gc.get_freeze_count() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gc.get_freeze_count() == 0


def test_live_processor_keeps_the_camera_rate_with_a_slow_model(ends_streams):
    clock = Clock()
    slow = TimedDetector(clock, cost_s=0.060)
    processor = live.LiveProcessor(slow, clock=clock)
    ends_streams(processor)
    stream(processor, clock, 1, count=10)
    outputs = stream(processor, clock, 3)
    assert len(outputs) == 30 and all(out[10:60, 10:60].any() for out in outputs), "older frames keep the last box"
    assert slow.calls == 10 + 10, "the model takes only the newest frame of each three"
    stats = processor.stats()
    assert (stats["camera_frames"], stats["frames"], stats["detections"]) == (40, 20, 20)

    clock.now += 0.5  # a stall: 15 frames queued up, the page hands over the newest few
    outputs = processor.process_queue([np.zeros((120, 160, 3), np.uint8)] * live.FRESH_FRAMES,
                                      dropped=15 - live.FRESH_FRAMES)
    assert len(outputs) == live.FRESH_FRAMES and slow.calls == 21
    assert processor.stats()["camera_frames"] == 55


def test_rtc_configuration_from_the_environment():
    assert webrtc.rtc_configuration({}) == ({"iceServers": []}, None)
    servers = [{"urls": ["stun:stun.example.org:3478"]}, {"urls": "turn:t.example.org", "username": "u",
                                                         "credential": "p"}]
    assert webrtc.rtc_configuration({webrtc.ICE_SERVERS_ENV: json.dumps(servers)}) == ({"iceServers": servers}, None)
    config, warning = webrtc.rtc_configuration({webrtc.ICE_SERVERS_ENV: "stun:oops"})
    assert config == {"iceServers": []} and "not valid JSON" in warning
    config, warning = webrtc.rtc_configuration({webrtc.ICE_SERVERS_ENV: '["stun:x"]'})
    assert config == {"iceServers": []} and "urls" in warning


def write_video(path, frames: int) -> None:
    """A 160x120 H.264 file at 10 frames/s, each frame a little brighter."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            image = np.full((120, 160, 3), 30 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_annotate_video_boxes_every_frame(tmp_path):
    source = tmp_path / "in.mp4"
    write_video(source, frames=7)
    assert video.video_rate_and_length(source) == (10, 7)
    seen = []
    figures = video.annotate_video(source, FixedDetector(), tmp_path / "out.mp4", max_frames=5,
                                  progress=lambda done, total: seen.append((done, total)))
    assert figures["frames"] == 5 and figures["with_face"] == 5
    assert seen == [(i, 5) for i in range(1, 6)]
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.video[0].average_rate == 10, "plays at the input's speed"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 5
    green = (frames[-1][..., 1].astype(int) - frames[-1][..., 2] > 80)
    assert green[10:60, 8:13].mean() > 0.5, "the box is drawn on the output video (from a face's second frame)"
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="clip.mp4: cannot open the video"):
        video.annotate_video(tmp_path / "text.mp4", FixedDetector(), tmp_path / "x.mp4", name="clip.mp4")


def test_a_video_of_a_real_group_keeps_each_face_under_one_number(data_root, tmp_path):
    """A camera panning across a real group photo for 2 s, boxed by YuNet: every face is counted once."""
    from tests.conftest import require

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    label = max(sorted((groups / "labels").glob("*.json")), key=lambda f: len(json.loads(f.read_text())["shapes"]))
    photo = cv2.imread(str(groups / "images" / f"{label.stem}.jpg"))
    photo = cv2.resize(photo, (800, round(photo.shape[0] * 800 / photo.shape[1])), interpolation=cv2.INTER_AREA)
    source = tmp_path / "pan.mp4"
    with av.open(str(source), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, photo.shape[0] // 2 * 2, "yuv420p"
        for i in range(60):
            x = i * 160 // 59
            frame = np.ascontiguousarray(photo[: stream.height, x:x + 640])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    figures = video.annotate_video(source, detect.reference_detector(detect.YUNET), tmp_path / "out.mp4")
    assert figures["frames"] == 60 and figures["with_face"] == 60
    # Every face the pan shows, counted once: YuNet finds this many in the whole strip the camera crosses.
    # A face renumbered on the way would count twice.
    strip = len(detect.reference_detector(detect.YUNET).detect(np.ascontiguousarray(photo[: stream.height])).faces)
    assert strip >= 15
    assert strip * 0.8 <= figures["faces_seen"] <= strip * 1.25, (figures["faces_seen"], strip)


class FakeCodecContext:
    width, height = 12000, 12000


class FakeStream:
    codec_context = FakeCodecContext()


def test_a_video_with_huge_frames_is_refused_from_its_header(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"big\.mp4: its frames are 12000x12000 px, larger than the 40 megapixels"):
        video.check_frame_size(FakeStream(), "big.mp4")
    source = tmp_path / "in.mp4"
    write_video(source, frames=3)
    # The same check on a real file, with the limit just below its 160x120 frames: refused before decoding.
    monkeypatch.setattr(video, "MAX_IMAGE_PIXELS", 160 * 120 - 1)
    decoded = []
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", lambda *a, **k: decoded.append(1))
    with pytest.raises(ValueError, match=r"clip\.mp4: its frames are 160x120 px"):
        video.annotate_video(source, FixedDetector(), tmp_path / "out.mp4", name="clip.mp4")
    assert not decoded and not (tmp_path / "out.mp4").exists()


# ----------------------------------------------------------------------------------------------
# one key for a model file


def _fake_export(exported: list):
    """What the trainer, or the export the door starts, leaves beside a model: its TFLite files."""
    def export(keras_path):
        exported.append(Path(keras_path))
        frames = [None] + ([LIVE_FRAME] if models.finds_every_face(keras_path) else [])
        for frame in frames:
            models.exported_file(Path(keras_path), frame).write_bytes(Path(keras_path).read_bytes())
    return export


def test_a_replaced_model_gets_a_new_key_and_the_webcam_and_uploads_move_to_it(tmp_path, monkeypatch):
    from app_pages import ui

    run = tmp_path / "still-training"
    run.mkdir()
    model = run / runs.MODEL
    model.write_bytes(b"epoch 1")
    first = runtimes.model_file_key(run)
    assert first == runtimes.model_file_key(model) == ui.model_version(str(run))[:3] == (
        str(model.resolve()), model.stat().st_mtime_ns, 7)
    exported = []
    monkeypatch.setattr(models, "export_runtime_files", _fake_export(exported))
    monkeypatch.setattr(models, "load_runtime", lambda path, num_threads=None: FakeRuntime(path))
    ui._runtime.clear()
    webcam = ui.session_detector("test_detector", str(run), 0.4)
    upload = ui.make_detector(str(run), 0.4)
    assert webcam.runtime is upload.runtime and exported == [model]
    assert webcam.runtime.path == run / "model.tflite"
    assert ui.session_detector("test_detector", str(run), 0.3) is webcam and webcam.threshold == 0.3

    time.sleep(0.01)
    model.write_bytes(b"epoch 2, better")  # the run saved a better epoch, and is no longer training
    second = runtimes.model_file_key(run)
    assert second != first
    webcam_now, upload_now = ui.session_detector("test_detector", str(run), 0.3), ui.make_detector(str(run))
    assert webcam_now is not webcam and webcam_now.runtime is upload_now.runtime is not webcam.runtime
    assert len(exported) == 2, "an exported file older than its model is exported again"
    same_size = model.stat().st_size
    model.write_bytes(b"epoch 3, better!"[:same_size])
    os.utime(model, ns=(second[1] + 10**9, second[1] + 10**9))
    assert runtimes.model_file_key(run) not in (first, second), "the same size, a newer file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no model.keras yet"):
        ui.model_version(str(tmp_path / "empty"))
    assert ui.model_version(detect.HAAR) == (detect.HAAR,)


def test_a_run_still_training_keeps_the_tflite_file_its_trainer_last_wrote(tmp_path, monkeypatch):
    """While a run trains, its trainer refreshes the TFLite files itself: the door does not start a
    conversion of its own for every better epoch."""
    run = tmp_path / "training"
    run.mkdir()
    (run / "model.tflite").write_bytes(b"epoch 1")
    time.sleep(0.01)
    (run / runs.MODEL).write_bytes(b"epoch 2")
    exported = []
    monkeypatch.setattr(models, "export_runtime_files", _fake_export(exported))
    ownership.acquire_lock(run)
    try:
        assert models.runtime_file(run, models.PHOTO) == run / "model.tflite" and exported == []
    finally:
        ownership.release_lock(run)
    assert models.runtime_file(run, models.PHOTO) == run / "model.tflite" and exported == [run / runs.MODEL]


def test_the_webcam_runs_a_dense_model_shaped_for_its_frames_and_photos_at_the_square_input(tmp_path, monkeypatch):
    """A model that finds every face runs the webcam on a network shaped for 640x480 frames; an
    uploaded photo goes through the square input it trained at (and its tiles), as `evaluate` scores
    it. A single-box model has one runtime for both."""
    from app_pages import ui

    exported = []
    monkeypatch.setattr(models, "export_runtime_files", _fake_export(exported))
    monkeypatch.setattr(models, "load_runtime", lambda path, num_threads=None: FakeRuntime(path))
    ui._runtime.clear()
    for name, head in (("every-face", "dense"), ("one-face", "grid")):
        (tmp_path / name).mkdir()
        (tmp_path / name / runs.MODEL).write_bytes(b"model")
        runs.write_json(tmp_path / name / runs.CONFIG, {"head": head, "image_size": 320})
        webcam = ui.session_detector(f"detector_{name}", str(tmp_path / name), 0.3)
        photo = ui.make_detector(str(tmp_path / name), 0.3, look_closer=True)
        assert photo.look_closer and not webcam.look_closer
        assert (webcam.runtime is photo.runtime) == (head != "dense")
        assert photo.runtime.path.name == "model.tflite"
        assert webcam.runtime.path.name == ("model.384x288.tflite" if head == "dense" else "model.tflite")
    assert [path.parent.name for path in exported] == ["every-face", "one-face"], "one export writes both files"


class FakeRuntime:
    input_wh = (120, 120)
    name = "fake"

    def __init__(self, path):
        self.path = path

    def predict(self, images):
        return np.array([[0.9, 0.1, 0.1, 0.5, 0.5]] * len(images), np.float32)


# ----------------------------------------------------------------------------------------------
# workspace


def test_workspace_lists_datasets_and_runs(tmp_path):
    (tmp_path / "faces" / "images").mkdir(parents=True)
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "loose").mkdir()
    cv2.imwrite(str(tmp_path / "loose" / "a.jpg"), np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden" / "images").mkdir(parents=True)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    assert [p.name for p in workspace.list_datasets(tmp_path)] == ["faces", "loose", "split"]

    runs.write_json(tmp_path / "runs" / "r1" / runs.CONFIG, {"data": str(tmp_path / "faces"), "backbone": "b",
                                                           "epochs": 4})
    runs.write_json(tmp_path / "runs" / "r1" / runs.STATUS, {"state": "finished", "best_val_iou": 0.5,
                                                           "last_val": {"accuracy": 0.9}})
    (tmp_path / "runs" / "r1" / runs.MODEL).write_bytes(b"m")
    (tmp_path / "runs" / "r2").mkdir()
    runs.write_json(tmp_path / "runs" / "r2" / runs.STATUS, {"state": "running", "pid": 2**22 + 7})
    summaries = {s.name: s for s in workspace.list_run_summaries(tmp_path / "runs")}
    assert summaries["r1"].has_model and summaries["r1"].best_val_iou == 0.5 and summaries["r1"].epochs == 4
    assert summaries["r2"].state == "failed" and not summaries["r2"].live  # its process is gone
    assert [s.name for s in workspace.trained_runs(tmp_path / "runs")] == ["r1"]
