import numpy as np
import pytest

from facetracker.boxes import average_precision, iou
from facetracker.evaluation.evaluate import score


def test_iou_of_known_boxes():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_score_counts_faces_and_empties_separately():
    true_boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0, 0, 0, 0], [0, 0, 0, 0]])
    pred_boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]])
    probs = np.array([0.9, 0.8, 0.7, 0.1])
    metrics = score(probs, pred_boxes, np.array([1, 1, 0, 0]), true_boxes)
    assert metrics["n_faces"] == 2 and metrics["n_empty"] == 2
    assert metrics["mean_iou"] == pytest.approx(0.5)
    assert metrics["iou50"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(1.0)
    # Ranked: face+good box (TP), face+bad box (FP), empty (FP): AP = 1 * 0.5 recall.
    assert metrics["ap50"] == pytest.approx(0.5)


def test_average_precision_of_a_perfect_ranking_is_one():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([True, True, False]), 2) == pytest.approx(1.0)
