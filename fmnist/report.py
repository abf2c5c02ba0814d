"""The markdown report: headline metrics, per-class table, curves, confusion and mistakes."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist.cli import summarize_error
from fmnist.dataset import CLASS_NAMES, HUB_DATASET, IMAGE_SHAPE, NAME, NUM_CLASSES
from fmnist.errors import DataError
from fmnist.files import read_json
from fmnist.params import Params

# Where dvclive's Keras callback writes each per-epoch series inside its directory.
HISTORY_SERIES = {
    "train_loss": "plots/metrics/train/loss.tsv",
    "val_loss": "plots/metrics/eval/loss.tsv",
    "train_accuracy": "plots/metrics/train/accuracy.tsv",
    "val_accuracy": "plots/metrics/eval/accuracy.tsv",
}


def read_history(live_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Per-epoch training history from a dvclive directory: epoch (dvclive's step, from 1) and
    four series."""
    columns = {}
    for column, relative in HISTORY_SERIES.items():
        path = Path(live_dir) / relative
        try:
            series = pd.read_csv(path, sep="\t", dtype=float)
            steps, columns[column] = series["step"].to_numpy(), series.iloc[:, -1].to_numpy()
        except FileNotFoundError:
            raise DataError(f"{path}: not found (run the train stage: dvc repro train)") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, KeyError) as error:
            raise DataError(f"{path}: not a dvclive series ({summarize_error(error)})") from None
        if not np.array_equal(steps, np.arange(1, len(steps) + 1)):
            raise DataError(
                f"{path}: steps are not the epochs 1, 2, 3, ... (written by an older train "
                "stage: rerun it with `dvc repro train`)"
            )
    lengths = {HISTORY_SERIES[column]: len(values) for column, values in columns.items()}
    if len(set(lengths.values())) != 1:
        described = ", ".join(f"{path}: {length}" for path, length in lengths.items())
        raise DataError(f"{live_dir}: per-epoch series of different lengths ({described})")
    history = pd.DataFrame(columns)
    history.insert(0, "epoch", range(1, len(history) + 1))
    return history


def read_predictions(
    path: str | os.PathLike[str], count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluate stage's per-image actual and predicted label numbers and the probability of
    the prediction; DataError unless there are ``count`` rows of class names and probabilities."""
    try:
        table = pd.read_csv(
            path,
            usecols=["actual", "predicted", "probability"],
            dtype={"actual": str, "predicted": str, "probability": float},
        )
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the evaluate stage: dvc repro evaluate)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise DataError(
            f"{path}: not the evaluate stage's predictions ({summarize_error(error)})"
        ) from None
    if len(table) != count:
        raise DataError(f"{path}: {len(table):,} predictions for {count:,} test images")
    index = {name: number for number, name in enumerate(CLASS_NAMES)}
    unknown = sorted(set(table[["actual", "predicted"]].stack()) - set(index))
    if unknown:
        raise DataError(f"{path}: {unknown[0][:50]!r} is not a class name")
    probability = table["probability"].to_numpy()
    if not np.all((probability >= 0) & (probability <= 1)):
        raise DataError(f"{path}: a probability is not a number from 0 to 1")
    actual, predicted = (table[column].map(index).to_numpy() for column in ("actual", "predicted"))
    return actual, predicted, probability


def read_kept_epoch(path: str | os.PathLike[str], epochs: int) -> int:
    """The epoch (from 1) whose weights the model holds, from the train stage's summary."""
    summary = read_json(path)
    epoch = summary.get("kept_epoch") if isinstance(summary, dict) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= epochs:
        raise DataError(f"{path}: kept_epoch {epoch!r} is not an epoch of the {epochs} trained")
    return epoch


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[int] = ()
) -> list[str]:
    """The lines of a GitHub markdown table; the columns numbered in ``right`` right-aligned."""

    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    rule = "|" + "|".join("---:" if column in right else "---" for column in range(len(header)))
    return [line(header), rule + "|", *(line(row) for row in rows)]


def format_percent(value: float) -> str:
    """A share as a percentage with two decimals: 0.8898 is ``88.98%``."""
    return f"{100 * value:.2f}%"


def describe_model(params: Params) -> str:
    """One sentence naming the network and how it was trained."""
    train = params.train
    if train.model == "cnn":
        cnn = train.cnn
        blocks = ", ".join(map(str, cnn.filters))
        network = (
            f"CNN: Conv2D ({blocks} filters of {cnn.kernel_size}x{cnn.kernel_size}, "
            f"{cnn.padding} padding, each "
            f"with {cnn.pool_size}x{cnn.pool_size} max pooling), Dense {cnn.dense_units}"
        )
    else:
        network = "Dense network " + " - ".join(str(units) for units in train.hidden_units)
    extras = [f"dropout {train.dropout}"] if train.dropout else []
    extras += ["batch norm"] if train.batch_norm else []
    extras += [f"L2 {train.l2:g}"] if train.l2 else []
    extras += [f"label smoothing {train.label_smoothing:g}"] if train.label_smoothing else []
    augmented = ["flips"] if train.augment.flip else []
    augmented += [f"shifts up to {train.augment.shift:g}"] if train.augment.shift else []
    extras += [f"augmented: {' and '.join(augmented)}"] if augmented else []
    schedule = "" if train.schedule == "constant" else f" with {train.schedule} decay"
    stopping = (
        f", early stopping after {train.early_stopping.patience} epochs without improvement"
        if train.early_stopping.patience
        else ""
    )
    return (
        f"{network} ({', '.join([train.activation, *extras])}); {train.optimizer} at learning "
        f"rate {train.learning_rate:g}{schedule}, batch {train.batch_size}, up to "
        f"{train.epochs} epochs{stopping}."
    )


def render_report(
    params: Params,
    history: pd.DataFrame,
    kept_epoch: int,
    test_metrics: dict,
    class_scores: list[dict],
    confused_pairs: list[dict],
    split_counts: dict[str, dict[str, int]],
    figures: dict[str, str],
) -> str:
    """The report as GitHub-flavoured markdown from the stages' results; ``figures`` maps names
    to relative links, ``split_counts`` split names to images per class."""
    sizes = " / ".join(f"{sum(counts.values()):,} {name}" for name, counts in split_counts.items())
    epoch = kept_epoch
    kept = history.iloc[epoch - 1]
    lines = [
        f"# {NAME} report",
        "",
        f"{describe_model(params)} Split `{params.split.method}`: {sizes} images; "
        f"seed {params.seed}.",
        "",
        *markdown_table(
            ["", "accuracy", "loss"],
            [
                [
                    "test",
                    f"**{format_percent(test_metrics['accuracy'])}**",
                    f"{test_metrics['loss']:.4f}",
                ],
                [
                    f"validation (epoch {epoch})",
                    format_percent(kept["val_accuracy"]),
                    f"{kept['val_loss']:.4f}",
                ],
                [
                    f"train (epoch {epoch})",
                    format_percent(kept["train_accuracy"]),
                    f"{kept['train_loss']:.4f}",
                ],
            ],
            right=(1, 2),
        ),
        "",
        "Macro average on the test set: precision {precision:.4f}, recall {recall:.4f}, "
        "F1 {f1:.4f}.".format(**test_metrics),
        "",
        "## Per class (test set)",
        "",
        *markdown_table(
            ["class", "precision", "recall", "F1", "images"],
            [
                [
                    values["class"],
                    *(f"{values[key]:.4f}" for key in ("precision", "recall", "f1")),
                    f"{split_counts['test'][values['class']]:,}",
                ]
                for values in class_scores
            ],
            right=(1, 2, 3, 4),
        ),
        "",
        "## Most confused classes",
        "",
        *markdown_table(
            ["true", "predicted as", "images"],
            [
                [pair["actual"], pair["predicted"], str(pair["count"])]
                for pair in confused_pairs[:5]
            ],
            right=(2,),
        ),
    ]
    lines += [
        "",
        "## Training curves",
        "",
        "Epochs count from 1. The validation series is `eval` in DVC's plots and in "
        "`dvc exp show` (`eval.accuracy`), dvclive's name for it.",
        "",
        f"![Loss and accuracy per epoch]({figures['curves']})",
        "",
        "## Confusion matrix",
        "",
        "Rows are the true classes, columns the answers. An error's colour is its share of the "
        "true class's images; the diagonal holds the correct answers.",
        "",
        f"![Confusion matrix]({figures['confusion']})",
        "",
        "## Misclassified test images",
        "",
        "The mistakes the model was surest of, surest first. Captions read *true → predicted* "
        "and the probability the model gave its answer.",
        "",
        f"![Misclassified test images]({figures['misclassified']})",
        "",
    ]
    return "\n".join(lines)


def render_model_card(
    params: Params,
    test_metrics: dict,
    class_scores: list[dict],
    confused_pairs: list[dict],
    split_counts: dict[str, dict[str, int]],
) -> str:
    """The model card, in the Hugging Face Hub's layout: YAML metadata, then what the model is
    for, its data, its scores on the test set, its input contract and its limits."""
    headline = ("accuracy", "precision", "recall", "f1")
    scores = "".join(
        f"\n          - {{type: {name}, value: {test_metrics[name]}}}" for name in headline
    )
    sizes = ", ".join(f"{sum(counts.values()):,} {name}" for name, counts in split_counts.items())
    per_class = [[r["class"], *(f"{r[name]:.4f}" for name in headline[1:])] for r in class_scores]
    weakest = min(class_scores, key=lambda record: record["f1"])
    confusions = "; ".join(f"{pair['pair']}: {pair['count']:,}" for pair in confused_pairs[:3])
    labels = ", ".join(f"{index} {name}" for index, name in enumerate(CLASS_NAMES))
    overall = [[name, f"{test_metrics[name]:.4f}"] for name in headline]
    tables = [
        "\n".join(markdown_table(header, rows, right=range(1, len(header))))
        for header, rows in ((["metric", "value"], overall), (["class", *headline[1:]], per_class))
    ]
    return f"""---
library_name: keras
pipeline_tag: image-classification
tags: [{NAME.lower()}, image-classification, keras]
datasets: [{HUB_DATASET}]
metrics: [{", ".join(headline)}]
model-index:
  - name: {NAME.lower()}-classifier
    results:
      - task: {{type: image-classification}}
        dataset: {{name: {NAME}, type: {HUB_DATASET}, split: test}}
        metrics:{scores}
---

# {NAME} classifier

{describe_model(params)} Written by this repository's pipeline (`dvc repro`); every figure below
comes from its metrics files.

## Intended use

Sorting pictures of single clothing items into the {NUM_CLASSES} classes of {NAME}, and a
baseline to compare experiments with. Not for people, scenes, or pictures of several items.

## Training data

{NAME} ({HUB_DATASET}): {sizes} images; split `{params.split.method}`, seed {params.seed}.

## Evaluation on the test set

{tables[0]}

Precision, recall and F1 are macro averages; per class:

{tables[1]}

## Input contract

In: uint8 images of shape `(n, {", ".join(map(str, IMAGE_SHAPE))})`, the item light on a black
background, centred and filling the frame; pixels are scaled inside the model. Out: float32
probabilities `(n, {NUM_CLASSES})`, in label order: {labels}. A photo must be converted first, as
`fmnist.predict.to_fashion_mnist` does.

## Limitations

The weakest class is {weakest["class"]} (F1 {weakest["f1"]:.4f}). Photos taken otherwise than
Zalando's catalogue pictures (cluttered backgrounds, several items, unusual angles) score lower.
Most often confused on the test set: {confusions}.
"""


def render_checked(
    params: Params,
    history: pd.DataFrame,
    kept_epoch: int,
    inputs: dict[Path, object],
    figures: dict[str, str],
) -> tuple[str, str]:
    """``render_report`` and ``render_model_card`` from the evaluate and split stages' JSON
    files, keyed by path, in their order; DataError naming them where their content does not
    have the shape they read."""
    try:
        return (
            render_report(params, history, kept_epoch, *inputs.values(), figures),
            render_model_card(params, *inputs.values()),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        names = ", ".join(str(path) for path in inputs)
        raise DataError(f"cannot write the report from {names}: {summarize_error(error)}") from None
