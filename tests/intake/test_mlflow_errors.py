"""The one MLflow error translator: every MLflow call (registry reads, artifact downloads,
write-back, webhooks) maps the same failure to the same promoter error."""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos import databricks_pb2

from promoter.adapters.mlflow.errors import calling, translate
from promoter.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    PromoterError,
    TransientError,
)


def _http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def _mlflow(code: int, message: str = "failed") -> MlflowException:
    return MlflowException(message, error_code=code)


CASES: list[tuple[str, BaseException, type[PromoterError]]] = [
    # the server cannot be reached (MLflow's client wraps these in a generic MlflowException)
    ("connection refused", MlflowException(
        "API request to http://127.0.0.1:9/api/2.0/mlflow/registered-models/get failed with "
        "exception HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] "
        "Connection refused'))"), TransientError),
    ("client timeout", MlflowException(
        "API request to http://mlflow/api/2.0/mlflow/runs/get failed with timeout exception "
        "Read timed out."), TransientError),
    ("requests connection error", requests.ConnectionError("refused"), TransientError),
    ("requests timeout", requests.ReadTimeout("slow"), TransientError),
    ("socket error", ConnectionResetError(104, "reset"), TransientError),
    # 5xx and 429: the server is there but cannot answer now
    ("REST 500", RestException({"error_code": "INTERNAL_ERROR", "message": "db down"}),
     TransientError),
    ("REST 503", RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "later"}),
     TransientError),
    ("REST 429", RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}),
     TransientError),
    ("plain 429 from a proxy", _mlflow(databricks_pb2.RESOURCE_EXHAUSTED,
                                       "failed with error code 429 != 200"), TransientError),
    ("plain 502 from a proxy", _mlflow(databricks_pb2.TEMPORARILY_UNAVAILABLE, "bad gateway"),
     TransientError),
    ("artifact 503", _http_error(503), TransientError),
    ("artifact 429", _http_error(429, "7"), TransientError),
    # credentials
    ("REST 401", RestException({"error_code": "UNAUTHENTICATED", "message": "who?"}), AuthError),
    ("REST 403", RestException({"error_code": "PERMISSION_DENIED", "message": "no"}), AuthError),
    ("artifact 401", _http_error(401), AuthError),
    ("artifact 403", _http_error(403), AuthError),
    # the thing asked for is not there, or the request is wrong: retrying cannot help
    # MLflow's own "does not exist": the one answer that says the model or version is gone
    ("REST 404", RestException({"error_code": "RESOURCE_DOES_NOT_EXIST",
                                "message": "Model Version (name=m, version=99) not found"}),
     NotFoundError),
    # a 404 that is not MLflow's answer (a wrong path in the URI, a proxy): says nothing of m
    ("404 of a wrong path", MlflowException(
        "API request to endpoint /api/2.0/mlflow/registered-models/get failed with error code "
        "404 != 200. Response body: '<!doctype html>'",
        error_code=databricks_pb2.ENDPOINT_NOT_FOUND), PermanentError),
    ("REST 400", RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}),
     PermanentError),
    ("REST 409", RestException({"error_code": "RESOURCE_ALREADY_EXISTS", "message": "dup"}),
     PermanentError),
    ("artifact 404", _http_error(404), PermanentError),
    ("missing local file", FileNotFoundError(2, "No such file"), PermanentError),
]


@pytest.mark.parametrize(("failure", "expected"), [(exc, kind) for _, exc, kind in CASES],
                         ids=[name for name, _, _ in CASES])
def test_one_rule_for_every_mlflow_failure(failure: BaseException,
                                           expected: type[PromoterError]) -> None:
    error = translate(failure, "read 'm' version 99", "http://mlflow:5000")
    assert type(error) is expected
    assert error.message.startswith("cannot read 'm' version 99")
    assert error.hint


def _s3_answer(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")


def _stand_in(module: str, name: str, **attributes: object) -> BaseException:
    """An error of an optional storage client (not installed here), as it is told apart: by
    its class's module and name."""
    return type(name, (Exception,), {"__module__": module, **attributes})("failed")


STORE_CASES: list[tuple[str, BaseException, type[PromoterError]]] = [
    ("s3 no credentials", NoCredentialsError(), ConfigError),
    ("s3 partial credentials", PartialCredentialsError(provider="env", cred_var="secret"),
     ConfigError),
    ("s3 access denied", _s3_answer(403, "AccessDenied"), PermanentError),
    ("s3 bad key", _s3_answer(403, "InvalidAccessKeyId"), PermanentError),
    ("s3 throttled", _s3_answer(503, "SlowDown"), TransientError),
    ("s3 internal", _s3_answer(500, "InternalError"), TransientError),
    ("s3 no bucket", _s3_answer(404, "NoSuchBucket"), PermanentError),
    ("s3 unreachable", EndpointConnectionError(endpoint_url="https://s3"), TransientError),
    ("azure no credentials", _stand_in("azure.core.exceptions", "ClientAuthenticationError"),
     ConfigError),
    ("azure 403", _stand_in("azure.core.exceptions", "HttpResponseError", status_code=403),
     PermanentError),
    ("azure 503", _stand_in("azure.core.exceptions", "HttpResponseError", status_code=503),
     TransientError),
    ("google no credentials", _stand_in("google.auth.exceptions", "DefaultCredentialsError"),
     ConfigError),
    ("google 403", _stand_in("google.api_core.exceptions", "Forbidden", code=403),
     PermanentError),
    ("google 429", _stand_in("google.api_core.exceptions", "TooManyRequests", code=429),
     TransientError),
    # Credentials a provider failed to fetch (a metadata endpoint's timeout) come back.
    ("s3 credentials not fetched",
     CredentialRetrievalError(provider="container-role", error_msg="timed out"), TransientError),
    ("google refresh retryable", _stand_in("google.auth.exceptions", "RefreshError",
                                           retryable=True), TransientError),
    ("google refresh refused", _stand_in("google.auth.exceptions", "RefreshError",
                                         retryable=False), ConfigError),
]


def test_a_refresh_failing_on_the_metadata_servers_transport_is_retried() -> None:
    transport = _stand_in("google.auth.exceptions", "TransportError")
    refresh = _stand_in("google.auth.exceptions", "RefreshError")
    refresh.__cause__ = transport
    assert type(translate(refresh, "read gs://b/x", "http://mlflow:5000")) is TransientError


@pytest.mark.parametrize(("failure", "expected"), [(exc, kind) for _, exc, kind in STORE_CASES],
                         ids=[name for name, _, _ in STORE_CASES])
def test_artifact_store_failures_name_the_store(failure: BaseException,
                                                expected: type[PromoterError]) -> None:
    """The version's files in a cloud store read with promoter's own credentials: its
    client's failures are classified too, never left to end as "unexpected error"."""
    error = translate(failure, "list s3://bucket/x", "http://mlflow:5000")
    assert type(error) is expected
    assert error.message.startswith("cannot list s3://bucket/x: the artifact store")
    assert error.hint and (expected is TransientError or "credentials" in error.hint
                           or "source URI" in error.hint)


def test_retry_after_is_kept_when_the_answer_carries_it() -> None:
    error = translate(_http_error(429, "7"), "download", "http://mlflow:5000")
    assert isinstance(error, TransientError) and error.retry_after == 7.0
    error = translate(_http_error(503), "download", "http://mlflow:5000")
    assert isinstance(error, TransientError) and error.retry_after is None


def test_calling_translates_and_leaves_bugs_alone() -> None:
    def missing() -> None:
        raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "nope"})

    with pytest.raises(PermanentError, match="RESOURCE_DOES_NOT_EXIST: nope"):
        calling("read 'm'", "http://mlflow:5000", missing)
    already = TransientError("already translated")
    with pytest.raises(TransientError) as raised:
        calling("read 'm'", "http://mlflow:5000", lambda: (_ for _ in ()).throw(already))
    assert raised.value is already
    # A programming error is not an outage: it must surface, not become a retry.
    with pytest.raises(KeyError):
        calling("read 'm'", "http://mlflow:5000", lambda: {}["missing"])


def test_messages_name_the_server_without_its_credentials() -> None:
    from promoter.redaction import without_url_userinfo

    where = without_url_userinfo("https://alice:s3cret@mlflow.example:5000")
    error = translate(requests.ConnectionError("refused"), "reach the registry", where)
    assert "s3cret" not in str(error) and "***@mlflow.example:5000" in str(error)


@pytest.mark.parametrize("message", [
    "API request to https://promoter:hunter2-s3cret@mlflow.example.com/api/2.0/mlflow/"
    "model-versions/get failed with exception Exceeded 30 redirects.",
    "API request to https://promoter:hunter2-s3cret@mlflow.example.com/api/2.0/mlflow/runs/get "
    "failed with exception ('Connection broken: IncompleteRead(0 bytes read)')",
])
def test_mlflows_own_message_loses_the_credentials_it_quotes(message: str) -> None:
    """MLflow's client quotes the request URL, credentials included, in its message; the
    error (a job's reason, written back to MLflow and the audit) must not carry them."""
    error = translate(MlflowException(message, error_code=databricks_pb2.INTERNAL_ERROR),
                      "read 'm'", "https://***@mlflow.example.com")
    assert "hunter2-s3cret" not in str(error) and "promoter:" not in str(error)
    assert "https://***@mlflow.example.com/api/2.0" in str(error)


def test_a_response_body_echoing_the_authorization_header_loses_the_token() -> None:
    """A server or proxy answering 401 with the request's headers in its body: MLflow's
    client quotes the body, and the bearer token reached stderr, the job's reason, the audit
    trail and `serve`'s logs (MLFLOW_TRACKING_TOKEN is read by MLflow, never by promoter)."""
    body = 'Response body: \'you sent {"Authorization": "Bearer CANARY-mltok-1", "Host": "m"}\''
    error = translate(RestException({"error_code": "UNAUTHENTICATED", "message": body}),
                      "read 'm'", "http://127.0.0.1:18801")
    assert "CANARY" not in str(error) and '"Authorization": "***"' in str(error)
