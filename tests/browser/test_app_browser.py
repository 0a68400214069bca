"""The whole app in a real browser: headless Chromium with a fake webcam showing real faces.

One journey, as a newcomer would make it: open every page; turn the webcam on, take one photo and
drag its box over the face; move an augmentation slider and see the preview change; see a trained
`multi` run's charts on the Train page; run that model on the webcam and see frames come back
through the server, then see the Haar baseline box the face. Prints the figures it measured
(frames/s, times). Starting a training by clicks and watching it to the end is the journey test's
part (tests/browser/test_journey_browser.py); the model here is the session's short `multi` run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import browser as bt
from tests.helpers.browser import green_pixels, read_caption, wait_for

pytestmark = [bt.browser_mark]
if importlib.util.find_spec("pytest_timeout") is not None:
    # the session's multi run is trained in this test's setup when it comes first
    pytestmark.append(pytest.mark.timeout(900))

STEPS_CAPTION = re.compile(r"(\d+) training steps and (\d+) validated epochs logged")
FRAMES_CAPTION = re.compile(r"processed frames: (\d+) · with a face: (\d+) · errors: (\d+)")
CAMERA_CAPTION = re.compile(r"processed frames: (\d+) ·.* frames from the camera: (\d+)")


def caption_update(page, after: float) -> tuple[int, float]:
    """The processed-frame count at the first change of the caption after monotonic time `after`."""
    while time.monotonic() < after:
        page.wait_for_timeout(100)
    before = read_caption(page, FRAMES_CAPTION)
    found = wait_for("a refresh of the figures",
                     lambda: (c := read_caption(page, FRAMES_CAPTION)) and c != before and c, 10, page, 50)
    return found[0], time.monotonic()


def open_page(page, url: str, path: str, title: str) -> None:
    page.goto(f"{url}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)  # the script is running
    bt.wait_for_app(page, timeout=120)
    assert bt.page_exceptions(page) == [], f"{title} page shows an exception"


def preview_sources(page) -> list[str]:
    return [img.get_attribute("src") for img in page.get_by_test_id("stImage").locator("img").all()]


def test_newcomer_journey_in_a_real_browser(tmp_path: Path, webcam, short_multi_run) -> None:
    t0 = time.monotonic()
    video = bt.fake_camera_video(tmp_path)
    root = tmp_path / "data"
    shutil.copytree(webcam, root / "webcam-tutorial")
    trained, _ = short_multi_run
    env = {"FACETRACKER_DATA_ROOT": str(root), "FACETRACKER_ICE_SERVERS": ""}

    with bt.streamlit_server(REPO / "streamlit_app.py", env=env) as url, bt.browser(video) as page:
        page.set_default_timeout(60_000)
        # -- every page opens without an exception (Train and Detect are opened again below); the
        # first request is a page's own URL, which must still go through the entry's navigation
        for path, title in (("dataset", "Dataset"), ("", "FaceTracker"), ("evaluate", "Evaluate")):
            open_page(page, url, path, title)
            nav = [link.split()[-1] for link in page.get_by_test_id("stSidebarNavLink").all_inner_texts()]
            assert nav == ["Home", "Dataset", "Augment", "Train", "Detect", "Evaluate"], nav
        page.get_by_text("No trained model yet").wait_for()

        # -- Dataset: a photo from the webcam, pre-labelled, then a box dragged over the face and saved
        open_page(page, url, "dataset", "Dataset")
        bt.start_webrtc(page, timeout=45)
        bt.wait_for_app(page)
        page.get_by_role("button", name="Take one photo").click()
        page.get_by_text("Correct the box if it is wrong").wait_for()
        bt.wait_for_app(page)
        editor = page.locator(".js-plotly-plot").first
        editor.scroll_into_view_if_needed()
        bt.wait_for_app(page)
        # The photo as drawn: plotly keeps its aspect inside a chart as wide as the page, so it may
        # not fill the chart, and where it sits depends on the page's width (a scroll bar or not).
        area = editor.locator("g.imagelayer image").first.bounding_box()
        page.mouse.move(area["x"] + area["width"] * 0.30, area["y"] + area["height"] * 0.20)
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] * 0.60, area["y"] + area["height"] * 0.80, steps=10)
        page.mouse.up()
        bt.wait_for_app(page)
        page.get_by_role("button", name="Save this box").click()
        page.get_by_text(re.compile(r"Box saved for capture-")).wait_for()
        (label,) = [p for p in (root / "webcam-tutorial").rglob("capture-*.json") if ".deleted" not in p.parts]
        shape = json.loads(label.read_text())
        (x0, y0), (x1, y1) = shape["shapes"][0]["points"]
        width, height = shape["imageWidth"], shape["imageHeight"]
        assert abs(x0 / width - 0.30) < 0.05 and abs(x1 / width - 0.60) < 0.05, (x0, x1, width)
        assert abs(y0 / height - 0.20) < 0.05 and abs(y1 / height - 0.80) < 0.05, (y0, y1, height)
        assert bt.page_exceptions(page) == []

        # -- Augment: a slider moves, the preview changes
        open_page(page, url, "augment", "Augment")
        before = wait_for("the preview", lambda: len(s := preview_sources(page)) >= 4 and s, 30, page)
        bt.press_slider(page, "Random crop: smallest crop (share of the area)")
        after = wait_for("a new preview", lambda: (s := preview_sources(page)) != before and s, 20, page)
        assert after[0] == before[0], "the unaugmented image stays"
        # the samples a crop was drawn for change (the default preset crops half of them)
        assert sum(a != b for a, b in zip(after[1:], before[1:])) >= 2
        assert bt.page_exceptions(page) == []

        # -- Train: a trained run appears with its charts (the run arrives as if trained here)
        open_page(page, url, "train", "Train")
        shutil.copytree(trained, root / "runs" / trained.name)
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("heading", name="Train").first.wait_for()
        bt.wait_for_app(page)
        page.get_by_text("Finished").first.wait_for(timeout=30_000)
        final = wait_for("the run's step counts", lambda: read_caption(page, STEPS_CAPTION), 30, page)
        assert final[0] >= 2 and final[1] >= 1, f"charts show {final}"
        wait_for("the loss and validation charts", lambda: page.get_by_test_id("stVegaLiteChart").count() >= 2, 20, page)
        assert bt.page_exceptions(page) == []

        # -- Detect with the trained model: frames go through the server callback
        open_page(page, url, "detect", "Detect")
        page.get_by_text(f"Running {trained.name} as TFLITE").wait_for()  # the newest model, by default
        t_detect_ready = time.monotonic() - t0
        t_click = bt.start_webrtc(page, timeout=45)
        wait_for("frames through the callback",
                 lambda: (c := read_caption(page, FRAMES_CAPTION)) and c[0] > 5 and c, 30, page)
        # The figures refresh every 2 s: time the count at the moments it changes, 8 s apart or more.
        n0, t_n0 = caption_update(page, after=0)
        n1, t_n1 = caption_update(page, after=t_n0 + 8)
        model_fps = (n1 - n0) / (t_n1 - t_n0)
        shown_fps = page.get_by_test_id("stMetric").filter(has_text="through the model").inner_text()
        shown_ms = page.get_by_test_id("stMetric").filter(has_text="Model time").inner_text()
        assert n1 > n0, "frames stopped passing through the trained model"
        trained_detections = read_caption(page, FRAMES_CAPTION)[1]
        through_model, from_camera = read_caption(page, CAMERA_CAPTION)
        assert 0 < through_model <= from_camera

        # -- the Haar baseline on the same stream: a face box is drawn on the video
        page.get_by_test_id("stSelectbox").filter(has_text="Model").click()
        page.get_by_role("option", name=re.compile("Haar")).click()
        bt.wait_for_app(page)
        before_haar = read_caption(page, FRAMES_CAPTION)
        wait_for("faces found by the Haar cascade",
                 lambda: (c := read_caption(page, FRAMES_CAPTION)) and c[1] > before_haar[1] + 5, 30, page)
        green = wait_for("a face box on the video",
                         lambda: (n := green_pixels(bt.video_frame_png(page))) > 150 and n, 20, page)
        assert read_caption(page, FRAMES_CAPTION)[2] == 0, "no frame failed in the callback"
        assert bt.page_exceptions(page) == []
        bt.stop_webrtc(page)
        # Every page opened and a trained model streamed: the server ran its TFLite files on LiteRT
        # and never loaded TensorFlow.
        server_mb = bt.resident_mb(url.pid)
        assert bt.mapped_libraries(url.pid, "/tensorflow/") == [], "the web server loaded TensorFlow"
        print(f"[app browser] Start->video {t_click:.1f} s; trained model {model_fps:.1f} frames/s through the "
              f"callback (the target is >= 25; the page shows {shown_fps.splitlines()[-1]} frames/s, model "
              f"{shown_ms.splitlines()[-1]}; {through_model} of the camera's {from_camera} frames so far), "
              f"{trained_detections} frames with a face; Haar box "
              f"{green} green px; Detect page ready at {t_detect_ready:.0f} s; server resident memory {server_mb:.0f} MB; "
              f"total {time.monotonic() - t0:.0f} s")
