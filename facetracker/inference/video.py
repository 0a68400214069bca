"""Video files: the frames of an upload, and the same video written back with the boxes drawn.

PyAV decodes and encodes. Every problem with a file (not a video, no video stream, frames too large,
undecodable) is a ValueError whose message names the file, so the page can show it as it is.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from facetracker.data.images import MAX_IMAGE_PIXELS
from facetracker.inference.detect import FaceBox
from facetracker.inference.draw import draw_faces
from facetracker.inference.tracking import Tracker
from facetracker.io.safety import SNIFF_BYTES, sniff_kind


def check_frame_size(stream, name: str) -> None:
    """Refuse a video whose frames are larger than the images this app reads, or whose header gives
    no frame size, from the stream's header, before a frame is decoded: one 12000x12000 frame alone
    is 430 MB of BGR pixels."""
    context = getattr(stream, "codec_context", None)
    width = max(int(getattr(stream, "width", 0) or 0), int(getattr(context, "width", 0) or 0))
    height = max(int(getattr(stream, "height", 0) or 0), int(getattr(context, "height", 0) or 0))
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: its frames are {width}x{height} px, larger than the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels this app reads; scale the video down first")
    if width <= 0 or height <= 0:
        raise ValueError(f"{name}: its header gives no frame size, so it cannot be checked before it is decoded")


def _decoder_limits() -> dict[str, str]:
    """FFmpeg's own cap on a decoded picture, given to every decoder of the file: opening a file
    decodes its first frames to learn their format, and a stream can change size after its header."""
    return {"max_pixels": str(MAX_IMAGE_PIXELS)}


def _damaged_hint(path: str | Path) -> str:
    """"; ... truncated or damaged" when the file starts as a video container does, else ""."""
    try:
        with open(path, "rb") as handle:
            kind = sniff_kind(handle.read(SNIFF_BYTES))
    except OSError:
        return ""
    named = {"mp4": "an MP4", "mov": "a QuickTime (MOV)", "webm": "a WebM", "avi": "an AVI"}.get(kind or "")
    return f"; it starts like {named} video, so it is truncated or damaged" if named else ""


@contextlib.contextmanager
def open_video(path: str | Path, name: str | None = None):
    """The file, open, and its first video stream; ValueError naming the file and the problem
    otherwise. `name` is how the file is named in messages (an upload's own name), else its path.

    Nothing larger than the pixel cap is decoded, even while the file is opened."""
    import av

    name = name or str(path)
    limits = _decoder_limits()
    try:
        # stream_options makes PyAV refuse, before probing, a container whose streams appear only
        # once its packets are read (FLV, MPEG program streams): the cap could not reach their decoders.
        container = av.open(str(path), options=limits, stream_options=[limits])
    except av.error.FFmpegError as error:
        raise ValueError(f"{name}: cannot open the video ({error.strerror or error}){_damaged_hint(path)}") from None
    except ValueError as error:
        if "does not expose its streams" not in str(error):
            raise
        raise ValueError(f"{name}: this kind of video (such as FLV or MPEG-PS) gives its frame size only in its "
                         "frames, so its size cannot be checked before decoding; convert it to MP4 or WebM "
                         "first") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{name}: the file has no video stream")
        stream = container.streams.video[0]
        check_frame_size(stream, name)
        if stream.codec_context is not None:
            stream.codec_context.options = {**stream.codec_context.options, **limits}
        yield container, stream


_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def tagged_rotation(stream) -> int:
    """Counter-clockwise degrees from an old-style `rotate` tag in the stream's metadata (which
    says clockwise degrees), for files that carry no display matrix; 0 without one."""
    for key, value in (stream.metadata or {}).items():
        if key.lower() == "rotate":
            try:
                return -round(float(value))
            except ValueError:
                return 0
    return 0


def upright(image: np.ndarray, degrees: float) -> np.ndarray:
    """The frame turned `degrees` counter-clockwise (to the nearest quarter turn), as a player shows it."""
    turn = _TURNS.get(round(degrees / 90) % 4)
    return image if turn is None else cv2.rotate(image, turn)


def video_rate_and_length(path: str | Path, name: str | None = None) -> tuple[Fraction, int]:
    """Frames/s of the file's video stream (25 when it does not say) and its frame count (0 when
    unknown). Raises ValueError when the file cannot be opened as a video."""
    with open_video(path, name) as (_, stream):
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return Fraction(rate).limit_denominator(1001), int(stream.frames or 0)


def video_frames(path: str | Path, max_frames: int, max_side: int = 960,
                 name: str | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Decode up to `max_frames` BGR frames (and their time in seconds) from a video file with PyAV,
    upright: a phone stores a portrait video sideways with a rotation for the player (its display
    matrix, or in older files a `rotate` tag), which is applied here as a player applies it."""
    import av

    with open_video(path, name) as (container, stream):
        stream.thread_type = "AUTO"
        tagged = tagged_rotation(stream)
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > MAX_IMAGE_PIXELS:  # a stream that grows after its header
                    raise ValueError(f"{name or path}: a frame is {frame.width}x{frame.height} px, larger than the "
                                     f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels this app reads")
                image = upright(frame.to_ndarray(format="bgr24"), frame.rotation or tagged)
                if max(image.shape[:2]) > max_side:
                    scale = max_side / max(image.shape[:2])
                    # at least 1 px: a 2 px wide, 3000 px tall video keeps a column
                    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                yield image, float(frame.time or 0.0)
                count += 1
                if count >= max_frames:
                    break
        except av.error.FFmpegError as error:
            context = stream.codec_context
            if context is not None and context.width * context.height > MAX_IMAGE_PIXELS:  # refused by the decoder
                raise ValueError(f"{name or path}: a frame is {context.width}x{context.height} px, larger than the "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels this app reads") from None
            if count == 0:
                raise ValueError(f"{name or path}: cannot decode the video ({error.strerror or error})") from None


def annotate_video(path: str | Path, detector, out_path: str | Path, max_frames: int = 1800,
                   progress: Callable[[int, int], None] | None = None, name: str | None = None,
                   smooth: bool = True) -> dict:
    """Detect on each frame of a video, track the faces (each keeps its number; `smooth` steadies the
    boxes), and write the boxed frames, at the input's frame rate, to an H.264 MP4 file.
    `progress(done, total)` follows it; `name` names the file in messages.

    Returns counts (frames, frames with a face, faces seen) and per-frame probabilities; raises
    ValueError with the reason for a bad file.
    """
    import av

    tracker = Tracker(smooth=smooth)  # as on the webcam: a face is drawn from its second frame on
    rate, length = video_rate_and_length(path, name)
    total = min(length, max_frames) if length else max_frames
    out_path = Path(out_path)
    probabilities, model_ms = [], []
    found = 0
    output = None
    stream = None
    try:
        for index, (image, seconds) in enumerate(video_frames(path, max_frames, name=name)):
            if output is None:
                output = av.open(str(out_path), mode="w")
                stream = output.add_stream("libx264", rate=rate)
                # H.264 in 4:2:0 wants even sides of 2 px or more: an odd side loses its last pixel
                # row or column, a 1 px side is doubled
                stream.width, stream.height = (max(2, side // 2 * 2) for side in (image.shape[1], image.shape[0]))
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "veryfast"}
            detection = detector.detect(image)
            probabilities.append(detection.probability)
            found += detection.found
            model_ms.append(detection.model_ms)
            # Frame times, not arrival times: a file decodes faster than it plays. Some containers
            # give no times; the frame count at the nominal rate stands in.
            tracks = tracker.update([f.box for f in detection.faces], [f.score for f in detection.faces],
                                    seconds if seconds else index / float(rate or 25))
            draw_faces(image, [FaceBox(t.box, t.score, t.id) for t in tracks])
            image = image[: stream.height, : stream.width]
            if image.shape[:2] != (stream.height, stream.width):
                image = cv2.copyMakeBorder(image, 0, stream.height - image.shape[0], 0, stream.width - image.shape[1],
                                           cv2.BORDER_REPLICATE)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            for packet in stream.encode(frame):
                output.mux(packet)
            if progress:
                progress(len(probabilities), max(total, len(probabilities)))
        if output is None:
            raise ValueError(f"{name or path}: the video holds no frame")
        for packet in stream.encode():
            output.mux(packet)
    finally:
        if output is not None:
            output.close()
    return {"frames": len(probabilities), "with_face": found, "faces_seen": tracker.faces_seen,
            "probabilities": probabilities,
            "model_ms": float(np.mean(model_ms)) if model_ms else 0.0}
