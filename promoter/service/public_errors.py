"""What an HTTP answer may say about a failure: its kind, never where things are.

Webhook answers (and /readyz) go to whoever sent the request. A state database's driver text
names its host and user, an OSError its file: the kind of failure is enough for a sender to
retry, and the whole story goes to promoter's own log.
"""

from __future__ import annotations

import errno
import re
import sqlite3

from promoter.errors import PromoterError, TransientError

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/[^\s'\"()<>,;]+")
_MAX_CAUSES = 8


def public_reason(exc: BaseException) -> str:
    """Why something failed, fit for an unauthenticated answer: no filesystem paths, no state
    database address."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, 'error')}: {exc.strerror or 'failed'}"
    cause = _state_cause(exc) if isinstance(exc, TransientError) else None
    if cause is not None and type(cause).__module__.startswith("psycopg"):
        # The driver's text may name the database host: the kind of failure is enough here.
        return f"the state database is unusable ({type(cause).__name__})"
    if cause is not None:
        return public_reason(cause)  # the queue's own message names its file
    text = exc.message if isinstance(exc, PromoterError) else str(exc) or type(exc).__name__
    return _ABSOLUTE_PATH.sub("<path>", text)[:200]


def _state_cause(exc: BaseException) -> BaseException | None:
    """The storage error behind ``exc``, however many wrappers deep (the queue's writer wraps
    the backend's TransientError, which wraps the driver's error)."""
    cause = exc.__cause__
    for _ in range(_MAX_CAUSES):
        if cause is None:
            return None
        if isinstance(cause, OSError | sqlite3.Error) or \
                type(cause).__module__.startswith("psycopg"):
            return cause
        cause = cause.__cause__
    return None
