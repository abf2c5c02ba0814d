"""Classify your own pictures with the trained model (docs/using-the-model.md).

``python -m fmnist.predict [--model models/model.keras] [--json] IMAGE...`` turns any picture
Pillow reads into a Fashion-MNIST image the way Zalando made the data set from product photos,
and prints its class and probability with the next two, or a JSON array. A picture that cannot
be read, is not a regular file or declares more than MAX_PIXELS gets one error line naming it;
the others are still classified, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from fmnist.cli import QUOTE_LIMIT, printable, run_stage
from fmnist.dataset import CHANNELS, IMAGE_SIZE
from fmnist.errors import DataError, PipelineError
from fmnist.files import check_model_archive, require_regular_file

log = logging.getLogger("predict")

MODEL_FILE = "models/model.keras"
# A border brighter than this (0-255) is a light background: the picture is inverted, because
# Fashion-MNIST's items are light on black.
LIGHT_BACKGROUND = 127
# How many pixels wide the frame is whose median gives the background's grey.
BORDER_WIDTH = 2
# Pixels more than this above the background (10% of 255) belong to the item: enough to pass
# over JPEG noise and faint shadows, little enough to keep the item's pale parts.
ITEM_THRESHOLD = 26
# Larger pictures are shrunk to this many pixels a side before the work: the item keeps many
# times the 28 pixels it ends with, and a 12-megapixel photo takes a fraction of the time.
WORKING_SIZE = 1024
# The most pixels a picture's header may declare: a 50-megapixel camera's photo (200 MB decoded
# as RGBA), well under Pillow's own limit of 89. JPEGs are then decoded at a reduced scale.
MAX_PIXELS = 50_000_000
# Pillow's 16-bit grayscale modes, scaled down to 8 bits (converting would clip them at 255).
WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L")
TOP_COUNT = 3


def _gray_pixels(image: Image.Image) -> np.ndarray:
    """The picture as float32 grays 0-255, upright, transparent parts white."""
    image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with a tag
    if image.mode in WIDE_GRAY_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        scale = 255 / 65535 if pixels.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # White is the background of the product photos Zalando started from: a cut-out item
        # is then treated exactly like one photographed on white.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    image = image.convert("L")
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _item_box(pixels: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the item: pixels above ITEM_THRESHOLD, the whole picture if none."""
    mask = Image.fromarray(((pixels > ITEM_THRESHOLD) * 255).astype(np.uint8))
    # Eroding by one pixel removes lone specks (dust, noise) that would stretch the box.
    core = np.asarray(mask.filter(ImageFilter.MinFilter(3))) > 0
    rows, columns = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    if not len(rows):
        return slice(None), slice(None)
    # Grow the box back by the pixel that the erosion took off each side.
    return (
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(columns[0] - 1, 0), columns[-1] + 2),
    )


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """A picture of one item as a Fashion-MNIST image: uint8 ``(28, 28)``, light on black.

    The steps of Zalando's conversion: grayscale; a light background (judged by the median of
    the outer frame) inverted, and the background's grey made black; cropped to the item;
    padded with black to a square with the item centred; the longest side resized to 28.
    """
    if min(image.size) == 0:
        raise ValueError("the picture has no pixels")
    pixels = _gray_pixels(image)
    border = np.concatenate(
        [
            pixels[:BORDER_WIDTH].ravel(),
            pixels[-BORDER_WIDTH:].ravel(),
            pixels[:, :BORDER_WIDTH].ravel(),
            pixels[:, -BORDER_WIDTH:].ravel(),
        ]
    )
    background = float(np.median(border))
    if background > LIGHT_BACKGROUND:
        pixels, background = 255 - pixels, 255 - background
    # Fashion-MNIST's background is 0: a photo's grey or tinted backdrop is moved there, and
    # the rest stretched so that the brightest possible pixel stays 255.
    pixels = np.clip((pixels - background) * (255 / (255 - background)), 0, 255)
    item = pixels[_item_box(pixels)]
    height, width = item.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = item
    resized = Image.fromarray(square).resize(IMAGE_SIZE[::-1], Image.Resampling.LANCZOS)
    # Lanczos overshoots a little at sharp edges.
    return np.clip(np.rint(np.asarray(resized)), 0, 255).astype(np.uint8)


def read_picture(path: str | os.PathLike[str]) -> np.ndarray:
    """The picture at ``path`` as a Fashion-MNIST image; DataError naming it if unreadable."""
    shown = printable(os.fspath(path))
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns past 89 megapixels: MAX_PIXELS, lower, is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(
                        f"{shown}: {image.width:,}x{image.height:,} pixels, more than "
                        f"{MAX_PIXELS / 1e6:.0f} megapixels; not decoded"
                    )
                image.draft(None, (WORKING_SIZE, WORKING_SIZE))  # a JPEG at 1/2 to 1/8 scale
                image.load()
                if CHANNELS == 1:
                    return to_fashion_mnist(image)
                # A colour data set's pictures are taken as they are, only resized.
                image = ImageOps.exif_transpose(image).convert("RGB")
                return np.asarray(image.resize(IMAGE_SIZE[::-1], Image.Resampling.LANCZOS))
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # Pillow reports a broken file as OSError, ValueError or (for some formats) SyntaxError.
        reason = " ".join(str(error).split())[:QUOTE_LIMIT] or type(error).__name__
        raise DataError(f"{shown}: not a picture that can be read ({printable(reason)})") from None


def top_classes(
    probabilities: np.ndarray, class_names: Sequence[str], count: int = TOP_COUNT
) -> list[dict[str, str | float]]:
    """The ``count`` most probable classes, most probable first, with their probabilities."""
    order = np.argsort(-probabilities, kind="stable")[:count]
    return [
        {"class": class_names[index], "probability": round(float(probabilities[index]), 6)}
        for index in order
    ]


def describe(image: str, probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    """The JSON object of one picture: its class and probability, and the top three."""
    top = top_classes(probabilities, class_names)
    return {
        "image": image,
        "class": top[0]["class"],
        "probability": top[0]["probability"],
        "top3": top,
    }


def format_result(result: dict) -> str:
    """``shirt.jpg: Shirt 71.2% (then T-shirt/top 15.0%, Pullover 6.1%)``"""
    first, *others = result["top3"]
    following = ", ".join(f"{other['class']} {other['probability']:.1%}" for other in others)
    top = f"{first['class']} {first['probability']:.1%}"
    return f"{printable(result['image'])}: {top} (then {following})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="pictures to classify")
    parser.add_argument(
        "--model", type=Path, default=Path(MODEL_FILE), help=f"trained model ({MODEL_FILE})"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    args, unknown = parser.parse_known_args()
    if unknown:
        raise PipelineError(
            f"unknown option {printable(unknown[0])}; a picture whose name starts with - goes "
            f"after --: python -m fmnist.predict -- {printable(unknown[0])}"
        )
    if not args.images:
        parser.error("name at least one picture")
    check_model_archive(args.model)

    names, images, problems = [], [], []
    for name in args.images:
        try:
            images.append(read_picture(name))
            names.append(name)
        except DataError as error:
            problems.append(str(error))

    results = []
    if images:
        # TensorFlow takes seconds to import: only once the arguments and pictures are checked.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from fmnist.model import load_model, predict_probabilities, read_class_names

        class_names = read_class_names(args.model)
        probabilities = predict_probabilities(load_model(args.model), np.stack(images))
        results = [
            describe(name, row, class_names) for name, row in zip(names, probabilities, strict=True)
        ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(format_result(result))
    if problems:
        raise PipelineError("\n".join(problems))


if __name__ == "__main__":
    run_stage("predict", main)
