"""MLflow's failures → promoter errors: the one rule every MLflow call of promoter goes through.

- the server cannot be reached, the call timed out, HTTP 5xx, HTTP 429 (and MLflow's codes for
  them: TEMPORARILY_UNAVAILABLE, REQUEST_LIMIT_EXCEEDED, RESOURCE_EXHAUSTED, …) →
  ``TransientError``; the job queue retries it, waiting at least the server's Retry-After when
  the failure carries one (artifact downloads raise ``requests.HTTPError`` with the response;
  MLflow's REST errors carry no headers).
- 401 and 403 (UNAUTHENTICATED, PERMISSION_DENIED, CUSTOMER_UNAUTHORIZED) → ``AuthError``: the
  credentials must change before a retry can help, so the job is not retried.
- RESOURCE_DOES_NOT_EXIST → ``NotFoundError`` (a ``PermanentError``): MLflow itself says the
  model, version or alias is not there. Only that answer may be read as "gone": a bare 404
  (ENDPOINT_NOT_FOUND: a wrong path in the tracking URI, a proxy in front of MLflow) says
  nothing about the model, and `promoter gc` would remove live deployments on it.
- every other 4xx, ENDPOINT_NOT_FOUND included → ``PermanentError``.

A version's files may sit in a cloud store (s3://, wasbs://, gs://) that MLflow's client reads
directly, with promoter's own credentials, so the storage clients' failures come through here
too. They are told apart by class name and module, never imported (boto3, azure and google
are optional): no or unusable credentials → ``ConfigError``; access denied (403) →
``PermanentError``; throttling, 5xx or an unreachable endpoint → ``TransientError``; other 4xx
answers → ``PermanentError``. Every message names the store (``doing`` quotes its URI).

Registry reads, artifact downloads, write-back and webhook management all use ``calling`` so
the same MLflow answer never means "retry" in one place and "give up" in another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from promoter.core.masking import without_credentials
from promoter.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    PromoterError,
    TransientError,
)

T = TypeVar("T")

# MLflow's client wraps connection failures in a generic MlflowException (INTERNAL_ERROR, 500)
# whose text is all that tells them apart from a server-side failure.
_UNREACHABLE_SIGNS = ("Max retries exceeded", "Failed to establish a new connection",
                      "Connection refused", "Read timed out", "Connection aborted",
                      "timeout exception", "Name or service not known")
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
                    "DEADLINE_EXCEEDED", "INTERNAL_ERROR"}
_AUTH_CODES = {"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"}
_NOT_FOUND_CODE = "RESOURCE_DOES_NOT_EXIST"
# What MLflow's client reports for a 404 that is not MLflow's own JSON answer.
_NO_ENDPOINT_CODE = "ENDPOINT_NOT_FOUND"
_RETRY_HINT = "promoter retries; check that MLflow is up if this persists"
# Cloud storage clients (see the module docstring): their top-level package names and the
# class names (the error's own or a base class) that say what went wrong.
_STORE_LIBRARIES = ("botocore.", "boto3.", "azure.", "google.auth.", "google.api_core.",
                    "google.cloud.")
_STORE_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError",
                         "CredentialRetrievalError", "ClientAuthenticationError",
                         "DefaultCredentialsError", "RefreshError"}
# Credentials that a provider failed to fetch rather than found missing: botocore's
# CredentialRetrievalError (the container or Pod Identity endpoint timed out), google.auth's
# RefreshError when it says retryable or comes from a TransportError (the metadata server).
_STORE_CREDENTIALS_FETCH_FAILED = {"CredentialRetrievalError"}
_STORE_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                      "ConnectionClosedError", "ServiceRequestError", "ServiceResponseError",
                      "TransportError"}
_STORE_BUSY_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded",
                     "TooManyRequestsException", "RequestTimeout", "ServiceUnavailable",
                     "InternalError"}
_STORE_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                       "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                       "AuthorizationFailure", "AuthenticationFailed"}
_STORE_CREDENTIALS_HINT = ("check the artifact store's credentials in promoter's environment "
                           "(AWS_*, AZURE_*, GOOGLE_APPLICATION_CREDENTIALS or the cloud "
                           "identity it runs with) and what they may read")
_DOWN_HINT = "check MLFLOW_TRACKING_URI (or mlflow.tracking_uri) and that the MLflow server runs"


def calling(doing: str, where: str, action: Callable[[], T]) -> T:
    """``action()`` with every MLflow, HTTP and OS failure turned into a promoter error."""
    try:
        return action()
    except PromoterError:
        raise
    except Exception as exc:  # translate() re-raises what is not an I/O failure
        raise translate(exc, doing, where) from None


def translate(exc: BaseException, doing: str, where: str) -> PromoterError:
    """The promoter error for ``exc`` raised while ``doing`` against MLflow at ``where``.

    Raises ``exc`` itself when it is not an I/O failure (a bug must not become a retry).
    """
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return _from_mlflow(exc, doing, where)
    if (from_store := _from_storage_client(exc, doing)) is not None:
        return from_store
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        return _from_status(int(response.status_code), "", f"HTTP {response.status_code}",
                            doing, where, _retry_after(response.headers.get("Retry-After")))
    if isinstance(exc, FileNotFoundError):
        return PermanentError(f"cannot {doing}: no such file in the registry's artifacts",
                              hint="check that the model version's files were logged")
    if isinstance(exc, requests.ConnectionError | requests.Timeout | OSError | TimeoutError):
        return TransientError(f"cannot {doing}: MLflow at {where} is unreachable "
                              f"({type(exc).__name__})", hint=_DOWN_HINT)
    raise exc


def _from_mlflow(exc: Any, doing: str, where: str) -> PromoterError:
    code = str(getattr(exc, "error_code", "") or "")
    # MLflow's client quotes the request URL, credentials included, in its messages, and the
    # response body, which a server or proxy may fill with the request's Authorization.
    message = without_credentials(str(getattr(exc, "message", exc)))
    detail = message.splitlines()[0][:300] if message else code
    if any(sign in detail for sign in _UNREACHABLE_SIGNS):
        return TransientError(f"cannot {doing}: MLflow at {where} is unreachable",
                              hint=_DOWN_HINT)
    return _from_status(int(exc.get_http_status_code()), code, detail, doing, where, None)


def _from_status(status: int, code: str, detail: str, doing: str, where: str,
                 retry_after: float | None) -> PromoterError:
    said = f"{code}: {detail}" if code and not detail.startswith(code) else detail
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return TransientError(f"cannot {doing}: MLflow at {where} failed ({said})",
                              hint=_RETRY_HINT, retry_after=retry_after)
    if status in (401, 403) or code in _AUTH_CODES:
        return AuthError(f"cannot {doing}: MLflow at {where} refused the credentials ({said})",
                         hint="check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD "
                              "and the permissions they carry")
    if code == _NOT_FOUND_CODE:
        return NotFoundError(f"cannot {doing}: MLflow answered {said}",
                             hint="check the model name, version or alias in MLflow")
    if code == _NO_ENDPOINT_CODE:
        return PermanentError(f"cannot {doing}: MLflow at {where} has no such API endpoint "
                              f"({said})", hint="check MLFLOW_TRACKING_URI (or "
                              "mlflow.tracking_uri): a path prefix too many or missing, or a "
                              "proxy that does not forward MLflow's API")
    return PermanentError(f"cannot {doing}: MLflow answered {said}",
                          hint="check the model name, version or alias in MLflow")


def _from_storage_client(exc: BaseException, doing: str) -> PromoterError | None:
    """The promoter error for a cloud storage client's failure; None for anything else."""
    classes = [cls for cls in type(exc).__mro__ if cls.__module__.startswith(_STORE_LIBRARIES)]
    if not classes:
        return None
    names = {cls.__name__ for cls in classes}
    if _credentials_fetch_failed(exc, names):
        return TransientError(f"cannot {doing}: the artifact store's credentials could not be "
                              f"fetched ({type(exc).__name__})", hint=_STORE_CREDENTIALS_HINT)
    if names & _STORE_NO_CREDENTIALS:
        return ConfigError(f"cannot {doing}: the artifact store has no usable credentials "
                           f"({type(exc).__name__})", hint=_STORE_CREDENTIALS_HINT)
    if names & _STORE_UNREACHABLE:
        return TransientError(f"cannot {doing}: the artifact store is unreachable "
                              f"({type(exc).__name__})", hint=_RETRY_HINT)
    status, code = _store_answer(exc)
    if status is None and not code:
        return None  # not an answer from the store: a bug stays a bug
    said = f"HTTP {status} {code}".strip() if status else code
    if (status is not None and (status >= 500 or status == 429)) or code in _STORE_BUSY_CODES:
        return TransientError(f"cannot {doing}: the artifact store failed ({said})",
                              hint=_RETRY_HINT)
    if status == 403 or code in _STORE_DENIED_CODES:
        return PermanentError(f"cannot {doing}: the artifact store denied access ({said})",
                              hint=_STORE_CREDENTIALS_HINT)
    return PermanentError(f"cannot {doing}: the artifact store answered {said}",
                          hint="check the model version's source URI")


def _credentials_fetch_failed(exc: BaseException, names: set[str]) -> bool:
    """Whether the credentials were not fetched (may come back) rather than missing."""
    if names & _STORE_CREDENTIALS_FETCH_FAILED or getattr(exc, "retryable", False) is True:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and names & _STORE_NO_CREDENTIALS != set() and any(
        cls.__name__ in _STORE_UNREACHABLE for cls in type(cause).__mro__)


def _store_answer(exc: BaseException) -> tuple[int | None, str]:
    """(HTTP status, error code) of a storage client's error answer, as far as it says."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        error, meta = response.get("Error") or {}, response.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        return (int(status) if isinstance(status, int) else None), str(error.get("Code") or "")
    for attribute in ("status_code", "code"):  # azure's HttpResponseError, google's API errors
        status = getattr(exc, attribute, None)
        if isinstance(status, int):
            return status, str(getattr(exc, "error_code", "") or "")
    return None, ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; HTTP dates are rare from MLflow and are ignored."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
