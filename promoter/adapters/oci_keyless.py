"""Sigstore's public services for keyless signing: Fulcio (certificate) and Rekor (log).

Only reachable with internet access; when they cannot be reached the error says so and what
to do instead (key-based signing works offline).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from promoter.core.masking import without_credentials
from promoter.errors import AuthError, PermanentError
from promoter.signing.errors import KeylessUnavailable


class SigstoreServices:
    def __init__(self, fulcio_url: str, rekor_url: str, *, timeout: float = 30.0) -> None:
        self.fulcio_url = fulcio_url.rstrip("/")
        self.rekor_url = rekor_url.rstrip("/")
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self._http.close()

    def _post(self, service: str, url: str, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self._http.post(url, json=body, headers=headers or {})
        except httpx.TransportError as exc:
            raise KeylessUnavailable(
                f"keyless signing needs Sigstore {service} at {url.split('/api')[0]}, which "
                f"cannot be reached ({type(exc).__name__})",
                hint="keyless signing needs internet access (e.g. GitLab CI with id_tokens); "
                     "offline, sign with a key: promoter image sign REF --key cosign.key"
            ) from None

    def signing_certificate(self, token: str, public_pem: str, proof: bytes) -> list[str]:
        """Fulcio v2: a short-lived certificate chain (PEM, leaf first) for the token's identity."""
        body = {"credentials": {"oidcIdentityToken": token},
                "publicKeyRequest": {"publicKey": {"algorithm": "ECDSA", "content": public_pem},
                                     "proofOfPossession": base64.b64encode(proof).decode()}}
        response = self._post("Fulcio", f"{self.fulcio_url}/api/v2/signingCert", body)
        if response.status_code in (401, 403):
            raise AuthError(f"Fulcio rejected the SIGSTORE_ID_TOKEN (HTTP {response.status_code})",
                            hint="in GitLab CI: id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}}")
        if response.status_code >= 500:
            raise KeylessUnavailable(f"Fulcio failed (HTTP {response.status_code})")
        if response.status_code not in (200, 201):
            raise PermanentError(f"Fulcio refused the certificate request "
                                 f"(HTTP {response.status_code}): "
                                 f"{without_credentials(response.text[:300])}")
        data = response.json()
        chain = (data.get("signedCertificateEmbeddedSct") or
                 data.get("signedCertificateDetachedSct") or {}).get("chain", {})
        return list(chain.get("certificates", []))

    def log_dsse(self, envelope: bytes, certificate_pem: str) -> dict[str, Any]:
        """Record a DSSE envelope in Rekor; returns the bundle's transparency log entry."""
        body = {"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
            "envelope": envelope.decode(),
            "verifiers": [base64.b64encode(certificate_pem.encode()).decode()]}}}
        response = self._post("Rekor", f"{self.rekor_url}/api/v1/log/entries", body)
        if response.status_code >= 500:
            raise KeylessUnavailable(f"Rekor failed (HTTP {response.status_code})")
        if response.status_code != 201:
            raise PermanentError(f"Rekor refused the log entry (HTTP {response.status_code}): "
                                 f"{without_credentials(response.text[:300])}")
        try:
            (entry,) = response.json().values()
            return _bundle_entry(entry)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PermanentError("Rekor answered with an entry promoter cannot read") from None


def _b64_hex(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


def _bundle_entry(entry: dict[str, Any]) -> dict[str, Any]:
    verification = entry.get("verification") or {}
    proof = verification.get("inclusionProof") or {}
    tlog: dict[str, Any] = {
        "logIndex": str(entry["logIndex"]),
        "logId": {"keyId": _b64_hex(entry["logID"])},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": str(entry["integratedTime"]),
        "inclusionPromise": {"signedEntryTimestamp": verification.get("signedEntryTimestamp")},
        "canonicalizedBody": entry["body"],
    }
    if proof:
        tlog["inclusionProof"] = {
            "logIndex": str(proof["logIndex"]), "rootHash": _b64_hex(proof["rootHash"]),
            "treeSize": str(proof["treeSize"]),
            "hashes": [_b64_hex(item) for item in proof.get("hashes", [])],
            "checkpoint": {"envelope": proof.get("checkpoint", "")}}
    return tlog
