"""`promoter image sign|verify` against a real registry, in both cosign formats."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.image.layers import bytes_blob
from promoter.image.reference import parse_reference
from promoter.signing import bundle as bundle_format
from promoter.signing import simple
from promoter.signing.keys import load_signing_key
from promoter.signing.registry import bundle_blobs
from tests.image.registry import free_port
from tests.signing.conftest import PASSWORD, key_path, push_image

pytestmark = pytest.mark.e2e
Run = Callable[..., tuple[int, str, str]]
JS = Path(__file__).resolve().parent.parent / "js"


def sign(promoter: Run, image: str, key: int = 2, *formats: str) -> dict[str, Any]:
    flags = [arg for fmt in formats for arg in ("--format", fmt)]
    code, out, err = promoter("image", "sign", image, "--key", str(key_path(key)), *flags,
                              "--output", "json")
    assert code == 0, err
    return dict(json.loads(out))


def verify(promoter: Run, image: str, key: int = 2) -> tuple[int, str]:
    code, out, err = promoter("image", "verify", image, "--key", str(key_path(key, "pub")))
    return code, out + err


def test_signed_image_verifies_in_both_formats_and_resigning_is_a_noop(
        promoter: Run, image: str) -> None:
    first = sign(promoter, image)
    assert sorted(first["created"]) == ["bundle", "legacy"]
    code, said = verify(promoter, image)
    assert code == 0 and "bundle, legacy" in said
    reference = parse_reference(image)
    with RegistryClient(reference.registry) as client:
        before = [client.manifest_digest(reference.repository, tag) for tag in (
            simple.signature_tag(str(reference.digest)),
            bundle_format.referrers_tag(str(reference.digest)))]
        assert all(before)
        assert sign(promoter, image)["created"] == []
        after = [client.manifest_digest(reference.repository, tag) for tag in (
            simple.signature_tag(str(reference.digest)),
            bundle_format.referrers_tag(str(reference.digest)))]
    assert after == before


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_each_format_alone_verifies(promoter: Run, image: str, fmt: str) -> None:
    assert sign(promoter, image, 0, fmt)["created"] == [fmt]
    code, said = verify(promoter, image, 0)
    assert code == 0 and f"({fmt})" in said


def test_unsigned_image_fails(promoter: Run, image: str) -> None:
    code, said = verify(promoter, image)
    assert code == 1 and "is not signed" in said


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_signature_by_another_key_fails(promoter: Run, image: str, fmt: str) -> None:
    sign(promoter, image, 1, fmt)
    code, said = verify(promoter, image, 2)
    assert code == 1 and "not by the key" in said and "another key" in said


def _copy_signatures(source: str, target: str) -> None:
    """What an attacker can do without the key: attach image A's signatures to image B."""
    a, b = parse_reference(source), parse_reference(target)
    with RegistryClient(a.registry) as client:
        for tag_of in (simple.signature_tag, bundle_format.referrers_tag):
            manifest = client.get_manifest(a.repository, tag_of(str(a.digest)))
            if manifest is not None:
                client.put_manifest(a.repository, tag_of(str(b.digest)), manifest.body,
                                    manifest.media_type)


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_signature_over_another_digest_fails(promoter: Run, registry: str, fmt: str) -> None:
    first = push_image(registry, f"signing/copied-{fmt}", "first")
    second = push_image(registry, f"signing/copied-{fmt}", "second")
    sign(promoter, first, 2, fmt)
    _copy_signatures(first, second)
    code, said = verify(promoter, second)
    assert code == 1 and "covers a different image digest" in said


def _tamper_legacy(client: RegistryClient, repository: str, source: str, target: str) -> None:
    manifest = client.get_manifest(repository, simple.signature_tag(source))
    assert manifest is not None
    layer = simple.signature_layers(manifest.body)[0]
    payload = client.get_blob(repository, layer["digest"]).replace(source.encode(),
                                                                   target.encode())
    forged = bytes_blob(simple.SIMPLE_SIGNING, payload)
    client.push_blob(repository, forged)
    layers = [{**layer, **forged.descriptor()}]
    config, body = simple.manifest(layers)
    client.push_blob(repository, config)
    client.put_manifest(repository, simple.signature_tag(target), body, simple.OCI_MANIFEST)


def _tamper_bundle(client: RegistryClient, repository: str, source: str, target: str) -> None:
    (original,) = bundle_blobs(client, repository, source)
    bundle = json.loads(original)
    statement = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(statement.replace(
        source.split(":")[1].encode(), target.split(":")[1].encode())).decode()
    subject = client.get_manifest(repository, target)
    assert subject is not None
    from promoter.signing.service import attach_bundle

    attach_bundle(client, repository, {"mediaType": subject.media_type, "digest": target,
                                       "size": len(subject.body)}, json.dumps(bundle).encode())


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_tampered_payload_fails(promoter: Run, registry: str, fmt: str) -> None:
    first = push_image(registry, f"signing/tampered-{fmt}", "first")
    second = push_image(registry, f"signing/tampered-{fmt}", "second")
    sign(promoter, first, 2, fmt)
    a, b = parse_reference(first), parse_reference(second)
    with RegistryClient(registry) as client:
        tamper = _tamper_legacy if fmt == "legacy" else _tamper_bundle
        tamper(client, a.repository, str(a.digest), str(b.digest))
    code, said = verify(promoter, second)
    assert code == 1 and "altered after signing" in said


def test_an_attestation_by_the_key_is_no_signature(promoter: Run, registry: str) -> None:
    """A provenance statement the same key made about the image says something about it,
    but does not sign it: verify still reports the image unsigned, and signing adds the
    signature."""
    from promoter.signing.keys import load_signing_key
    from promoter.signing.service import attach_bundle
    image = push_image(registry, "signing/attested", "attested")
    reference = parse_reference(image)
    digest = str(reference.digest)
    key = load_signing_key(key_path(2).read_bytes(), PASSWORD)
    body = json.dumps({"_type": bundle_format.STATEMENT_TYPE,
                       "subject": [{"digest": {"sha256": digest.split(":")[1]}}],
                       "predicateType": "https://slsa.dev/provenance/v1",
                       "predicate": {}}).encode()
    signature = key.sign(bundle_format.pae(bundle_format.IN_TOTO, body))
    with RegistryClient(registry) as client:
        subject = client.get_manifest(reference.repository, digest)
        assert subject is not None
        attach_bundle(client, reference.repository, {
            "mediaType": subject.media_type, "digest": digest, "size": len(subject.body)},
            bundle_format.make_bundle(body, signature, key.public.hint))
    code, said = verify(promoter, image)
    assert code == 1 and "is not signed" in said
    assert "an attestation (https://slsa.dev/provenance/v1), not a signature" in said
    assert sign(promoter, image, 2, "bundle")["created"] == ["bundle"]
    assert verify(promoter, image)[0] == 0


def test_a_referrer_whose_bundle_blob_is_missing_blocks_neither_verify_nor_sign(
        promoter: Run, image: str) -> None:
    """Anyone who may push can attach a referrer and then delete its bundle blob (or the
    registry's garbage collection can): reading it was a 404 that failed verify although a
    valid legacy signature was there, and failed signing in the default formats."""
    import httpx

    from promoter.signing.service import attach_bundle

    sign(promoter, image, 2, "legacy")
    reference = parse_reference(image)
    digest = str(reference.digest)
    junk = b'{"junk": true}'
    with RegistryClient(reference.registry) as client:
        subject = client.get_manifest(reference.repository, digest)
        assert subject is not None
        attach_bundle(client, reference.repository, {
            "mediaType": subject.media_type, "digest": digest, "size": len(subject.body)}, junk)
    junk_digest = bytes_blob(bundle_format.BUNDLE_TYPE, junk).digest
    deleted = httpx.delete(f"http://{reference.registry}/v2/{reference.repository}/blobs/"
                           f"{junk_digest}")
    assert deleted.status_code == 202
    code, said = verify(promoter, image)
    assert code == 0 and "legacy" in said, said
    assert sign(promoter, image)["created"] == ["bundle"]
    code, said = verify(promoter, image)
    assert code == 0 and "bundle, legacy" in said, said


OVERSIZED = 16 * 1024 * 1024 + 1   # one byte over the client's cap on a blob it reads whole


def _attach_oversized_bundle(client: RegistryClient, repository: str, digest: str) -> None:
    from promoter.signing.service import attach_bundle

    subject = client.get_manifest(repository, digest)
    assert subject is not None
    attach_bundle(client, repository, {"mediaType": subject.media_type, "digest": digest,
                                       "size": len(subject.body)}, b" " * OVERSIZED)


def _tag_oversized_legacy_payload(client: RegistryClient, repository: str, digest: str) -> None:
    junk = bytes_blob(simple.SIMPLE_SIGNING, b" " * OVERSIZED)
    client.push_blob(repository, junk)
    config, body = simple.manifest([simple.layer_descriptor(junk, b"junk", "junk")])
    client.push_blob(repository, config)
    client.put_manifest(repository, simple.signature_tag(digest), body, simple.OCI_MANIFEST)


@pytest.mark.parametrize("junk", ["bundle", "legacy"])
def test_an_oversized_signature_blob_blocks_neither_verify_nor_sign(
        promoter: Run, image: str, junk: str) -> None:
    """Anyone who may push can attach a referrer, or tag a .sig manifest, whose blob is over
    the size cap the client reads a blob whole under: reading it raised, so verify failed
    although a valid signature in the other format was there, and signing failed too."""
    valid = "legacy" if junk == "bundle" else "bundle"
    sign(promoter, image, 2, valid)
    reference = parse_reference(image)
    with RegistryClient(reference.registry) as client:
        attach = _attach_oversized_bundle if junk == "bundle" else _tag_oversized_legacy_payload
        attach(client, reference.repository, str(reference.digest))
    code, said = verify(promoter, image)
    assert code == 0 and f"({valid})" in said, said
    assert sign(promoter, image)["created"] == [junk]
    code, said = verify(promoter, image)
    assert code == 0 and "bundle, legacy" in said, said


def test_an_outage_reading_a_signature_blob_still_fails() -> None:
    """Only what the registry will not hand over is skipped: an outage is no verdict."""
    from promoter.errors import TransientError
    from promoter.signing.registry import readable_blob

    class Down:
        def get_blob(self, repository: str, digest: str, *, limit: int = 0) -> bytes:
            raise TransientError("registry unreachable")

    with pytest.raises(TransientError):
        readable_blob(Down(), "repo", "sha256:" + "0" * 64)  # type: ignore[arg-type]


def test_a_registry_refusing_a_signature_blob_is_no_verdict() -> None:
    """A 403 (PermanentError) says promoter may not read the blob, not that it is junk:
    skipping it would report "unsigned" or "tampered" with confidence."""
    from promoter.errors import PermanentError, UnacceptableContent
    from promoter.signing.registry import readable_blob

    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def get_blob(self, repository: str, digest: str, *, limit: int = 0) -> bytes:
            raise self.error

    digest = "sha256:" + "0" * 64
    with pytest.raises(PermanentError, match="403"):
        readable_blob(Refusing(PermanentError("denied (HTTP 403)")), "repo",  # type: ignore[arg-type]
                      digest)
    assert readable_blob(Refusing(UnacceptableContent("too large")), "repo",  # type: ignore[arg-type]
                         digest) is None


def test_key_problems_when_signing_are_distinct(promoter: Run, image: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "Pa55-not-hello")
    code, _, err = promoter("image", "sign", image, "--key", str(key_path(2)))
    assert code == 1 and "wrong password" in err and "Pa55" not in err
    monkeypatch.setenv("COSIGN_PASSWORD", "hello")
    broken = tmp_path / "broken.key"
    text = key_path(2).read_text().splitlines()
    broken.write_text("\n".join([text[0], text[1][:20] + "!!", *text[2:]]))
    code, _, err = promoter("image", "sign", image, "--key", str(broken))
    assert code == 1 and "not valid base64" in err
    code, _, err = promoter("image", "verify", image, "--key", str(key_path(2)))
    assert code == 1 and "private key" in err
    code, said = verify(promoter, image.split("@")[0] + "@sha256:" + "1" * 64)
    assert code == 1 and "does not exist" in said


def test_an_empty_cosign_password_means_a_key_without_one(
        promoter: Run, image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cosign reads COSIGN_PASSWORD="" as "no password"; promoter dropped the empty value as
    unset, so without a terminal `keys generate` and `image sign` failed "COSIGN_PASSWORD is
    not set", though the hint itself said an empty value means no password."""
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    prefix = tmp_path / "nopw"
    code, _, err = promoter("keys", "generate", "--out", str(prefix))
    assert code == 0, err
    assert load_signing_key(Path(f"{prefix}.key").read_bytes(), "").public.hint
    code, out, err = promoter("image", "sign", image, "--key", f"{prefix}.key")
    assert code == 0 and "signed" in out, err
    code, out, err = promoter("image", "verify", image, "--key", f"{prefix}.pub")
    assert code == 0 and "verified" in out, err
    monkeypatch.delenv("COSIGN_PASSWORD")  # unset, by contrast, is still an error
    code, _, err = promoter("image", "sign", image, "--key", f"{prefix}.key")
    assert code == 1 and "COSIGN_PASSWORD is not set" in err


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@sigstore" / "verify").is_dir():
        pytest.skip("node and tests/js/node_modules are needed (make install-js)")
    return node


def test_bundle_verifies_with_sigstore_js(promoter: Run, image: str, tmp_path: Path) -> None:
    node = _node()
    sign(promoter, image, 2, "bundle")
    reference = parse_reference(image)
    with RegistryClient(reference.registry) as client:
        (data,) = bundle_blobs(client, reference.repository, str(reference.digest))
    (tmp_path / "bundle.json").write_bytes(data)

    def js_verify(key: int, digest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([node, str(JS / "verify-bundle.js"), str(tmp_path / "bundle.json"),
                               str(key_path(key, "pub")), digest],
                              capture_output=True, text=True, check=False, timeout=60)

    good = js_verify(2, str(reference.digest))
    assert good.returncode == 0 and good.stdout.strip() == "verified", good.stderr
    assert js_verify(1, str(reference.digest)).returncode == 1
    assert js_verify(2, "sha256:" + "2" * 64).returncode == 1
    forged = json.loads(data)
    forged["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x30\x06\x02\x01\x01"
                                                                      b"\x02\x01\x01").decode()
    (tmp_path / "bundle.json").write_text(json.dumps(forged))
    assert js_verify(2, str(reference.digest)).returncode == 1


def test_keyless_fails_clearly_without_sigstore(promoter: Run, image: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = promoter("image", "sign", image, "--keyless")
    assert code == 1 and "SIGSTORE_ID_TOKEN" in err
    closed = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "promoter.yaml"
    config.write_text(f"image:\n  fulcio_url: {closed}\n  rekor_url: {closed}\n")
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "project_path:ml/x"}).encode())
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"eyJhbGciOiJub25lIn0.{claims.decode()}.x")
    code, _, err = promoter("--config", str(config), "image", "sign", image, "--keyless")
    assert code == 3 and "Fulcio" in err and "cannot be reached" in err
    assert "project_path" not in err


@pytest.mark.parametrize("password", ["not-the-password", None])
def test_verify_never_loads_the_configured_signing_key(
        promoter: Run, image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        password: str | None) -> None:
    """A verifier (CI, an auditor, the admission side) has the config and cosign.pub but not
    the key's password: verifying must not even try to decrypt image.signing_key."""
    sign(promoter, image)
    config = tmp_path / "promoter.yaml"
    config.write_text(f"image:\n  signing_key: {key_path(2)}\n"
                      f"  verification_key: {key_path(2, 'pub')}\n")
    if password is None:
        monkeypatch.delenv("COSIGN_PASSWORD")
    else:
        monkeypatch.setenv("COSIGN_PASSWORD", password)
    # The configured key really cannot be decrypted with this environment ...
    code, _, err = promoter("--config", str(config), "image", "sign", image)
    assert code == 1
    assert ("cannot decrypt" in err) if password else ("COSIGN_PASSWORD is not set" in err)
    # ... and verifying, with --key or with image.verification_key, does not care.
    code, out, err = promoter("--config", str(config), "image", "verify", image, "--key",
                              str(key_path(2, "pub")))
    assert code == 0, err
    assert "verified" in out and "bundle, legacy" in out
    code, out, err = promoter("--config", str(config), "image", "verify", image)
    assert code == 0 and "verified" in out, err


def _pre_mr_check(tmp_path: Path, verification_key: Path) -> Any:
    """The pipeline's signature check for signing key 2 and ``verification_key``."""
    from promoter.service import composition
    from promoter.settings import load_settings

    config = tmp_path / f"promoter-{verification_key.stem}.yaml"
    config.write_text(f"image:\n  signing_key: {key_path(2)}\n"
                      f"  verification_key: {verification_key}\n")
    settings = load_settings(config, {"PROMOTER_STATE_DIR": str(tmp_path / "state"),
                                      "COSIGN_PASSWORD": PASSWORD})
    check = composition.verifier(settings, composition.signer(settings))
    assert check is not None
    return check


def test_the_pre_mr_check_uses_the_key_the_admission_policies_trust(
        promoter: Run, image: str, tmp_path: Path) -> None:
    """Signing key 2 with verification key 1 (not its pair): `gitops init` writes key 1 into
    the admission policies, so the check before an MR must use key 1 too and refuse, rather
    than pass with key 2's own public half and leave every pod to be refused at admission."""
    from promoter.errors import UserError

    sign(promoter, image, 2)
    with pytest.raises(UserError):
        _pre_mr_check(tmp_path, key_path(1, "pub")).verify(image)
    assert _pre_mr_check(tmp_path, key_path(2, "pub")).verify(image).formats


def test_the_pre_mr_check_names_the_verification_key_it_trusts(tmp_path: Path) -> None:
    """The pipeline reuses a recorded verification only under the same key hint, so the hint
    the check reports must be the verification key's, not the signing key's public half."""
    from promoter.signing.keys import load_public_key

    hints = {n: load_public_key(key_path(n, "pub").read_bytes()).hint for n in (1, 2)}
    assert hints[1] != hints[2]
    assert _pre_mr_check(tmp_path, key_path(1, "pub")).key_hint == hints[1]
    assert _pre_mr_check(tmp_path, key_path(2, "pub")).key_hint == hints[2]
