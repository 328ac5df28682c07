"""A Docker token service (the `WWW-Authenticate: Bearer` realm GitLab's registry uses) for the
real distribution registry configured with ``auth.token``: it checks Basic credentials and
issues ES256 JWTs signed by a self-signed certificate the registry trusts."""

from __future__ import annotations

import base64
import datetime
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.image.serving import serving

ISSUER, SERVICE = "promoter-test-issuer", "promoter-test-registry"
# distribution accepts a token this long past its `exp` (clock-skew leeway, registry/auth/token)
REGISTRY_LEEWAY = 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "promoter test token CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(hours=1))
                     .sign(self.key, hashes.SHA256()))
        self.requests = 0
        # How long the registry accepts a token (seconds) and what the answer announces as
        # `expires_in` (None: left out). GitLab's defaults are 300 s for both.
        self.lifetime = 300
        self.expires_in: int | None = None

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(
            self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        now = int(time.time())
        # `exp` counts whole seconds and the registry adds its leeway: the token is accepted
        # for more than `lifetime` seconds from now and at most one second longer.
        expires = now + 1 + self.lifetime - REGISTRY_LEEWAY
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 10,
                  "exp": expires, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(),
                                                  ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@contextmanager
def token_service(issuer: TokenIssuer) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests += 1
            header = self.headers.get("Authorization", "")
            user, _, password = (base64.b64decode(header[6:]).decode().partition(":")
                                 if header.startswith("Basic ") else ("", "", ""))
            if not user or issuer.users.get(user) != password:
                self.send_response(401)
                self.end_headers()
                return
            scopes = parse_qs(urlsplit(self.path).query).get("scope", [])
            answer: dict[str, object] = {"token": issuer.token(user, " ".join(scopes).split())}
            if issuer.expires_in is not None:
                answer["expires_in"] = issuer.expires_in
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"


def token_auth_config(realm: str, cert_file: Path) -> str:
    return (f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {cert_file}\n")
