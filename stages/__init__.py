"""The pipeline's entry points, one per DVC stage, run as ``python -m stages.<name>``."""

import logging
import os
import sys
from typing import NoReturn

# Keep TensorFlow's C++ start-up chatter out of the stage logs (errors still show). This runs
# before a stage module's own imports, some of which (dvclive's Keras callback) load TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def exit_now() -> NoReturn:
    """End a stage that succeeded at once, with status 0, skipping the interpreter's teardown.

    Every output is written, closed and in place by then, so the teardown has nothing left to
    do, yet with TensorFlow or scikit-learn loaded it takes from half a second to several
    seconds: on every run, and longer than some stages' own work.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
