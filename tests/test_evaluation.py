"""Tests of the test-set metrics on hand-made labels and probabilities."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, log_loss

from fmnist.dataset import CLASS_NAMES
from fmnist.evaluation import (
    class_scores,
    classification_metrics,
    confused_pairs,
    confusion,
)

# Every class twice; three mistakes: T-shirt/top -> Shirt, Coat -> Pullover, Shirt -> T-shirt/top.
LABELS = np.repeat(np.arange(10), 2)
PREDICTED = LABELS.copy()
PREDICTED[[1, 9, 13]] = [6, 2, 0]
CONFIDENCE = 0.91  # probability of the predicted class; the other nine share the rest


def probabilities_for(predicted: np.ndarray) -> np.ndarray:
    probabilities = np.full((len(predicted), 10), (1 - CONFIDENCE) / 9)
    probabilities[np.arange(len(predicted)), predicted] = CONFIDENCE
    return probabilities


PROBABILITIES = probabilities_for(PREDICTED)


def test_accuracy_and_loss() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES)

    expected_loss = -(17 * math.log(CONFIDENCE) + 3 * math.log((1 - CONFIDENCE) / 9)) / 20
    assert metrics["accuracy"] == 0.85
    assert metrics["loss"] == round(expected_loss, 4)
    assert metrics["loss"] == round(log_loss(LABELS, PROBABILITIES), 4)


def test_headline_metrics_are_five_flat_values() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES)

    assert list(metrics) == ["accuracy", "loss", "precision", "recall", "f1"]
    assert all(isinstance(value, float) for value in metrics.values())


def test_class_scores_are_plot_records_in_label_order() -> None:
    records = class_scores(LABELS, PREDICTED)

    assert [record["class"] for record in records] == list(CLASS_NAMES)
    per_class = {record.pop("class"): record for record in records}
    assert per_class["T-shirt/top"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert per_class["Pullover"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8}
    assert per_class["Coat"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667}
    assert per_class["Shirt"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert per_class["Bag"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_macro_values_average_the_ten_classes() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES)
    macro = {name: metrics[name] for name in ("precision", "recall", "f1")}

    assert macro == {
        "precision": round((0.5 + 2 / 3 + 1 + 0.5 + 6) / 10, 4),
        "recall": round((0.5 + 1 + 0.5 + 0.5 + 6) / 10, 4),
        "f1": round((0.5 + 0.8 + 2 / 3 + 0.5 + 6) / 10, 4),
    }
    assert macro == {"precision": 0.8667, "recall": 0.85, "f1": 0.8467}


def test_metrics_accept_float32_probabilities_without_warnings() -> None:
    """A float32 softmax sums to one only up to rounding, which sklearn would warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = classification_metrics(LABELS, PROBABILITIES.astype(np.float32))

    assert metrics["accuracy"] == 0.85
    assert metrics["loss"] == pytest.approx(round(log_loss(LABELS, PROBABILITIES), 4), abs=1e-4)


def test_confusion_counts_true_rows_against_predicted_columns() -> None:
    matrix = confusion(LABELS, PREDICTED)

    expected = np.diag([1, 2, 2, 2, 1, 2, 1, 2, 2, 2])
    expected[0, 6] = expected[4, 2] = expected[6, 0] = 1
    assert matrix.shape == (10, 10)
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_has_ten_rows_even_when_classes_are_absent() -> None:
    matrix = confusion(np.array([3, 3]), np.array([3, 5]))

    assert matrix.shape == (10, 10)
    assert matrix.sum() == 2
    assert (matrix[3, 3], matrix[3, 5]) == (1, 1)


def test_confusion_matches_scikit_learn_on_uint8_labels() -> None:
    # The labels arrive as uint8, where label * 10 would wrap around past 255.
    generator = np.random.default_rng(3)
    labels, predicted = generator.integers(0, 10, (2, 5000), dtype=np.uint8)

    np.testing.assert_array_equal(
        confusion(labels, predicted), confusion_matrix(labels, predicted, labels=np.arange(10))
    )


def test_confused_pairs_order_by_count_then_class_and_skip_the_diagonal() -> None:
    matrix = np.zeros((10, 10), dtype=np.int64)
    matrix[2, 2] = 100  # correct predictions never count as confusion
    matrix[6, 0] = 7
    matrix[3, 1] = 5
    matrix[1, 3] = 5
    matrix[4, 6] = 2
    original = matrix.copy()

    pairs = confused_pairs(matrix)

    assert [(pair["pair"], pair["count"]) for pair in pairs] == [
        ("Shirt as T-shirt/top", 7),
        ("Trouser as Dress", 5),
        ("Dress as Trouser", 5),
        ("Coat as Shirt", 2),
        # The watched pairs without errors, in WATCHED_PAIRS order.
        ("T-shirt/top as Shirt", 0),
        ("Shirt as Pullover", 0),
        ("Pullover as Shirt", 0),
        ("Shirt as Coat", 0),
    ]
    np.testing.assert_array_equal(matrix, original)


def test_confused_pairs_list_at_most_ten_pairs_besides_the_watched_ones() -> None:
    matrix = np.arange(100).reshape(10, 10)

    pairs = confused_pairs(matrix)

    # The ten largest off-diagonal cells (99 and 88 are on it), then the six shirt pairs.
    assert [pair["count"] for pair in pairs] == [*range(98, 88, -1), 64, 62, 60, 46, 26, 6]
    assert pairs[0]["pair"] == "Ankle boot as Bag"


def test_confused_pairs_lead_with_the_worst_and_always_hold_shirt_against_its_lookalikes() -> None:
    # The three mistakes: T-shirt/top as Shirt, Coat as Pullover, Shirt as T-shirt/top.
    pairs = confused_pairs(confusion(LABELS, PREDICTED))
    counts = {pair["pair"]: pair["count"] for pair in pairs}

    assert pairs[0] == {
        "pair": "T-shirt/top as Shirt",
        "actual": "T-shirt/top",
        "predicted": "Shirt",
        "count": 1,
    }
    assert counts["Coat as Pullover"] == counts["Shirt as T-shirt/top"] == 1
    for name in ("T-shirt/top", "Pullover", "Coat"):
        assert f"Shirt as {name}" in counts and f"{name} as Shirt" in counts
    assert [pair["count"] for pair in pairs] == sorted(counts.values(), reverse=True)
    assert len(pairs) == len(counts)  # no pair twice


def test_no_mistakes_means_only_the_shirt_pairs_at_zero() -> None:
    pairs = confused_pairs(confusion(LABELS, LABELS))

    assert {pair["count"] for pair in pairs} == {0}
    assert len(pairs) == 6
