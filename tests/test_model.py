"""Tests of the network builder and training loop on tiny synthetic images."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fmnist.data import Split
from fmnist.errors import DataError, TrainingError
from fmnist.model import (
    build_model,
    build_optimizer,
    compile_model,
    kept_epoch,
    learning_rate_schedule,
    load_model,
    predict_probabilities,
    save_model,
    seed_everything,
    train_model,
)
from fmnist.params import compute_precision
from tests.conftest import make_train_params

PARAMS = make_train_params(
    model="dense",
    hidden_units=[16, 8],
    activation="sigmoid",
    dropout=0.5,
    batch_norm=False,
    l2=0.0,
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.0,
    schedule="constant",
    label_smoothing=0.0,
    early_stopping={"patience": 0},
    augment={"shift": 0.0, "flip": False},
    batch_size=32,
    epochs=1,
)


def make_data(count: int, seed: int) -> Split:
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return Split(images, labels)


TRAIN, VALIDATION = make_data(160, seed=1), make_data(40, seed=2)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-values))


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def test_model_takes_uint8_images_and_returns_ten_probabilities() -> None:
    model = build_model(PARAMS)

    assert model.input_shape == (None, 28, 28)
    assert model.inputs[0].dtype == "uint8"
    assert model.output_shape == (None, 10)


def test_dense_layers_follow_hidden_units_and_activation() -> None:
    model = build_model(PARAMS)

    dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense_layers] == [16, 8, 10]
    assert [layer.get_config()["activation"] for layer in dense_layers] == [
        "sigmoid",
        "sigmoid",
        "softmax",
    ]


@pytest.mark.parametrize(("dropout", "expected_layers"), [(0.5, 2), (0.0, 0)])
def test_dropout_layers_exist_only_when_dropout_is_positive(
    dropout: float, expected_layers: int
) -> None:
    model = build_model(make_train_params(**{**PARAMS.model_dump(), "dropout": dropout}))

    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [dropout] * expected_layers


def test_first_layer_rescales_pixels_to_the_unit_interval() -> None:
    model = build_model(PARAMS)
    scaling = keras.Model(model.input, model.get_layer("scale_pixels").output)
    images = np.stack([np.full((28, 28), value, np.uint8) for value in (0, 51, 255)])

    scaled = np.asarray(scaling(images))

    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0], 0.0)
    np.testing.assert_allclose(scaled[1], 0.2, rtol=1e-6)
    np.testing.assert_allclose(scaled[2], 1.0, rtol=1e-6)


def test_predictions_equal_a_numpy_forward_pass_on_pixels_over_255() -> None:
    """Rescaling, both sigmoid layers and the softmax, with dropout inactive at inference."""
    model = build_model(PARAMS)
    images = np.concatenate([np.full((1, 28, 28), 255, np.uint8), make_data(4, seed=3).images])
    first_weights, first_bias, second_weights, second_bias, last_weights, last_bias = (
        model.get_weights()
    )

    hidden = sigmoid(images.reshape(len(images), -1) / 255 @ first_weights + first_bias)
    hidden = sigmoid(hidden @ second_weights + second_bias)
    expected = softmax(hidden @ last_weights + last_bias)

    np.testing.assert_allclose(predict_probabilities(model, images), expected, atol=1e-5)


def test_probabilities_are_non_negative_rows_summing_to_one() -> None:
    probabilities = predict_probabilities(build_model(PARAMS), make_data(8, seed=4).images)

    assert probabilities.shape == (8, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "optimizer_class", "learning_rate"),
    [("sgd", keras.optimizers.SGD, 0.05), ("adam", keras.optimizers.Adam, 0.002)],
)
def test_build_optimizer_returns_the_named_optimizer_at_the_learning_rate(
    name: str, optimizer_class: type, learning_rate: float
) -> None:
    params = make_train_params(
        **{**PARAMS.model_dump(), "optimizer": name, "learning_rate": learning_rate}
    )

    optimizer = build_optimizer(params)

    assert type(optimizer) is optimizer_class
    assert float(optimizer.learning_rate) == pytest.approx(learning_rate)


def test_train_model_returns_the_model_and_its_history() -> None:
    seed_everything(0)

    model, history = train_model(PARAMS, TRAIN, VALIDATION)

    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == PARAMS.epochs for values in history.values())
    assert np.all(np.isfinite(history["loss"]))
    assert 0 <= history["val_accuracy"][0] <= 1
    assert model.output_shape == (None, 10)


def test_train_model_raises_when_the_loss_diverges() -> None:
    # A learning rate of 1e30 makes the ReLU activations overflow to inf, and the loss NaN.
    params = make_train_params(
        **{
            **PARAMS.model_dump(),
            "activation": "relu",
            "dropout": 0.0,
            "learning_rate": 1e30,
            "epochs": 3,
        }
    )
    seed_everything(0)

    with pytest.raises(TrainingError, match="training diverged") as caught:
        train_model(params, TRAIN, VALIDATION)

    assert "in epoch 1 of 3" in str(caught.value)
    assert "lower train.learning_rate (1e+30)" in str(caught.value)


def test_same_seed_gives_identical_weights_and_another_seed_does_not() -> None:
    seed_everything(7)
    first, first_history = train_model(PARAMS, TRAIN, VALIDATION)
    seed_everything(7)
    second, second_history = train_model(PARAMS, TRAIN, VALIDATION)
    seed_everything(8)
    third, _ = train_model(PARAMS, TRAIN, VALIDATION)

    for first_array, second_array in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(first_array, second_array)
    assert first_history == second_history
    assert not np.array_equal(first.get_weights()[0], third.get_weights()[0])


def test_bfloat16_computes_in_bfloat16_and_repeats_exactly(tmp_path: Path) -> None:
    params = make_train_params(
        model="cnn", hidden_units=[8], cnn={"filters": [4]}, epochs=2, precision="bfloat16"
    )
    runs = []
    for _ in range(2):
        seed_everything(7)
        runs.append(train_model(params, TRAIN, VALIDATION))
    (first, first_history), (second, second_history) = runs
    path = tmp_path / "model.keras"
    save_model(first, path)

    assert first.get_layer("conv_1").compute_dtype == "bfloat16"
    assert first.get_layer("conv_1").kernel.dtype == "float32"
    assert first.get_layer("probabilities").compute_dtype == "float32"
    assert build_model(make_train_params()).get_layer("dense_1").compute_dtype == "float32"
    automatic = build_model(make_train_params(precision="auto")).get_layer("dense_1")
    assert automatic.compute_dtype == compute_precision("auto")  # what this CPU computes natively
    for first_array, second_array in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(first_array, second_array)
    assert first_history == second_history
    probabilities = predict_probabilities(load_model(path), TRAIN.images[:8])
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_warmup_rises_to_the_learning_rate_then_decays_to_zero() -> None:
    params = make_train_params(schedule="cosine", warmup_epochs=2, epochs=10, learning_rate=0.01)
    schedule = learning_rate_schedule(params, steps_per_epoch=5)

    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]

    assert rates[0] == 0.0
    assert rates[1] == pytest.approx(0.005)
    assert rates[2] == pytest.approx(0.01)
    assert 0 < rates[3] < 0.01
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_saved_model_loads_and_predicts_the_same(tmp_path: Path) -> None:
    model = build_model(PARAMS)
    path = tmp_path / "model.keras"
    model.save(path)
    images = make_data(4, seed=5).images

    loaded = load_model(path)

    np.testing.assert_allclose(
        predict_probabilities(loaded, images), predict_probabilities(model, images), atol=1e-6
    )


def test_load_model_rejects_a_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"

    with pytest.raises(DataError) as caught:
        load_model(path)

    assert str(caught.value) == f"{path}: not found (run the pipeline first: make repro)"


@pytest.mark.parametrize("name", ["model.keras", "model.h5"])
def test_load_model_rejects_a_garbage_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"not a model at all" * 8)

    with pytest.raises(DataError) as caught:
        load_model(path)

    # Read as a zip archive first, whatever the name says: nothing else reaches Keras.
    assert (
        str(caught.value)
        == f"{path}: not a Keras model archive (BadZipFile: File is not a zip file)"
    )


# --- the options of issue "the study's experiments": each changes the model as it says ------


def layers_of(model: keras.Model, layer_class: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, layer_class)]


def with_options(**overrides: object):
    return make_train_params(**{**PARAMS.model_dump(), **overrides})


def test_cnn_baseline_has_the_study_layers_and_parameter_count() -> None:
    params = with_options(
        model="cnn",
        activation="relu",
        dropout=0.0,
        cnn={"filters": [32], "kernel_size": 3, "pool_size": 2, "dense_units": 128},
    )

    model = build_model(params)

    (conv,) = layers_of(model, keras.layers.Conv2D)
    assert (conv.filters, conv.kernel_size, conv.get_config()["activation"]) == (32, (3, 3), "relu")
    assert [layer.pool_size for layer in layers_of(model, keras.layers.MaxPooling2D)] == [(2, 2)]
    assert [layer.units for layer in layers_of(model, keras.layers.Dense)] == [128, 10]
    # conv 3*3*32+32, dense 13*13*32*128+128, output 128*10+10
    assert model.count_params() == 320 + 692_352 + 1_290


def test_cnn_has_one_conv_block_per_filters_entry() -> None:
    params = with_options(
        model="cnn", cnn={"filters": [8, 16], "kernel_size": 3, "pool_size": 2, "dense_units": 32}
    )

    model = build_model(params)

    assert [layer.filters for layer in layers_of(model, keras.layers.Conv2D)] == [8, 16]
    assert len(layers_of(model, keras.layers.MaxPooling2D)) == 2
    # Dropout after each conv block and after the hidden Dense layer.
    assert len(layers_of(model, keras.layers.Dropout)) == 3


@pytest.mark.parametrize(("padding", "flattened"), [("valid", 5 * 5 * 16), ("same", 7 * 7 * 16)])
def test_padding_decides_the_feature_map_size(padding: str, flattened: int) -> None:
    # valid: 28 -> 26 -> pool 13 -> 11 -> pool 5; same: 28 -> pool 14 -> pool 7.
    params = with_options(
        model="cnn",
        cnn={"filters": [8, 16], "kernel_size": 3, "padding": padding, "pool_size": 2},
    )

    model = build_model(params)

    assert model.get_layer("flatten").output.shape == (None, flattened)


def test_batch_norm_goes_before_each_hidden_activation_and_drops_the_bias() -> None:
    model = build_model(with_options(batch_norm=True))

    assert len(layers_of(model, keras.layers.BatchNormalization)) == 2
    hidden = layers_of(model, keras.layers.Dense)[:-1]
    assert [layer.use_bias for layer in hidden] == [False, False]
    assert [layer.get_config()["activation"] for layer in hidden] == ["linear", "linear"]
    names = [layer.name for layer in model.layers]
    assert names.index("dense_1_batch_norm") < names.index("dense_1_sigmoid")


def test_l2_penalises_the_hidden_kernels_only() -> None:
    model = build_model(with_options(l2=1e-3))

    hidden, output = layers_of(model, keras.layers.Dense)[:-1], model.get_layer("probabilities")
    assert [layer.kernel_regularizer.l2 for layer in hidden] == pytest.approx([1e-3, 1e-3])
    assert output.kernel_regularizer is None


@pytest.mark.parametrize(
    ("options", "optimizer_class", "settings"),
    [
        (
            {"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
            keras.optimizers.SGD,
            {"momentum": 0.9, "nesterov": True},
        ),
        (
            {"optimizer": "adamw", "weight_decay": 1e-4},
            keras.optimizers.AdamW,
            {"weight_decay": 1e-4},
        ),
        ({"optimizer": "rmsprop"}, keras.optimizers.RMSprop, {}),
    ],
    ids=["sgd-momentum-nesterov", "adamw", "rmsprop"],
)
def test_optimizer_settings_reach_the_optimizer(
    options: dict, optimizer_class: type, settings: dict
) -> None:
    optimizer = build_optimizer(with_options(**options))

    assert type(optimizer) is optimizer_class
    config = optimizer.get_config()
    for key, value in settings.items():
        assert config[key] == pytest.approx(value)


def test_cosine_schedule_decays_to_zero_over_all_epochs() -> None:
    params = with_options(schedule="cosine", learning_rate=0.1, epochs=4)

    schedule = learning_rate_schedule(params, steps_per_epoch=10)

    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(20)) == pytest.approx(0.05)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_multiplies_by_the_factor_every_few_epochs() -> None:
    params = with_options(schedule="step", learning_rate=0.1, decay_every=2, decay_factor=0.5)

    schedule = learning_rate_schedule(params, steps_per_epoch=10)

    assert [float(schedule(step)) for step in (0, 19, 20, 39, 40)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025]
    )


def test_label_smoothing_reaches_the_loss() -> None:
    params = with_options(label_smoothing=0.1)
    model = build_model(params)

    compile_model(model, params)

    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_augmentation_changes_training_inputs_only() -> None:
    params = with_options(dropout=0.0, augment={"shift": 0.2, "flip": True})
    augmented = build_model(params)
    plain = build_model(with_options(dropout=0.0))
    plain.set_weights(augmented.get_weights())  # augmentation layers have no weights
    images = make_data(16, seed=6).images
    seed_everything(0)

    inference = np.asarray(augmented(images, training=False))
    training = np.asarray(augmented(images, training=True))

    assert {layer.name for layer in augmented.layers} >= {"random_flip", "random_shift"}
    np.testing.assert_allclose(inference, np.asarray(plain(images, training=False)), atol=1e-6)
    assert not np.allclose(training, inference, atol=1e-3)


def test_a_model_trained_on_mirror_images_scores_each_image_with_its_mirror() -> None:
    model = build_model(with_options(augment={"shift": 0.0, "flip": True}))
    images = make_data(8, seed=5).images
    single = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1], verbose=0)

    assert not np.allclose(single, mirrored, atol=1e-3)
    np.testing.assert_allclose(
        predict_probabilities(model, images), (single + mirrored) / 2, atol=1e-6
    )
    np.testing.assert_allclose(predict_probabilities(model, images, flip=False), single, atol=1e-6)
    plain = build_model(with_options())
    np.testing.assert_allclose(
        predict_probabilities(plain, images), plain.predict(images, verbose=0)
    )


def test_early_stopping_stops_and_keeps_the_best_epoch() -> None:
    # Random labels: validation loss stops improving after an epoch or two of memorising.
    params = with_options(
        optimizer="adam",
        learning_rate=0.01,
        dropout=0.0,
        epochs=30,
        early_stopping={"patience": 2, "restore_best": True},
    )
    seed_everything(0)

    _, history = train_model(params, TRAIN, VALIDATION)

    assert len(history["loss"]) < params.epochs
    best = int(np.argmin(history["val_loss"])) + 1
    assert kept_epoch(history, params) == best
    assert len(history["loss"]) == best + 2  # stopped after `patience` epochs without gain


def test_without_early_stopping_the_last_epoch_is_kept() -> None:
    history = {"loss": [3.0, 2.0, 1.0], "val_loss": [1.0, 2.0, 3.0]}

    assert kept_epoch(history, PARAMS) == 3
