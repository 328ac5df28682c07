"""Webhook authenticity: signatures over exactly the bytes received, replay window, dedupe ids.

MLflow OSS 3.x signs the Standard Webhooks way:
``X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<delivery id>.<unix ts>.<raw body>")>``
(several space-separated signatures are allowed, as during a secret rotation).
Databricks signs the raw body: ``X-Databricks-Signature: <hex HMAC-SHA256(secret, body)>``.
Every comparison goes through ``hmac.compare_digest`` so timing reveals nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

from promoter.errors import AuthError, PromoterError, UserError
from promoter.state.deliveries import DELIVERY_RETENTION_SECONDS

MLFLOW_ID = "x-mlflow-delivery-id"
MLFLOW_TIMESTAMP = "x-mlflow-timestamp"
MLFLOW_SIGNATURE = "x-mlflow-signature"
DATABRICKS_SIGNATURE = "x-databricks-signature"
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
# A Databricks delivery is told from a replay only by its dedupe row, kept for
# DELIVERY_RETENTION_SECONDS: one older than that memory, less a day's margin for clock skew and
# retries, could make its job a second time, so it is refused (the reconcile loop catches up).
DATABRICKS_MAX_AGE_SECONDS = DELIVERY_RETENTION_SECONDS - 24 * 3600


class MissingHeader(UserError):
    kind = "missing_header"


class SecretNotConfigured(PromoterError):
    """This promoter has no secret to check a source's signatures with: the fault is the
    server's, not the sender's, so it is a 503 (as for the GitLab and Argo CD hooks) and the
    sender's retries may land once the secret is set; nothing is stored meanwhile."""

    http_status = 503
    kind = "not_configured"


def sign_mlflow(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The header value MLflow sends (used by tests and the benchmark to play MLflow's part)."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_databricks(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_mlflow(headers: Mapping[str, str], body: bytes, secret: str | None, *,
                  now: float, tolerance_seconds: float) -> str:
    """Check an MLflow delivery; returns its delivery id (the dedupe key).

    Raises MissingHeader (400) when the id or timestamp header is absent or malformed,
    SecretNotConfigured (503) when this promoter has no secret, and AuthError (401) for a
    missing or wrong signature or a timestamp outside the window.
    """
    delivery_id = headers.get(MLFLOW_ID, "")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise MissingHeader("X-MLflow-Delivery-Id is missing or malformed",
                            hint="send the headers MLflow's webhook delivery sends")
    timestamp = headers.get(MLFLOW_TIMESTAMP, "")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MissingHeader("X-MLflow-Timestamp is missing or not Unix seconds")
    if not secret:
        raise SecretNotConfigured("no MLflow webhook secret is configured on this promoter",
                                  hint="set PROMOTER_MLFLOW_WEBHOOK_SECRET to the webhook's "
                                       "secret")
    signatures = headers.get(MLFLOW_SIGNATURE, "")
    if not signatures:
        raise AuthError("X-MLflow-Signature is missing",
                        hint="register the webhook with a secret (promoter hooks register)")
    expected = sign_mlflow(secret, delivery_id, timestamp, body).encode("ascii")
    # Check every candidate (no early exit), so the time taken does not depend on which matched.
    matched = False
    for candidate in signatures.split(" ")[:8]:
        matched |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    if not matched:
        raise AuthError("X-MLflow-Signature does not match the body",
                        hint="check PROMOTER_MLFLOW_WEBHOOK_SECRET against the webhook's secret")
    age = now - int(timestamp)
    if abs(age) > tolerance_seconds:
        raise AuthError(f"X-MLflow-Timestamp is {abs(int(age))} s {'old' if age > 0 else 'ahead'}; "
                        f"the window is {int(tolerance_seconds)} s (replay refused)",
                        hint="check the clocks of MLflow and promoter")
    return delivery_id


def verify_databricks(headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    if not secret:
        raise SecretNotConfigured("no Databricks webhook secret is configured on this promoter",
                                  hint="set PROMOTER_DATABRICKS_WEBHOOK_SECRET to the webhook's "
                                       "secret")
    signature = headers.get(DATABRICKS_SIGNATURE, "")
    if not signature:
        raise AuthError("X-Databricks-Signature is missing",
                        hint="create the Databricks webhook with a shared secret")
    expected = sign_databricks(secret, body).encode("ascii")
    if not hmac.compare_digest(signature.strip().lower().encode("utf-8", "replace"), expected):
        raise AuthError("X-Databricks-Signature does not match the body",
                        hint="check PROMOTER_DATABRICKS_WEBHOOK_SECRET")


def check_databricks_age(event_timestamp_ms: int, *, now: float,
                         max_age_seconds: float = DATABRICKS_MAX_AGE_SECONDS) -> None:
    """Refuse (401) a Databricks delivery whose signed event_timestamp is further from ``now``
    than its dedupe row is remembered: Databricks sends no timestamp header, so this is the
    only bound on replaying a captured body."""
    age = now - event_timestamp_ms / 1000.0
    if abs(age) > max_age_seconds:
        days = int(max_age_seconds // 86400)
        raise AuthError(f"event_timestamp is {abs(int(age)) // 86400} days "
                        f"{'old' if age > 0 else 'ahead'}; the window is {days} days, as long as "
                        "a delivery is remembered (replay refused)",
                        hint="the reconcile loop brings any promotion it missed")


def dedupe_key_digest(key: str) -> str:
    """Long composite keys (Databricks) are stored as a digest of fixed size."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
