"""Faces kept from frame to frame: each face an ID, a steady box, and a memory through short occlusions.

A detector sees each frame afresh; a tracker turns its boxes into faces that persist. Per frame:

1. every known face predicts where it is now (last box moved by its velocity);
2. detections are matched to predictions, best overlap (IoU) first; a face that has been out of
   sight for a while is matched by distance instead, since it may come back a little elsewhere;
3. matched faces take the new box through a One Euro filter (Casiez et al., CHI 2012): a low-pass
   filter whose cut-off rises with speed, so a still face's box stops shaking while a moving face's
   box still follows without lag;
4. an unmatched detection starts a new face, shown once it has been seen in `min_hits` frames (a
   single-frame false alarm never gets an ID); a face unseen for `max_age_s` is forgotten.

Time comes from the caller (frame timestamps), so the same code serves a webcam at full rate, a slow
model that sees every fifth frame, and tests with a fake clock.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from facetracker.boxes import PixelBox, iou_matrix


class OneEuroFilter:
    """The One Euro filter on a vector: smooth at rest, responsive in motion.

    `min_cutoff` (Hz) sets the smoothing of a still value; `beta` raises the cut-off with the speed,
    measured in `scale` units per second (a face's width, so that a small face far away and a large
    one close by are smoothed alike), which removes lag when the value moves.
    """

    def __init__(self, value: np.ndarray, t: float, min_cutoff: float = 0.3, beta: float = 1.5,
                 d_cutoff: float = 1.0):
        self.value = np.asarray(value, np.float64)
        self.speed = np.zeros_like(self.value)
        self.t = t
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        dt = t - self.t
        if dt <= 0:  # same or out-of-order timestamp: nothing to learn the speed from
            return self.value
        value = np.asarray(value, np.float64)
        speed = (value - self.value) / dt
        self.speed = self.speed + self._alpha(self.d_cutoff, dt) * (speed - self.speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed) / max(scale, 1e-9)
        self.value = self.value + self._alpha(cutoff, dt) * (value - self.value)
        self.t = t
        return self.value


def _centre_size(box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], np.float64)


def _corners(centre_size: np.ndarray) -> np.ndarray:
    cx, cy, w, h = centre_size
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclasses.dataclass
class Track:
    """One face followed over time."""

    id: int
    """1, 2, 3, ... in the order faces were confirmed; 0 while not yet confirmed."""
    box: PixelBox
    """The smoothed box, in the frame's pixels."""
    score: float
    hits: int
    """Frames in which a detection was matched to it."""
    last_seen: float
    confirmed: bool = False
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))
    """Of (centre x, centre y, width, height), in pixels per second, for predicting the next box."""
    _filter: OneEuroFilter | None = dataclasses.field(default=None, repr=False)


class Tracker:
    """Turns each frame's detections into tracks with stable IDs. Not thread-safe: one per stream.

    `update(boxes, scores, t)` returns the faces to show now (confirmed and seen in this frame);
    `faces_seen` counts every face that was ever confirmed.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.5, min_hits: int = 2,
                 min_cutoff: float = 0.3, beta: float = 1.5, reacquire_distance: float = 1.0, smooth: bool = True):
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        """How long a face out of sight keeps its ID (through a hand over the face, a turn of the head)."""
        self.min_hits = min_hits
        self.min_cutoff, self.beta = min_cutoff, beta
        self.reacquire_distance = reacquire_distance
        """A face lost for a moment may return this many of its widths away from where it was."""
        self.smooth = smooth
        """False shows each frame's box as detected (IDs are still kept)."""
        self.tracks: list[Track] = []
        self.faces_seen = 0
        self._next_id = 1

    def reset(self) -> None:
        """Forget every face (a new stream starts)."""
        self.tracks.clear()
        self.faces_seen = 0
        self._next_id = 1

    def _predicted(self, track: Track, t: float) -> np.ndarray:
        dt = max(t - track.last_seen, 0.0)
        return _corners(_centre_size(track.box) + track.velocity * dt)

    def update(self, boxes: Sequence[Sequence[float]], scores: Sequence[float], t: float) -> list[Track]:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        # In place: the live path freezes the collector over long-lived objects (see live.stream_started),
        # and a list replaced every frame would be one of them freed behind its back each time.
        self.tracks[:] = [track for track in self.tracks if t - track.last_seen <= self.max_age_s]
        predicted = np.array([self._predicted(track, t) for track in self.tracks]).reshape(-1, 4)
        matches = self._match(predicted, boxes, t)
        matched_detections = set()
        for track_index, detection_index in matches:
            self._follow(self.tracks[track_index], boxes[detection_index], float(scores[detection_index]), t)
            matched_detections.add(detection_index)
        for index in range(len(boxes)):
            if index not in matched_detections:
                self._start(boxes[index], float(scores[index]), t)
        return [track for track in self.tracks if track.confirmed and track.last_seen == t]

    def _match(self, predicted: np.ndarray, boxes: np.ndarray, t: float) -> list[tuple[int, int]]:
        """Greedy, best pair first: with the handful of faces in a frame it finds the same pairs as
        an optimal assignment, and never pairs a face with a box it barely touches."""
        overlaps = iou_matrix(predicted, boxes)
        pairs = []
        free_tracks, free_boxes = set(range(len(predicted))), set(range(len(boxes)))
        for flat in np.argsort(-overlaps, axis=None):
            i, j = np.unravel_index(flat, overlaps.shape)
            if overlaps[i, j] < self.iou_threshold:
                break
            if i in free_tracks and j in free_boxes:
                pairs.append((int(i), int(j)))
                free_tracks.discard(i)
                free_boxes.discard(j)
        # A face that was out of sight may come back a little elsewhere: where it was heading, or
        # where it was last seen (it may have stopped behind the hand); nearest first, within reach.
        candidates = []
        for i in free_tracks:
            track = self.tracks[i]
            if t - track.last_seen <= 0 or not track.confirmed:
                continue
            last = _centre_size(track.box)
            for j in free_boxes:
                other = _centre_size(boxes[j])
                distance = min(math.hypot(*(other[:2] - _centre_size(predicted[i])[:2])),
                               math.hypot(*(other[:2] - last[:2])))
                size_ratio = other[2] / max(last[2], 1e-9)
                if distance <= self.reacquire_distance * last[2] and 0.5 <= size_ratio <= 2.0:
                    candidates.append((distance, i, j))
        for _, i, j in sorted(candidates):
            if i in free_tracks and j in free_boxes:
                pairs.append((i, j))
                free_tracks.discard(i)
                free_boxes.discard(j)
        return pairs

    def _follow(self, track: Track, box: np.ndarray, score: float, t: float) -> None:
        measured = _centre_size(box)
        before = _centre_size(track.box)
        dt = t - track.last_seen
        smoothed = track._filter(measured, t, scale=max(measured[2], 1.0))
        if not self.smooth:
            smoothed = measured
        if dt > 0:
            track.velocity = 0.5 * track.velocity + 0.5 * (smoothed - before) / dt
        track.box = tuple(int(round(v)) for v in _corners(smoothed))
        track.score = score
        track.hits += 1
        track.last_seen = t
        if not track.confirmed and track.hits >= self.min_hits:
            self._confirm(track)

    def _confirm(self, track: Track) -> None:
        track.confirmed = True
        track.id = self._next_id
        self._next_id += 1
        self.faces_seen += 1

    def _start(self, box: np.ndarray, score: float, t: float) -> None:
        measured = _centre_size(box)
        track = Track(id=0, box=tuple(int(round(v)) for v in box), score=score, hits=1, last_seen=t,
                      _filter=OneEuroFilter(measured, t, self.min_cutoff, self.beta))
        if self.min_hits <= 1:
            self._confirm(track)
        self.tracks.append(track)
