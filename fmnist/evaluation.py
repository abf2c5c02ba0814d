"""Test-set metrics computed from predicted class probabilities."""

from __future__ import annotations

import numpy as np

from fmnist import CLASS_NAMES, NUM_CLASSES

DIGITS = 4  # rounding keeps metric diffs readable and free of float noise

# The study's known weak spot: shirts are told apart badly from these three classes.
SHIRT_LOOKALIKES = ("T-shirt/top", "Pullover", "Coat")


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Float64 rows summing to one: a float32 softmax is off by rounding, which sklearn flags."""
    probabilities = probabilities.astype(np.float64)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, loss, macro and per-class precision, recall and F1 (classes by name), and
    how often shirts are confused with their look-alikes and which pair is confused most.
    """
    # scikit-learn takes about a second to import; the report stage, which shares this
    # module, does without it.
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    classes = np.arange(NUM_CLASSES)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion(labels, predicted)
    shirt = CLASS_NAMES.index("Shirt")
    worst = most_confused_pairs(matrix, count=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return {
        "accuracy": _round(accuracy_score(labels, predicted)),
        "loss": _round(log_loss(labels, _normalised(probabilities), labels=classes)),
        "macro": {
            "precision": _round(precision.mean()),
            "recall": _round(recall.mean()),
            "f1": _round(f1.mean()),
        },
        "per_class": {
            name: {
                "precision": _round(precision[index]),
                "recall": _round(recall[index]),
                "f1": _round(f1[index]),
            }
            for index, name in enumerate(CLASS_NAMES)
        },
        # Both directions: shirts taken for the other class and the other class for shirts.
        "shirt_confused_with": {
            name: int(matrix[shirt, other] + matrix[other, shirt])
            for name, other in ((name, CLASS_NAMES.index(name)) for name in SHIRT_LOOKALIKES)
        },
        "most_confused": {
            "pair": f"{worst[0]['true']} as {worst[0]['predicted']}" if worst else "none",
            "count": worst[0]["count"] if worst else 0,
        },
    }


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Confusion matrix ``(10, 10)``: rows are true classes, columns predicted ones."""
    cells = labels.astype(np.int64) * NUM_CLASSES + predicted.astype(np.int64)
    return np.bincount(cells, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def most_confused_pairs(matrix: np.ndarray, count: int = 5) -> list[dict]:
    """The off-diagonal cells with the most errors, largest first (ties by class order)."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:count]
    pairs = []
    for flat in order:
        true, predicted = np.unravel_index(flat, errors.shape)
        if errors[true, predicted] == 0:
            break
        pairs.append(
            {
                "true": CLASS_NAMES[true],
                "predicted": CLASS_NAMES[predicted],
                "count": int(errors[true, predicted]),
            }
        )
    return pairs
