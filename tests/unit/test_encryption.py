"""Encryption at rest: AES-256-GCM under the KEK, named by fingerprint, bound to associated data."""

from __future__ import annotations

import base64
import os

import pytest

from idp.security.encryption import DecryptionError, Encryptor, fingerprint

KEK = bytes(range(32))
OTHER_KEK = bytes(range(100, 132))
AD = b"kid-1"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(part: str, index: int = 0) -> str:
    raw = bytearray(_unb64(part))
    raw[index] ^= 0x01
    return _b64(bytes(raw))


@pytest.mark.parametrize("plaintext", [b"", b"x", b'{"kty":"OKP","d":"secret"}', os.urandom(5000)])
def test_round_trip(plaintext: bytes) -> None:
    encryptor = Encryptor(KEK)
    token = encryptor.encrypt(plaintext, associated_data=AD)
    assert encryptor.decrypt(token, associated_data=AD) == plaintext
    # A second instance with the same KEK (another process) decrypts it as well.
    assert Encryptor(KEK).decrypt(token, associated_data=AD) == plaintext


def test_token_format_names_the_kek_and_carries_a_96_bit_nonce() -> None:
    encryptor = Encryptor(KEK)
    plaintext = b"private key material"
    token = encryptor.encrypt(plaintext, associated_data=AD)
    version, kek_id, nonce, ciphertext = token.split(".")
    assert version == "v1"
    assert kek_id == fingerprint(KEK) == encryptor.current_fingerprint
    assert len(kek_id) == 12
    assert all(c in "0123456789abcdef" for c in kek_id)
    assert len(_unb64(nonce)) == 12
    # GCM: ciphertext is as long as the plaintext, plus a 16-byte tag.
    assert len(_unb64(ciphertext)) == len(plaintext) + 16
    assert plaintext not in _unb64(ciphertext)
    # The fingerprint identifies the key without revealing it.
    assert fingerprint(OTHER_KEK) != kek_id
    assert KEK.hex()[:12] != kek_id


def test_each_encryption_uses_a_fresh_nonce() -> None:
    encryptor = Encryptor(KEK)
    tokens = [encryptor.encrypt(b"same plaintext", associated_data=AD) for _ in range(5)]
    assert len(set(tokens)) == 5
    nonces = {token.split(".")[2] for token in tokens}
    assert len(nonces) == 5
    assert {encryptor.decrypt(token, associated_data=AD) for token in tokens} == {b"same plaintext"}


@pytest.mark.parametrize("wrong", [b"kid-2", b"", b"kid-1 ", b"KID-1"])
def test_wrong_associated_data_fails(wrong: bytes) -> None:
    encryptor = Encryptor(KEK)
    token = encryptor.encrypt(b"secret", associated_data=AD)
    with pytest.raises(DecryptionError, match="failed authentication"):
        encryptor.decrypt(token, associated_data=wrong)


def _tamper_ciphertext(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, n, _flip(c, 3)))


def _tamper_tag(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, n, _flip(c, len(_unb64(c)) - 1)))


def _tamper_nonce(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, _flip(n), c))


def _truncate(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, n, _b64(_unb64(c)[:-1])))


def _extend(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, n, _b64(_unb64(c) + b"\x00")))


def _short_nonce(token: str) -> str:
    v, k, n, c = token.split(".")
    return ".".join((v, k, _b64(_unb64(n)[:8]), c))


def _empty_nonce(token: str) -> str:
    v, k, _n, c = token.split(".")
    return ".".join((v, k, "", c))


def _not_base64(token: str) -> str:
    v, k, _n, c = token.split(".")
    return ".".join((v, k, "a", c))


@pytest.mark.parametrize(
    "tamper",
    [_tamper_ciphertext, _tamper_tag, _tamper_nonce, _truncate, _extend, _short_nonce, _empty_nonce, _not_base64],
)
def test_tampered_ciphertext_fails(tamper) -> None:
    encryptor = Encryptor(KEK)
    token = encryptor.encrypt(b"secret signing key", associated_data=AD)
    with pytest.raises(DecryptionError, match="failed authentication"):
        encryptor.decrypt(tamper(token), associated_data=AD)
    # The untouched token still decrypts.
    assert encryptor.decrypt(token, associated_data=AD) == b"secret signing key"


def test_ciphertext_relabelled_with_another_configured_kek_fails() -> None:
    both = Encryptor(KEK, previous=[OTHER_KEK])
    token = both.encrypt(b"secret", associated_data=AD)
    v, _k, n, c = token.split(".")
    relabelled = ".".join((v, fingerprint(OTHER_KEK), n, c))
    with pytest.raises(DecryptionError, match="failed authentication"):
        both.decrypt(relabelled, associated_data=AD)


def test_unknown_kek_fingerprint_names_the_previous_keys_setting() -> None:
    token = Encryptor(KEK).encrypt(b"secret", associated_data=AD)
    with pytest.raises(DecryptionError) as excinfo:
        Encryptor(OTHER_KEK).decrypt(token, associated_data=AD)
    message = str(excinfo.value)
    assert fingerprint(KEK) in message
    assert "secrets.previous_key_encryption_keys" in message
    # Neither key appears in the message.
    assert KEK.hex() not in message
    assert _b64(KEK) not in message
    assert _b64(OTHER_KEK) not in message


def test_previous_kek_still_decrypts_after_rotation() -> None:
    old = Encryptor(KEK)
    old_token = old.encrypt(b"seed", associated_data=AD)
    assert old.needs_reencryption(old_token) is False

    rotated = Encryptor(OTHER_KEK, previous=[KEK])
    assert rotated.current_fingerprint == fingerprint(OTHER_KEK)
    assert rotated.decrypt(old_token, associated_data=AD) == b"seed"
    assert rotated.needs_reencryption(old_token) is True

    # Re-encrypting moves the ciphertext onto the current KEK ...
    new_token = rotated.encrypt(rotated.decrypt(old_token, associated_data=AD), associated_data=AD)
    assert new_token.split(".")[1] == fingerprint(OTHER_KEK)
    assert rotated.needs_reencryption(new_token) is False
    # ... after which the previous KEK can be dropped from the configuration.
    assert Encryptor(OTHER_KEK).decrypt(new_token, associated_data=AD) == b"seed"
    with pytest.raises(DecryptionError, match="previous_key_encryption_keys"):
        Encryptor(OTHER_KEK).decrypt(old_token, associated_data=AD)
    # The old KEK alone cannot read what the new one wrote.
    with pytest.raises(DecryptionError, match="previous_key_encryption_keys"):
        old.decrypt(new_token, associated_data=AD)


def test_new_encryptions_always_use_the_current_kek() -> None:
    rotated = Encryptor(OTHER_KEK, previous=[KEK])
    token = rotated.encrypt(b"x", associated_data=AD)
    assert token.split(".")[1] == fingerprint(OTHER_KEK)
    with pytest.raises(DecryptionError):
        Encryptor(KEK).decrypt(token, associated_data=AD)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "malformed ciphertext"),
        ("garbage", "malformed ciphertext"),
        ("v1.abc.def", "malformed ciphertext"),
        ("v1.a.b.c.d", "malformed ciphertext"),
        ("v2.0123456789ab.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "unknown ciphertext version 'v2'"),
    ],
)
def test_malformed_token(token: str, message: str) -> None:
    encryptor = Encryptor(KEK)
    with pytest.raises(DecryptionError, match=message):
        encryptor.decrypt(token, associated_data=AD)
    assert encryptor.needs_reencryption(token) is True


def test_token_with_an_unknown_version_is_rejected_even_when_otherwise_valid() -> None:
    encryptor = Encryptor(KEK)
    token = encryptor.encrypt(b"secret", associated_data=AD)
    with pytest.raises(DecryptionError, match="unknown ciphertext version 'v0'"):
        encryptor.decrypt("v0" + token[2:], associated_data=AD)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_wrong_length_kek_is_rejected(length: int) -> None:
    # 16- and 24-byte keys would silently give AES-128/192; only AES-256 keys are accepted.
    with pytest.raises(ValueError, match="32 bytes"):
        Encryptor(os.urandom(length))


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33])
def test_wrong_length_previous_kek_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Encryptor(KEK, previous=[OTHER_KEK, os.urandom(length)])
