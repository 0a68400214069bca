"""Faces hidden in a video: blurred, pixelated or boxed out, and kept hidden while the detector misses them.

A detector that sees each frame afresh misses a face now and then (a turn of the head, motion blur, a
face entering the frame), and a tool that blurs what each frame's detections say lets the face
through in exactly those frames. Here every face is tracked (`tracking.Tracker`) and covered from
its history, not from one frame:

- a face seen in the frame: its box, grown by `margin` on each side (more while it is just found,
  whose first boxes are the least certain);
- a face missed between two sightings: the box between them, in proportion to the time;
- a face lost and not seen again yet: where it was heading, until the tracker's memory lets it go
  (`memory_s`);
- a face found now: also in the frames before it was found (`lookback_s`), where it was already
  there but too small, too blurred or too far out of the frame to be found. A file is not live
  video, so frames wait that long before they are written, and these frames are still unwritten.

The three kinds of unseen face are "unsure": grown by `unsure_margin` more, and by `unsure_growth`
more for each second unseen; with
`whole_frame_when_unsure` the whole frame is covered instead. `tracked=False` covers each frame's
detections only, as a per-frame tool would (to compare with).

The video is streamed: decoded, covered and encoded frame by frame (only the look-back's frames are
held), its sound streams copied as they are, into a temporary file that takes the output's name
only once the whole video is written.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import math
import os
import queue
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from facetracker.boxes import PixelBox
from facetracker.inference import models
from facetracker.inference.detect import YUNET
from facetracker.inference.tracking import Tracker
from facetracker.inference.video import open_video, tagged_rotation, upright
from facetracker.io.atomic import replacing

BLUR, PIXELATE, BOX = "blur", "pixelate", "box"
MODES = (BLUR, PIXELATE, BOX)
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
"""Containers the blurred video is written in (H.264 video, the sound as it was)."""
HELD_BYTES = 512 * 1024 * 1024
"""The look-back holds at most this many bytes of decoded frames (fewer frames of a very large video)."""
UNSURE_SIGHTINGS = 2
"""A face seen this often (the tracker's own count for a face) makes a frame unsure while unseen in it."""
VELOCITY_SPAN_S = 0.3
"""A face's motion is measured over its sightings of this long before the last: long enough that a
box's jitter of a pixel or two does not read as speed."""


REFERENCE_THRESHOLD = 0.3
"""YuNet's faces count from this score when faces are hidden (the live view counts them from 0.6):
a patch of wall blurred by mistake costs little, a face missed is a leak (the figures:
docs/notes/2026-12-07-blur-leak.md)."""


def open_blur_detector(model: str | Path = YUNET, threshold: float | None = None):
    """The detector that finds the faces to hide: the model as a video's frames are run
    (`models.open_detector(model, VIDEO)`), YuNet from REFERENCE_THRESHOLD unless told otherwise."""
    if threshold is None and str(model) == YUNET:
        threshold = REFERENCE_THRESHOLD
    return models.open_detector(model, models.VIDEO, threshold)


def finds_one_face(model: str | Path) -> bool:
    """A trained model that gives one box a frame: with it, every other face stays visible."""
    return not models.is_reference(model) and not models.finds_every_face(model)


@dataclasses.dataclass(frozen=True)
class CoverSettings:
    """How faces are hidden. Margins are fractions of the face box's width and height, on each side."""

    mode: str = BLUR
    margin: float = 0.2
    unsure_margin: float = 0.25
    """Added to `margin` while a face is unsure: unseen but believed there, or in its first frames."""
    unsure_growth: float = 0.5
    """Added to the margin for each second a face has not been seen (lost, or not found yet)."""
    just_found_frames: int = 3
    """A face is "just found" in this many of its first sightings."""
    memory_s: float = 1.5
    """A face lost this long is let go (the tracker's memory)."""
    lookback_s: float = 0.5
    """A face found now is covered this far back in time too."""
    whole_frame_when_unsure: bool = False
    tracked: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("margin", "unsure_margin", "unsure_growth", "memory_s", "lookback_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 10):
                raise ValueError(f"{name} must be a number from 0 to 10, got {value!r}")
        if self.just_found_frames < 0:
            raise ValueError(f"just_found_frames must be 0 or more, got {self.just_found_frames!r}")


@dataclasses.dataclass(frozen=True)
class Cover:
    """What is hidden in one frame: boxes in its pixels (x0, y0, x1, y1, ends excluded), or all of it."""

    boxes: tuple[PixelBox, ...] = ()
    whole_frame: bool = False
    unsure: bool = False
    """A face was believed in the frame without being seen in it."""

    def mask(self, width: int, height: int) -> np.ndarray:
        """The covered pixels, True where hidden."""
        covered = np.full((height, width), self.whole_frame, bool)
        if not self.whole_frame:
            for x0, y0, x1, y1 in self.boxes:
                covered[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return covered


def grown(box: Sequence[float], margin: float, width: int, height: int) -> PixelBox:
    """The box grown by `margin` of its width and height on each side, to whole pixels outward, inside the frame."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return (max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy)),
            min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy)))


def outermost(boxes: Sequence[PixelBox]) -> tuple[PixelBox, ...]:
    """The boxes without those inside another (a face covered twice, by its own track and by a
    track that lost it): hidden once, the same pixels are hidden."""
    kept: list[PixelBox] = []
    for box in sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True):
        if not any(k[0] <= box[0] and k[1] <= box[1] and box[2] <= k[2] and box[3] <= k[3] for k in kept):
            kept.append(box)
    return tuple(kept)


@dataclasses.dataclass(frozen=True)
class _Sighting:
    index: int
    t: float
    box: np.ndarray
    ordinal: int
    """1 for the face's first sighting, 2 for its second, ..."""


class FaceCovers:
    """Each frame's `Cover` from each frame's detections, in frame order, `delay` frames behind.

    `push(index, t, boxes, scores)` gives the frame's detections and returns the covers of the
    frames now decided, (index, Cover) each; `finish()` returns the rest at the end of the video.
    """

    def __init__(self, settings: CoverSettings, width: int, height: int, rate: float):
        self.settings = settings
        self.width, self.height = width, height
        self.delay = math.ceil(settings.lookback_s * rate) if settings.tracked else 0
        self.tracker = Tracker(max_age_s=settings.memory_s, min_hits=1, smooth=False)
        self.sightings: dict[int, list[_Sighting]] = {}
        self.times: dict[int, float] = {}
        self.detections: dict[int, np.ndarray] = {}
        self._next = 0

    def push(self, index: int, t: float, boxes: Sequence[Sequence[float]],
             scores: Sequence[float]) -> list[tuple[int, Cover]]:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.times[index] = t
        if self.settings.tracked:
            self.tracker.update(boxes, scores, t)
            for track in self.tracker.tracks:
                if track.last_seen == t:
                    sighting = _Sighting(index, t, np.asarray(track.box, float), track.hits)
                    self.sightings.setdefault(track.id, []).append(sighting)
        else:
            self.detections[index] = boxes
        ready = []
        while self._next <= index - self.delay:
            ready.append((self._next, self._decide(self._next)))
            self._next += 1
        self._forget()
        return ready

    def finish(self) -> list[tuple[int, Cover]]:
        ready = []
        while self._next in self.times:
            ready.append((self._next, self._decide(self._next)))
            self._next += 1
        return ready

    def _decide(self, index: int) -> Cover:
        t = self.times.pop(index)
        settings = self.settings
        if not settings.tracked:
            return Cover(tuple(grown(box, settings.margin, self.width, self.height)
                               for box in self.detections.pop(index)))
        covered, unsure = [], False
        for history in self.sightings.values():
            found = self._where(history, index, t)
            if found is None:
                continue
            box, margin, unseen = found
            box = grown(box, margin, self.width, self.height)
            # a face, not a detection seen once (most often a false alarm), is what makes a frame unsure
            unsure = unsure or (unseen and len(history) >= UNSURE_SIGHTINGS and box[2] > box[0] and box[3] > box[1])
            if box[2] > box[0] and box[3] > box[1]:
                covered.append(box)
        if unsure and settings.whole_frame_when_unsure:
            return Cover(whole_frame=True, unsure=True)
        return Cover(outermost(covered), unsure=unsure)

    def _where(self, history: list[_Sighting], index: int, t: float) -> tuple[np.ndarray, float, bool] | None:
        """(the face's box in the frame, its margin, whether it is unsure there), or None when the face
        is not in the frame (not yet found within the look-back, or let go)."""
        settings = self.settings
        at = bisect.bisect_left(history, index, key=lambda sighting: sighting.index)
        if at < len(history) and history[at].index == index:
            just_found = history[at].ordinal <= settings.just_found_frames
            return history[at].box, settings.margin + settings.unsure_margin * just_found, False
        if at == 0:  # found later: where it came from, as large as when found
            first = history[0]
            if first.t - t > settings.lookback_s:
                return None
            return first.box + self._velocity(history, backwards=True) * (t - first.t), self._unsure(first.t - t), True
        if at == len(history):  # lost: where it was heading, as large as when last seen
            last = history[-1]
            if t - last.t > settings.memory_s:
                return None
            return last.box + self._velocity(history, backwards=False) * (t - last.t), self._unsure(t - last.t), True
        before, after = history[at - 1], history[at]  # missed between two sightings
        share = (t - before.t) / (after.t - before.t) if after.t > before.t else 0.0
        return before.box + share * (after.box - before.box), self._unsure(0.0), True

    def _unsure(self, unseen_s: float) -> float:
        """The margin of a face unseen for `unseen_s`: the further its box is guessed, the larger."""
        settings = self.settings
        return settings.margin + settings.unsure_margin + settings.unsure_growth * unseen_s

    @staticmethod
    def _velocity(history: list[_Sighting], backwards: bool) -> np.ndarray:
        """The speed of the box's centre in pixels a second, over the sightings at the end (or,
        `backwards`, at the start), as a shift of all four corners. Only the centre moves: a size
        carried on at the speed it changed (a zoom) would turn a box inside out within a second,
        while the growing margin already allows for a face that grows."""
        if len(history) < 2:
            return np.zeros(4)
        if backwards:
            first = history[0]
            last = next((s for s in history[1:] if s.t - first.t >= VELOCITY_SPAN_S), history[-1])
        else:
            last = history[-1]
            first = next((s for s in reversed(history[:-1]) if last.t - s.t >= VELOCITY_SPAN_S), history[0])
        if last.t <= first.t:
            return np.zeros(4)
        moved = (last.box[0] + last.box[2] - first.box[0] - first.box[2]) / 2, \
            (last.box[1] + last.box[3] - first.box[1] - first.box[3]) / 2
        dx, dy = moved[0] / (last.t - first.t), moved[1] / (last.t - first.t)
        return np.array([dx, dy, dx, dy])

    def _forget(self) -> None:
        """Drop sightings no frame still to be decided needs."""
        if self._next not in self.times:
            return
        oldest = self.times[self._next] - self.settings.memory_s - VELOCITY_SPAN_S
        for key in list(self.sightings):
            history = self.sightings[key]
            if history[-1].t < oldest:
                del self.sightings[key]
            elif len(history) > 8 and history[4].t < oldest:
                del history[:4]


BLUR_SIGMA = 0.1
"""The blur's Gaussian σ, as a fraction of the covered box's longer side: features smaller than a
fifth of a face are gone."""
PIXEL_BLOCKS = 8
"""A pixelated box is this many blocks across its longer side."""


def _blurred(region: np.ndarray) -> np.ndarray:
    """A Gaussian blur of σ = BLUR_SIGMA of the region's longer side, computed on the region shrunk
    until σ is 2 pixels (the same blur at a fraction of the work) and enlarged back."""
    height, width = region.shape[:2]
    shrink = max(1.0, BLUR_SIGMA * max(height, width) / 2)
    small = cv2.resize(region, (max(1, round(width / shrink)), max(1, round(height / shrink))),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _pixelated(region: np.ndarray) -> np.ndarray:
    height, width = region.shape[:2]
    block = max(max(height, width) / PIXEL_BLOCKS, 1.0)
    small = cv2.resize(region, (max(1, math.ceil(width / block)), max(1, math.ceil(height / block))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def hide(image: np.ndarray, cover: Cover, mode: str) -> np.ndarray:
    """Blur, pixelate or black out (`mode`) what `cover` covers in a BGR frame, in place; returns the frame."""
    height, width = image.shape[:2]
    regions = [(0, 0, width, height)] if cover.whole_frame else cover.boxes
    for x0, y0, x1, y1 in regions:
        region = image[max(y0, 0):y1, max(x0, 0):x1]
        if region.size == 0:
            continue
        if mode == BOX:
            region[:] = 0
        elif mode == PIXELATE:
            region[:] = _pixelated(region)
        else:
            region[:] = _blurred(region)
    return image


@dataclasses.dataclass
class BlurResult:
    """What `blur_video` did."""

    frames: int
    size: tuple[int, int]
    rate: Fraction
    sound_streams: int
    faces_seen: int
    """Faces the tracker followed (a face lost longer than its memory and found again counts twice)."""
    unsure_frames: int
    """Frames in which a face was believed but not seen (the whole frame covered with `whole_frame_when_unsure`)."""
    seconds: float
    covers: list[Cover] | None = None
    """Each frame's cover, when asked for."""
    per_frame_covers: list[Cover] | None = None
    """Each frame's cover had the faces been hidden frame by frame (tracker off), when asked for."""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def times_real_time(self) -> float:
        """How many times faster than the video plays it was blurred."""
        return self.frames_per_second / float(self.rate) if self.rate else 0.0


_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
ENCODER_OPTIONS = {"preset": "superfast", "crf": "20"}
"""H.264 settings of the output: close to the input's look at a speed well above playback."""


def check_output(path: str | Path, source: str | Path) -> Path:
    """The output path, or ValueError naming it when it cannot be written as a blurred video."""
    out = Path(path)
    if out.suffix.lower() not in _FORMATS:
        raise ValueError(f"{out}: write the blurred video as {', '.join(OUTPUT_SUFFIXES)} (H.264 with the sound as "
                         "it was)")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; name the video file to write")
    if not out.parent.is_dir():
        problem = "is not a folder" if out.parent.exists() else "does not exist"
        raise ValueError(f"{out}: {out.parent} {problem}")
    with contextlib.suppress(OSError):
        if os.path.samefile(out, source):
            raise ValueError(f"{out}: is the video being blurred; write the blurred video to another file")
    return out


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary file beside `out` that takes its name when the block ends without an error (see
    `atomic.replacing`); an error to make it names `out`, not the temporary file."""
    stack = contextlib.ExitStack()
    try:
        tmp = stack.enter_context(replacing(out, suffix=out.suffix.lower()))
    except OSError as error:
        raise OSError(error.errno, f"cannot write the video here ({error.strerror})", str(out)) from None
    with stack:
        yield tmp


def bgr_pixels(frame) -> np.ndarray:
    """A decoded frame's BGR pixels. H.264's usual 4:2:0 frames are converted by OpenCV, several
    times faster than FFmpeg's converter here and with the same BT.601 limited-range formula that
    the writer's inverse uses; other formats by FFmpeg."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


SOUND_KEPT_AS_IS = {"mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
                    "mov": {"aac", "mp3", "ac3", "eac3", "alac"}}
"""Sound codecs copied into each container as they are (Matroska takes every codec); a stream in any
other is encoded as AAC. FFmpeg's own list of what a container knows is wider than what it writes:
PCM in MP4, FLAC and Opus in MOV fail when the file is closed."""


AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def sound_copied(container_format: str, codec: str) -> bool:
    """Whether a sound stream in `codec` goes into the output container as it is."""
    kept = SOUND_KEPT_AS_IS.get(container_format)
    return kept is None or codec in kept or (container_format == "mov" and codec.startswith("pcm_"))


class _Sound:
    """A sound stream into the output: its packets copied as they are, or, where the output's
    container cannot hold its codec, decoded and encoded as AAC."""

    def __init__(self, output, source, container_format: str) -> None:
        self.source = source
        self.copied = sound_copied(container_format, source.codec_context.codec.canonical_name)
        if self.copied:
            self.stream = output.add_stream_from_template(source)
        else:
            self.stream = output.add_stream("aac", rate=source.codec_context.sample_rate or 48_000)
            layout = source.codec_context.layout
            channels = layout.nb_channels if layout is not None else 2
            # by count: AAC refuses a layout whose channels have no named places ("2 channels")
            self.stream.layout = AAC_LAYOUTS.get(channels, "stereo")
        if source.language:
            self.stream.metadata["language"] = source.language

    def flush(self) -> list:
        return [] if self.copied else self.stream.encode(None)


def blur_video(path: str | Path, out_path: str | Path, detector, settings: CoverSettings = CoverSettings(), *,
               progress: Callable[[int, int], None] | None = None, name: str | None = None,
               keep_covers: bool = False, compare_per_frame: bool = False) -> BlurResult:
    """Hide every face of the video at `path` and write it to `out_path` (.mp4, .m4v, .mov or .mkv):
    H.264 frames of the same size (an odd side loses its last row or column: H.264's colour planes
    want even sides) and rate, upright, each sound stream kept. Frames are streamed one by one.

    `detector.detect(frame)` finds the faces (see `open_blur_detector`); `progress(done, total)`
    follows the frames; `name` names the input in messages. `keep_covers` keeps each frame's cover
    in the result, `compare_per_frame` also each frame's cover with the tracker off (for `leak`).

    Raises ValueError naming the file for a video that cannot be read whole (not a video, no video
    stream, truncated or damaged) or an output path that cannot be a video, OSError naming the
    output when it cannot be written. The output is replaced only once it is complete.
    """
    import av

    name = name or str(path)
    out = check_output(out_path, path)
    start = time.perf_counter()
    with open_video(path, name) as (container, stream):
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(1001)
        expected = int(stream.frames or 0)
        if not expected and stream_seconds(stream):
            expected = round(stream_seconds(stream) * rate)
        with _staged(out) as tmp:
            writer = _Writer(av, tmp, out, container, stream, rate, settings, keep_covers, compare_per_frame)
            writer.progress, writer.expected = progress, expected
            reader = _Ahead(_decoded(av, container, stream, name))
            try:
                for item in reader:
                    if isinstance(item, _Picture):
                        writer.frame(item, detector)
                    else:
                        writer.sound(item)
                check_whole(name, stream, writer.decoded, writer.first_t, writer.last_t, rate)
                writer.finish()
            except BaseException:
                reader.close()
                writer.close(quiet=True)
                raise
            writer.close()
    result = writer.result
    result.seconds = time.perf_counter() - start
    return result


@dataclasses.dataclass(frozen=True)
class _Picture:
    """A decoded frame: its BGR pixels, upright, and its time."""

    image: np.ndarray
    time: float | None
    pts: int | None
    time_base: Fraction | None


def _decoded(av, container, stream, name: str) -> Iterator:
    """The video's frames as `_Picture`s and its sound streams' packets, in the file's order;
    ValueError naming the file when it cannot be decoded."""
    tagged = tagged_rotation(stream)
    decoded = 0
    try:
        for packet in container.demux(stream, *container.streams.audio):
            if packet.stream.type == "audio":
                yield packet
                continue
            for frame in packet.decode():
                yield _Picture(upright(bgr_pixels(frame), frame.rotation or tagged), frame.time, frame.pts,
                               frame.time_base)
                decoded += 1
    except av.error.FFmpegError as error:
        raise ValueError(f"{name}: cannot decode the video after frame {decoded} ({error.strerror or error}); the "
                         "file is truncated or damaged") from None


class _Ahead:
    """The items of an iterator made on another thread, a few ahead of the caller's: decoding a
    frame (which releases Python's lock) overlaps the search for faces in the one before. An error
    of the iterator is raised in the caller, in its place."""

    def __init__(self, items: Iterator, queued: int = 8) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=queued)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), name="blur-decoder", daemon=True)
        self.thread.start()

    def _put(self, entry: tuple) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
        except BaseException as error:  # noqa: BLE001 (raised in the caller, in its place)
            self._put((False, error))
            return
        self._put((False, None))

    def __iter__(self) -> Iterator:
        while True:
            ok, item = self.queue.get()
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item

    def close(self) -> None:
        """Stop the thread early (the caller gave up)."""
        self.stop.set()
        self.thread.join()


def stream_seconds(stream) -> float | None:
    """How long the header says the video stream lasts (an MP4's duration, a Matroska stream's
    DURATION tag), or None when it does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    text = next((value for key, value in (stream.metadata or {}).items() if key.upper() == "DURATION"), None)
    try:
        hours, minutes, seconds = str(text).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def check_whole(name: str, stream, decoded: int, first_t: float, last_t: float, rate: Fraction) -> None:
    """ValueError naming the file when fewer frames were decoded than its header promises (a file
    cut short: its frames end early, no decoder error says so), or none at all."""
    if decoded == 0:
        promised = stream.frames or stream_seconds(stream)
        raise ValueError(f"{name}: the video holds no frame" + ("; its header promises some, so the file is truncated "
                                                               "or damaged" if promised else ""))
    if stream.frames and decoded + max(2, stream.frames // 100) < stream.frames:
        raise ValueError(f"{name}: the video ends after {decoded} of the {stream.frames} frames its header lists; "
                         "the file is truncated or damaged")
    promised = stream_seconds(stream)
    played = last_t - first_t + 1 / float(rate)
    if promised and played < promised - max(0.5, promised / 50):
        raise ValueError(f"{name}: the video ends after {played:.1f} s of the {promised:.1f} s its header gives; the "
                         "file is truncated or damaged")


class _Worker:
    """One thread that runs jobs in the order given: hiding the faces, the encoder and the muxer,
    which release Python's lock while they work, so that the next frames are decoded and searched
    for faces at the same time on another core. The first error is raised again in the caller."""

    def __init__(self, queued: int = 8) -> None:
        self.jobs: queue.Queue = queue.Queue(maxsize=queued)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="blur-encoder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as error:  # noqa: BLE001 (handed to the caller, which raises it)
                    self.error = error

    def submit(self, job: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def join(self) -> None:
        """Wait for every job; raise the first error."""
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Writer:
    """The output side of `blur_video`: covers decided here; frames hidden and encoded and every
    packet muxed by a `_Worker`."""

    def __init__(self, av, tmp: Path, out: Path, container, stream, rate: Fraction, settings: CoverSettings,
                 keep_covers: bool, compare_per_frame: bool) -> None:
        self.av, self.out, self.rate, self.settings = av, out, rate, settings
        self.time_base = stream.time_base or Fraction(1, round(rate) or 25)
        self.keep_covers, self.compare_per_frame = keep_covers, compare_per_frame
        try:
            self.output = av.open(str(tmp), mode="w", format=_FORMATS[out.suffix.lower()])
        except av.error.FFmpegError as error:
            raise self._write_error(error) from None
        self.sources = list(container.streams.audio)
        self.sounds: dict[int, _Sound] = {}
        self.worker = _Worker()
        self.progress: Callable[[int, int], None] | None = None
        self.expected = 0
        """Frames the header promises (0: it does not say)."""
        self.video = None
        self.covers_of: FaceCovers | None = None
        self.per_frame: FaceCovers | None = None
        self.held: deque = deque()
        self.waiting_sound: list = []
        self.index = 0
        self.decoded = 0
        self.written = 0
        self.first_t: float = 0.0
        self.last_t = -math.inf
        self.last_pts: int | None = None
        self.result = BlurResult(0, (0, 0), rate, len(self.sources), 0, 0, 0.0,
                                 [] if keep_covers else None, [] if compare_per_frame else None)

    def _write_error(self, error: Exception) -> OSError:
        number = getattr(error, "errno", None)
        return OSError(number, f"cannot write the video ({getattr(error, 'strerror', None) or error})", str(self.out))

    def _mux(self, packets) -> None:
        try:
            self.output.mux(packets)
        except self.av.error.FFmpegError as error:
            raise self._write_error(error) from None

    def sound(self, packet) -> None:
        if self.video is None:  # the streams are added with the first frame, the video first
            self.waiting_sound.append(packet)
            return
        sound = self.sounds[packet.stream.index]
        if sound.copied:
            if packet.dts is not None:  # not the demuxer's end-of-stream packet
                packet.stream = sound.stream
                self.worker.submit(functools.partial(self._mux, [packet]))
            return
        for frame in packet.decode():  # here: a decoding error is the input's
            self.worker.submit(functools.partial(self._encode_sound, sound, frame))

    def _encode_sound(self, sound: _Sound, frame) -> None:
        try:
            packets = sound.stream.encode(frame)
        except self.av.error.FFmpegError as error:
            raise self._write_error(error) from None
        self._mux(packets)

    def _start(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        self.video = self.output.add_stream("libx264", rate=self.rate)
        self.video.width, self.video.height = max(2, width // 2 * 2), max(2, height // 2 * 2)
        self.video.pix_fmt = "yuv420p"
        self.video.options = dict(ENCODER_OPTIONS)
        self.video.time_base = self.time_base
        self.video.codec_context.time_base = self.time_base
        try:
            self.sounds = {source.index: _Sound(self.output, source, _FORMATS[self.out.suffix.lower()])
                           for source in self.sources}
        except self.av.error.FFmpegError as error:
            raise self._write_error(error) from None
        settings = self.settings
        lookback = min(settings.lookback_s, HELD_BYTES / max(image.nbytes, 1) / float(self.rate))
        self.covers_of = FaceCovers(dataclasses.replace(settings, lookback_s=lookback), width, height, float(self.rate))
        if self.compare_per_frame:
            self.per_frame = FaceCovers(dataclasses.replace(settings, tracked=False), width, height, float(self.rate))
        self.result.size = (self.video.width, self.video.height)
        waiting, self.waiting_sound = self.waiting_sound, []
        for packet in waiting:
            self.sound(packet)

    def frame(self, picture: _Picture, detector) -> None:
        image = picture.image
        self.decoded += 1
        if self.video is None:
            self._start(image)
        height, width = self.covers_of.height, self.covers_of.width
        if image.shape[:2] != (height, width):  # a stream that changes size: kept at its first size
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        t = picture.time if picture.time is not None and picture.time > self.last_t else \
            self.last_t + 1 / float(self.rate)
        if not math.isfinite(t):
            t = 0.0
        if self.index == 0:
            self.first_t = t
        self.last_t = t
        pts = picture.pts if picture.pts is not None and picture.time_base == self.time_base else None
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            step = max(1, round(1 / (float(self.rate) * float(self.time_base))))
            pts = 0 if self.last_pts is None else self.last_pts + step
        self.last_pts = pts
        faces = detector.detect(image).faces
        boxes, scores = [face.box for face in faces], [face.score for face in faces]
        self.held.append((image, pts))
        if self.per_frame is not None:
            self.result.per_frame_covers += [cover for _, cover in self.per_frame.push(self.index, t, boxes, scores)]
        self._write(self.covers_of.push(self.index, t, boxes, scores))
        self.index += 1

    def _encode(self, image: np.ndarray, cover: Cover, pts: int) -> None:
        hide(image, cover, self.settings.mode)
        image = np.ascontiguousarray(image[: self.video.height, : self.video.width])
        frame = self.av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts, frame.time_base = pts, self.time_base
        try:
            packets = self.video.encode(frame)
        except self.av.error.FFmpegError as error:
            raise self._write_error(error) from None
        self._mux(packets)

    def _write(self, decided: list[tuple[int, Cover]]) -> None:
        for _, cover in decided:
            image, pts = self.held.popleft()
            self.result.unsure_frames += cover.unsure
            if self.keep_covers:
                self.result.covers.append(cover)
            self.worker.submit(functools.partial(self._encode, image, cover, pts))
            self.written += 1
            if self.progress:
                self.progress(self.written, max(self.expected, self.decoded))

    def _flush(self) -> None:
        try:
            packets = self.video.encode(None)
            for sound in self.sounds.values():
                packets += sound.flush()
        except self.av.error.FFmpegError as error:
            raise self._write_error(error) from None
        self._mux(packets)

    def finish(self) -> None:
        """Write the frames still held and the encoders' last packets; wait until all is written."""
        self._write(self.covers_of.finish())
        if self.per_frame is not None:
            self.result.per_frame_covers += [cover for _, cover in self.per_frame.finish()]
        self.worker.submit(self._flush)
        self.worker.join()
        self.result.frames = self.written
        self.result.faces_seen = self.covers_of.tracker.faces_seen

    def close(self, quiet: bool = False) -> None:
        """Close the output (`quiet`: after another error, which is the one to report)."""
        try:
            if self.worker.thread.is_alive():
                self.worker.join()
        except BaseException:
            if not quiet:
                raise
        try:
            self.output.close()
        except self.av.error.FFmpegError as error:
            if not quiet:
                raise self._write_error(error) from None
