"""Signature, replay window and header checks against real captured deliveries."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook

from promoter.errors import AuthError
from promoter.service.verify import (
    MissingHeader,
    SecretNotConfigured,
    sign_databricks,
    sign_mlflow,
    verify_databricks,
    verify_mlflow,
)
from tests.intake.conftest import CAPTURE_SECRET, capture

SIGNED = ["model_version_alias.created.json", "model_version_alias.deleted.json",
          "model_version.created.json", "model_version_tag.set.json",
          "test_webhook.model_version_alias.created.json"]


def headers_of(name: str) -> tuple[dict[str, str], bytes, int]:
    delivery = capture(name)
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    return headers, delivery["body"].encode(), int(headers["x-mlflow-timestamp"])


@pytest.mark.parametrize("name", SIGNED)
def test_real_mlflow_deliveries_verify_and_yield_their_delivery_id(name: str) -> None:
    headers, body, sent = headers_of(name)
    assert verify_mlflow(headers, body, CAPTURE_SECRET, now=sent + 3,
                         tolerance_seconds=300) == headers["x-mlflow-delivery-id"]


@pytest.mark.parametrize("name", SIGNED)
def test_our_signing_agrees_with_the_standard_webhooks_library(name: str) -> None:
    headers, body, _ = headers_of(name)
    ours = sign_mlflow(CAPTURE_SECRET, headers["x-mlflow-delivery-id"],
                       headers["x-mlflow-timestamp"], body)
    assert ours == headers["x-mlflow-signature"]
    library = Webhook("whsec_" + base64.b64encode(CAPTURE_SECRET.encode()).decode())
    assert library.sign(headers["x-mlflow-delivery-id"],
                        _datetime(int(headers["x-mlflow-timestamp"])), body.decode()) == ours


def _datetime(seconds: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


def test_wrong_secret_is_refused() -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    with pytest.raises(AuthError, match="does not match"):
        verify_mlflow(headers, body, "another-secret", now=sent, tolerance_seconds=300)


def test_a_single_changed_byte_is_refused() -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    tampered = body.replace(b'"version": "2"', b'"version": "3"')
    assert tampered != body
    with pytest.raises(AuthError):
        verify_mlflow(headers, tampered, CAPTURE_SECRET, now=sent, tolerance_seconds=300)


def test_a_replayed_delivery_outside_the_window_is_refused_both_ways() -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    with pytest.raises(AuthError, match="301 s old"):
        verify_mlflow(headers, body, CAPTURE_SECRET, now=sent + 301, tolerance_seconds=300)
    with pytest.raises(AuthError, match="ahead"):
        verify_mlflow(headers, body, CAPTURE_SECRET, now=sent - 400, tolerance_seconds=300)
    verify_mlflow(headers, body, CAPTURE_SECRET, now=sent + 300, tolerance_seconds=300)


def test_a_rotated_secret_is_accepted_among_several_signatures() -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    headers["x-mlflow-signature"] = "v1,b2xkLXNpZ25hdHVyZQ== " + headers["x-mlflow-signature"]
    verify_mlflow(headers, body, CAPTURE_SECRET, now=sent, tolerance_seconds=300)


def test_an_unsigned_delivery_is_refused() -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    del headers["x-mlflow-signature"]
    with pytest.raises(AuthError, match="missing"):
        verify_mlflow(headers, body, CAPTURE_SECRET, now=sent, tolerance_seconds=300)


@pytest.mark.parametrize("secret", [None, ""])
def test_without_a_configured_secret_nothing_is_accepted(secret: str | None) -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    with pytest.raises(SecretNotConfigured, match="PROMOTER_MLFLOW_WEBHOOK_SECRET"):
        verify_mlflow(headers, body, secret, now=sent, tolerance_seconds=300)
    del headers["x-mlflow-signature"]   # the server's missing secret is named first
    with pytest.raises(SecretNotConfigured):
        verify_mlflow(headers, body, secret, now=sent, tolerance_seconds=300)


@pytest.mark.parametrize("secret", [None, ""])
def test_without_a_databricks_secret_nothing_is_accepted(secret: str | None) -> None:
    body = b'{"event":"MODEL_VERSION_TRANSITIONED_STAGE","model_name":"m","version":"1"}'
    for headers in ({"x-databricks-signature": sign_databricks("s", body)}, {}):
        with pytest.raises(SecretNotConfigured, match="PROMOTER_DATABRICKS_WEBHOOK_SECRET"):
            verify_databricks(headers, body, secret)


@pytest.mark.parametrize("header", ["x-mlflow-delivery-id", "x-mlflow-timestamp"])
def test_missing_id_or_timestamp_is_a_bad_request(header: str) -> None:
    headers, body, sent = headers_of("model_version_alias.created.json")
    del headers[header]
    with pytest.raises(MissingHeader):
        verify_mlflow(headers, body, CAPTURE_SECRET, now=sent, tolerance_seconds=300)


def test_databricks_hex_signature_over_the_raw_body() -> None:
    body = b'{"event":"MODEL_VERSION_TRANSITIONED_STAGE","model_name":"m","version":"1"}'
    signature = sign_databricks("databricks-secret", body)
    assert len(signature) == 64 and int(signature, 16) >= 0
    verify_databricks({"x-databricks-signature": signature}, body, "databricks-secret")
    with pytest.raises(AuthError):
        verify_databricks({"x-databricks-signature": signature}, body + b" ", "databricks-secret")
    with pytest.raises(AuthError, match="missing"):
        verify_databricks({}, body, "databricks-secret")
