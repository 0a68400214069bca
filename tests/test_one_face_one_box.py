"""One face, one box: a box lying mostly inside a larger box is the same object
(`boxes.containment`, `boxes.suppress_contained`)."""

from __future__ import annotations

import numpy as np
import pytest

from facetracker.boxes import containment, suppress_contained

# ----------------------------------------------------------------------------------------------
# The geometry and the rule, on boxes made by hand


def test_containment_is_the_share_of_the_smaller_box_inside_the_other():
    face = np.array([100, 100, 300, 340])
    chin = np.array([140, 220, 260, 340])  # nose, mouth and chin: wholly inside the face
    assert containment(face, chin) == pytest.approx(1.0) == containment(chin, face)
    half_out = np.array([250, 100, 350, 340])  # half of it beside the face
    assert containment(face, half_out) == pytest.approx(0.5)
    assert containment(face, np.array([400, 100, 500, 200])) == 0.0
    assert containment(face, np.array([150, 150, 150, 200])) == 0.0  # a box without area
    pairs = containment(np.array([face, chin])[:, None], np.array([face, half_out, chin])[None])
    assert pairs.shape == (2, 3)
    np.testing.assert_allclose(pairs, [[1, 0.5, 1], [1, 1 / 12, 1]])  # 10x120 of the 120x120 chin


def test_a_part_inside_a_face_goes_and_the_face_stays():
    boxes = np.array([[100, 100, 300, 340], [140, 220, 260, 340]], float)
    # the part scores lower, or higher by less than the margin: one face, its whole box
    for part_score in (0.3, 0.55):
        kept, scores = suppress_contained(boxes, np.array([0.5, part_score]), 0.5, 0.1)
        assert list(kept) == [0]
        assert list(scores) == [max(0.5, part_score)]  # the face is as likely as its likelier box
    # a box scoring clearly higher than the box around it is a face of its own
    kept, scores = suppress_contained(boxes, np.array([0.5, 0.7]), 0.5, 0.1)
    assert list(kept) == [1, 0] and list(scores) == [0.7, 0.5]


def test_where_the_outer_box_is_not_to_be_kept_the_inner_one_stays_unless_it_is_weak():
    loose, tight = [80, 80, 200, 200], [110, 100, 170, 170]
    boxes = np.array([loose, tight], float)
    keep_outer = np.array([False, True])
    kept, scores = suppress_contained(boxes, np.array([0.33, 0.31]), 0.5, 0.1, keep_outer)
    assert list(kept) == [1] and list(scores) == [0.33]
    kept, scores = suppress_contained(boxes, np.array([0.6, 0.31]), 0.5, 0.1, keep_outer)  # a weak part
    assert list(kept) == [0] and list(scores) == [0.6]


def test_neighbouring_faces_and_lone_boxes_are_all_kept_best_first():
    # two faces side by side, one partly behind the other (a fifth of the smaller one covered)
    boxes = np.array([[0, 0, 100, 120], [80, 10, 180, 130], [300, 0, 340, 50]], float)
    kept, scores = suppress_contained(boxes, np.array([0.4, 0.9, 0.5]), 0.5, 0.1)
    assert list(kept) == [1, 2, 0] and list(scores) == [0.9, 0.5, 0.4]
    assert [list(v) for v in suppress_contained(np.zeros((0, 4)), np.zeros(0), 0.5, 0.1)] == [[], []]
    assert list(suppress_contained(boxes[:1], np.array([0.4]), 0.5, 0.1)[0]) == [0]
    # two boxes of the same area, one inside the other (the same box twice): the better one stays
    same = np.array([[0, 0, 100, 100], [0, 0, 100, 100]], float)
    assert list(suppress_contained(same, np.array([0.4, 0.45]), 0.5, 0.1)[0]) == [1]
