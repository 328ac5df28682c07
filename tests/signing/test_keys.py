"""cosign key files: real cosign keys load, generated keys round-trip, failures are distinct."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.signing.errors import CorruptKey, WrongKeyPassword
from promoter.signing.keys import (
    encrypt_signing_key,
    load_public_key,
    load_signing_key,
)
from tests.signing.conftest import PASSWORD, key_path


@pytest.mark.parametrize("number", [0, 1, 2])
def test_keys_made_by_cosign_decrypt_and_sign_for_their_public_key(number: int) -> None:
    key = load_signing_key(key_path(number).read_bytes(), PASSWORD)
    public = load_public_key(key_path(number, "pub").read_bytes())
    assert key.public.hint == public.hint
    assert public.verifies(key.sign(b"payload"), b"payload")
    assert not public.verifies(key.sign(b"payload"), b"other payload")


def test_wrong_password_is_told_apart_from_a_damaged_key() -> None:
    data = key_path(2).read_bytes()
    with pytest.raises(WrongKeyPassword, match="wrong password") as wrong:
        load_signing_key(data, "not-hello")
    assert "not-hello" not in str(wrong.value)
    lines = data.decode().splitlines()
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    envelope["kdf"]["params"]["N"] = 3  # not a cosign scrypt cost
    damaged = "\n".join([lines[0], base64.b64encode(json.dumps(envelope).encode()).decode(),
                         lines[-1]]).encode()
    with pytest.raises(CorruptKey, match="unsupported key derivation"):
        load_signing_key(damaged, PASSWORD)
    with pytest.raises(CorruptKey, match="damaged"):
        load_signing_key(data.replace(lines[3].encode(), b"QUFB" * 16), PASSWORD)
    with pytest.raises(CorruptKey, match="not a cosign private key"):
        load_signing_key(key_path(2, "pub").read_bytes(), PASSWORD)
    with pytest.raises(CorruptKey, match="PUBLIC KEY"):
        load_public_key(data)


def test_written_keys_use_the_current_label_and_cosign_parameters() -> None:
    key = load_signing_key(key_path(0).read_bytes(), PASSWORD)
    written = encrypt_signing_key(key, "")
    lines = written.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert envelope["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(envelope["kdf"]["salt"])) == 32
    assert len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    assert load_signing_key(written, "").public.hint == key.public.hint  # empty password ok


def test_keys_generate_writes_a_private_key_only_its_owner_reads(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "s3cret")
    prefix = tmp_path / "cosign"
    code, out, err = run_cli("keys", "generate", "--out", str(prefix))
    assert code == 0, err
    assert "s3cret" not in out + err
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_signing_key(private.read_bytes(), "s3cret")
    assert key.public.hint == load_public_key(public.read_bytes()).hint
    code, _, err = run_cli("keys", "generate", "--out", str(prefix))
    assert code == 1 and "already exist" in err
    monkeypatch.delenv("COSIGN_PASSWORD")
    code, _, err = run_cli("keys", "generate", "--out", str(tmp_path / "other"))
    assert code == 1 and "COSIGN_PASSWORD" in err


@pytest.mark.parametrize("there", ["readable file", "symlink", "dangling symlink"])
def test_keys_generate_force_replaces_what_is_there_with_an_owner_only_key(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, there: str) -> None:
    """--force over an old 0644 key must not keep its mode, and over a symlink must replace
    the link, never write the private key to where it points."""
    monkeypatch.setenv("COSIGN_PASSWORD", "s3cret")
    prefix = tmp_path / "keys" / "cosign"
    prefix.parent.mkdir()
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    target = tmp_path / "elsewhere"
    if there == "readable file":
        private.write_text("old key")
        private.chmod(0o644)
    else:
        if there == "symlink":
            target.write_text("not a key")
            target.chmod(0o644)
        private.symlink_to(target)
        public.symlink_to(tmp_path / "elsewhere.pub")
    code, _, err = run_cli("keys", "generate", "--out", str(prefix))
    assert code == 1 and "already exist" in err  # a dangling link counts as there too
    code, _, err = run_cli("keys", "generate", "--out", str(prefix), "--force")
    assert code == 0, err
    assert not private.is_symlink() and not public.is_symlink()
    assert stat.S_IMODE(private.lstat().st_mode) == 0o600
    key = load_signing_key(private.read_bytes(), "s3cret")
    assert key.public.hint == load_public_key(public.read_bytes()).hint
    if there == "symlink":
        assert target.read_text() == "not a key" and stat.S_IMODE(target.stat().st_mode) == 0o644
    else:
        assert not target.exists()
    assert not (tmp_path / "elsewhere.pub").exists()
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["cosign.key", "cosign.pub"]
