"""Input a format reader cannot read: the dead-letter record, the one
"cannot open" dead letter (`try_open`), the errors a damaged compressed stream
raises, and splitting that falls back to a whole read.

A bad record or file never raises out of a reader and never disappears: it
becomes a `DeadLetter` with its file, its place in the file and the reason.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

# Errors a damaged compressed stream raises while being read: from
# `pipeline.core.io.open_input`, EOFError (truncated) or OSError (corrupt: a bad
# CRC, a corrupt bzip2/xz block), after every byte decoded before the damage.
# The rest of the file cannot be trusted.
STREAM_ERRORS = (OSError, EOFError, zlib.error, ValueError)

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeadLetter(NamedTuple):
    """A record that could not be parsed: its file, native id or offset, and why."""

    source: str
    path: str
    record: str
    reason: str


def try_open(source: str, path: str, open_it: Callable[..., T], *args: Any, **kw: Any) -> T | DeadLetter:
    """`open_it(path, *args, **kw)`, or, where the file cannot be opened (missing,
    unreadable, an unknown compression), the DeadLetter (record "file") that
    says so: the caller yields it and reads nothing more of the file."""
    try:
        return open_it(path, *args, **kw)
    except (OSError, ValueError) as e:
        return DeadLetter(source, path, "file", f"cannot open: {type(e).__name__}: {e}")


def read_whole_on_error(spans_of: Callable[..., list]) -> Callable[..., list]:
    """A spans function that gives [] (read whole) where the file cannot be
    read or parsed: the job's split step must not fail, and the reader then
    reports the file as a dead letter."""

    @functools.wraps(spans_of)
    def spans(path: str, *args: Any, **kw: Any) -> list:
        try:
            return spans_of(path, *args, **kw)
        except (OSError, EOFError, ValueError) as e:  # pyarrow's errors are these too
            log.warning("%s: not split, read whole: %s: %s", path, type(e).__name__, e)
            return []

    return spans
