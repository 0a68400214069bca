"""From a webcam and nothing else to a working face tracker, in a real browser, by clicks only.

An empty data root; headless Chromium's fake camera plays the webcam-tutorial frames: a long stretch
with the person in view, then the empty room. On the Dataset page a new dataset is created, the
camera started and a recording made with the page's own plan (20 s with the face, 5 s out of view);
on the Train page a run starts with the preset the page suggests for so few photos; on the Detect
page the new model boxes the face live. Each step is timed and printed with the total.

Chromium loops the video, so Record is pressed when the frame the page shows back says the video is
where the 3 s step-out countdown will straddle its turn from face to no-face frames (1.5 s of slack
either way); every saved photo is then matched to the video's frames to show the phases landed.

Asserted: photos at the camera's size (or, where the browser's WebRTC sent a smaller video because
the machine was busy, at that size with the page saying so), none black, every one readable, labels
on face photos only and each face photo matched to a face frame of the video (each no-face photo to
a no-face frame), a finished run, live frames through the model with boxes drawn, and every click
answered.

The model the journey made is then measured in this process on every distinct frame of the fake
video: the share of face frames where its box overlaps YuNet's (IoU >= 0.5), and the share of
no-face frames where it finds no face. The targets (95% and 90%) are printed; the assertion is a
looser floor (80% and 80%): a run on 50 photos varies from one recording to the next (and training
is not bit-for-bit repeatable), and the floor still fails a model that learnt nothing. A run that
learnt nothing must say so: when its verdict (status.json, the Train page's finish) calls it no
better than guessing, the floor is not asserted, as the app has told the person not to trust it.

The time targets (whole journey <= 5 min, training <= 2.5 min, on 2 cores) depend on the machine's
load, so they are printed always and asserted only with FACETRACKER_ASSERT_JOURNEY_TIMES=1.
Run: CI=true python -m pytest tests/browser/test_journey_browser.py -s -q
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetracker.config.training import SMALL_DATASET_PRESET
from tests.conftest import REPO
from tests.helpers import browser as bt
from tests.helpers.browser import green_pixels, read_caption

pytestmark = [bt.browser_mark]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(900))

FPS = 15
"""The fake camera's frame rate: what the Dataset page asks of a camera."""
HOLD = 3
"""Video frames each image stays on camera (0.2 s): photos 0.5 s apart never show the same image,
even the one taken early after a stall of the stream, so none is dropped as frozen."""
FACE_S, STEP_OUT_S, NO_FACE_S, COUNTDOWN_S, PHOTOS_PER_S = 20, 3, 5, 3, 2
"""The Dataset page's recording plan as it is offered (nothing is typed into it)."""
NO_FACE_STRETCH_S = 9.0
"""The 5 s out of view, the half of the step-out countdown after the video's turn, and 2 s for a
Record acting later than aimed."""
SERVER_LAG_S = 0.5
"""From a frame seen in the browser to Record acting on the server: the video coming back lags the
camera, and the click goes through the server's script run."""
JOURNEY_TARGET_S, TRAIN_TARGET_S = 300, 150
FACE_TARGET, NO_FACE_TARGET, FACE_FLOOR, NO_FACE_FLOOR = 0.95, 0.90, 0.80, 0.80
GREEN_BOX_PX = 150
"""Pixels of the box colour on a frame with a box drawn (a 640x480 frame without one has next to none)."""
THUMB = (32, 24)
COUNTS = re.compile(r"saved: (\d+) · with your face: (\d+) \((\d+) pre-labelled\) · without: (\d+) · "
                    r"dropped: (\d+) \(black: (\d+), frozen: (\d+)\)")
SUGGESTION = re.compile(r"the (\S+) preset suits this dataset")
"""The advice the Train page gives when another preset than the one for the dataset's size is chosen."""
FRAMES_CAPTION = re.compile(r"processed frames: (\d+) · with a face: (\d+) · errors: (\d+)")
STEPS_CAPTION = re.compile(r"(\d+) training steps and (\d+) validated epochs logged")


# ----------------------------------------------------------------------------------------------
# The fake camera


@dataclasses.dataclass
class CameraVideo:
    """The y4m the fake camera loops, and what is on it when: every distinct image once per loop in
    the face stretch (so a frame seen in the browser tells the time), then the no-face stretch."""

    path: Path
    faces: list[np.ndarray]
    """The distinct face images (640x480 BGR), in playing order."""
    no_faces: list[np.ndarray]
    """The distinct no-face images."""
    face_s: float
    """Length of the face stretch; the no-face stretch follows it."""
    period_s: float
    thumbs: np.ndarray
    """Small grey copies of faces then no_faces, to recognise a frame by."""

    def recognise(self, frame_bgr: np.ndarray) -> tuple[str, int, float]:
        """("face" | "no face", index among them, mean grey difference) of the image nearest the frame."""
        distances = np.abs(self.thumbs - thumb(frame_bgr)[None]).mean(axis=(1, 2))
        best = int(distances.argmin())
        if best < len(self.faces):
            return "face", best, float(distances[best])
        return "no face", best - len(self.faces), float(distances[best])

    def face_time(self, index: int) -> float:
        """Seconds into the video at the middle of face image `index`."""
        return (index + 0.5) * HOLD / FPS


def thumb(frame_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(cv2.resize(frame_bgr, (bt.FRAME_W, bt.FRAME_H), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def zoomed(frame: np.ndarray, factor: float = 1.25) -> np.ndarray:
    """The middle of the frame enlarged: the person nearer the camera."""
    h, w = frame.shape[:2]
    ch, cw = round(h / factor), round(w / factor)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(frame[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def camera_video(folder: Path, webcam: Path) -> CameraVideo:
    """Write the fake camera's video from the webcam-tutorial frames.

    Face stretch: every labelled frame nearer the camera, then as it is, then mirrored (each kept only
    when YuNet, which pre-labels the recording and is the reference below, finds the face in it, and
    the recorder would not drop it as black).
    No-face stretch: the unlabelled frames that are neither black nor show YuNet a face, as they are
    and mirrored, over and over for NO_FACE_STRETCH_S.
    """
    from facetracker.inference.detect import YUNET, reference_detector
    from facetracker.labelling.recording import frame_problem

    # YuNet as the recorder runs it, and as the reference below; with room on either side of the
    # recorder's 0.6, since the browser's video encoding moves the scores a little.
    live, full = reference_detector(YUNET, threshold=0.4), reference_detector(YUNET, threshold=0.4, max_side=None)
    labelled, unlabelled = [], []
    for path in sorted(webcam.glob("*/images/*.jpg")):
        image = cv2.imread(str(path))
        if image is None:
            continue
        has_label = (path.parent.parent / "labels" / f"{path.stem}.json").is_file()
        (labelled if has_label else unlabelled).append(bt._letterbox(image))
    faces = [variant(frame) for variant in (zoomed, lambda f: f, lambda f: cv2.flip(f, 1)) for frame in labelled]
    faces = [f for f in faces if frame_problem(f, None)[0] is None  # a few are too dark to keep
             and len(full.detect(f).faces) == 1 and len(live.detect(f).faces) == 1
             and live.detect(f).probability >= 0.8]
    no_faces = [variant(frame) for variant in (lambda f: f, lambda f: cv2.flip(f, 1)) for frame in unlabelled]
    no_faces = [f for f in no_faces if frame_problem(f, None)[0] is None
                and not live.detect(f).faces and not full.detect(f).faces]
    if len(faces) < 150 or len(no_faces) < 10:
        bt.skip_or_fail(f"webcam-tutorial gave {len(faces)} face and {len(no_faces)} no-face frames, "
                        f"fewer than 150 and 10 ({webcam})")
    passes = math.ceil(NO_FACE_STRETCH_S / (len(no_faces) * HOLD / FPS))
    path = bt.write_y4m(folder / "camera.y4m", faces + no_faces * passes, fps=FPS, repeat=HOLD)
    face_s = len(faces) * HOLD / FPS
    return CameraVideo(path, faces, no_faces, face_s, face_s + passes * len(no_faces) * HOLD / FPS,
                       np.stack([thumb(f) for f in faces + no_faces]))


# ----------------------------------------------------------------------------------------------
# Clicking and waiting


def wait_for(what: str, check, timeout: float, page, interval_ms: int = 250):
    """`browser.wait_for`, polling every 250 ms unless told otherwise, as this test always has."""
    return bt.wait_for(what, check, timeout, page, interval_ms)


def click_and_expect(page, target, answer, what: str, timeout: float = 30) -> None:
    """Click, then wait for the page's answer: a click that changes nothing fails here, by name."""
    target.click()
    try:
        answer.first.wait_for(state="attached", timeout=timeout * 1000)
    except Exception:
        raise AssertionError(f"clicking {what} did nothing visible within {timeout:.0f} s; the page shows "
                             f"{bt.page_exceptions(page) or 'no exception'}") from None


def start_camera(page, notes: list[str], full_size: bool = False) -> None:
    """Press START once: the video must come back (bt.start_webrtc's second click would hide a first
    one that did nothing). With `full_size`, also wait for the camera's full size: the browser sends a
    smaller video while the connection warms up, and a person waits for a sharp picture.

    A stream that plays and then drops, the Start button back, gets START once more, as a person
    would press it, and a note says so: on a loaded machine a fresh connection has been seen to
    close within a second of its first frames."""
    for attempt in (1, 2):
        try:
            bt.start_webrtc(page, timeout=45, attempt_timeout=45)
        except TimeoutError as error:
            raise AssertionError(f"pressing START did nothing visible: {error}") from None
        start_button = bt.webrtc_frame(page).get_by_role("button", name="Start", exact=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if start_button.is_visible():  # the component shows Stop while it streams
                break
            width = bt.video_width(page)
            if width >= bt.FRAME_W or (width and not full_size):
                return
            page.wait_for_timeout(200)
        else:
            raise AssertionError(f"the camera's full size not seen within 30 s of the video starting; the "
                                 f"video is {bt.video_width(page)} px wide, the page shows "
                                 f"{bt.page_exceptions(page) or 'no exception'}")
        if attempt == 2:
            raise AssertionError("the video stopped right after it started, twice: the Start button came back")
        note = "the first stream stopped right after it started, and START was pressed again"
        print(f"[journey] {note}", file=sys.stderr)
        notes.append(note)


def go_to(page, title: str) -> None:
    """Open a page from the sidebar, as a person would."""
    link = page.get_by_test_id("stSidebarNavLink").filter(has_text=title)
    click_and_expect(page, link, page.get_by_role("heading", name=title, exact=True), f"the sidebar's {title}", 120)
    bt.wait_for_app(page, timeout=120)
    assert bt.page_exceptions(page) == [], f"the {title} page shows an exception"


def video_seconds(page, video: CameraVideo) -> float | None:
    """Where the fake camera is in its face stretch, from the frame the page shows now (None when it
    shows a no-face frame or one it cannot tell)."""
    try:
        kind, index, distance = video.recognise(bt.video_frame_png(page))
    except Exception:  # the video element re-rendered mid-grab
        return None
    return video.face_time(index) if kind == "face" and distance < 12 else None


def record_at_the_right_moment(page, video: CameraVideo, record) -> tuple[float, float]:
    """Click Record when the face phase will end within the face stretch and the no-face phase start
    after it: the 3 s step-out countdown straddles the turn of the video, half on either side. Waits
    for the next turn of the loop when this one is too near. Returns the wait and the video's second
    aimed at.

    A frame is only believed when the one before it, seen a moment earlier, agrees with it: a person
    standing still gives near-identical images at different times of the video."""
    start = time.monotonic()
    aim = video.face_s - (COUNTDOWN_S + FACE_S + STEP_OUT_S / 2)  # where the video must be at Record
    click_at = aim - SERVER_LAG_S
    deadline = start + video.period_s + 30
    previous = None
    while time.monotonic() < deadline:
        seen_at, now = time.monotonic(), video_seconds(page, video)
        agreed = (now is not None and previous is not None
                  and abs((now - previous[1]) - (seen_at - previous[0])) < 0.6)
        previous = (seen_at, now) if now is not None else None
        if agreed and click_at - 6 <= now <= click_at:
            page.wait_for_timeout((click_at - now - (time.monotonic() - seen_at)) * 1000)
            record.click()
            return time.monotonic() - start, aim
        page.wait_for_timeout(150)
    raise AssertionError(f"the fake camera never reached {click_at:.1f} s into its video")


# ----------------------------------------------------------------------------------------------
# What the recording saved, and what the model makes of the video


def check_saved_photos(dataset: Path, video: CameraVideo) -> dict:
    """Every photo readable, at the camera's size, not black; labels on the face photos only, each
    with a box; each face photo showing a face frame of the video, each no-face photo a no-face frame."""
    from facetracker.labelling.recording import frame_problem

    images = sorted((dataset / "images").glob("rec-*.jpg"))
    labels = sorted((dataset / "labels").glob("rec-*.json"))
    face_images = [p for p in images if "-face-" in p.name]
    no_face_images = [p for p in images if "-noface-" in p.name]
    assert len(face_images) + len(no_face_images) == len(images), [p.name for p in images]
    assert [p.stem for p in labels] == [p.stem for p in face_images], "labels on the face photos only"
    seen = {"face": [], "no face": []}
    sizes: dict[tuple[int, int], int] = {}
    for path in images:
        photo = cv2.imread(str(path))
        assert photo is not None, f"{path.name} cannot be read"
        sizes[(photo.shape[1], photo.shape[0])] = sizes.get((photo.shape[1], photo.shape[0]), 0) + 1
        assert frame_problem(photo, None)[0] is None, f"{path.name} is black"
        kind, index, distance = video.recognise(photo)
        expected = "face" if "-face-" in path.name else "no face"
        assert kind == expected and distance < 12, (
            f"{path.name} shows a {kind} frame of the video (#{index}, grey difference {distance:.1f}): the "
            "recording's phases did not land on the video's stretches")
        seen[kind].append(index)
    for path in labels:  # a second box is YuNet's doing (the video encoding can show it one more face)
        shapes = json.loads(path.read_text())["shapes"]
        assert shapes and all(shape["label"] == "face" for shape in shapes), f"{path.name}: {shapes}"
    # Where in the video the face phase began: each face photo, taken 1 / PHOTOS_PER_S after the one
    # before, says it; the median ignores the few a near-identical image of another time is taken for.
    starts = [video.face_time(index) - n / PHOTOS_PER_S for n, index in enumerate(seen["face"])]
    return {"face": len(face_images), "no_face": len(no_face_images), "face_phase_from_s": float(np.median(starts)),
            "sizes": sizes}


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def measure_model(run_dir: Path, video: CameraVideo) -> tuple[float, float]:
    """(share of face frames boxed as YuNet boxes them, IoU >= 0.5; share of no-face frames with no face
    found), the run's model in the Detector the Detect page uses, on every distinct frame of the video."""
    from facetracker.inference.detect import YUNET, Detector, reference_detector
    from facetracker.inference.runtimes import load_runtime

    detector = Detector(load_runtime(run_dir))
    reference = reference_detector(YUNET, max_side=None)
    hits = 0
    for frame in video.faces:
        found, truth = detector.detect(frame), reference.detect(frame)
        hits += found.box is not None and iou(found.box, truth.box) >= 0.5
    quiet = sum(not detector.detect(frame).found for frame in video.no_faces)
    return hits / len(video.faces), quiet / len(video.no_faces)


# ----------------------------------------------------------------------------------------------


def test_from_a_webcam_to_a_face_tracker_by_clicks(tmp_path: Path, webcam, keras_home) -> None:
    bt.require_browser()
    video = camera_video(tmp_path, webcam)
    root = tmp_path / "data"
    root.mkdir()
    env = {"FACETRACKER_DATA_ROOT": str(root), "FACETRACKER_ICE_SERVERS": ""}
    times: dict[str, float] = {}
    notes: list[str] = []

    def lap(name: str, since: float) -> float:
        times[name] = time.monotonic() - since
        return time.monotonic()

    t0 = mark = time.monotonic()
    with bt.streamlit_server(REPO / "streamlit_app.py", env=env) as url, bt.browser(video.path) as page:
        page.set_default_timeout(60_000)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("heading", name="FaceTracker").first.wait_for(timeout=120_000)
        bt.wait_for_app(page, timeout=120)
        assert bt.page_exceptions(page) == []
        page.get_by_text("There is no dataset yet").wait_for()
        mark = lap("open the app", mark)

        # -- Dataset: a new dataset, the camera on, a recording with the page's plan
        go_to(page, "Dataset")
        page.get_by_label("Name of the new dataset folder").fill("my-face")
        page.get_by_label("Name of the new dataset folder").press("Enter")
        bt.wait_for_app(page)
        click_and_expect(page, page.get_by_role("button", name="Create an empty dataset"),
                         page.get_by_text("my-face is empty: record photos with the webcam below"),
                         "Create an empty dataset")
        bt.wait_for_app(page)
        dataset = root / "my-face"
        assert (dataset / "images").is_dir(), "the dataset folder was made under the data root"
        assert bt.page_exceptions(page) == []
        start_camera(page, notes, full_size=True)
        bt.wait_for_app(page)
        mark = lap("new dataset and camera", mark)
        record = page.get_by_role("button", name="Record", exact=True)
        waited, aim = record_at_the_right_moment(page, video, record)
        try:
            page.get_by_text(re.compile(r"Recording starts in \d s")).wait_for(timeout=10_000)
        except Exception:
            raise AssertionError("clicking Record did nothing visible within 10 s") from None
        page.get_by_text("Recording finished").wait_for(timeout=(COUNTDOWN_S + FACE_S + STEP_OUT_S + NO_FACE_S + 30) * 1000)
        bt.wait_for_app(page)
        saved, face, labelled, no_face, dropped, black, frozen = read_caption(page, COUNTS)
        warnings = page.get_by_test_id("stAlert").all_inner_texts()
        assert bt.page_exceptions(page) == []
        mark = lap("record", mark)
        photos = check_saved_photos(dataset, video)
        notes.append(f"Record aimed at {aim:.1f} s into the video, landed at "
                     f"{photos['face_phase_from_s'] - COUNTDOWN_S:.1f} s; the record step includes {waited:.1f} s "
                     "waiting for that moment, which a person would not")
        if set(photos["sizes"]) != {(bt.FRAME_W, bt.FRAME_H)}:
            # WebRTC in the browser may send a smaller video when the machine is busy: the photos are
            # then saved at the size that came, which the page must say, and the camera's 4:3 is kept.
            assert any("The browser sent a smaller video" in w for w in warnings), (photos["sizes"], warnings)
            assert all(w * 3 == h * 4 for w, h in photos["sizes"]), photos["sizes"]
        assert (black, frozen) == (0, 0), f"dropped: {black} black, {frozen} frozen"
        assert saved == face + no_face == photos["face"] + photos["no_face"], "every photo counted is on disk"
        assert face == labelled == photos["face"], "YuNet boxed the face in every face photo"
        assert face >= FACE_S * PHOTOS_PER_S - 2 and no_face >= NO_FACE_S * PHOTOS_PER_S - 1, (face, no_face)
        assert not any("A face was seen" in w for w in warnings), warnings

        # -- Train: the page preselects the preset for so few photos; started by a click, watched to the end
        go_to(page, "Train")
        page.get_by_role("button", name="Start training").wait_for()
        # the advice to switch shows only while another preset than the one for the dataset's size is chosen
        assert page.get_by_text(SUGGESTION).count() == 0, f"{SMALL_DATASET_PRESET} is not preselected"
        mark = lap("train page and preset", mark)
        click_and_expect(page, page.get_by_role("button", name="Start training"),
                         page.get_by_text("is training now"), "Start training", 60)
        bt.wait_for_app(page)
        assert page.get_by_role("button", name="Start training", include_hidden=True).is_disabled(), \
            "a second run cannot start"
        page.get_by_text("Finished").first.wait_for(timeout=600_000)
        mark = lap("train", mark)
        bt.wait_for_app(page)
        assert bt.page_exceptions(page) == []
        steps, epochs = wait_for("the run's step counts", lambda: read_caption(page, STEPS_CAPTION), 30, page)
        assert steps >= 2 and epochs >= 1, (steps, epochs)
        wait_for("the loss and validation charts", lambda: page.get_by_test_id("stVegaLiteChart").count() >= 2, 20, page)
        (run_dir,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
        status = json.loads((run_dir / "status.json").read_text())
        assert status.get("state") == "finished", status
        assert (run_dir / "model.keras").is_file()
        config = json.loads((run_dir / "config.json").read_text())
        notes.append(f"train: preset {config.get('preset')!r}, {status.get('epoch')} epochs on {status.get('n_train')} "
                     f"photos ({status.get('n_val')} for validation)")

        # -- Detect: the new model on the webcam, boxes drawn live
        go_to(page, "Detect")
        page.get_by_text(re.compile(rf"Running {re.escape(run_dir.name)} as TFLITE")).wait_for(timeout=120_000)
        mark = lap("detect ready", mark)
        start_camera(page, notes)
        wait_for("a face box on the live video",
                 lambda: green_pixels(bt.video_frame_png(page)) > GREEN_BOX_PX, 60, page, 100)
        mark = lap("first live box", mark)
        times["total"] = mark - t0
        processed = wait_for("frames with a face counted",
                             lambda: (c := read_caption(page, FRAMES_CAPTION)) and c[1] > 0 and c, 30, page)
        assert processed[2] == 0, f"{processed[2]} frames failed in the live path"
        assert bt.page_exceptions(page) == []
        bt.stop_webrtc(page)
        errors = [line for line in page.console_log if line.startswith("pageerror")]
        assert errors == [], errors

    face_share, no_face_share = measure_model(run_dir, video)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("\n[journey] " + " · ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items())
          + f" (targets: total <= {JOURNEY_TARGET_S} s, train <= {TRAIN_TARGET_S} s)")
    print("[journey] photo sizes: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(photos["sizes"].items(), reverse=True)))
    print(f"[journey] photos: {face} with the face (from {photos['face_phase_from_s']:.1f} s into the video, "
          f"whose face stretch ends at {video.face_s:.1f} s), {no_face} without; "
          + "; ".join(notes))
    print(f"[journey] the model on the video's {len(video.faces)} face frames: {face_share:.1%} boxed as YuNet "
          f"boxes them (IoU >= 0.5, target {FACE_TARGET:.0%}); on its {len(video.no_faces)} no-face frames: "
          f"{no_face_share:.1%} without a face (target {NO_FACE_TARGET:.0%}); live: {processed[0]} frames "
          f"through the model, {processed[1]} with a face")
    print(f"[journey] load: {load}")
    useless = [w for w in (status.get("verdict") or {}).get("warnings") or [] if w.startswith("no better than guessing")]
    if useless:
        # A run on a few dozen photos can learn nothing (the single-box head did in 2 of 8 journeys, the
        # dense head in none of 7 runs here); the app must then say so at the finish instead of a
        # green "finished", and it did.
        print(f"[journey] the run's verdict warned: {useless}")
    else:
        assert face_share >= FACE_FLOOR and no_face_share >= NO_FACE_FLOOR, (face_share, no_face_share)
    if os.environ.get("FACETRACKER_ASSERT_JOURNEY_TIMES") == "1":
        assert times["total"] <= JOURNEY_TARGET_S and times["train"] <= TRAIN_TARGET_S, times
