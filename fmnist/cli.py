"""What every stage entry point shares: logging set-up and turning errors into exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from fmnist.errors import PipelineError

# Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
DEBUG_VARIABLE = "FMNIST_DEBUG"
# An error message quotes at most this much of anything it did not write itself.
QUOTE_LIMIT = 200


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C, so clean-up code on the way out still runs."""


def _terminate(number: int, frame: FrameType | None) -> None:
    raise Terminated


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a PipelineError ends it with its message and exit status 1.

    Any other error ends it the same way, with one line naming its type and the start of its
    message; ``FMNIST_DEBUG=1`` shows the traceback instead. Ctrl-C (SIGINT) and SIGTERM end it
    with one line and the shell's status for the signal (130, 143), after every temporary file
    has been removed; no traceback either way.
    """
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    log = logging.getLogger(name)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    try:
        main()
    except PipelineError as error:
        for line in str(error).splitlines():
            log.error("error: %s", line)
        sys.exit(1)
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        log.error("error: %s (set %s=1 to see where)", summarize_error(error), DEBUG_VARIABLE)
        sys.exit(1)
    except KeyboardInterrupt as interrupt:
        received = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        log.error(
            "stopped by %s after %.1f s; outputs written so far are complete, the rest are "
            "unchanged",
            received.name,
            time.perf_counter() - started,
        )
        sys.exit(128 + received)
    log.info("done in %.1f s", time.perf_counter() - started)


def printable(text: str) -> str:
    """``text`` with control characters (a newline, a terminal escape) and undecodable bytes
    written as Python escapes: a file name can hold them, and must not split or colour a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def summarize_error(error: BaseException) -> str:
    """``Type: message`` on one line, the message cut to QUOTE_LIMIT characters: how every
    error quotes an exception it did not raise itself."""
    message = " ".join(str(error).split())
    if len(message) > QUOTE_LIMIT:
        message = f"{message[:QUOTE_LIMIT]}... ({len(message):,} characters)"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
