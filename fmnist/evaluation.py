"""Test-set metrics computed from predicted class probabilities."""

from __future__ import annotations

import numpy as np

from fmnist.dataset import CLASS_NAMES, NUM_CLASSES, WATCHED_PAIRS

DIGITS = 4  # rounding keeps metric diffs readable and free of float noise

CONFUSED_PAIRS = 10  # the most confused pairs that plots/confused_pairs.json lists


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Float64 rows summing to one: a float32 softmax is off by rounding, which sklearn flags."""
    probabilities = probabilities.astype(np.float64)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The headline test metrics: accuracy, loss and the macro precision, recall and F1."""
    # scikit-learn takes about a second to import; the report stage, which shares this
    # module, does without it.
    from sklearn.metrics import log_loss

    classes = np.arange(NUM_CLASSES)
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1 = _per_class_scores(labels, predicted)
    return {
        "accuracy": _round(np.mean(predicted == labels)),
        "loss": _round(log_loss(labels, _normalised(probabilities), labels=classes)),
        "precision": _round(precision.mean()),
        "recall": _round(recall.mean()),
        "f1": _round(f1.mean()),
    }


def _per_class_scores(
    labels: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(NUM_CLASSES), zero_division=0
    )
    return precision, recall, f1


def class_scores(labels: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Precision, recall and F1 of each class, as plot records in label order."""
    precision, recall, f1 = _per_class_scores(labels, predicted)
    return [
        {
            "class": name,
            "precision": _round(precision[index]),
            "recall": _round(recall[index]),
            "f1": _round(f1[index]),
        }
        for index, name in enumerate(CLASS_NAMES)
    ]


def confused_pairs(matrix: np.ndarray) -> list[dict]:
    """The most confused pairs of classes as plot records, most errors first, always including
    the data set's WATCHED_PAIRS in both directions.
    """
    pairs = most_confused_pairs(matrix, count=CONFUSED_PAIRS)
    for first, second in WATCHED_PAIRS:
        one, other = CLASS_NAMES.index(first), CLASS_NAMES.index(second)
        for true, predicted in ((one, other), (other, one)):
            pair = {
                "true": CLASS_NAMES[true],
                "predicted": CLASS_NAMES[predicted],
                "count": int(matrix[true, predicted]),
            }
            if pair not in pairs:
                pairs.append(pair)
    pairs.sort(key=lambda pair: -pair["count"])
    return [
        {
            "pair": f"{pair['true']} as {pair['predicted']}",
            "actual": pair["true"],
            "predicted": pair["predicted"],
            "count": pair["count"],
        }
        for pair in pairs
    ]


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
