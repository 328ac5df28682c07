"""A refused or failed query quotes Prometheus' ``error``, never the credentials in it.

Thanos (and Prometheus over remote read) names the store that failed in the error of a 4xx/5xx
answer, and a store's URL can carry userinfo or an ``access_token=`` parameter. Answers come
from an httpx MockTransport: no real Prometheus or Thanos here can be made to fail against a
store URL with credentials.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from promoter.adapters.prometheus import PrometheusSource
from promoter.errors import PromoterError, TransientError, UserError

STORE = "https://reader:St0reP4ss@thanos-store.example/api/v1/read?access_token=tok123"
SECRETS = ("St0reP4ss", "tok123")
START = datetime.fromtimestamp(1_700_000_000, UTC)


def _failure(response: httpx.Response) -> PromoterError:
    source = PrometheusSource("http://prom.example:9090", client=httpx.Client(
        transport=httpx.MockTransport(lambda request: response)))
    with pytest.raises(PromoterError) as raised:
        source.query_range("up", START, START + timedelta(minutes=2), 60)
    return raised.value


@pytest.mark.parametrize(("status", "error_type", "kind"), [
    (400, "bad_data", UserError),
    (422, "execution", UserError),
    (503, "unavailable", TransientError)])
def test_the_error_field_of_a_refused_or_failed_query_is_quoted_masked(
        status: int, error_type: str, kind: type[PromoterError]) -> None:
    """Before, `promoter cost` printed the store URL with its password and token."""
    error = _failure(httpx.Response(status, json={
        "status": "error", "errorType": error_type,
        "error": f"remote read from {STORE} failed: 401 Unauthorized"}))
    assert isinstance(error, kind)
    text = f"{error} {getattr(error, 'hint', '')}"
    assert "thanos-store.example" in text          # still says which store failed
    for secret in SECRETS:
        assert secret not in text


def test_a_body_that_is_not_json_is_masked_before_it_is_cut() -> None:
    """A proxy's HTML error page: the first 200 characters are quoted. They were cut first
    and masked after, so a URL crossing the cut lost its ``@`` and its password's start was
    no longer seen as one."""
    page = "<html><body>" + "x" * 159 + f" upstream {STORE} refused</body></html>"
    assert page[:200].endswith("https://reader:St0r")   # the cut falls inside the password
    error = _failure(httpx.Response(502, text=page))
    assert isinstance(error, TransientError)
    assert "St0r" not in str(error)
