"""The pipeline's entry points, one per DVC stage, run as ``python -m stages.<name>``."""

import atexit
import logging
import os
import re
import sys
import threading
from typing import NoReturn

# Keep TensorFlow's C++ start-up chatter out of the stage logs (errors still show). This runs
# before a stage module's own imports, some of which (dvclive's Keras callback) load TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# What TensorFlow's C++ code prints on every start whatever TF_CPP_MIN_LOG_LEVEL says (it logs
# before absl's logging is set up): nothing a user can act on.
TENSORFLOW_NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\)|I0000 |"
    rb"To enable the following instructions|E0000 .*NodeDef mentions attribute"
)
_noise_filter: list = []


def filter_tensorflow_noise() -> None:
    """Drop TensorFlow's start-up lines from this process's stderr: descriptor 2 becomes a pipe
    whose thread copies every other line; at exit it drains the pipe, so no line is lost."""
    if _noise_filter:
        return
    sys.stderr.flush()
    stderr_copy, pump_output = os.dup(2), os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(pump_output, "wb", buffering=0) as out:
            for line in pipe:
                if not TENSORFLOW_NOISE.match(line):
                    out.write(line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    _noise_filter.append((thread, stderr_copy))
    atexit.register(_stop_filter)


def _stop_filter() -> None:
    """Put the real stderr back and let the filter copy what is left in the pipe."""
    if not _noise_filter:
        return
    thread, stderr_copy = _noise_filter.pop()
    sys.stderr.flush()
    os.dup2(stderr_copy, 2)  # closes the pipe's last write end: the thread reads to its end
    os.close(stderr_copy)
    thread.join(timeout=5)


def exit_now() -> NoReturn:
    """End a stage that succeeded at once, with status 0: with TensorFlow loaded, the
    interpreter's teardown, which has nothing left to do, takes seconds."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    _stop_filter()
    os._exit(0)
