"""Throwaway Streamlit page used by tests/browser/test_browser_smoke.py to prove the browser harness works.

It has a slider (shown as text, to test widget interaction) and a webrtc_streamer whose frame
callback draws a thick green rectangle and counts frames into the file named by env
PROBE_FRAMES_FILE as "count first_epoch last_epoch width height" (atomic: tmp + os.replace), so a
test can see frames really passed through the server.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

import av
import cv2
import streamlit as st
from streamlit_webrtc import webrtc_streamer

FRAMES_FILE = os.environ.get("PROBE_FRAMES_FILE") or os.path.join(tempfile.gettempdir(), "probe_frames.txt")
GREEN = (0, 255, 0)


class FrameCounter:
    """Thread-safe frame counter that mirrors itself to a file (the callback runs in a worker thread)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.count = 0
        self.first: float | None = None

    def tick(self, w: int, h: int) -> int:
        with self.lock:
            now = time.time()
            self.count += 1
            if self.first is None:
                self.first = now
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.count} {self.first:.3f} {now:.3f} {w} {h}\n")
            os.replace(tmp, self.path)
            return self.count


@st.cache_resource
def get_counter(path: str) -> FrameCounter:
    """One counter per server: the script re-runs on every widget change, module globals would reset."""
    return FrameCounter(path)


counter = get_counter(FRAMES_FILE)


def cb(frame: av.VideoFrame) -> av.VideoFrame:
    img = frame.to_ndarray(format="bgr24")
    h, w = img.shape[:2]
    counter.tick(w, h)
    cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), GREEN, 12)
    return av.VideoFrame.from_ndarray(img, format="bgr24")


st.title("browser probe")
value = st.slider("probe slider", min_value=0, max_value=10, value=3, key="probe_slider")
st.text(f"slider value = {value}")

ctx = webrtc_streamer(
    key="probe",
    video_frame_callback=cb,
    media_stream_constraints={"video": True, "audio": False},
    rtc_configuration={"iceServers": []},  # offline: no STUN
)
st.text(f"playing = {ctx.state.playing}")
