"""Smoke test of the real-browser harness (tests/helpers/browser.py) on a throwaway probe app."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import browser as bt

PROBE_APP = Path(bt.__file__).resolve().parent / "probe_app.py"

pytestmark = [bt.browser_mark]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(180))


def read_counter(path: Path) -> tuple[int, float, float, int, int] | None:
    """(count, first_epoch, last_epoch, w, h) written by the probe's frame callback, or None."""
    try:
        n, first, last, w, h = path.read_text().split()
        return int(n), float(first), float(last), int(w), int(h)
    except (OSError, ValueError):
        return None


def green_mask(img: np.ndarray) -> np.ndarray:
    """Pixels close to pure green (survive VP8 compression of the probe's rectangle)."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return (g > 170) & (r < 110) & (b < 110)


def test_browser_smoke(tmp_path: Path) -> None:
    t0 = time.monotonic()
    video = bt.fake_camera_video(tmp_path)
    frames_file = tmp_path / "frames.txt"

    with bt.streamlit_server(PROBE_APP, env={"PROBE_FRAMES_FILE": str(frames_file)}) as url, \
            bt.browser(video) as page:
        t_server = time.monotonic() - t0
        page.goto(url, wait_until="domcontentloaded")
        bt.wait_for_app(page)
        page.get_by_text("browser probe").wait_for()
        assert bt.page_exceptions(page) == []

        # keyboard on the slider thumb -> script re-runs -> text changes
        page.get_by_text("slider value = 3", exact=True).wait_for()
        # Streamlit 1.67's thumb is a hidden input[type=range]: CSS [role="slider"] misses it
        thumb = bt.slider_thumb(page, "probe slider")
        thumb.focus()
        page.keyboard.press("ArrowRight")
        page.get_by_text("slider value = 4", exact=True).wait_for(timeout=10_000)
        bt.wait_for_app(page)

        # webcam -> server callback -> browser
        t_start = bt.start_webrtc(page, timeout=30)
        deadline = time.monotonic() + 10
        while (c := read_counter(frames_file)) is None or c[0] <= 10:
            assert time.monotonic() < deadline, f"only {c and c[0]} frames within 10 s"
            page.wait_for_timeout(100)
        n0, t_n0 = c[0], time.monotonic()
        page.wait_for_timeout(3000)
        n1, t_n1 = read_counter(frames_file)[0], time.monotonic()
        fps = (n1 - n0) / (t_n1 - t_n0)
        print(f"\n[browser smoke] server up {t_server:.1f} s, Start->video {t_start:.2f} s, "
              f"{fps:.1f} frames/s through the callback, frame {c[3]}x{c[4]}")
        # not == 640x480: Chromium's WebRTC sender may scale the stream down (seen: 480x360) under load
        assert abs(c[3] / c[4] - 4 / 3) < 0.02 and c[3] <= bt.FRAME_W, f"frame {c[3]}x{c[4]}"
        assert fps > 5, f"only {fps:.1f} frames/s"

        img = bt.video_frame_png(page)
        h, w = img.shape[:2]
        mask = green_mask(img)
        # the rectangle's left edge at x = w/4 (12 px thick) must be green along most of its length
        edge = mask[h // 4 + 10: 3 * h // 4 - 10, max(0, w // 4 - 8): w // 4 + 8].any(axis=1)
        print(f"[browser smoke] grabbed {w}x{h}, green px {int(mask.sum())}, left edge {edge.mean():.0%}")
        assert mask.sum() > 1000, "no green rectangle in the processed video"
        assert edge.mean() > 0.8, "green rectangle not where the probe draws it"
        assert bt.page_exceptions(page) == []

        bt.stop_webrtc(page)
        page.get_by_text("playing = False", exact=True).wait_for(timeout=15_000)
    print(f"[browser smoke] total {time.monotonic() - t0:.1f} s")
