"""In a real browser (headless Chromium, a fake webcam showing real faces): Record and Take one photo
pressed while a recording runs are answered, and the answer is still there seconds later, although
the panel redraws itself every POLL_S meanwhile; stopping the recording lists the photos it did not
take. Run it alone (`-n 0`): it starts a Streamlit server and a browser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import browser as bt

pytestmark = [bt.browser_mark]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(600))

STILL_THERE_MS = 3000
"""Long enough for the panel to redraw itself several times (it does every POLL_S while recording)."""


def shown(page, text: str) -> bool:
    return page.get_by_text(text).count() > 0


def test_clicks_during_a_recording_are_answered_and_the_answers_stay(tmp_path: Path) -> None:
    video = bt.fake_camera_video(tmp_path)
    root = tmp_path / "data"
    for folder in ("images", "labels"):
        (root / "my-face" / folder).mkdir(parents=True)
    env = {"FACETRACKER_DATA_ROOT": str(root), "FACETRACKER_ICE_SERVERS": ""}
    with bt.streamlit_server(REPO / "streamlit_app.py", env=env) as url, bt.browser(video) as page:
        page.goto(f"{url}/dataset", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Dataset").first.wait_for(timeout=120_000)
        bt.wait_for_app(page, timeout=120)
        bt.start_webrtc(page, timeout=60)
        bt.wait_for_app(page)
        record = page.get_by_role("button", name="Record", exact=True)
        record.click()
        page.get_by_text("Recording starts in").first.wait_for(timeout=15_000)

        record.click()
        answer = "it goes on. A new one can start once it ends or you stop it"
        found = [shown(page, answer)]
        for _ in range(STILL_THERE_MS // 250):
            page.wait_for_timeout(250)
            found.append(shown(page, answer))
        assert any(found), "pressing Record during the recording showed no answer"
        assert found[-1], f"the answer to Record did not stay: seen at {found.count(True)} of {len(found)} looks"

        page.get_by_role("button", name="Take one photo", exact=True).click()
        page.get_by_text("so no single one is taken now").first.wait_for(timeout=10_000)
        page.wait_for_timeout(STILL_THERE_MS)
        assert shown(page, "so no single one is taken now"), "the answer to Take one photo did not stay"

        page.get_by_role("button", name="Stop recording", exact=True).click()
        page.get_by_text("The recording ended early").first.wait_for(timeout=15_000)
        page.get_by_text("planned photos were not taken").first.wait_for(timeout=10_000)
        assert shown(page, "the recording had ended (stopped by hand during")
        assert bt.page_exceptions(page) == []
