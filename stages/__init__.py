"""The pipeline's entry points, one per DVC stage, run as ``python -m stages.<name>``."""

import os

# Keep TensorFlow's C++ start-up chatter out of the stage logs (errors still show). This runs
# before a stage module's own imports, some of which (dvclive's Keras callback) load TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
