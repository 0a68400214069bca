"""The Detect page blurs every face of an uploaded video, to share it: shown, and offered for download
with its sound, its frames and its size kept."""

from __future__ import annotations

import io
from fractions import Fraction
from unittest import mock

import av
import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from tests.helpers import browser as bt


@pytest.fixture(autouse=True)
def data_root_and_no_webrtc(tmp_path, monkeypatch, helen):
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(tmp_path))
    monkeypatch.delenv("FACETRACKER_ICE_SERVERS", raising=False)
    with mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        yield


def video_with_sound(frames: list[np.ndarray], rate: int = 10) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
        sound = container.add_stream("aac", rate=48_000, layout="stereo")
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        for index in range(round(len(frames) / rate * 48_000 / 1024)):
            tone = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in tone.planes:
                plane.update(bytes(plane.buffer_size))
            tone.sample_rate, tone.pts = 48_000, index * 1024
            container.mux(sound.encode(tone))
        container.mux(sound.encode())
    return buffer.getvalue()


def detail(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_an_uploaded_video_of_real_faces_is_blurred_and_offered_for_download():
    frames = bt.face_frames_from_dataset(n=3) * 4  # real portraits, a large face in the middle of each
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/detect.py")
    at.run()
    at.file_uploader(key="detect_upload").set_value(("party.mp4", video_with_sound(frames), "video/mp4")).run()
    assert any("frames (at most" in c.value for c in at.caption), "boxed, until asked to blur"
    at.toggle(key="detect_blur").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.get("video"), "the blurred video is shown"
    caption = next(c.value for c in at.caption if "faces followed and hidden" in c.value)
    assert caption.startswith("12 frames") and "its sound kept" in caption
    assert [button.proto.label for button in at.get("download_button")] == ["Download the blurred video"]

    blurred_bytes = at.session_state["detect_video_result"][2]
    with av.open(io.BytesIO(blurred_bytes)) as container:
        assert [stream.type for stream in container.streams] == ["video", "audio"]
        blurred = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    assert len(blurred) == len(frames) and blurred[0].shape == frames[0].shape
    middle = (slice(160, 320), slice(240, 400))  # the portrait's face
    assert all(detail(after[middle]) < detail(before[middle]) / 10 for before, after in zip(frames, blurred))

    at.toggle(key="detect_blur").set_value(False).run()
    assert not at.exception
    assert any("frames (at most" in c.value for c in at.caption), "switched off, the faces are boxed again"
