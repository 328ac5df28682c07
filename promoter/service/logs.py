"""Structured JSON logs for the long-running service, with secrets redacted.

One JSON object per line on stderr: ``ts``, ``level``, ``logger``, ``msg`` and the fields passed
as ``extra={"fields": {...}}`` (or through ``log()``). Every configured secret value is replaced
by ``***`` wherever it appears, and fields whose names look like secrets are masked, so a
secret cannot leak even through an exception message or a header dump.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from promoter.core.masking import without_credential_shapes
from promoter.redaction import MASK, Redactor, without_url_userinfo

_SECRET_WORDS = ("secret", "token", "password", "signature", "authorization")


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(mask_fields(fields))
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        # Credentials told by their shape (a token a server issued for one request, quoted
        # in its error body) in each value as written, not in the serialised line: the rules
        # read quotes, which JSON escapes, and a mask must not swallow the line's own quotes.
        entry = _shapes_masked(entry)
        # A URL's userinfo is a credential whoever quoted the URL (git.remote, a registry).
        return without_url_userinfo(self.redact(json.dumps(entry, default=str,
                                                           ensure_ascii=False)))


def _shapes_masked(value: Any) -> Any:
    if isinstance(value, str):
        return without_credential_shapes(value)
    if isinstance(value, Mapping):
        return {key: _shapes_masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shapes_masked(item) for item in value]
    return value if isinstance(value, int | float | bool | None) else \
        without_credential_shapes(str(value))


def mask_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    masked: dict[str, Any] = {}
    for key, value in fields.items():
        if _secret_named(key):
            masked[key] = MASK
        elif isinstance(value, Mapping):
            masked[key] = mask_fields(value)
        else:
            masked[key] = value
    return masked


@functools.lru_cache(maxsize=1024)
def _secret_named(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def configure(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Route promoter's and uvicorn's loggers to one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # we log each delivery ourselves


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})


class OncePer:
    """Whether a repeated message is due again: at most once per ``seconds`` for each key, so
    a misconfiguration that every request meets is said in the log, not repeated per request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> bool:
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self._seconds:
                return False
            self._last[key] = now
            return True
