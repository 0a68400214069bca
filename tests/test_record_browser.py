"""Recording on the Dataset page in a real browser, by clicks only: headless Chromium's fake camera
plays webcam-tutorial frames; a short recording (4 s with the face, 2 s out of view, 2 photos/s) must
leave on disk the photos the page counts, at the camera's size, labelled in the face phase only."""

from __future__ import annotations

import collections
import importlib.util
import re
import time
from pathlib import Path

import cv2
import pytest

from tests import browser as bt
from tests.conftest import REPO

pytestmark = [bt.browser_mark]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(120))

COUNTS = re.compile(r"saved: (\d+) · with your face: (\d+) \((\d+) pre-labelled\) · without: (\d+) · "
                    r"dropped: (\d+) \(black: (\d+), frozen: (\d+)\)")
FACE_S, NO_FACE_S, PHOTOS_PER_S = 4, 2, 2


def camera_frames(webcam: Path, n: int = 8) -> list:
    """`n` different webcam-tutorial frames in which YuNet finds a face once letterboxed to 640x480, as the
    fake camera will show them."""
    from facetracker.detect import YUNET, reference_detector

    detector = reference_detector(YUNET)
    folder = webcam / "train"
    labelled = {p.stem for p in (folder / "labels").glob("*.json")}
    frames = []
    for path in sorted((folder / "images").glob("*.jpg")):
        image = cv2.imread(str(path)) if path.stem in labelled else None
        if image is not None and detector.detect(bt._letterbox(image)).faces:
            frames.append(image)
        if len(frames) == n:
            return frames
    bt.skip_or_fail(f"fewer than {n} webcam-tutorial frames with a face YuNet finds in {folder}")


def test_a_recording_made_by_clicks_saves_what_the_page_counts(tmp_path: Path, webcam) -> None:
    bt.require_browser()
    t0 = time.monotonic()
    # 8 frames, 2/15 s each: photos taken 0.5 s apart never show the same frame, so none is frozen.
    # 15 frames/s, as the page asks of a camera.
    video = bt.write_y4m(tmp_path / "camera.y4m", camera_frames(webcam), fps=15, repeat=2)
    root = tmp_path / "data"
    dataset = root / "mine"
    (dataset / "images").mkdir(parents=True)
    (dataset / "labels").mkdir()
    env = {"FACETRACKER_DATA_ROOT": str(root), "FACETRACKER_ICE_SERVERS": ""}

    with bt.streamlit_server(REPO / "streamlit_app.py", env=env) as url, bt.browser(video) as page:
        page.goto(f"{url}/dataset", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Dataset").first.wait_for(timeout=60_000)
        bt.wait_for_app(page)
        bt.webrtc_frame(page).get_by_role("button", name="Start", exact=True).wait_for()
        assert not bt._video_playing(page), "the camera stays off until START"
        for label, value in (("Seconds with your face", FACE_S), ("Seconds out of view (no-face photos)", NO_FACE_S)):
            field = page.get_by_label(label, exact=True)
            field.fill(str(value))
            field.press("Enter")
            bt.wait_for_app(page)

        page.get_by_role("button", name="Record", exact=True).click()
        page.get_by_text("No frames are coming from the camera").wait_for(timeout=10_000)  # said, not ignored

        bt.start_webrtc(page, timeout=45)
        # The browser sends a smaller video while the connection warms up (and when it is short of
        # CPU): wait for the full size, as a person would wait for a sharp picture.
        video_width = bt.webrtc_frame(page).locator("video").first
        deadline = time.monotonic() + 30
        while video_width.evaluate("v => v.videoWidth") < bt.FRAME_W and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        bt.wait_for_app(page)
        page.get_by_role("button", name="Record", exact=True).click()
        page.get_by_text(re.compile(r"Recording starts in \d s")).wait_for(timeout=10_000)
        page.get_by_text(re.compile(r"Recording your face: \d s left")).wait_for(timeout=10_000)
        page.get_by_text(re.compile(r"Step out of view now")).wait_for(timeout=15_000)
        page.get_by_text("Recording finished").wait_for(timeout=20_000)
        bt.wait_for_app(page)
        caption = page.get_by_text(COUNTS).first.inner_text()
        saved, face, labelled, no_face, dropped, black, frozen = map(int, COUNTS.search(caption).groups())
        warning = page.get_by_text(re.compile(r"A face was seen in \d+ frame\(s\) of the step-out phase"))
        warning_text = warning.first.inner_text() if warning.count() else ""
        assert bt.page_exceptions(page) == []

    images = sorted((dataset / "images").glob("rec-*.jpg"))
    labels = sorted((dataset / "labels").glob("rec-*.json"))
    face_images = [p for p in images if "-face-" in p.name]
    sizes = [cv2.imread(str(p)).shape[:2] for p in images]
    print(f"\n[record browser] page: {caption}; on disk {len(images)} photos, {len(labels)} labels; "
          f"(height, width): photos {dict(collections.Counter(sizes))}; {time.monotonic() - t0:.0f} s in all")
    # Each phase takes a photo every 0.5 s of its length; the first frames after START may be dropped.
    assert face + dropped >= FACE_S * PHOTOS_PER_S - 1 and face <= FACE_S * PHOTOS_PER_S
    assert no_face >= NO_FACE_S * PHOTOS_PER_S - 1 and no_face <= NO_FACE_S * PHOTOS_PER_S
    assert (black, frozen) == (0, 0), "the fake camera sends no black and no repeated frame"
    assert saved == face + no_face == len(images), "every photo the page counts is on disk"
    assert len(face_images) == face and labelled == face, "YuNet boxed the face in every face-phase photo"
    assert [p.stem for p in labels] == [p.stem for p in face_images], "labels for the face phase only"
    assert set(sizes) == {(bt.FRAME_H, bt.FRAME_W)}, "the camera's size"
    assert f"A face was seen in {no_face} frame(s)" in warning_text, "the fake camera never stops showing a face"
    assert not any(p.name.startswith(".") for p in dataset.rglob("*")), "no temporary file left behind"
