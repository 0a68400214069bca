"""The live frame path: a detector on every camera frame, its faces tracked, with the speed drawn on
the video.

`LiveProcessor.process_queue` is what a webcam callback calls from its worker thread with the
frames that arrived since its last call. It never raises: an error in one frame is counted, kept
for the page to show, and the raw frame goes back, so the stream carries on. Everything it shares
with the page sits behind one lock.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
import traceback
from typing import Callable

import cv2
import numpy as np

from facetracker.inference.detect import Detection, FaceBox
from facetracker.inference.draw import draw_faces
from facetracker.inference.tracking import Tracker

log = logging.getLogger(__name__)

CAMERA_WINDOW_S = 2.0
"""The camera's frame rate is counted over this many seconds of arrivals: frames come in bursts."""
FRESH_FRAMES = 4
"""At most this many of the queued frames go back out (a blink of video at a webcam's rate): after
a stall the older ones are dropped unconverted, and the video jumps to now instead of lagging."""
STREAM_PAUSE_S = 2.0
"""No frame for this long: the figures say the stream is not moving."""

STREAM_SILENT_S = 5.0
"""A stream that sent no frame for this long counts as ended, even if its end was never reported
(a browser that crashed or lost the network, a session dropped without its end callback)."""
WATCH_EVERY_S = 2.0
"""How often, while streams run, a background check looks for silent ones."""

_streaming: set["LiveProcessor"] = set()
_streams_lock = threading.Lock()
_watchdog: threading.Thread | None = None


def stream_started(processor: "LiveProcessor") -> None:
    """Keep the garbage collector off the objects alive now while any stream runs.

    A process with large libraries loaded holds hundreds of thousands of long-lived objects. A full
    collection walks them all while holding the GIL, and the app triggers one about every second, so
    the frame worker stalled and camera frames in a row went unprocessed each time. After one
    collection and `gc.freeze()` a full collection is quick; see
    docs/notes/2026-11-28-browser-frame-rate.md. The server's libraries alone, without TensorFlow,
    still hold enough to stall it (docs/notes/2026-12-07-tensorflow-free-server.md).
    Streams whose end was never reported are ended first, and a background check keeps ending them
    while any stream runs, so a dead stream cannot keep the collector frozen for good.
    """
    global _watchdog
    end_silent_streams()
    with _streams_lock:
        if not _streaming:
            gc.collect()
            gc.freeze()
        _streaming.add(processor)
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch_streams, name="facetracker-stream-watch", daemon=True)
            _watchdog.start()


def stream_ended(processor: "LiveProcessor") -> None:
    """When the last stream ends, hand the frozen objects back to the collector: whatever of them
    has become garbage since (a closed session, a replaced model) is freed, not kept for good."""
    with _streams_lock:
        if processor not in _streaming:
            return
        _streaming.discard(processor)
        if not _streaming:
            gc.unfreeze()


def end_silent_streams() -> int:
    """End every stream silent for over STREAM_SILENT_S; returns how many were ended."""
    with _streams_lock:
        silent = [processor for processor in _streaming if processor.silent_for() > STREAM_SILENT_S]
    for processor in silent:
        log.warning("a webcam stream sent no frame for %.0f s and never reported its end: ended", STREAM_SILENT_S)
        processor.end_stream()
    return len(silent)


def _watch_streams() -> None:
    """The background check: runs while any stream does, then stops."""
    global _watchdog
    while True:
        time.sleep(WATCH_EVERY_S)
        end_silent_streams()
        with _streams_lock:
            if not _streaming:
                _watchdog = None
                return


class LiveProcessor:
    """Runs a detector on frames, tracks its faces, and keeps thread-safe figures about it.

    `detector` may be swapped at any time (another model chosen on the page); the frame being
    processed finishes with the old one. The tracker gives each face an ID and a steady box; it is
    used by the frame worker only, and starts afresh with each stream.
    """

    def __init__(self, detector=None, label: str = "face", window: int = 30,
                 clock: Callable[[], float] = time.perf_counter, tracker: Tracker | None = None):
        self.detector = detector
        self.label = label
        self.tracker = tracker or Tracker()
        self._clock = clock
        self._lock = threading.Lock()
        self._times: collections.deque[float] = collections.deque(maxlen=window)
        self._model_ms: collections.deque[float] = collections.deque(maxlen=window)
        self._path_s: collections.deque[float] = collections.deque(maxlen=window)
        self._arrivals: collections.deque[float] = collections.deque()
        self._last_arrival = clock()
        self._streaming = False
        self.frames = 0
        self.camera_frames = 0
        self.detections = 0
        self.errors = 0
        self.last_error: str | None = None
        self._last_frame: np.ndarray | None = None
        self._last_detection: Detection | None = None
        self._last_faces: tuple[FaceBox, ...] = ()
        """The tracked faces drawn on the last processed frame."""

    def process_queue(self, frames_bgr: list[np.ndarray], dropped: int = 0) -> list[np.ndarray]:
        """The frames that queued up since the last call, oldest first, each with the box drawn;
        `dropped` older ones were left out (see FRESH_FRAMES).

        The model runs on as many of the newest frames as it can handle in one camera frame
        interval; the older ones get the last box. So a fast model sees every frame even when the
        network delivers two at once, and a slow one sees the newest frames while the video keeps
        the camera's rate.
        """
        now = self._clock()
        with self._lock:
            starting, self._streaming = not self._streaming, True
            self._last_arrival = now
        if starting:
            self.tracker.reset()
            stream_started(self)
        with self._lock:
            self._arrivals.extend([now] * (len(frames_bgr) + dropped))
            while now - self._arrivals[0] > CAMERA_WINDOW_S:
                self._arrivals.popleft()
            self.camera_frames += len(frames_bgr) + dropped
            budget = self._model_budget()
        older = max(0, len(frames_bgr) - budget)
        return [self.redraw(frame) for frame in frames_bgr[:older]] + \
            [self.process(frame) for frame in frames_bgr[older:]]

    def end_stream(self) -> None:
        """The camera stream stopped (the webcam component's `on_video_ended`, or silence)."""
        with self._lock:
            ending, self._streaming = self._streaming, False
        if ending:
            stream_ended(self)

    def silent_for(self) -> float:
        """Seconds since the last frames arrived."""
        with self._lock:
            return self._clock() - self._last_arrival

    def _camera_fps(self) -> float:
        """Frames/s the camera sent over the last CAMERA_WINDOW_S (0 until that can be told)."""
        arrivals = self._arrivals
        if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

    def _model_budget(self) -> int:
        """How many frames the model can take per camera frame interval (at least the newest)."""
        camera_fps = self._camera_fps()
        if not camera_fps or not self._path_s:
            return 1
        return max(1, int(1 / camera_fps / max(float(np.mean(self._path_s)), 1e-4)))

    def process(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Detect, draw the box and the speed; on any error return the raw frame and count it."""
        detector = self.detector
        raw = frame_bgr
        try:
            if detector is None:
                return raw
            start = self._clock()
            detection = detector.detect(frame_bgr)
            tracks = self.tracker.update([face.box for face in detection.faces],
                                         [face.score for face in detection.faces], start)
            faces = tuple(FaceBox(track.box, track.score, track.id) for track in tracks)
            out = draw_faces(frame_bgr.copy(), faces, self.label)
            with self._lock:
                now = self._clock()
                self._times.append(now)
                self._model_ms.append(detection.model_ms)
                self._path_s.append(now - start)
                self.frames += 1
                self.detections += detection.found
                self._last_frame = raw
                self._last_detection = detection
                self._last_faces = faces
                fps, model_ms = self._rates()
            draw_speed(out, fps, model_ms)
            return out
        except Exception as error:  # the stream must survive a bad frame or a broken model
            self.record_error(error, raw)
            return raw

    def redraw(self, frame_bgr: np.ndarray) -> np.ndarray:
        """A frame the model skipped, with the last box and the speed drawn (the raw one on error)."""
        try:
            with self._lock:
                detection, faces = self._last_detection, self._last_faces
                fps, model_ms = self._rates()
            if self.detector is None or detection is None:
                return frame_bgr
            out = draw_faces(frame_bgr.copy(), faces, self.label)
            return draw_speed(out, fps, model_ms)
        except Exception as error:
            self.record_error(error, frame_bgr)
            return frame_bgr

    def record_error(self, error: BaseException, frame_bgr: np.ndarray | None = None) -> None:
        """Log a failed frame and keep it for the page; the caller passes the raw frame on."""
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        log.error("frame callback failed: %s", message, exc_info=error)
        with self._lock:
            self.errors += 1
            self.last_error = message
            if frame_bgr is not None:
                self._last_frame = frame_bgr

    def _rates(self) -> tuple[float, float]:
        times = self._times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        model_ms = float(np.mean(self._model_ms)) if self._model_ms else 0.0
        return fps, model_ms

    def stats(self) -> dict:
        """Frames through the model and their rate, camera frames and their rate, model ms,
        detections, faces in view now and faces seen since the stream started, errors, the last error."""
        with self._lock:
            fps, model_ms = self._rates()
            stale = bool(self._times) and self._clock() - self._times[-1] > STREAM_PAUSE_S
            return {"frames": self.frames, "fps": 0.0 if stale else fps, "model_ms": model_ms,
                    "camera_frames": self.camera_frames, "camera_fps": 0.0 if stale else self._camera_fps(),
                    "detections": self.detections, "faces_now": len(self._last_faces),
                    "faces_seen": self.tracker.faces_seen, "errors": self.errors, "last_error": self.last_error,
                    "last_probability": self._last_detection.probability if self._last_detection else None}

    @property
    def last_model_ms(self) -> float:
        """The model's time on the last frame it processed (0 before the first)."""
        with self._lock:
            return self._last_detection.model_ms if self._last_detection is not None else 0.0

    def last_frame(self) -> tuple[np.ndarray | None, Detection | None]:
        """The last raw frame (BGR) and what was detected on it, to save it into a dataset."""
        with self._lock:
            frame = None if self._last_frame is None else self._last_frame.copy()
            return frame, self._last_detection


def draw_speed(frame_bgr: np.ndarray, fps: float, model_ms: float) -> np.ndarray:
    """Frames/s and model milliseconds in the top-left corner, readable on any background."""
    text = f"model on {fps:4.1f} frames/s, {model_ms:.1f} ms"
    scale = max(0.5, frame_bgr.shape[1] / 1000)
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(frame_bgr, (0, 0), (width + 12, height + 14), (0, 0, 0), -1)
    cv2.putText(frame_bgr, text, (6, height + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return frame_bgr
