"""What every stage entry point shares: logging set-up and turning errors into exit codes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from fmnist.errors import PipelineError


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a PipelineError ends it with its message and exit status 1."""
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    log = logging.getLogger(name)
    started = time.perf_counter()
    try:
        main()
    except PipelineError as error:
        for line in str(error).splitlines():
            log.error("error: %s", line)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("interrupted; outputs written so far are complete, the rest are unchanged")
        sys.exit(130)
    log.info("done in %.1f s", time.perf_counter() - started)
