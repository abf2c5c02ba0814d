"""Fashion-MNIST pipeline: the logic behind the DVC stages in ``stages/``."""
