"""Recording a dataset from a live camera: photos at a steady rate with the face in view, then without.

A `Recorder` is fed every camera frame by the webcam's frame callback, in the callback's worker
thread, and the page reads its `status()` from the script thread; everything they share sits behind
its locks, and `feed` never raises (a failure is counted and kept for the page to show).

One recording runs through these phases, timed by the recorder's clock from the moment it starts:

    countdown (countdown_s) -> face (face_s) -> step out (countdown_s) -> no face (no_face_s) -> done

The face and no-face phases are cut into slots of 1 / photos_per_s seconds from their start, one
planned photo each: the first frame to arrive in a slot is taken (unless it comes less than half a
slot after the previous photo, when the next one in the slot is). A taken frame that is black (very
dark, or nearly one colour: a camera still starting, a covered lens) or frozen (nearly the same as
the previous kept frame: a stalled stream repeating itself) is dropped and counted; every other one
is written at once, at the camera's own size, into the dataset's images folder. Face-phase photos
get a label with a box for every face the pre-labeller finds (an empty label when it finds none);
no-face photos get no label file, which is what a no-face sample is, and a face the pre-labeller
sees in one is counted so the page can warn about it.

Every planned photo is accounted for: saved, or listed in the status as a `MissingPhoto` with the
reason it was not taken (a black or frozen frame, no frame arriving in its slot, a write the disk
refused, the recording ending before it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facetracker.boxes import PixelBox
from facetracker.labelling import capture

log = logging.getLogger(__name__)

Prelabel = Callable[[np.ndarray], list[PixelBox]]
"""Every face box in a BGR frame (pixel corners), most confident first: see prelabel.prelabel_boxes."""

DARK_MEAN = 20.0
"""A frame whose mean grey level (0-255) is below this is black: a camera still starting, a covered lens."""
FLAT_STD = 6.0
"""A frame whose grey levels vary less than this (standard deviation) is one colour, with nothing to learn."""
FROZEN_DIFFERENCE = 0.25
"""Mean absolute grey difference (0-255, at CHECK_SIZE) below which a frame repeats the previous kept
one. A stalled stream resending its last frame stays below it (through VP8 at 1 Mbit/s: 0.08, then
0); a still room with a camera's noise (3 grey levels) stays above it (0.3 to 0.5), and a shift of
a single pixel gives about 1.5."""
CHECK_SIZE = (160, 120)
"""Frames are compared shrunk to this: noise averages out, and the check costs well under a millisecond."""
FRAMES_STALE_S = 2.0
"""No frame for this long: the camera is not sending, and a recording cannot start."""

ANSWER_S = 10.0
"""How long the status keeps saying why the last request was refused. While a recording runs the
page redraws its panel every few moments, and an answer drawn only once would vanish with the next
redraw before it could be read."""

MAX_FACE_S, MAX_NO_FACE_S, MAX_COUNTDOWN_S, MAX_PHOTOS_PER_S = 600.0, 120.0, 30.0, 10.0


class Phase(str, enum.Enum):
    IDLE = "idle"
    COUNTDOWN = "countdown"
    FACE = "face"
    STEP_OUT = "step out"
    NO_FACE = "no face"
    DONE = "done"


RECORDING_PHASES = (Phase.FACE, Phase.NO_FACE)

PHASE_WORDS = {Phase.COUNTDOWN: "the countdown", Phase.FACE: "the photos with your face",
               Phase.STEP_OUT: "the countdown to step out of view", Phase.NO_FACE: "the out-of-view photos"}
"""Each running phase as the page names it (the Dataset page's own words)."""


class CannotRecord(Exception):
    """A request the recorder cannot act on now; the message says why, for a person."""


@dataclasses.dataclass(frozen=True)
class RecordingPlan:
    face_s: float = 20.0
    photos_per_s: float = 2.0
    no_face_s: float = 5.0
    countdown_s: float = 3.0
    """Before the face phase, and again before the no-face phase (time to step out of view)."""

    def __post_init__(self) -> None:
        limits = (("face_s", "seconds with the face", 0.5, MAX_FACE_S),
                  ("photos_per_s", "photos per second", 0.1, MAX_PHOTOS_PER_S),
                  ("no_face_s", "seconds without a face", 0.0, MAX_NO_FACE_S),
                  ("countdown_s", "seconds of countdown", 0.0, MAX_COUNTDOWN_S))
        for field, what, low, high in limits:
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and low <= value <= high):
                raise ValueError(f"{what} must be a number from {low:g} to {high:g}, got {value!r}")

    def phases(self) -> list[tuple[Phase, float]]:
        """Each phase and its length in seconds, in order (a no-face phase of length 0 is left out)."""
        steps = [(Phase.COUNTDOWN, self.countdown_s), (Phase.FACE, self.face_s)]
        if self.no_face_s > 0:
            steps += [(Phase.STEP_OUT, self.countdown_s), (Phase.NO_FACE, self.no_face_s)]
        return steps

    @property
    def total_s(self) -> float:
        return sum(length for _, length in self.phases())

    def photos(self, phase: Phase) -> int:
        """The photos planned in `phase`: one per slot of 1 / photos_per_s seconds from its start
        (a last, shorter slot counts too)."""
        length = dict(self.phases()).get(phase, 0.0) if phase in RECORDING_PHASES else 0.0
        return max(0, math.ceil(length * self.photos_per_s - 1e-9))

    @property
    def planned(self) -> int:
        return sum(self.photos(phase) for phase in RECORDING_PHASES)


class Missed(str, enum.Enum):
    """Why a planned photo was not taken."""

    BLACK = "black"
    FROZEN = "frozen"
    NO_FRAME = "no frame"
    """No frame arrived in the photo's slot (a stalled stream, a machine too busy to pass frames on)."""
    TOO_SOON = "too soon"
    """The frames of its slot all came right after the previous photo, which they would nearly repeat."""
    NOT_SAVED = "not saved"
    ENDED = "ended"
    """The recording ended (stopped by hand, the camera stopped, a failed write) before the photo was taken."""


DROPPED = (Missed.BLACK, Missed.FROZEN)


@dataclasses.dataclass(frozen=True)
class MissingPhoto:
    """A planned photo the recording did not take, and why."""

    phase: Phase
    number: int
    """Its place among the photos planned in its phase, from 1."""
    of: int
    """The photos planned in its phase."""
    due_s: float
    """When its slot began, in seconds from the start of the recording (the countdown's start)."""
    kind: Missed
    reason: str
    """For a person: "the frame was black", "no frame arrived for ... s", "the disk refused it (...)"."""


def describe_missing(missing: list[MissingPhoto] | tuple[MissingPhoto, ...]) -> list[str]:
    """One line per run of consecutive missing photos of one phase that share a reason, in the page's
    words: "photo 23 of 40 with your face (due ... s into the recording): no frame arrived for ... s"."""
    lines: list[str] = []
    groups: list[list[MissingPhoto]] = []
    for photo in missing:
        last = groups[-1][-1] if groups else None
        if (last is not None and last.phase is photo.phase and last.reason == photo.reason
                and last.number + 1 == photo.number):
            groups[-1].append(photo)
        else:
            groups.append([photo])
    for group in groups:
        first, last = group[0], group[-1]
        where = "with your face" if first.phase is Phase.FACE else "out of view"
        if first is last:
            lines.append(f"photo {first.number} of {first.of} {where} (due {first.due_s:.1f} s into the recording): "
                         f"{first.reason}")
        else:
            lines.append(f"photos {first.number}-{last.number} of {first.of} {where} (due {first.due_s:.1f}-"
                         f"{last.due_s:.1f} s into the recording): {first.reason}")
    return lines


@dataclasses.dataclass(frozen=True)
class RecorderStatus:
    """What the page shows: the phase and its seconds left, and what has been saved and dropped."""

    phase: Phase
    seconds_left: float
    """Of the current phase (0 when idle or done)."""
    face_photos: int
    """Face-phase photos saved."""
    labelled: int
    """Face-phase photos in which the pre-labeller found a face (their label holds its box)."""
    no_face_photos: int
    """No-face-phase photos saved (no label file: no-face samples)."""
    faces_in_no_face: int
    """No-face-phase photos in which the pre-labeller still saw a face."""
    dropped_black: int
    dropped_frozen: int
    errors: int
    last_error: str | None
    frames: int
    """Camera frames fed since the recorder was made."""
    seconds_since_frame: float | None
    """Since the last camera frame arrived; None before the first."""
    stopped_early: str | None
    """Why the last recording ended before its plan did (stopped by hand, the camera stopped)."""
    single_pending: bool
    """A single photo was asked for and no good frame has come yet."""
    single: capture.Capture | None
    """The last single photo saved."""
    single_note: str | None
    """Why the last single photo asked for was not taken."""
    recording: int
    """Counts up with each recording started: the page tells a finished recording from the last one."""
    sizes: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)
    """(width, height) -> photos of this recording saved at that size: the camera's own, unless the
    browser shrank the video (it does when the computer or the network is busy)."""
    planned: int = 0
    """Photos the recording's plan asks for (0 before the first recording)."""
    missing: tuple[MissingPhoto, ...] = ()
    """Each planned photo not taken so far, with the reason, in the order they were due. A photo
    counts as missing once its slot has passed; when the recording is done, saved + missing = planned."""
    answer: str | None = None
    """Why the last request (start, take one, stop) was refused, for ANSWER_S after it; None otherwise."""
    folder: Path | None = None
    """Where the last recording went (None before the first)."""
    unboxed: tuple[str, ...] = ()
    """File names of this recording's face-phase photos in which the pre-labeller found no face."""
    faces_seen: tuple[str, ...] = ()
    """File names of this recording's no-face photos in which the pre-labeller saw a face."""
    plan: RecordingPlan | None = None
    """The last recording's plan (None before the first)."""
    ends_in_s: float = 0.0
    """Until the running recording's plan ends (0 when none runs)."""

    @property
    def saved(self) -> int:
        return self.face_photos + self.no_face_photos

    @property
    def dropped(self) -> int:
        return self.dropped_black + self.dropped_frozen

    @property
    def missed(self) -> int:
        """Planned photos not taken for another reason than a black or frozen frame."""
        return sum(photo.kind not in DROPPED for photo in self.missing)

    @property
    def running(self) -> bool:
        """A recording is under way (its countdown included)."""
        return self.phase not in (Phase.IDLE, Phase.DONE)

    @property
    def busy(self) -> bool:
        """Recording (any phase but idle and done), or waiting for a frame for a single photo."""
        return self.phase not in (Phase.IDLE, Phase.DONE) or self.single_pending


def frame_problem(frame_bgr: np.ndarray, previous_small: np.ndarray | None) -> tuple[str | None, np.ndarray]:
    """("black" | "frozen" | None, the frame shrunk to grey CHECK_SIZE for comparing the next one with)."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, CHECK_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    if float(small.mean()) < DARK_MEAN or float(small.std()) < FLAT_STD:
        return "black", small
    if previous_small is not None and float(np.abs(small - previous_small).mean()) < FROZEN_DIFFERENCE:
        return "frozen", small
    return None, small


@dataclasses.dataclass
class _Target:
    """Where and how one recording or single photo is saved."""

    folder: Path
    prelabel: Prelabel
    source: str


class Recorder:
    """The shared object between a webcam frame callback (`feed`) and a page (`start`, `stop`,
    `take_one`, `status`). One per viewer; it records into whichever folder each `start` names.

    `root`: the data root; folders whose real path leaves it are refused (see capture.save_frame).
    `clock`: seconds, monotonic; tests pass their own to step through the phases.
    """

    def __init__(self, root: str | Path | None = None, clock: Callable[[], float] = time.monotonic):
        self.root = root
        self._clock = clock
        self._lock = threading.Lock()  # guards the state below; held only briefly
        self._work = threading.Lock()  # one frame taken and saved at a time, and no start/stop midway
        self._plan: RecordingPlan | None = None
        self._target: _Target | None = None
        self._started_at = 0.0
        self._phase = Phase.IDLE
        self._next_slot: dict[Phase, int] = {}
        self._last_photo_at: float | None = None
        self._missing: list[MissingPhoto] = []
        self._answer: tuple[str, float] | None = None
        self._name_base = ""
        self._counter = 0
        self._previous_small: np.ndarray | None = None
        self._single_target: _Target | None = None
        self._single: capture.Capture | None = None
        self._single_note: str | None = None
        self._last_frame_at: float | None = None
        self._frames = 0
        self._recording = 0
        self._stopped_early: str | None = None
        self._counts = self._zero_counts()
        self._sizes: dict[tuple[int, int], int] = {}
        self._noted: dict[str, list[str]] = {"unboxed": [], "faces_seen": []}
        self._errors = 0
        self._last_error: str | None = None

    @staticmethod
    def _zero_counts() -> dict[str, int]:
        return dict.fromkeys(("face_photos", "labelled", "no_face_photos", "faces_in_no_face",
                              "dropped_black", "dropped_frozen"), 0)

    # ------------------------------------------------------------------------------------------
    # The page's side

    def start(self, folder: str | Path, plan: RecordingPlan, prelabel: Prelabel, source: str = "camera") -> None:
        """Start a recording into `folder` now (its countdown first). Raises CannotRecord, saying why,
        while another recording runs or when no camera frames are arriving."""
        with self._work, self._lock:
            self._refuse_while_running("start")
            self._require_frames()
            # What a recording killed mid-write (kill -9 of the server) left in this dataset goes first.
            with contextlib.suppress(OSError):  # best effort: a failing write is reported by the recording
                capture.finish_interrupted_writes(folder, root=self.root)
            self._plan = plan
            self._target = _Target(Path(folder), prelabel, source)
            self._started_at = self._clock()
            self._phase = Phase.COUNTDOWN
            self._next_slot = {}
            self._last_photo_at = None
            self._missing = []
            self._answer = None
            self._name_base = f"rec-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            self._counter = 0
            self._previous_small = None
            self._recording += 1
            self._stopped_early = None
            self._counts = self._zero_counts()
            self._sizes = {}
            self._noted = {"unboxed": [], "faces_seen": []}
            self._errors, self._last_error = 0, None

    def stop(self, reason: str = "stopped by hand") -> None:
        """End the running recording now; what it saved stays. Raises CannotRecord when none runs."""
        with self._work, self._lock:
            phase, _ = self._phase_now(self._clock())
            if phase in (Phase.IDLE, Phase.DONE):
                self._refuse("No recording is running: there is nothing to stop.")
            self._answer = None
            self._end(f"{reason} during {PHASE_WORDS[phase]}")

    def take_one(self, folder: str | Path, prelabel: Prelabel, source: str = "camera") -> None:
        """Save the next good (not black) frame into `folder`, pre-labelled with its most confident
        face. Raises CannotRecord while a recording runs or when no camera frames are arriving."""
        with self._work, self._lock:
            self._refuse_while_running("take one")
            self._require_frames()
            self._single_target = _Target(Path(folder), prelabel, source)
            self._single_note = None
            self._answer = None

    def refuse_while_running(self, request: str) -> None:
        """Raise CannotRecord, as `start` ("start") or `take_one` ("take one") would, while a recording
        runs; nothing otherwise. Lets the page answer at once, before it makes a pre-labeller that
        the request would not use."""
        with self._lock:
            self._refuse_while_running(request)

    def stream_ended(self) -> None:
        """The camera stopped (the webcam component's `on_video_ended`): a running recording ends
        with what it has, a single photo still waiting for its frame is called off."""
        with self._lock:
            phase, _ = self._phase_now(self._clock())
            if phase not in (Phase.IDLE, Phase.DONE):
                self._end(f"the camera stopped during {PHASE_WORDS[phase]}")
            if self._single_target is not None:
                self._single_target = None
                self._single_note = "The camera stopped before the photo could be taken; press START and try again."

    def status(self) -> RecorderStatus:
        with self._lock:
            now = self._clock()
            phase, left = self._phase_now(now)
            if phase is Phase.DONE:  # no frame can fill a slot any more: what is left is missing
                self._settle(now, self._last_frame_at, arriving=False)
            answer = self._answer[0] if self._answer and now - self._answer[1] < ANSWER_S else None
            running = phase not in (Phase.IDLE, Phase.DONE)
            return RecorderStatus(phase=phase, seconds_left=left, **self._counts, errors=self._errors,
                                  last_error=self._last_error, frames=self._frames,
                                  seconds_since_frame=None if self._last_frame_at is None
                                  else now - self._last_frame_at,
                                  stopped_early=self._stopped_early, single_pending=self._single_target is not None,
                                  single=self._single, single_note=self._single_note, recording=self._recording,
                                  sizes=dict(self._sizes), planned=self._plan.planned if self._plan else 0,
                                  missing=tuple(self._missing), answer=answer,
                                  folder=self._target.folder if self._target else None, plan=self._plan,
                                  unboxed=tuple(self._noted["unboxed"]), faces_seen=tuple(self._noted["faces_seen"]),
                                  ends_in_s=self._ends_in(now) if running else 0.0)

    # ------------------------------------------------------------------------------------------
    # The frame callback's side

    def feed(self, frame_bgr: np.ndarray) -> None:
        """One camera frame (BGR, the camera's own size). Takes it if a photo is due, checks it and
        saves it; never raises."""
        try:
            with self._work:
                self._feed(frame_bgr)
        except Exception as error:  # the stream must go on; the page shows the error
            self._record_error(error)

    def overlay(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The frame with the phase and its countdown written on it, for the person watching the
        video (draws on and returns `frame_bgr`; the saved photos never carry it)."""
        try:
            status = self.status()
            seconds = int(np.ceil(status.seconds_left))
            text = {Phase.COUNTDOWN: f"Recording in {seconds}",
                    Phase.FACE: f"REC face  {seconds} s  ({status.face_photos} photos)",
                    Phase.STEP_OUT: f"Step out of view: {seconds}",
                    Phase.NO_FACE: f"REC no face  {seconds} s  ({status.no_face_photos} photos)"}.get(status.phase)
            if text:
                draw_banner(frame_bgr, text, recording=status.phase in RECORDING_PHASES)
        except Exception as error:
            self._record_error(error)
        return frame_bgr

    def _feed(self, frame_bgr: np.ndarray) -> None:
        with self._lock:
            now = self._clock()
            previous, self._last_frame_at = self._last_frame_at, now
            self._frames += 1
            single = self._single_target
            phase, _ = self._phase_now(now)
            if self._plan is not None and phase is not Phase.IDLE:
                self._settle(now, previous, arriving=True)
            slot = self._claim(phase, now) if phase in RECORDING_PHASES else None
            target, recording = self._target, self._recording
        if single is not None:
            self._take_single(frame_bgr, single)
        if slot is None:
            return
        try:
            self._take(frame_bgr, target, recording, phase, slot, now)
        except BaseException as error:  # the slot was claimed: it is accounted for whatever went wrong
            self._miss(recording, phase, slot, Missed.NOT_SAVED, f"it could not be saved ({_one_line(error)})")
            raise

    def _take(self, frame_bgr: np.ndarray, target: _Target, recording: int, phase: Phase, slot: int,
              now: float) -> None:
        """Check the frame claimed for a slot and save it, or account for the slot as missing."""
        problem, small = frame_problem(frame_bgr, self._previous_small)
        if problem is not None:
            self._count(recording, f"dropped_{problem}")
            self._miss(recording, phase, slot, Missed(problem),
                       "the frame was black (very dark, or nearly one colour)" if problem == "black"
                       else "the frame repeated the previous photo (a stalled video)")
            return
        self._previous_small = small
        boxes: list[PixelBox] = []
        try:
            boxes = list(target.prelabel(frame_bgr))
        except Exception as error:  # the photo is still kept: in the face phase with an empty label
            self._record_error(error)
        with self._lock:
            self._counter += 1
            name = f"{self._name_base}-{'face' if phase is Phase.FACE else 'noface'}-{self._counter:04d}"
        try:
            saved = self._save(target, frame_bgr, boxes if phase is Phase.FACE else None, name)
        except OSError as error:  # a full disk, a folder gone read-only: the next photo would fail too
            where = f" ({error.filename})" if error.filename else ""
            self._miss(recording, phase, slot, Missed.NOT_SAVED,
                       f"the disk refused it: {error.strerror or error}{where}")
            self._stop_on_failed_write(recording, phase, error)
            return
        except Exception as error:  # a folder refused (it links out of the data root): the next may do
            self._miss(recording, phase, slot, Missed.NOT_SAVED, f"it could not be saved ({_one_line(error)})")
            self._record_error(error)
            return
        with self._lock:
            if recording == self._recording:
                self._last_photo_at = now
                if (phase is Phase.FACE) != bool(boxes):  # a face photo without a box, a no-face photo with one
                    self._noted["unboxed" if phase is Phase.FACE else "faces_seen"].append(saved.image.name)
        if phase is Phase.FACE:
            self._count(recording, "face_photos", "labelled" if boxes else None)
        else:
            self._count(recording, "no_face_photos", "faces_in_no_face" if boxes else None)
        with self._lock:
            if recording == self._recording:
                size = (frame_bgr.shape[1], frame_bgr.shape[0])
                self._sizes[size] = self._sizes.get(size, 0) + 1

    def _stop_on_failed_write(self, recording: int, phase: Phase, error: OSError) -> None:
        """End the recording at its first photo that could not be written, keeping those saved."""
        self._record_error(error)
        with self._lock:
            if recording != self._recording or self._phase in (Phase.IDLE, Phase.DONE):
                return
            saved = self._counts["face_photos"] + self._counts["no_face_photos"]
            where = f" ({error.filename})" if error.filename else ""
            self._end(f"a photo could not be written during {PHASE_WORDS[phase]}: "
                      f"{error.strerror or error}{where}; the {saved} photo(s) saved before it are kept")

    def _take_single(self, frame_bgr: np.ndarray, target: _Target) -> None:
        problem, _ = frame_problem(frame_bgr, None)
        if problem is not None:  # the next frame may be good: the request stays
            return
        with self._lock:
            if self._single_target is not target:  # called off meanwhile
                return
            self._single_target = None
        boxes = list(target.prelabel(frame_bgr))
        saved = capture.save_capture(target.folder, frame_bgr, boxes[0] if boxes else None, source=target.source,
                                     root=self.root)
        with self._lock:
            self._single = saved

    def _save(self, target: _Target, frame_bgr: np.ndarray, boxes: list[PixelBox] | None,
              name: str) -> capture.Capture:
        """Write the photo; a name already taken (another recorder, a copied folder) gets a suffix."""
        for attempt in range(100):
            try:
                return capture.save_frame(target.folder, frame_bgr, boxes, name if not attempt else f"{name}-{attempt}",
                                          source=target.source, root=self.root)
            except FileExistsError:
                continue
        raise FileExistsError(f"{name}: 100 names in a row were taken in {target.folder}")

    # ------------------------------------------------------------------------------------------
    # Helpers (call with self._lock held)

    def _phase_now(self, now: float) -> tuple[Phase, float]:
        """The phase at `now` and its seconds left; moves a recording past its last phase to DONE."""
        if self._phase in (Phase.IDLE, Phase.DONE) or self._plan is None:
            return self._phase, 0.0
        elapsed = now - self._started_at
        for phase, length in self._plan.phases():
            if elapsed < length:
                self._phase = phase
                return phase, length - elapsed
            elapsed -= length
        self._phase = Phase.DONE
        return Phase.DONE, 0.0

    def _phase_start(self, phase: Phase) -> float:
        start = self._started_at
        for each, length in self._plan.phases():
            if each is phase:
                return start
            start += length
        raise ValueError(f"{phase.value} is not a phase of this recording")

    def _slots(self, phase: Phase) -> tuple[float, float, float, int]:
        """(start, end, slot length, photos planned) of a recording phase, on the recorder's clock."""
        start = self._phase_start(phase)
        return start, start + dict(self._plan.phases())[phase], 1.0 / self._plan.photos_per_s, self._plan.photos(phase)

    def _claim(self, phase: Phase, now: float) -> int | None:
        """The slot a frame arriving at `now` is taken for, or None (its slot is taken already, or the
        frame comes less than half a slot after the previous photo: it would nearly repeat it, and a
        later frame of the slot is taken instead). Slots passed before `now` are settled already.
        After a stall of the stream the slots it swallowed are not made up in a burst."""
        start, _, period, planned = self._slots(phase)
        slot = min(int((now - start) / period + 1e-9), planned - 1)
        if slot < self._next_slot.get(phase, 0):
            return None
        if self._last_photo_at is not None and now - self._last_photo_at < period / 2:
            return None
        self._next_slot[phase] = slot + 1
        return slot

    def _settle(self, now: float, previous: float | None, arriving: bool) -> None:
        """Every slot that passed by `now` without a photo becomes a missing photo. `previous`: when the
        last frame before `now` came; `arriving`: a frame is arriving at `now` (else the gap is
        counted to the end of the slot's phase)."""
        for phase in RECORDING_PHASES:
            planned = self._plan.photos(phase)
            if not planned:
                continue
            start, end, period, _ = self._slots(phase)
            slot = self._next_slot.get(phase, 0)
            while slot < planned and min(start + (slot + 1) * period, end) <= now:
                due = start + slot * period
                if previous is not None and previous >= due:
                    kind, reason = Missed.TOO_SOON, "the frames of its slot all came right after the previous photo"
                elif previous is None:
                    kind, reason = Missed.NO_FRAME, "no frame arrived"
                else:
                    gap = (now if arriving else min(now, end)) - previous
                    kind, reason = Missed.NO_FRAME, f"no frame arrived for {gap:.1f} s"
                self._add_missing(phase, slot, kind, reason)
                slot += 1
            self._next_slot[phase] = slot

    def _add_missing(self, phase: Phase, slot: int, kind: Missed, reason: str) -> None:
        """Count a slot as missing, once."""
        if any(photo.phase is phase and photo.number == slot + 1 for photo in self._missing):
            return
        start, _, period, planned = self._slots(phase)
        self._missing.append(MissingPhoto(phase, slot + 1, planned, round(start + slot * period - self._started_at, 3),
                                          kind, reason))
        self._missing.sort(key=lambda photo: (photo.due_s, photo.phase is Phase.NO_FACE))

    def _miss(self, recording: int, phase: Phase, slot: int, kind: Missed, reason: str) -> None:
        """A claimed slot whose photo was not saved (call without the lock)."""
        with self._lock:
            if recording == self._recording:
                self._add_missing(phase, slot, kind, reason)

    def _ends_in(self, now: float) -> float:
        return max(0.0, self._plan.total_s - (now - self._started_at))

    def _running_words(self, phase: Phase) -> str:
        return f"{PHASE_WORDS[phase]} now; it ends in {math.ceil(self._ends_in(self._clock()))} s"

    def _refuse_while_running(self, request: str) -> None:
        phase, _ = self._phase_now(self._clock())
        if phase in (Phase.IDLE, Phase.DONE):
            return
        if request == "start":
            self._refuse(f"A recording is running ({self._running_words(phase)}); it goes on. A new one can start "
                         "once it ends or you stop it.")
        self._refuse(f"A recording is running ({self._running_words(phase)}): it is taking the photos, so no single "
                     "one is taken now. Take one once it ends or you stop it.")

    def _refuse(self, message: str) -> None:
        """Raise CannotRecord, keeping its message for the status to show for ANSWER_S."""
        self._answer = (message, self._clock())
        raise CannotRecord(message)

    def _require_frames(self) -> None:
        now = self._clock()
        if self._last_frame_at is None or now - self._last_frame_at > FRAMES_STALE_S:
            self._refuse("No frames are coming from the camera: press START on the video and allow the "
                         "camera first.")

    def _end(self, reason: str) -> None:
        """End the running recording early: slots already passed are settled as usual, the rest are
        missing because the recording ended."""
        self._settle(self._clock(), self._last_frame_at, arriving=False)
        for phase in RECORDING_PHASES:
            for slot in range(self._next_slot.get(phase, 0), self._plan.photos(phase)):
                self._add_missing(phase, slot, Missed.ENDED, f"the recording had ended ({reason})")
            self._next_slot[phase] = self._plan.photos(phase)
        self._phase = Phase.DONE
        self._stopped_early = reason

    def _count(self, recording: int, *keys: str | None) -> None:
        with self._lock:
            if recording != self._recording:  # a frame of a recording replaced meanwhile
                return
            for key in keys:
                if key:
                    self._counts[key] += 1

    def _record_error(self, error: BaseException) -> None:
        message = _one_line(error)
        log.error("recording a frame failed: %s", message, exc_info=error)
        with self._lock:
            self._errors += 1
            self._last_error = message


def _one_line(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def draw_banner(frame_bgr: np.ndarray, text: str, recording: bool = False) -> np.ndarray:
    """Large text across the top of the frame, on a dark band (red dot while recording)."""
    height, width = frame_bgr.shape[:2]
    scale = max(0.6, width / 700)
    thickness = max(1, int(round(scale * 2)))
    (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = text_h + 24
    frame_bgr[:band] = (frame_bgr[:band] * 0.35).astype(frame_bgr.dtype)
    x = max(6, (width - text_w) // 2)
    if recording:
        cv2.circle(frame_bgr, (max(12, x - text_h), band // 2), max(4, text_h // 3), (0, 0, 255), -1, cv2.LINE_AA)
    cv2.putText(frame_bgr, text, (x, band - 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return frame_bgr
