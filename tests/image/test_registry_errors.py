"""Registry answers → promoter errors, quoting the registry's own messages without the
credentials a registry (or a proxy before it) may echo back."""

from __future__ import annotations

import httpx
import pytest

from promoter.adapters.oci_errors import registry_error
from promoter.errors import AuthError, PermanentError, TransientError


@pytest.mark.parametrize(("status", "kind"), [(401, AuthError), (403, PermanentError),
                                              (500, TransientError)])
def test_a_message_echoing_the_request_headers_loses_the_token(status: int, kind: type) -> None:
    """Token-service tokens change per request, so no configured value can mask them: a
    registry answering with the request's headers in its message put the bearer token into
    the error, and so into job reasons and the audit trail."""
    echoed = 'you sent {"Authorization": "Bearer CANARY-regtok-5", "User-Agent": "promoter"}'
    response = httpx.Response(status, json={"errors": [
        {"code": "DENIED", "message": f"denied: {echoed}"},
        {"code": "UNAUTHORIZED", "message": "Authorization: Basic cmVndXNlcjpDQU5BUlk="}]})
    error = registry_error("127.0.0.1:18806", response, "reading manifest m@sha256:0")
    assert isinstance(error, kind)
    said = f"{error.message} {error.hint}"
    assert "CANARY" not in said and "cmVndXNlcjpDQU5BUlk" not in said
    assert "DENIED" in said and '"Authorization": "***"' in said
