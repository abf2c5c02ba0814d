"""Classifying your own pictures (fmnist.predict) and the TensorFlow Lite export (fmnist.export).

The conversion is tested on drawn pictures; the claim that matters, that photographed items are
classified about as well as the test set, on real test images made into such photos and a
short training on the real data (skipped where Debian's dataset-fashion-mnist is missing).
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.data import Split, save_split
from fmnist.dataset import CLASS_NAMES, RAW_FILES
from fmnist.errors import DataError, PipelineError
from fmnist.export import compare_predictions
from fmnist.files import temporary_files_beside
from fmnist.idx import read_split
from fmnist.predict import describe, format_result, read_picture, to_fashion_mnist, top_classes
from fmnist.predict import main as predict_main
from tests.conftest import REPOSITORY_ROOT, debian_data, make_train_params

# Real test images made into photos; 300 keep the run short yet the accuracy within 3 points.
PHOTO_COUNT = 300


def run_module(module: str, *arguments: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, arguments)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def draw_item(
    size: tuple[int, int], box: tuple[int, int, int, int], item: int, background: int
) -> np.ndarray:
    """A grayscale picture ``(height, width)`` of one rectangle ``box`` (left, top, right,
    bottom) of gray ``item`` on ``background``."""
    width, height = size
    pixels = np.full((height, width), background, dtype=np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = item
    return pixels


def rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(pixels[..., None], 3, axis=2))


# An item twice as tall as wide, off-centre in the lower left of a landscape picture.
DARK_ON_WHITE = draw_item((400, 300), (20, 150, 70, 250), item=30, background=250)


def lit_columns(image: np.ndarray) -> np.ndarray:
    return np.flatnonzero((image > 128).any(axis=0))


def test_a_dark_item_on_white_becomes_light_on_black() -> None:
    converted = to_fashion_mnist(rgb(DARK_ON_WHITE))

    assert converted.shape == (28, 28) and converted.dtype == np.uint8
    assert converted[14, 14] > 200
    assert converted[:, 0].max() == 0 and converted[:, -1].max() == 0


def test_a_light_item_on_black_is_not_inverted() -> None:
    light_on_black = draw_item((400, 300), (20, 150, 70, 250), item=220, background=5)

    converted = to_fashion_mnist(rgb(light_on_black))

    assert converted[14, 14] > 190
    assert converted[:, 0].max() == 0


def test_an_off_centre_item_is_cropped_centred_and_fills_the_frame() -> None:
    converted = to_fashion_mnist(rgb(DARK_ON_WHITE))

    rows, columns = np.flatnonzero((converted > 128).any(axis=1)), lit_columns(converted)
    assert rows[0] == 0 and rows[-1] == 27  # the longest side is 28 pixels
    assert len(columns) == 14  # half as wide as tall
    assert columns[0] == 27 - columns[-1]  # centred


def test_a_grey_backdrop_becomes_black() -> None:
    on_grey = draw_item((300, 300), (100, 50, 200, 250), item=40, background=190)

    converted = to_fashion_mnist(rgb(on_grey))

    assert converted[:, 0].max() == 0
    # The contrast of 150 is stretched by the 255 / 190 that took the backdrop to 0.
    assert abs(int(converted[14, 14]) - 150 * 255 / 190) < 1


def test_a_lone_speck_does_not_stretch_the_crop() -> None:
    speckled = DARK_ON_WHITE.copy()
    speckled[20, 380] = 0

    assert np.array_equal(to_fashion_mnist(rgb(speckled)), to_fashion_mnist(rgb(DARK_ON_WHITE)))


def test_grayscale_gives_what_rgb_gives() -> None:
    assert np.array_equal(
        to_fashion_mnist(Image.fromarray(DARK_ON_WHITE)), to_fashion_mnist(rgb(DARK_ON_WHITE))
    )


def test_a_transparent_background_counts_as_white() -> None:
    # What lies under the transparency is arbitrary: black here, which a plain conversion to
    # grayscale would show.
    alpha = np.where(DARK_ON_WHITE < 128, 255, 0).astype(np.uint8)
    colours = np.zeros((*DARK_ON_WHITE.shape, 3), dtype=np.uint8)
    colours[alpha > 0] = 30
    cut_out = Image.fromarray(np.dstack([colours, alpha]))
    gray_with_alpha = Image.fromarray(np.dstack([colours[..., 0], alpha])).convert("LA")

    expected = to_fashion_mnist(rgb(np.where(alpha > 0, 30, 255).astype(np.uint8)))
    assert cut_out.mode == "RGBA" and gray_with_alpha.mode == "LA"
    assert np.array_equal(to_fashion_mnist(cut_out), expected)
    assert np.array_equal(to_fashion_mnist(gray_with_alpha), expected)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    wide = Image.fromarray(DARK_ON_WHITE.astype(np.uint16) * 257)

    assert wide.mode.startswith("I")
    assert np.array_equal(to_fashion_mnist(wide), to_fashion_mnist(rgb(DARK_ON_WHITE)))


@pytest.mark.parametrize(
    "size",
    [(1, 1), (3, 500), (500, 3), (28, 28), (2000, 1500)],
    ids=lambda size: "x".join(map(str, size)),
)
def test_any_size_gives_a_28_by_28_uint8_image(size: tuple[int, int]) -> None:
    width, height = size
    picture = draw_item(size, (width // 3, height // 3, width // 3 + 1, height // 3 + 1), 0, 255)

    converted = to_fashion_mnist(rgb(picture))

    assert converted.shape == (28, 28) and converted.dtype == np.uint8


def test_a_blank_picture_gives_a_black_image() -> None:
    assert to_fashion_mnist(Image.new("RGB", (50, 40), "white")).max() == 0


def test_an_unreadable_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = tmp_path / "truncated.jpg"
    rgb(DARK_ON_WHITE).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:300])

    for path in (broken, truncated, tmp_path / "missing.png", tmp_path):
        with pytest.raises(DataError, match=re.escape(str(path))):
            read_picture(path)


def test_results_list_the_three_most_probable_classes() -> None:
    probabilities = np.array([0.15, 0, 0.061, 0, 0, 0, 0.712, 0, 0.077, 0], dtype=np.float32)

    result = describe("shirt.jpg", probabilities, CLASS_NAMES)

    assert result == {
        "image": "shirt.jpg",
        "class": "Shirt",
        "probability": pytest.approx(0.712),
        "top3": [
            {"class": "Shirt", "probability": pytest.approx(0.712)},
            {"class": "T-shirt/top", "probability": pytest.approx(0.15)},
            {"class": "Bag", "probability": pytest.approx(0.077)},
        ],
    }
    assert format_result(result) == "shirt.jpg: Shirt 71.2% (then T-shirt/top 15.0%, Bag 7.7%)"
    assert len(top_classes(probabilities, CLASS_NAMES, count=5)) == 5


def test_comparison_counts_the_same_classes_and_the_largest_difference() -> None:
    expected = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    actual = np.array([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])

    agreement, difference = compare_predictions(expected, actual)

    assert agreement == 0.75
    assert difference == pytest.approx(0.2)


def test_a_missing_model_fails_before_reading_anything(tmp_path: Path) -> None:
    result = run_module("fmnist.predict", "--model", tmp_path / "none.keras", "shirt.jpg")

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"predict: error: {tmp_path / 'none.keras'}: not found (run the pipeline first: make repro)"
    ]


def test_export_without_a_test_split_fails_in_one_line(tmp_path: Path) -> None:
    result = run_module(
        "fmnist.export", "--data", tmp_path / "test.npz", "--out", tmp_path / "m.tflite"
    )

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "test.npz: not found" in result.stderr
    assert not (tmp_path / "m.tflite").exists()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained dense network saved as the train stage saves it: enough to run predict."""
    from fmnist.model import build_model, save_model

    path = tmp_path_factory.mktemp("small-model") / "model.keras"
    save_model(build_model(make_train_params(model="dense", hidden_units=[8])), path)
    return path


def test_the_class_names_travel_inside_the_model_file(small_model: Path, tmp_path: Path) -> None:
    from fmnist.model import read_class_names

    assert read_class_names(small_model) == list(CLASS_NAMES)

    older = tmp_path / "older.keras"
    with zipfile.ZipFile(small_model) as source, zipfile.ZipFile(older, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "metadata.json":
                data = json.dumps({"keras_version": "3.15.1"}).encode()
            target.writestr(info, data)
    with pytest.raises(DataError, match="retrain with `dvc repro train`"):
        read_class_names(older)
    with pytest.raises(DataError, match="not found"):
        read_class_names(tmp_path / "missing.keras")


def test_json_has_one_object_per_picture_in_input_order(
    small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    pictures = {
        "rgb.png": rgb(DARK_ON_WHITE),
        "gray.jpg": Image.fromarray(DARK_ON_WHITE),
        "alpha.png": Image.fromarray(DARK_ON_WHITE).convert("LA"),
    }
    for name, picture in pictures.items():
        picture.save(tmp_path / name)
    names = [str(tmp_path / name) for name in pictures]

    monkeypatch.setattr(sys, "argv", ["predict", "--model", str(small_model), "--json", *names])

    predict_main()  # in this process: TensorFlow is loaded already

    objects = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in objects] == names
    for entry in objects:
        assert list(entry) == ["image", "class", "probability", "top3"]
        assert [list(top) for top in entry["top3"]] == [["class", "probability"]] * 3
        assert entry["top3"][0] == {"class": entry["class"], "probability": entry["probability"]}
        assert {top["class"] for top in entry["top3"]} <= set(CLASS_NAMES)
        probabilities = [top["probability"] for top in entry["top3"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(isinstance(value, float) for value in probabilities)


def test_a_broken_file_is_named_and_the_others_still_classified(
    small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    first, second, broken = tmp_path / "first.png", tmp_path / "second.jpg", tmp_path / "bad.png"
    rgb(DARK_ON_WHITE).save(first)
    rgb(DARK_ON_WHITE).save(second)
    broken.write_bytes(b"not a picture")

    arguments = [str(path) for path in (first, broken, second)]
    monkeypatch.setattr(sys, "argv", ["predict", "--model", str(small_model), *arguments])

    with pytest.raises(PipelineError) as raised:
        predict_main()

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(first), str(second)]
    names = "|".join(re.escape(name) for name in CLASS_NAMES)
    percent = r"\d+\.\d%"
    pattern = rf"({names}) {percent} \(then ({names}) {percent}, ({names}) {percent}\)"
    assert re.fullmatch(rf"{re.escape(str(first))}: {pattern}", lines[0]), lines[0]
    assert str(raised.value).splitlines() == [
        f"{broken}: not a picture that can be read (cannot identify image file {str(broken)!r})"
    ]


# --- hostile pictures, models and exports ------------------------------------------------
# Each runs under the bound it promises: a regression fails instead of swapping.
ADDRESS_SPACE = 1536 * 2**20


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def declaring_size(file_format: str, mode: str, width: int, height: int) -> bytes:
    """A tiny picture whose header declares ``width`` x ``height``: a decompression bomb's."""
    buffer = io.BytesIO()
    Image.new(mode, (16, 16)).save(buffer, file_format)
    data = bytearray(buffer.getvalue())
    if file_format == "PNG":  # IHDR's width and height, then its checksum
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    else:  # JPEG's start of frame: the marker, its length, the precision, then height and width
        at = data.index(b"\xff\xc0") + 5
        data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def test_pictures_declaring_too_many_pixels_are_refused_before_decoding(
    small_model: Path, tmp_path: Path
) -> None:
    bombs = {
        "rgba.png": declaring_size("PNG", "RGBA", 13_000, 13_000),
        "sixteen-bit.png": declaring_size("PNG", "I;16", 13_000, 13_000),
        "photo.jpg": declaring_size("JPEG", "RGB", 13_000, 13_000),
    }
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)

    result = subprocess.run(
        [sys.executable, "-m", "fmnist.predict", "--model", small_model, *bombs],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_address_space,
    )

    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"predict: error: {name}: 13,000x13,000 pixels, more than 50 megapixels; not decoded"
        for name in bombs
    ]


def test_a_fifo_a_directory_and_odd_names_are_named_and_good_pictures_still_classified(
    small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    rgb(DARK_ON_WHITE).save(tmp_path / "good.png")
    odd = "odd\nname\x1b[31m.png"
    (tmp_path / odd).write_bytes((tmp_path / "good.png").read_bytes())
    (tmp_path / "-dash.png").write_bytes((tmp_path / "good.png").read_bytes())
    os.mkfifo(tmp_path / "fifo.png")  # nobody writes to it: opening it would block for ever
    (tmp_path / "folder.png").mkdir()
    arguments = ["good.png", "fifo.png", "folder.png", odd, "--", "-dash.png"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["predict", "--model", str(small_model), *arguments])

    def timed_out(number: int, frame: object) -> None:
        raise TimeoutError("predict blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(60)  # a blocked open() is interrupted, and the test fails instead of hanging
    try:
        with pytest.raises(PipelineError) as raised:
            predict_main()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "good.png",
        r"odd\nname\x1b[31m.png",
        "-dash.png",
    ]
    assert str(raised.value).splitlines() == [
        "fifo.png: a FIFO, not a regular file; not read",
        "folder.png: a directory, not a file",
    ]


def test_a_name_that_looks_like_an_option_gets_a_hint(
    small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["predict", "--model", str(small_model), "-dash.png"])

    with pytest.raises(PipelineError, match=r"goes after --: python -m fmnist.predict -- -dash"):
        predict_main()


def inflating_archive(model: Path, target: Path, member: str, size: int) -> Path:
    """A copy of the archive ``model`` whose ``member`` inflates to ``size`` bytes of valid JSON
    (a few kilobytes on disk)."""
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(target, "w") as bomb:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == member:
                data += b" " * (size - len(data))
            bomb.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return target


@pytest.mark.parametrize("member", ["metadata.json", "config.json"])
def test_a_model_archive_that_inflates_past_its_bounds_is_refused_before_reading(
    small_model: Path, tmp_path: Path, member: str
) -> None:
    from fmnist.model import load_model

    bomb = inflating_archive(small_model, tmp_path / "bomb.keras", member, 64 * 2**20)
    rgb(DARK_ON_WHITE).save(tmp_path / "good.png")
    refusal = f"{bomb}: {member} inflates to 67,108,864 bytes; a model of this pipeline holds"

    result = subprocess.run(
        [sys.executable, "-m", "fmnist.predict", "--model", bomb, tmp_path / "good.png"],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_address_space,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"predict: error: {refusal} at most 1,048,576 bytes; not read"
    ]
    with pytest.raises(DataError, match=re.escape(refusal)):
        load_model(bomb)  # export's and evaluate's way in


def test_a_model_with_code_in_it_is_refused(tmp_path: Path) -> None:
    import keras

    from fmnist.model import load_model

    inputs = keras.Input((28, 28), dtype="uint8")
    outputs = keras.layers.Lambda(lambda x: keras.ops.sum(x, axis=2))(
        keras.layers.Rescaling(1 / 255)(inputs)
    )
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(10)(outputs)).save(path)

    with pytest.raises(DataError, match=r"not a loadable Keras model .*Lambda"):
        load_model(path)


def test_temporary_files_live_beside_the_output_and_go_however_the_block_ends(
    tmp_path: Path,
) -> None:
    out = tmp_path / "models" / "model.tflite"

    with pytest.raises(KeyboardInterrupt), temporary_files_beside(out) as directory:
        made = Path(tempfile.mkdtemp())
        assert made.parent == directory and directory.parent == out.parent
        assert directory.name.startswith(".model.tflite.")
        raise KeyboardInterrupt  # what run_stage makes of Ctrl-C and SIGTERM

    assert not directory.exists() and list(out.parent.iterdir()) == []
    assert Path(tempfile.mkdtemp()).parent != directory


def test_an_export_that_cannot_write_the_labels_changes_neither_file(
    small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmnist.export import main as export_main

    split = tmp_path / "test.npz"
    save_split(split, Split(np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)))
    out = tmp_path / "model.tflite"
    out.write_bytes(b"old model")
    (tmp_path / "model.labels.txt").write_text("old labels\n")

    def full_disk(*arguments: object, **options: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)  # only the labels are written as text
    arguments = ["export", "--model", small_model, "--data", split, "--out", out]
    monkeypatch.setattr(sys, "argv", [str(argument) for argument in arguments])

    with pytest.raises(PipelineError, match="No space left on device"):
        export_main()

    monkeypatch.undo()
    assert out.read_bytes() == b"old model"
    assert (tmp_path / "model.labels.txt").read_text() == "old labels\n"
    # No model.onnx, and nothing temporary, was left either.
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.labels.txt",
        "model.tflite",
        "test.npz",
    ]


def test_a_bfloat16_model_is_exported_computing_in_float32(tmp_path: Path) -> None:
    from fmnist.export import RUNNERS, computing_in_float32, export_files
    from fmnist.model import build_model

    model = build_model(make_train_params(model="dense", hidden_units=[8], precision="bfloat16"))
    images = np.random.default_rng(3).integers(0, 256, (20, 28, 28), dtype=np.uint8)

    copy = computing_in_float32(model)
    files = export_files(model, tmp_path)

    assert copy.get_layer("dense_1").compute_dtype == "float32"
    for original, copied in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(original, copied)
    for runtime, path in files.items():
        probabilities = RUNNERS[runtime](path, images)
        np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=0.01)
    assert computing_in_float32(copy) is copy


def make_photo(image: np.ndarray, generator: np.random.Generator) -> Image.Image:
    """A 28x28 test image as a person would photograph the item: dark on a light, slightly
    tinted background, ten times larger, RGB, somewhere off-centre on a larger canvas."""
    item = Image.fromarray(image).resize((280, 280), Image.Resampling.BILINEAR)
    width, height = (int(side) for side in generator.integers(340, 520, 2))
    left, top = int(generator.integers(0, width - 280)), int(generator.integers(0, height - 280))
    darkness = np.zeros((height, width), dtype=np.float32)
    darkness[top : top + 280, left : left + 280] = np.asarray(item, dtype=np.float32) / 255
    background = generator.integers(215, 256, 3).astype(np.float32)
    pixels = background * (1 - darkness[..., None])
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split]:
    """A dense network trained briefly on 20,000 real training images, and the real test set."""
    debian = debian_data()
    from fmnist.model import save_model, seed_everything, train_model

    train, test = (
        Split(*read_split(debian / f"{images}.gz", debian / f"{labels}.gz"))
        for images, labels in RAW_FILES.values()
    )
    params = make_train_params(model="dense", hidden_units=[128], dropout=0.0, epochs=3)
    seed_everything(42)
    model, _ = train_model(
        params,
        Split(train.images[:20_000], train.labels[:20_000]),
        Split(train.images[50_000:52_000], train.labels[50_000:52_000]),
    )
    path = tmp_path_factory.mktemp("trained-model") / "model.keras"
    save_model(model, path)
    return path, test


@pytest.mark.slow
def test_photographed_items_are_classified_about_as_well_as_the_test_set(
    trained_model: tuple[Path, Split], tmp_path: Path
) -> None:
    from fmnist.model import load_model, predict_probabilities

    model_path, test = trained_model
    generator = np.random.default_rng(7)
    chosen = generator.choice(len(test.labels), PHOTO_COUNT, replace=False)
    images, labels = test.images[chosen], test.labels[chosen]
    paths = {"JPEG": [], "PNG": []}
    for index, image in enumerate(images):
        photo = make_photo(image, generator)
        for file_format, suffix in (("JPEG", "jpg"), ("PNG", "png")):
            path = tmp_path / f"photo-{index:03d}.{suffix}"
            photo.save(path, file_format, **({"quality": 90} if file_format == "JPEG" else {}))
            paths[file_format].append(str(path))

    model = load_model(model_path)
    pictures = np.stack([read_picture(path) for path in paths["JPEG"] + paths["PNG"]])

    predicted = predict_probabilities(model, pictures).argmax(1)
    raw = float((predict_probabilities(model, images).argmax(1) == labels).mean())
    jpeg = float((np.array(predicted[:PHOTO_COUNT]) == labels).mean())
    png = float((np.array(predicted[PHOTO_COUNT:]) == labels).mean())
    print(f"accuracy on {PHOTO_COUNT} test images: raw {raw:.4f}, JPEG {jpeg:.4f}, PNG {png:.4f}")
    assert jpeg >= raw - 0.05 and png >= raw - 0.05, (raw, jpeg, png)


@pytest.mark.slow
def test_the_litert_and_onnx_exports_agree_with_keras(
    trained_model: tuple[Path, Split], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    model_path, test = trained_model
    split = tmp_path / "test.npz"
    save_split(split, test)  # the whole test set, as make export checks it
    out = tmp_path / "models" / "model.tflite"

    result = run_module("fmnist.export", "--model", model_path, "--data", split, "--out", out)

    assert result.returncode == 0, result.stderr
    for runtime in ("LiteRT", "ONNX Runtime"):
        agreement = re.search(
            rf"{runtime}: (\d+\.\d\d)% of 10,000 test images get the same class; largest "
            r"probability difference (\S+)",
            result.stderr,
        )
        assert agreement, result.stderr
        print(agreement.group(0))
        assert float(agreement.group(1)) >= 99.9 and float(agreement.group(2)) <= 1e-5
    assert out.read_bytes()[4:8] == b"TFL3"  # the LiteRT flat buffer's identifier
    [onnx_input] = onnxruntime.InferenceSession(out.with_suffix(".onnx")).get_inputs()
    assert (onnx_input.name, onnx_input.type, onnx_input.shape[1:]) == (
        "image",
        "tensor(uint8)",
        [28, 28],
    )
    assert out.with_suffix(".labels.txt").read_text().splitlines() == list(CLASS_NAMES)

    # docs/using-the-model.md's snippets for each runtime, as written, on a test image.
    from fmnist.model import load_model, predict_probabilities

    image = test.images[0]
    expected = predict_probabilities(load_model(model_path), image[None])[0]
    text = (REPOSITORY_ROOT / "docs" / "using-the-model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    snippets = [block for block in blocks if re.search(r"models/model\.(tflite|onnx)", block)]
    assert len(snippets) == 2
    monkeypatch.chdir(tmp_path)
    for snippet in snippets:
        namespace = {"image": image}
        exec(snippet, namespace)  # the documented code, run as a reader would
        np.testing.assert_allclose(namespace["probabilities"], expected, atol=1e-5)
