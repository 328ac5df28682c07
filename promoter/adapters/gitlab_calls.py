"""How promoter talks to GitLab: retries, Retry-After, and errors translated at the boundary.

python-gitlab's own retries are switched off because they re-send a POST after a 5xx or a
dropped connection, which can create a commit twice. Here a read is retried; a rate-limited
request (429: GitLab refused it before doing anything) is re-sent after ``Retry-After``; any
other failed write raises ``OutcomeUnknown`` so the flow looks at the branch before writing again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gitlab
import requests

from promoter.errors import (
    AuthError,
    NotFoundError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)

T = TypeVar("T")
_NO_LIBRARY_RETRIES: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
ACCESS_HINT = (
    "set PROMOTER_GITLAB_TOKEN to a token with the api scope and at least Developer access to "
    "the GitOps project")


class NotFound(NotFoundError):
    """GitLab answered 404 (callers that expect it catch it; elsewhere the job is parked)."""


class Refused(PermanentError):
    """GitLab refused the request for good (4xx); ``status`` says how."""

    def __init__(self, message: str, status: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class RetryAfterMemory:
    """python-gitlab's exceptions drop response headers; a session hook keeps Retry-After."""

    def __init__(self) -> None:
        self._local = threading.local()

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.value = response.headers.get("Retry-After") if response.status_code == 429 \
            else None

    def take(self) -> float | None:
        value, self._local.value = getattr(self._local, "value", None), None
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:  # an HTTP date: rare on GitLab; fall back to our own backoff
            return None


class Caller:
    def __init__(self, memory: RetryAfterMemory, *, attempts: int = 4,
                 backoff_seconds: float = 0.5, max_wait_seconds: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._memory = memory
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_wait = max_wait_seconds
        self._sleep = sleep

    def read(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._run(what, call, args, kwargs, safe=True)

    def write(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._run(what, call, args, kwargs, safe=False)

    def _run(self, what: str, call: Callable[..., T], args: tuple[Any, ...],
             kwargs: dict[str, Any], *, safe: bool) -> T:
        for attempt in range(self._attempts):
            last = attempt + 1 == self._attempts
            try:
                return call(*args, **kwargs, **_NO_LIBRARY_RETRIES)
            except gitlab.GitlabAuthenticationError:
                raise AuthError(f"GitLab rejected the token while trying to {what} (401)",
                                hint=ACCESS_HINT) from None
            except gitlab.GitlabError as exc:
                status = exc.response_code or 0
                if status == 429:
                    wait = self._memory.take()
                    wait = wait if wait is not None else self._backoff * 2 ** attempt
                    if last or wait > self._max_wait:
                        raise TransientError(f"GitLab rate-limited the request to {what}",
                                             retry_after=wait) from None
                    self._sleep(wait)
                    continue
                if status not in _TRANSIENT_STATUS:
                    raise _translate(what, status, exc) from None
                if not safe:
                    raise OutcomeUnknown(f"GitLab answered {status} to {what}; "
                                         "checking what was applied before trying again") from None
                problem = f"GitLab answered {status}"
            except requests.exceptions.SSLError as exc:
                raise PermanentError(f"TLS verification failed talking to GitLab: {exc}",
                                     hint="fix the server certificate or trust its CA "
                                          "(REQUESTS_CA_BUNDLE)") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not safe:
                    raise OutcomeUnknown(f"no answer from GitLab to {what} "
                                         f"({type(exc).__name__}); checking what was applied "
                                         "before trying again") from None
                problem = f"no answer from GitLab ({type(exc).__name__})"
            if last:
                raise TransientError(f"could not {what}: {problem}",
                                     hint="GitLab looks unavailable; promoter retries the job")
            self._sleep(self._backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def _translate(what: str, status: int, exc: gitlab.GitlabError) -> Exception:
    message = f"GitLab refused to {what} ({status}): {exc.error_message}"
    if status == 404:
        return NotFound(message)
    if status == 403:
        return Refused(message, status, hint=ACCESS_HINT)
    if status == 409:
        # Someone changed the branch or MR between our look and our write: look again.
        return TransientError(message)
    text = str(exc.error_message)
    if status == 400 and "directory with this name already exists" in text:
        # Gitaly: a file path of the commit is a directory on the branch (or the other way
        # round). Looking again cannot fix that: the proposal itself clashes with the tree.
        return Refused(message, status, hint="a file promoter writes has the path of a "
                       "directory in the GitOps repository; move or remove that directory")
    if status == 400 and ("already exists" in text or "doesn't exist" in text):
        return TransientError(message + " (the branch changed while promoter was writing)")
    return Refused(message, status, hint="see GitLab's message above; the job is parked")
