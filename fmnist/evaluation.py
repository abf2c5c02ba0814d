"""Test-set metrics computed from predicted class probabilities."""

from __future__ import annotations

from itertools import takewhile

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

    return precision_recall_fscore_support(
        labels, predicted, labels=np.arange(NUM_CLASSES), zero_division=0
    )[:3]


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
    """The most confused pairs of classes as plot records, most errors first (ties by class
    order), always including the data set's WATCHED_PAIRS in both directions.
    """
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:CONFUSED_PAIRS]
    # The cells with errors, up to the first without: argsort puts those after them.
    cells = [divmod(int(flat), NUM_CLASSES) for flat in takewhile(errors.flat.__getitem__, order)]
    for first, second in WATCHED_PAIRS:
        one, other = CLASS_NAMES.index(first), CLASS_NAMES.index(second)
        cells += [(one, other), (other, one)]
    records = [
        {
            "pair": f"{CLASS_NAMES[true]} as {CLASS_NAMES[predicted]}",
            "actual": CLASS_NAMES[true],
            "predicted": CLASS_NAMES[predicted],
            "count": int(matrix[true, predicted]),
        }
        for true, predicted in dict.fromkeys(cells)  # each once, where first listed
    ]
    return sorted(records, key=lambda record: -record["count"])


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Confusion matrix ``(10, 10)``: rows are true classes, columns predicted ones."""
    cells = labels.astype(np.int64) * NUM_CLASSES + predicted.astype(np.int64)
    return np.bincount(cells, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
