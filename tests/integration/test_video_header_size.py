"""A video whose frames are over the pixel cap is refused from its header, before any frame is
decoded, and opening the file does not decode one either: a 0.4 MB file of 12000x12000 frames
costs a few MB of memory, not the hundreds a decoded frame takes. The peak memory is measured in a
fresh process, after its imports, as its VmHWM (getrusage's ru_maxrss would carry the peak of the
process that started it across exec)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from facetracker.inference import video
from tests.conftest import REPO

HUGE = 12000
# Far above what reading a header and a few small frames takes, far below one decoded 12000x12000
# frame (216 MB as YUV 4:2:0, 430 MB as BGR).
EXTRA_MEMORY_MB = 120

MAKE = textwrap.dedent("""
    import sys, av
    width, height, path, frames = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for index in range(frames):
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
""")

OPEN = textwrap.dedent("""
    import json, sys
    import cv2, numpy, av
    from facetracker.inference import video
    from facetracker.inference.detect import reference_detector

    def peak_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    detector = reference_detector("yunet")
    before = peak_kb()
    what, path = sys.argv[1], sys.argv[2]
    error = None
    try:
        if what == "length":
            video.video_rate_and_length(path)
        elif what == "frames":
            for _ in video.video_frames(path, 100_000):
                pass
        else:
            video.annotate_video(path, detector, path + ".boxed.mp4")
    except ValueError as refused:
        error = str(refused)
    extra = (peak_kb() - before) / 1024
    print(json.dumps({"error": error, "extra_mb": extra}))
""")


def make_video(path: Path, width: int, height: int, frames: int = 1) -> Path:
    """An H.264 video of grey frames at the lowest quality (the encoder's memory stays in its own process)."""
    subprocess.run([sys.executable, "-c", MAKE, str(width), str(height), str(path), str(frames)], check=True,
                   capture_output=True, timeout=300)
    return path


def opened_in_a_fresh_process(what: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", OPEN, what, str(path)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> dict[str, Path]:
    """One 12000x12000 frame in the usual containers, and a raw H.264 stream that starts with 300
    small frames and then grows to 12000x12000 (its header says 64x64)."""
    folder = tmp_path_factory.mktemp("huge-videos")
    raw = make_video(folder / "huge.h264", HUGE, HUGE, frames=2)
    files = {"h264": raw}
    for container in ("mp4", "mkv", "ts", "flv"):
        with av.open(str(raw)) as source, av.open(str(folder / f"huge.{container}"), "w") as out:
            stream = source.streams.video[0]
            copy = out.add_stream_from_template(stream)
            for packet in source.demux(stream):
                if packet.dts is None and packet.size == 0:
                    continue
                if packet.pts is None:
                    packet.pts = packet.dts = 0
                packet.stream = copy
                out.mux(packet)
        files[container] = folder / f"huge.{container}"
    small = make_video(folder / "small.h264", 64, 64, frames=300)
    files["grows"] = folder / "grows.h264"
    files["grows"].write_bytes(small.read_bytes() + raw.read_bytes())
    return files


@pytest.mark.parametrize("container", ["mp4", "mkv", "ts", "h264"])
@pytest.mark.parametrize("what", ["length", "frames", "annotate"])
def test_a_video_over_the_pixel_cap_is_refused_before_a_frame_is_decoded(huge, container, what):
    assert huge[container].stat().st_size < 1_000_000
    opened = opened_in_a_fresh_process(what, huge[container])
    assert opened["error"] and f"its frames are {HUGE}x{HUGE} px, larger than the 40 megapixels" in opened["error"]
    assert huge[container].name in opened["error"]
    assert opened["extra_mb"] < EXTRA_MEMORY_MB, opened


def test_a_stream_that_grows_past_the_cap_is_stopped_by_the_decoder(huge):
    opened = opened_in_a_fresh_process("frames", huge["grows"])
    assert opened["error"] and f"a frame is {HUGE}x{HUGE} px" in opened["error"], opened
    # the decoder's own tables for the new size, not the frame: a decoded one would take 216 MB more
    assert opened["extra_mb"] < 2.5 * EXTRA_MEMORY_MB, opened


def test_a_container_that_names_its_streams_only_in_its_packets_is_refused_unopened(huge):
    opened = opened_in_a_fresh_process("annotate", huge["flv"])
    assert opened["error"] and "cannot be checked before decoding; convert it to MP4" in opened["error"], opened
    assert opened["extra_mb"] < EXTRA_MEMORY_MB, opened


class _NoSize:
    width = height = 0
    codec_context = None


def test_a_stream_whose_header_gives_no_size_is_refused():
    with pytest.raises(ValueError, match="clip.mp4: its header gives no frame size"):
        video.check_frame_size(_NoSize(), "clip.mp4")


@pytest.mark.parametrize("container, codec, pix_fmt", [("mp4", "libx264", "yuv420p"), ("mkv", "libx264", "yuv420p"),
                                                        ("webm", "libvpx", "yuv420p"), ("avi", "mjpeg", "yuvj420p"),
                                                        ("ts", "libx264", "yuv420p"), ("gif", "gif", "rgb8")])
def test_videos_under_the_cap_are_read_as_before(tmp_path, container, codec, pix_fmt):
    path = tmp_path / f"clip.{container}"
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, pix_fmt
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), format="bgr24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames = list(video.video_frames(path, 10))
    assert len(frames) == 4 and frames[0][0].shape == (240, 320, 3)
