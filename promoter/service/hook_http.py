"""The HTTP side shared by the GitLab and Argo CD hooks: their answers as responses.

Both senders retry a 5xx and neither retries a 4xx, so a hook answers 5xx exactly when coming
back later can help (promoter's dependency failed, or an earlier delivery is still being
handled), and then says when with Retry-After, as the MLflow intake does.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

RETRY_AFTER_SECONDS = 5


def respond(status: int, answer: dict[str, Any]) -> JSONResponse:
    """A hook's ``(status, json)`` answer; a 5xx carries Retry-After."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status >= 500 else None
    return JSONResponse(answer, status_code=status, headers=headers)
