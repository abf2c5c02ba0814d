"""The data set, in one place: a fork for other images in IDX form edits this file and
params.yaml's fetch.sources, nothing else (docs/your-own-data.md)."""

NAME = "Fashion-MNIST"
# Where the model card (reports/model-card.md) says the data set is: its Hugging Face Hub id.
HUB_DATASET = "zalando-datasets/fashion_mnist"
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pairs of classes that the confused-pairs plot always lists, both ways: the study's known
# weak spot, shirts told apart badly from T-shirts, pullovers and coats.
WATCHED_PAIRS: tuple[tuple[str, str], ...] = (
    ("Shirt", "T-shirt/top"),
    ("Shirt", "Pullover"),
    ("Shirt", "Coat"),
)
# Height and width of every image, and its colour channels (1: grayscale, 3: RGB).
IMAGE_SIZE = (28, 28)
CHANNELS = 1
# The files as fetch writes them, decompressed: split -> (images, labels).
RAW_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Size in bytes and SHA-256 of each decompressed file, as published. Fetch checks both and never
# inflates a download past its size, so no source can send a decompression bomb.
CHECKSUMS: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (
        47_040_016,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels-idx1-ubyte": (
        60_008,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "t10k-images-idx3-ubyte": (
        7_840_016,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "t10k-labels-idx1-ubyte": (
        10_008,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}

NUM_CLASSES = len(CLASS_NAMES)
# One image as the IDX files, the splits and the model's input hold it: (28, 28) for grayscale.
IMAGE_SHAPE = IMAGE_SIZE if CHANNELS == 1 else (*IMAGE_SIZE, CHANNELS)
