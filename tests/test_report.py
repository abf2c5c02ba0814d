"""Tests of the report: the dvclive history reader, the markdown and the PNG figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from fmnist.dataset import CLASS_NAMES
from fmnist.errors import DataError
from fmnist.params import Params, load_params
from fmnist.plots import error_shares, plot_confusion, plot_curves, plot_image_grid, save_figure
from fmnist.report import (
    HISTORY_SERIES,
    describe_model,
    read_history,
    read_predictions,
    render_model_card,
    render_report,
)

REPOSITORY_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SERIES = {
    "train_loss": [0.9, 0.6, 0.5],
    "val_loss": [0.8, 0.7, 0.65],
    "train_accuracy": [0.6, 0.75, 0.8],
    "val_accuracy": [0.65, 0.7, 0.72],
}


def write_live_directory(directory: Path, series: dict[str, list[float]]) -> Path:
    """The four TSV files that dvclive's Keras callback writes, one row per epoch."""
    for column, values in series.items():
        path = directory / HISTORY_SERIES[column]
        path.parent.mkdir(parents=True, exist_ok=True)
        metric = column.split("_", 1)[1]
        rows = "".join(f"{step}\t{value}\n" for step, value in enumerate(values, start=1))
        path.write_text(f"step\t{metric}\n{rows}", encoding="utf-8")
    return directory


def test_read_history_numbers_epochs_from_one(tmp_path: Path) -> None:
    history = read_history(write_live_directory(tmp_path, SERIES))

    assert list(history.columns) == ["epoch", *SERIES]
    assert history["epoch"].tolist() == [1, 2, 3]
    for column, values in SERIES.items():
        assert history[column].tolist() == values


def test_read_history_refuses_steps_that_are_not_the_epochs(tmp_path: Path) -> None:
    # dvclive's own numbering starts at 0: the report would then name epochs one lower than
    # the train stage's log and summary do.
    write_live_directory(tmp_path, SERIES)
    path = tmp_path / HISTORY_SERIES["val_loss"]
    path.write_text("step\tloss\n0\t0.8\n1\t0.7\n2\t0.65\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"eval/loss.tsv: steps are not the epochs 1, 2, 3"):
        read_history(tmp_path)


def test_read_history_rejects_a_missing_series(tmp_path: Path) -> None:
    write_live_directory(tmp_path, SERIES)
    missing = tmp_path / HISTORY_SERIES["val_accuracy"]
    missing.unlink()

    with pytest.raises(DataError) as caught:
        read_history(tmp_path)

    assert str(caught.value) == f"{missing}: not found (run the train stage: dvc repro train)"


def test_read_history_rejects_series_of_different_lengths(tmp_path: Path) -> None:
    write_live_directory(tmp_path, {**SERIES, "val_loss": SERIES["val_loss"][:2]})

    with pytest.raises(DataError, match=r"eval/loss\.tsv"):
        read_history(tmp_path)


TEST_METRICS = {"accuracy": 0.8765, "loss": 0.34567, "precision": 0.845, "recall": 0.7, "f1": 0.75}
CLASS_SCORES = [
    {"class": name, "precision": 0.8 + index / 100, "recall": 0.7, "f1": 0.75}
    for index, name in enumerate(CLASS_NAMES)
]
HISTORY = pd.DataFrame(
    {
        "epoch": range(1, 13),
        "train_loss": [0.5] * 8 + [0.25] + [0.2] * 3,
        "val_loss": [0.5] * 8 + [0.3125] + [0.4] * 3,
        "train_accuracy": [0.8] * 8 + [0.91] + [0.95] * 3,
        "val_accuracy": [0.8] * 8 + [0.889] + [0.85] * 3,
    }
)
SPLIT_COUNTS = {
    "train": dict.fromkeys(CLASS_NAMES, 4800),
    "val": dict.fromkeys(CLASS_NAMES, 1200),
    "test": {name: 1000 + index for index, name in enumerate(CLASS_NAMES)},
}
CONFUSED_PAIRS = [
    {"pair": "Shirt as T-shirt/top", "actual": "Shirt", "predicted": "T-shirt/top", "count": 123},
    {"pair": "Pullover as Coat", "actual": "Pullover", "predicted": "Coat", "count": 98},
]
FIGURES = {
    "curves": "../plots/curves.png",
    "confusion": "../plots/confusion.png",
    "misclassified": "../plots/misclassified.png",
}


@pytest.fixture(scope="module")
def report() -> str:
    return render_report(
        load_params(REPOSITORY_PARAMS),
        history=HISTORY,
        kept_epoch=9,
        test_metrics=TEST_METRICS,
        class_scores=CLASS_SCORES,
        confused_pairs=CONFUSED_PAIRS,
        split_counts=SPLIT_COUNTS,
        figures=FIGURES,
    )


def test_report_leads_with_the_test_accuracy_as_a_percentage(report: str) -> None:
    assert report.startswith("# Fashion-MNIST report\n")
    assert "| test | **87.65%** | 0.3457 |" in report.splitlines()
    assert "| validation (epoch 9) | 88.90% | 0.3125 |" in report.splitlines()
    assert "| train (epoch 9) | 91.00% | 0.2500 |" in report.splitlines()
    assert "Macro average on the test set: precision 0.8450, recall 0.7000, F1 0.7500." in report


def test_report_describes_the_params_and_split_sizes(report: str) -> None:
    params = load_params(REPOSITORY_PARAMS)
    network = " - ".join(str(units) for units in params.train.hidden_units)

    assert f"Dense network {network} ({params.train.activation}, " in report
    assert "48,000 train / 12,000 val / 10,045 test images" in report
    assert f"seed {params.seed}." in report


def test_report_has_one_row_per_class_with_test_counts(report: str) -> None:
    lines = report.splitlines()
    section = lines[
        lines.index("## Per class (test set)") : lines.index("## Most confused classes")
    ]
    class_rows = [line for line in section if line.split(" | ")[0][2:] in CLASS_NAMES]

    assert len(class_rows) == len(CLASS_NAMES)
    assert "| T-shirt/top | 0.8000 | 0.7000 | 0.7500 | 1,000 |" in class_rows
    assert "| Ankle boot | 0.8900 | 0.7000 | 0.7500 | 1,009 |" in class_rows


def test_report_lists_the_confused_pairs_in_order(report: str) -> None:
    lines = report.splitlines()

    first = lines.index("| Shirt | T-shirt/top | 123 |")
    second = lines.index("| Pullover | Coat | 98 |")
    assert lines.index("## Most confused classes") < first < second


def test_report_links_the_three_figures(report: str) -> None:
    assert "![Loss and accuracy per epoch](../plots/curves.png)" in report
    assert "![Confusion matrix](../plots/confusion.png)" in report
    assert "![Misclassified test images](../plots/misclassified.png)" in report


def test_image_grid_lays_out_rows_of_columns() -> None:
    images = np.zeros((7, 28, 28), dtype=np.uint8)

    figure = plot_image_grid(images, [f"image {index}" for index in range(7)], columns=5)

    assert len(figure.axes) == 10
    assert [axis.get_title() for axis in figure.axes[:7]] == [f"image {i}" for i in range(7)]
    assert all(axis.get_title() == "" for axis in figure.axes[7:])
    plt.close(figure)


@pytest.mark.parametrize("kind", ["grid", "curves", "confusion"])
def test_save_figure_writes_a_png_and_no_temporary_file(tmp_path: Path, kind: str) -> None:
    if kind == "grid":
        images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
        figure = plot_image_grid(images, ["Shirt\n→ T-shirt/top", "Bag\n→ Sandal", "Coat\n→ Bag"])
    elif kind == "curves":
        figure = plot_curves(pd.DataFrame({"epoch": [1, 2, 3], **SERIES}))
    else:
        matrix = np.arange(100).reshape(10, 10)
        figure = plot_confusion(matrix, CLASS_NAMES)
    path = tmp_path / "figures" / f"{kind}.png"

    save_figure(figure, path)

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 1000
    assert [entry.name for entry in path.parent.iterdir()] == [f"{kind}.png"]
    assert not plt.fignum_exists(figure.number)


def test_save_figure_is_byte_identical_across_runs(tmp_path: Path) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], **SERIES})

    save_figure(plot_curves(history), tmp_path / "first.png")
    save_figure(plot_curves(history), tmp_path / "second.png")

    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "second.png").read_bytes()


def test_describe_model_names_the_cnn_and_every_option_in_use() -> None:
    document = load_params(REPOSITORY_PARAMS).model_dump()
    document["train"].update(
        model="cnn",
        cnn={
            "filters": [32, 64],
            "kernel_size": 3,
            "padding": "same",
            "pool_size": 2,
            "dense_units": 128,
        },
        dropout=0.25,
        batch_norm=True,
        label_smoothing=0.1,
        augment={"shift": 0.1, "flip": True},
        optimizer="adamw",
        schedule="cosine",
        early_stopping={"patience": 5, "restore_best": True},
    )

    sentence = describe_model(Params.model_validate(document))

    assert sentence.startswith(
        "CNN: Conv2D (32, 64 filters of 3x3, same padding, each with 2x2 max pooling), "
        "Dense 128 (relu, "
        "dropout 0.25, batch norm, label smoothing 0.1, augmented: flips and shifts up to 0.1); "
        "adamw at learning rate 0.001 with cosine decay"
    )
    assert sentence.endswith("early stopping after 5 epochs without improvement.")


def test_errors_are_shares_of_the_true_class_and_the_diagonal_is_set_apart() -> None:
    matrix = np.array([[90, 10, 0], [30, 60, 10], [0, 0, 0]])

    shares = error_shares(matrix)

    assert np.isnan(np.diag(shares)).all()
    assert shares[0, 1] == pytest.approx(0.1)
    assert shares[1, 0] == pytest.approx(0.3)
    assert shares[2, 0] == 0  # a class with no images has no errors


def test_predictions_give_labels_and_the_probability_of_each_answer(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("index,actual,predicted,probability\n0,Coat,Pullover,0.97\n1,Bag,Bag,0.5\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("index,actual,predicted,probability\n0,Coat,Pullover,1.5\n")

    actual, predicted, probability = read_predictions(path, 2)

    assert actual.tolist() == [4, 8] and predicted.tolist() == [2, 8]
    assert probability.tolist() == [0.97, 0.5]
    with pytest.raises(DataError, match="a probability is not a number from 0 to 1"):
        read_predictions(wrong, 1)
    with pytest.raises(DataError, match="3 test images"):
        read_predictions(path, 3)


# --- the model card ------------------------------------------------------------------------


def assert_card_matches(card: str, test_metrics: dict, class_scores: list[dict]) -> None:
    """Every figure of ``card`` is the one in metrics/evaluate.json or plots/classes.json."""
    assert card.startswith("---\n")
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    [model] = yaml.safe_load(front)["model-index"]
    [result] = model["results"]
    assert result["dataset"]["split"] == "test"
    headline = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert headline == {
        name: test_metrics[name] for name in ("accuracy", "precision", "recall", "f1")
    }
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in body.splitlines()]
    cells = {
        row[0]: [float(cell) for cell in row[1:]]
        for row in rows
        if len(row) > 1 and row[0] not in ("metric", "class") and not row[0].startswith("-")
    }
    for name, value in headline.items():
        assert cells[name] == [value]
    for record in class_scores:
        expected = [round(record[name], 4) for name in ("precision", "recall", "f1")]
        assert cells[record["class"]] == expected  # the metrics files hold 4 digits
    per_class = (record[name] for record in class_scores for name in ("precision", "recall", "f1"))
    scores = {round(score, 4) for score in (*test_metrics.values(), *per_class)}
    figures = [float(figure) for figure in re.findall(r"\b\d\.\d{4}\b", body)]
    assert figures and set(figures) <= scores


def test_the_model_card_holds_the_metrics_and_the_input_contract() -> None:
    card = render_model_card(
        load_params(REPOSITORY_PARAMS), TEST_METRICS, CLASS_SCORES, CONFUSED_PAIRS, SPLIT_COUNTS
    )

    assert_card_matches(card, TEST_METRICS, CLASS_SCORES)
    assert "In: uint8 images of shape `(n, 28, 28)`" in card
    assert "0 T-shirt/top, 1 Trouser," in card and "9 Ankle boot." in card
    assert (
        "Most often confused on the test set: Shirt as T-shirt/top: 123; Pullover as Coat: 98."
        in card
    )
    assert "70,000" not in card and "48,000 train, 12,000 val, 10,045 test images" in card


def test_the_committed_model_card_matches_the_committed_metrics() -> None:
    root = REPOSITORY_PARAMS.parent
    card = (root / "reports" / "model-card.md").read_text(encoding="utf-8")
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    classes = json.loads((root / "plots" / "classes.json").read_text())

    assert_card_matches(card, metrics, classes)
